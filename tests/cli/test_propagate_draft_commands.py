"""``scanatlas propagate`` (proposals from saved hand labels; --curve against ground truth) and
``scanatlas draft`` (a report draft from similar cases) on the real demo cohort and covid notes."""

from __future__ import annotations

import pandas as pd
import pytest

from cli.main import main
from core.auth import local_user
from core.labels import LabelStore


@pytest.fixture
def label_db(tmp_path, monkeypatch) -> str:
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    monkeypatch.setenv("SCANATLAS_DB_URL", url)
    return url


def test_propagate_needs_hand_labels_then_proposes_from_them(demo40, label_db, tmp_path, capsys):
    root = str(demo40.root)
    assert main(["propagate", root, "--encoder", "pixels"]) == 2
    err = capsys.readouterr().err
    assert "no hand labels" in err and "Traceback" not in err
    seeds = demo40.patients.groupby("label").head(2)
    store = LabelStore(label_db)
    for row in seeds.itertuples():
        store.set_patient_override(demo40.name, row.patient_id, row.label, None, user=local_user(), base_version=None)
    out = tmp_path / "out"
    assert main(["propagate", root, "--encoder", "pixels", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(seeds)} hand-labelled patients, {40 - len(seeds)} proposals" in printed
    assert "Stored run label-propagation-" in printed
    proposals = pd.read_csv(out / "proposals.csv")
    assert len(proposals) == 40 and proposals["seed"].sum() == len(seeds)
    truth = demo40.patients.set_index("patient_id")["label"]
    open_ = proposals[~proposals["seed"]]
    assert (open_["disease"] == open_["patient_id"].map(truth)).mean() > 0.5
    assert main(["propagate", root, "--encoder", "pixels"]) == 0
    assert "Loaded run label-propagation-" in capsys.readouterr().out


def test_propagate_curve_beats_the_majority_baseline(demo40, tmp_path, capsys):
    assert main(["propagate", str(demo40.root), "--encoder", "pixels", "--curve", "--fractions", "0.1,0.5",
                 "--repeats", "3", "--out", str(tmp_path)]) == 0
    curve = pd.read_csv(tmp_path / "curve.csv")
    mean = curve.groupby("fraction")[["accuracy", "majority_accuracy"]].mean()
    assert (mean["accuracy"] > mean["majority_accuracy"]).all()
    assert "majority_baseline" in capsys.readouterr().out


def test_draft_prints_neighbours_and_a_marked_draft_without_paths(covid_dataset, cache_env, tmp_path, capsys):
    images = covid_dataset.images
    patient = str(images.loc[images["text"].notna(), "patient_id"].iloc[0])
    assert main(["draft", str(covid_dataset.root), "--patient", patient, "--encoder", "pixels", "--level", "image",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "DRAFT FROM SIMILAR CASES, NOT A DIAGNOSIS" in printed
    assert "distance" in printed and str(covid_dataset.root) not in printed and "/images/" not in printed
    neighbours = pd.read_csv(tmp_path / "neighbours.csv")
    assert len(neighbours) == 8 and patient not in set(neighbours["patient_id"].astype(str))
    assert list(neighbours.columns) == ["rank", "patient_id", "distance", "label", "note"]
    assert main(["draft", str(covid_dataset.root), "--patient", "nobody", "--encoder", "pixels"]) == 2
    assert "'nobody' is not in" in capsys.readouterr().err
