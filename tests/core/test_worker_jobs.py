"""core.worker_jobs: maps, clusterings, k sweeps, cluster drivers and neighbour indexes computed in a real worker process
from a matrix file written once, stored in the run store and equal to the in-process result
(issue 12, goal 4)."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from core import worker_jobs
from core.clustering import cluster
from core.clustering.runs import (
    cluster_cohort,
    driver_metadata,
    drivers_of_clustering,
    save_clustering,
    save_drivers,
    save_sweep,
    stored_clustering,
    stored_drivers,
    stored_sweep,
    sweep_cohort,
)
from core.cohort import build_cohort
from core.embed import embed_dataset
from core.explain.similar import SimilarCases
from core.jobs import WorkerProcessError, run_in_process
from core.projection import compute_or_load, load_projection, map_params
from core.runs import RunStore


@pytest.fixture(scope="module")
def cohort(demo40):
    built = build_cohort(demo40, embed_dataset(demo40, "pixels"), level="image")
    has_vector = built.has_vector.copy()
    has_vector[[3, 17]] = False  # two images that "failed": NaN rows that must stay aligned
    return replace(built, has_vector=has_vector)


class Progress:
    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __call__(self, fraction: float, message: str) -> None:
        with self._lock:
            self.seen.append((fraction, message))


def test_the_matrix_file_holds_what_cohort_masked_holds_and_is_written_once(cohort):
    path = worker_jobs.write_matrix(cohort)
    assert path.parent == worker_jobs.inputs_folder() and path.name == f"{cohort.key}.npy"
    matrix = worker_jobs.load_matrix(path)
    assert matrix.dtype == np.float32 and not matrix.flags.writeable
    np.testing.assert_array_equal(matrix.astype(np.float64), cohort.masked())
    assert np.isnan(matrix[[3, 17]]).all() and np.isfinite(matrix[0]).all()
    inode = path.stat().st_ino
    assert worker_jobs.write_matrix(cohort) == path and path.stat().st_ino == inode  # kept
    block = worker_jobs.write_matrix(cohort, "image")
    np.testing.assert_array_equal(worker_jobs.load_matrix(block).astype(np.float64),
                                  cohort.masked("image"))


def test_matrix_names_and_places_are_checked(tmp_path, cohort):
    with pytest.raises(ValueError, match="is not a cohort key"):
        worker_jobs.matrix_path("../../etc/passwd")
    with pytest.raises(ValueError, match="is not a cohort key"):
        worker_jobs.matrix_path(cohort.key, "../x")
    outside = tmp_path / f"{cohort.key}.npy"
    np.save(outside, np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="is not a cohort matrix file"):
        worker_jobs.load_matrix(outside)
    wrong = worker_jobs.inputs_folder() / "image-0123456789abcdef.npy"
    np.save(wrong, np.zeros(4, dtype=np.float64))
    with pytest.raises(ValueError, match="expected a 2-D float32 matrix"):
        worker_jobs.load_matrix(wrong)


def test_a_map_computed_in_a_worker_process_is_stored_and_equals_the_in_process_one(cohort, tmp_path):
    path = worker_jobs.write_matrix(cohort)
    params = map_params("tsne", int(cohort.has_vector.sum()))
    progress = Progress()
    answer = run_in_process(worker_jobs.project_matrix, str(path), cohort.key, "tsne", params=params,
                            dataset="demo40", estimate_s=5.0, progress=progress)
    assert answer["pid"] != os.getpid()
    assert any(m.startswith(f"worker process {answer['pid']}") for _, m in progress.seen)
    assert progress.seen[-1] == (1.0, f"t-SNE of {len(cohort.table)} rows: stored")
    stored = load_projection(answer["key"])
    assert stored is not None and stored.coords.shape == (len(cohort.table), 2)
    assert np.isnan(stored.coords[[3, 17]]).all()
    here = compute_or_load(cohort.masked(), cohort.key, "tsne", store=RunStore(tmp_path), **dict(params))
    assert here.key == answer["key"]  # the same run, whichever process computed it
    np.testing.assert_allclose(stored.coords, here.coords, rtol=1e-4, atol=1e-4)


def test_a_clustering_from_a_worker_is_saved_here_and_then_loaded(cohort):
    path = worker_jobs.write_matrix(cohort)
    assert stored_clustering(cohort, algorithm="kmeans", k=3) is None
    result, seconds, pid = run_in_process(worker_jobs.cluster_matrix, str(path), "kmeans",
                                          params={"k": 3}, random_state=0, estimate_s=5.0,
                                          progress=Progress())
    assert pid != os.getpid() and seconds > 0
    np.testing.assert_array_equal(result.labels, cluster(cohort.masked(), algorithm="kmeans", k=3).labels)
    assert (result.labels[[3, 17]] == -1).all()
    key = save_clustering(cohort, result, dataset="demo40", seconds=seconds)
    found = stored_clustering(cohort, algorithm="kmeans", k=3)
    assert found is not None and found[0] == key
    np.testing.assert_array_equal(found[1].labels, result.labels)
    assert cluster_cohort(cohort, algorithm="kmeans", k=3)[0] == key  # loaded, not recomputed
    run = RunStore().load("clustering", key)
    assert run.summary["n_samples"] == len(cohort.table) and run.summary["seconds"] == seconds


def test_a_k_sweep_in_a_worker_reports_each_k_and_is_saved_here_as_the_in_process_one(cohort, tmp_path):
    path = worker_jobs.write_matrix(cohort)
    ks = list(range(2, 11))
    progress = Progress()
    scores, seconds, pid = run_in_process(worker_jobs.sweep_matrix, str(path), "kmeans", ks=ks,
                                          random_state=0, progress=progress)
    assert pid != os.getpid() and seconds > 0
    per_k = [m for _, m in progress.seen if " done (" in m]
    label = f"kmeans k sweep of {len(cohort.table)} rows"
    assert per_k == [f"{label}: k = {k} done ({i} of 9)" for i, k in enumerate(ks, start=1)]
    assert [f for f, _ in progress.seen] == sorted(f for f, _ in progress.seen)
    assert progress.seen[-1][0] == pytest.approx(0.98)
    assert stored_sweep(cohort, "kmeans") is None
    saved = save_sweep(cohort, "kmeans", scores, ks=ks, dataset="demo40")
    assert stored_sweep(cohort, "kmeans").equals(saved)
    assert sweep_cohort(cohort, "kmeans").equals(saved)  # loaded, not recomputed
    here = sweep_cohort(cohort, "kmeans", store=RunStore(tmp_path))  # the two NaN rows left out here too
    assert here["k"].tolist() == saved["k"].tolist() == ks
    np.testing.assert_allclose(saved[["silhouette", "davies_bouldin", "calinski_harabasz"]].to_numpy(),
                               here[["silhouette", "davies_bouldin", "calinski_harabasz"]].to_numpy(), rtol=1e-4)
    with pytest.raises(ValueError, match="expected"):
        save_sweep(cohort, "kmeans", scores.iloc[:3], ks=ks)


def test_cluster_drivers_in_a_worker_report_each_fold_and_are_saved_here(cohort, tmp_path):
    key, result = cluster_cohort(cohort, algorithm="kmeans", k=3)
    progress = Progress()
    drivers, seconds, pid = run_in_process(worker_jobs.drivers_of_labels, driver_metadata(cohort),
                                           np.asarray(result.labels), progress=progress)
    assert pid != os.getpid() and seconds > 0
    messages = [m for _, m in progress.seen]
    assert messages[0].startswith(f"worker process {pid}: {len(cohort.table)} rows")
    folds = [m for m in messages if m.startswith("cross-validation")]
    assert folds and folds == [f"cross-validation fold {i} of {len(folds)} done" for i in range(1, len(folds) + 1)]
    assert messages[-1] == "SHAP values done"
    assert stored_drivers(key) is None
    saved = save_drivers(cohort, key, drivers, dataset="demo40")
    assert stored_drivers(key).equals(saved)
    assert saved.attrs["cv_accuracy"] == pytest.approx(drivers.attrs["cv_accuracy"])
    here = drivers_of_clustering(cohort, key, result.labels, store=RunStore(tmp_path))
    assert here.equals(saved)  # the same forest and SHAP values, whichever process computed them


def test_a_value_error_in_the_worker_stays_a_value_error(cohort):
    path = worker_jobs.write_matrix(cohort)
    with pytest.raises(ValueError, match="k=500 must be <= n_samples=158") as caught:
        run_in_process(worker_jobs.cluster_matrix, str(path), "kmeans", params={"k": 500},
                       random_state=0, estimate_s=5.0, progress=Progress())
    assert isinstance(caught.value, WorkerProcessError)


def test_a_neighbour_index_built_in_a_worker_is_stored_and_answers_like_the_exact_search(cohort):
    path = worker_jobs.write_matrix(cohort, "image")
    key = worker_jobs.index_key(cohort.key, "image", "cosine")
    answer = run_in_process(worker_jobs.build_index, str(path), key, metric="cosine",
                            dataset="demo40", estimate_s=5.0, progress=Progress())
    assert answer == {"key": key, "seconds": answer["seconds"], "pid": answer["pid"]}
    assert answer["pid"] != os.getpid()
    loaded = worker_jobs.load_index(key, worker_jobs.load_matrix(path), metric="cosine")
    assert loaded is not None and loaded.index_kind_ == "hnsw"
    exact = SimilarCases("cosine", index="exact").fit(cohort.masked("image"))
    for row in (0, 50, 120):
        got, want = loaded.query(row, k=5), exact.query(row, k=5)
        assert list(got["row"]) == list(want["row"])
        np.testing.assert_allclose(got["distance"], want["distance"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="has no vector"):
        loaded.query(3, k=5)
    # Other rows than it was built over: not this index.
    assert worker_jobs.load_index(key, worker_jobs.load_matrix(path)[:100], metric="cosine") is None


def test_progress_during_a_silent_fit_is_elapsed_time_against_the_estimate():
    progress = Progress()
    with worker_jobs._ticking(progress, 0.1, 0.9, 100.0, "UMAP of 10 rows"):
        time.sleep(2.5)
    fractions = [f for f, _ in progress.seen]
    assert len(fractions) >= 2 and fractions == sorted(fractions) and 0.1 < fractions[0] < 0.9
    assert all(re.fullmatch(r"UMAP of 10 rows: \d+ s, about \d+ s left", m) for _, m in progress.seen)
    # Past the estimate: never past 95% of the way, and said so.
    late = Progress()
    with worker_jobs._ticking(late, 0.1, 0.9, 1.0, "UMAP of 10 rows"):
        time.sleep(2.5)
    assert late.seen and all(f <= 0.1 + 0.8 * 0.95 + 1e-9 for f, _ in late.seen)
    assert late.seen[-1][1].endswith("taking longer than estimated")
