"""The drift study and the drift of one clustering as named runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.clustering.runs import cluster_cohort
from core.cohort import build_cohort
from core.drift import drift_report
from core.drift.study import clustering_drift, drift_study, stored_drift_study, write_drift_study
from core.embed import embed_dataset
from core.runs import RunStore

ALGORITHMS = ["kmeans", "agglomerative", "birch"]


def test_drift_study_stores_grid_labels_and_reloads(demo40, cache_env, tmp_path):
    calls = []
    study = drift_study(demo40, ["pixels"], algorithms=ALGORITHMS, level="patient",
                        progress=lambda f, m: calls.append(f))
    assert list(study.grid["algorithm"]) == ALGORITHMS and not study.from_cache
    assert study.grid["label_change_pct"].between(0, 100).all()
    assert list(study.labels.columns) == ["row_id", "label_true", *[f"pixels__{a}" for a in ALGORITHMS]]
    assert len(study.labels) == 40
    best = study.best
    clusters = study.labels[f"pixels__{best['algorithm']}"].to_numpy()
    truth = study.labels["label_true"].to_numpy(dtype=object)
    assert drift_report(truth, clusters).ari == pytest.approx(best["ari"])
    assert int(study.contingency.to_numpy().sum()) == 40
    assert {"column", "cramers_v", "flagged"} <= set(study.confounders.columns)
    assert calls[-1] == 1.0 and calls == sorted(calls)
    again = drift_study(demo40, ["pixels"], algorithms=ALGORITHMS, level="patient")
    assert again.from_cache and again.key == study.key
    pd.testing.assert_frame_equal(again.grid, study.grid)
    pd.testing.assert_frame_equal(again.labels, study.labels)
    pd.testing.assert_frame_equal(again.contingency, study.contingency)
    assert stored_drift_study(study.key).grid.equals(study.grid)
    run = RunStore().runs(kind="drift-study", dataset=demo40.name)[0]
    assert run.summary["combinations"] == 3

    written = {p.name for p in write_drift_study(again, tmp_path)}
    assert written == {"grid.csv", "contingency.csv", "confounders.csv",
                       *[f"labels_pixels__{a}.csv" for a in ALGORITHMS]}
    per_row = pd.read_csv(tmp_path / "labels_pixels__kmeans.csv")
    assert list(per_row.columns) == ["row_id", "label_true", "cluster"] and len(per_row) == 40


def test_drift_study_without_ground_truth_is_refused(demo40):
    unlabeled = type(demo40)(root=demo40.root, images=demo40.images.assign(label=None),
                             patients=demo40.patients.assign(label=None), report=demo40.report,
                             manifest=demo40.manifest)
    with pytest.raises(ValueError, match="no ground truth"):
        drift_study(unlabeled, ["pixels"])


def test_clustering_drift_is_computed_once_per_clustering(demo40, monkeypatch):
    from core.drift import study as study_module

    cohort = build_cohort(demo40, embed_dataset(demo40, "pixels"), level="patient")
    key, result = cluster_cohort(cohort, algorithm="kmeans", k=4)
    first = clustering_drift(cohort, key, result.labels)
    expected = drift_report(cohort.table["label"].to_numpy(dtype=object), result.labels)
    assert first.summary["ari"] == pytest.approx(expected.ari)
    assert first.summary["label_change_pct"] == pytest.approx(expected.label_change_pct)
    assert first.mapping == expected.mapping
    np.testing.assert_array_equal(first.contingency.to_numpy(), expected.contingency.to_numpy())
    monkeypatch.setattr(study_module, "drift_report", lambda *a, **k: pytest.fail("recomputed"))
    again = clustering_drift(cohort, key, result.labels)
    assert again.summary == first.summary and again.key == first.key
