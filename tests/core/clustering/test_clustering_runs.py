"""Clusterings, k sweeps and cluster drivers as named runs: computed once, every field back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.clustering import cluster_summary
from core.clustering import runs as clustering_runs
from core.clustering.runs import (
    cluster_cohort,
    clustering_summary,
    drivers_of_clustering,
    stored_drivers,
    stored_sweep,
    suggested_k,
    sweep_cohort,
)
from core.cohort import build_cohort
from core.embed import embed_dataset
from core.runs import RunStore

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pixel_cohort(demo40):
    return build_cohort(demo40, embed_dataset(demo40, "pixels"), level="patient")


def test_named_clustering_runs_are_reused_and_keep_every_field(pixel_cohort, cache_env, monkeypatch):
    store = RunStore(cache_env / "runs")
    key, first = cluster_cohort(pixel_cohort, algorithm="gmm", k=4, store=store, dataset="demo40")
    calls = []
    monkeypatch.setattr(clustering_runs, "cluster", lambda *a, **k: calls.append(1))
    again_key, again = cluster_cohort(pixel_cohort, algorithm="gmm", k=4, store=store)
    assert key == again_key and calls == []
    for field in ("labels", "centers", "membership"):
        np.testing.assert_allclose(getattr(again, field), getattr(first, field), equal_nan=True)
    assert again.centers.shape == (first.n_clusters, pixel_cohort.X.shape[1])
    assert (again.algorithm, again.params, again.n_clusters, again.notes) == (
        first.algorithm, first.params, first.n_clusters, first.notes)
    assert again.scores == pytest.approx(first.scores) and again.inertia == pytest.approx(first.inertia)
    assert (again.n_noise, again.n_excluded, again.standardized) == (first.n_noise, first.n_excluded, False)
    monkeypatch.undo()
    other_key, _ = cluster_cohort(pixel_cohort, algorithm="gmm", k=3, store=store)
    assert other_key != key
    listed = store.list(kind="clustering", dataset="demo40")
    assert listed["key"].tolist() == [key]
    summary = clustering_summary(key, store=store)
    expected = cluster_summary(first.labels, pixel_cohort.table)
    assert summary["size"].tolist() == expected["size"].tolist() and summary["size"].sum() == 40


def test_a_stored_clustering_loads_in_a_new_process(pixel_cohort, cache_env):
    store = RunStore(cache_env / "runs")
    key, first = cluster_cohort(pixel_cohort, algorithm="kmedoids", k=4, store=store)
    code = (
        "import json; from core.clustering.runs import _clustering_from_run, CLUSTERING_KIND\n"
        "from core.runs import RunStore\n"
        f"c = _clustering_from_run(RunStore({str(cache_env / 'runs')!r}).load(CLUSTERING_KIND, {key!r}))\n"
        "print(json.dumps({'labels': c.labels.tolist(), 'medoids': c.medoid_indices.tolist(), 'k': c.n_clusters}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["labels"] == first.labels.tolist() and out["k"] == first.n_clusters
    assert out["medoids"] == first.medoid_indices.tolist()


def test_k_sweep_is_computed_only_when_asked_and_then_stored(pixel_cohort, cache_env):
    store = RunStore(cache_env / "runs")
    assert stored_sweep(pixel_cohort, "kmeans", store=store) is None
    seen: list[tuple[float, str]] = []
    sweep = sweep_cohort(pixel_cohort, "kmeans", store=store, dataset="demo40",
                         progress=lambda fraction, message: seen.append((fraction, message)))
    assert sweep["k"].tolist() == list(range(2, 11))
    assert seen == [(i / 9, f"k = {k} done ({i} of 9)") for i, k in enumerate(range(2, 11), start=1)]
    again = stored_sweep(pixel_cohort, "kmeans", store=store)
    assert again.equals(sweep)
    seen.clear()
    assert sweep_cohort(pixel_cohort, "kmeans", store=store, progress=lambda *a: seen.append(a)).equals(sweep)
    assert seen == []  # loaded, not recomputed
    best = suggested_k(sweep)
    assert best == int(sweep.loc[sweep["silhouette"].idxmax(), "k"])
    run = store.runs(kind="k-sweep")[0]
    assert run.summary == {"algorithm": "kmeans", "suggested_k": best}
    with pytest.raises(ValueError, match="does not take k"):
        sweep_cohort(pixel_cohort, "hdbscan", store=store)


def test_cluster_drivers_are_stored_with_their_accuracy(pixel_cohort, cache_env):
    store = RunStore(cache_env / "runs")
    key, result = cluster_cohort(pixel_cohort, algorithm="kmeans", k=4, store=store)
    assert stored_drivers(key, store=store) is None
    drivers = drivers_of_clustering(pixel_cohort, key, result.labels, store=store)
    again = stored_drivers(key, store=store)
    assert again is not None and again.equals(drivers)
    assert set(again["cluster"]) == set(result.labels)
    assert 0 <= again.attrs["baseline_accuracy"] <= 1
    assert again.attrs["cv_accuracy"] == pytest.approx(drivers.attrs["cv_accuracy"], nan_ok=True)
    assert "patient_id" not in set(again["column"])


def test_clustering_keys_keep_their_historical_form_so_saved_label_mappings_stay_found():
    # Computed with the code before the run store (core/workspace.py at f104903): mappings saved
    # then are saved under this key and must still be found.
    from core.clustering.runs import clustering_key

    assert clustering_key("patient-0123456789abcdef", "kmeans", {"k": 4}, 0) == "kmeans-72e6ad838c336596"
