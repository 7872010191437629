"""Issue 12, goal 4, from the pages: a large cohort's clustering and maps (PCA, t-SNE) run as
background jobs in a worker process (the threshold lowered here so that the 80-patient demo cohort counts as
large), land in the run store and are reloaded, not recomputed; a job a server restart
interrupted is shown as "interrupted at N%" with a button that starts it again.

A private SCANATLAS_CACHE (the demo cohort is made here) and the fast ``pixels`` encoder; t-SNE
(scikit-learn, no numba to compile) as the map method."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.clustering import get_algorithm
from core.clustering.runs import stored_clustering
from core.cohort import build_cohort
from core.datasets import DEMO_NAME, open_dataset
from core.embed import embed_dataset
from core.jobs import JobRecord, _Journal
from core.projection import map_params, stored_projection
from core.runs import RunStore
from core.settings import cache_root
from ui import data

APP = Path(__file__).resolve().parents[2] / "app.py"
TIMEOUT_S = 600


pytestmark = pytest.mark.usefixtures("worker_demo_cache")  # tests/app/conftest.py


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def busy(at: AppTest) -> bool:
    """A job's progress bar, or the note of a map being computed, is on the page."""
    return bool(at.get("progress")) or any("is being computed" in str(n.value) for n in at.info)


def run_until_idle(at: AppTest) -> list[str]:
    """Rerun the page until no job shows; returns every progress text and note seen."""
    seen: list[str] = []
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        seen += [str(bar.text) for bar in at.get("progress")] + [str(n.value) for n in at.info]
        seen += [str(m.value) for m in at.markdown]
        if not busy(at):
            return seen
        assert time.monotonic() < deadline, seen[-5:]
        time.sleep(1.0)
        at.run()


def map_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"encoder": "pixels", "method": "tsne"})
    at.run()
    return at.switch_page("app_pages/map.py").run()


def demo_cohort():
    dataset = open_dataset(DEMO_NAME)
    return build_cohort(dataset, embed_dataset(dataset, "pixels"), level="patient")


def test_clustering_and_map_run_in_a_worker_process_and_are_reloaded_from_the_run_store() -> None:
    at = map_page()
    seen = run_until_idle(at)
    assert_clean(at)
    cohort = demo_cohort()
    n_valid = int(cohort.has_vector.sum())

    # The clustering (the page's default algorithm) ran in another process and is stored.
    algorithm = at.session_state["algorithm"]
    params = {**get_algorithm(algorithm).defaults(), "k": int(at.session_state["k"])}
    if not get_algorithm(algorithm).takes_k:
        params.pop("k")
    clustering_job = data.job_runner().get(data.clustering_job_key(cohort, algorithm, params))
    assert clustering_job is not None and clustering_job.error is None
    assert clustering_job.result()["pid"] != os.getpid()
    assert stored_clustering(cohort, algorithm=algorithm, **params)[0] == clustering_job.result()["key"]

    # The PCA map (drawn while t-SNE is computed) came from a worker process too.
    pca_job = data.job_runner().get(data.projection_job_key(cohort, "pca", 2))
    assert pca_job is not None and pca_job.result()["pid"] != os.getpid()

    # The t-SNE map: computed in a worker process while the PCA map was drawn with a note.
    job = data.job_runner().get(data.projection_job_key(cohort, "tsne", 2))
    assert job is not None and job.error is None and job.result()["pid"] != os.getpid()
    # The note is there in every page run while the job runs. The t-SNE job starts in the first
    # run, beside the clustering, and that run then waits for the PCA map; a t-SNE that ended
    # before the next run (within the 1 s poll of run_until_idle, plus the run) was never pending
    # in a page run.
    noted = any("t-SNE is being computed in a background worker process" in text for text in seen)
    assert noted or job.finished_at <= pca_job.finished_at + 2.0, (seen, job.finished_at - pca_job.finished_at)
    assert any("· t-SNE ·" in c.value for c in at.caption)
    stored = stored_projection(len(cohort.has_vector), cohort.key, "tsne", **map_params("tsne", n_valid))
    assert stored is not None and stored.key == job.result()["key"]

    # A restarted server (a new runner, empty caches) reloads both: no job, no note.
    data.job_runner.clear()
    st.cache_resource.clear()
    again = map_page()
    assert_clean(again)
    assert not busy(again) and any("· t-SNE ·" in c.value for c in again.caption)
    assert data.job_runner().get(data.projection_job_key(cohort, "tsne", 2)) is None
    assert data.job_runner().get(data.clustering_job_key(cohort, algorithm, params)) is None


def test_a_map_a_restart_interrupted_is_reported_at_its_percentage_and_started_again_on_request() -> None:
    cohort = demo_cohort()
    n_valid = int(cohort.has_vector.sum())
    key = data.projection_job_key(cohort, "tsne", 2)
    stored = stored_projection(len(cohort.has_vector), cohort.key, "tsne", **map_params("tsne", n_valid))
    if stored is not None:
        assert RunStore().delete(stored.key)
    # The last server was computing this map, 40% through, when it went down.
    _Journal(cache_root() / "jobs").write(JobRecord(key, "running", 0.4, "t-SNE of 80 rows: 3 s, about 5 s left",
                                                    "2026-11-29T12:00:00+00:00"))
    data.job_runner.clear()  # the restarted server's runner finds it and marks it interrupted
    st.cache_resource.clear()
    assert [r.key for r in data.job_runner().interrupted] == [key]

    at = map_page()
    assert_clean(at)
    (warning,) = [str(w.value) for w in at.warning if "interrupted" in str(w.value)]
    assert warning == ("The t-SNE map was interrupted by a server restart at 40% "
                       "(last step: t-SNE of 80 rows: 3 s, about 5 s left).")
    assert any("· PCA ·" in c.value for c in at.caption)  # the PCA map meanwhile
    assert data.job_runner().get(key) is None  # not started on its own
    at.run()
    assert data.job_runner().get(key) is None and any("interrupted" in str(w.value) for w in at.warning)

    at.button(key="map_restart").click().run()
    assert data.job_runner().get(key) is not None
    run_until_idle(at)
    assert_clean(at)
    assert not any("interrupted" in str(w.value) for w in at.warning)
    assert any("· t-SNE ·" in c.value for c in at.caption)
    assert data.job_runner().get(key).result()["pid"] != os.getpid()
    assert data.job_runner().record(key).status == "done"
    assert stored_projection(len(cohort.has_vector), cohort.key, "tsne", **map_params("tsne", n_valid)) is not None
