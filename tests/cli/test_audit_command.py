"""``scanatlas audit DIR``: writes the four CSVs (formula-like cells escaped, no server paths),
summary.txt and audit.json, prints the one-screen summary, and reuses the saved run."""

from __future__ import annotations

import csv

import pandas as pd
import pytest
from PIL import Image

from cli.main import main
from core.ingest import ingest
from core.pixels import load_pixels

HOSTILE = '=HYPERLINK("http://x.example","p")'


@pytest.fixture(scope="module")
def small_cohort(covid_dir, cache_env, tmp_path_factory):
    """Ten real films, one of them saved again under a patient id that is a spreadsheet formula."""
    metadata = pd.read_csv(covid_dir / "metadata.csv")
    films = metadata[metadata["modality"] == "X-ray"].drop_duplicates("patientid")
    films = films[films["filename"].map(lambda n: (covid_dir / "images" / n).is_file())].head(10)
    root = tmp_path_factory.mktemp("cli-audit")
    rows = []
    for number, film in enumerate(films.itertuples()):
        values = load_pixels(covid_dir / "images" / film.filename)
        picture = Image.fromarray((values * 255).round().astype("uint8"))
        picture.save(root / f"{number}.png")
        rows.append({"path": f"{number}.png", "patient_id": str(film.patientid), "label": str(film.finding)})
    picture.save(root / "copy.png", optimize=True)
    rows.append({"path": "copy.png", "patient_id": HOSTILE, "label": rows[-1]["label"]})
    pd.DataFrame(rows).to_csv(root / "cohort.csv", index=False)
    return ingest(root / "cohort.csv", cache_env / "datasets" / "cli-audit", layout="image-csv").dataset


def test_audit_command_writes_escaped_csvs_and_a_summary(small_cohort, tmp_path, capsys):
    out = tmp_path / "audit"
    code = main(["audit", str(small_cohort.root), "--encoder", "pixels", "--no-cleanvision", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Duplicates: 1 exact and 0 near pairs in 1 sets; 1 sets span different patient ids" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["audit.json", "duplicates.csv", "image_issues.csv", "label_issues.csv", "outliers.csv", "summary.txt"])
    with (out / "duplicates.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["kind"] == "exact" and rows[0]["cross_patient"] == "True"
    assert "'" + HOSTILE in (rows[0]["patient_id_a"], rows[0]["patient_id_b"])
    for name in ("duplicates.csv", "label_issues.csv", "image_issues.csv", "outliers.csv"):
        text = (out / name).read_text(encoding="utf-8")
        assert str(small_cohort.root) not in text and "/tmp" not in text and ",\"=" not in text
    # Again: the saved run is loaded (same key), not recomputed.
    first = (out / "audit.json").read_text()
    assert main(["audit", str(small_cohort.root), "--encoder", "pixels", "--no-cleanvision", "--out", str(out)]) == 0
    assert (out / "audit.json").read_text() == first  # same run key and creation time


def test_audit_command_refuses_bad_thresholds(small_cohort, capsys):
    assert main(["audit", str(small_cohort.root), "--phash-bits", "40"]) == 2
    assert "phash_bits=40 must be in 0..12" in capsys.readouterr().err


def test_audit_command_takes_the_candidate_cap_and_refuses_a_bad_one(small_cohort, tmp_path, capsys):
    out = tmp_path / "audit-k2"
    args = ["audit", str(small_cohort.root), "--encoder", "pixels", "--no-cleanvision", "--out", str(out)]
    assert main([*args, "--neighbours", "2"]) == 0
    assert '"neighbours": 2' in (out / "audit.json").read_text()
    capsys.readouterr()
    assert main([*args, "--neighbours", "0"]) == 2
    error = capsys.readouterr().err
    assert "neighbours=0 must be in 1..100" in error and "Traceback" not in error
