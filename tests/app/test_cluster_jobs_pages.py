"""Issue 12, goal 4, from the pages: the Clusters page's k sweep and "what drives the clusters"
run as background jobs (in a worker process for a large cohort: the threshold is lowered here so
that the 80-patient demo cohort counts as large) with real progress in their expander while the
rest of the page draws; they are stored and reloaded, not recomputed; a sweep a server restart
interrupted is offered again with a button. The Map page draws a large cohort's map before its
clustering ends, coloured by the ground truth, and recolours by cluster when it is in.

A private SCANATLAS_CACHE (the demo cohort is made here) and the fast ``pixels`` encoder."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import jobs as core_jobs
from core.clustering.runs import (
    default_ks,
    stored_clustering,
    stored_drivers,
    stored_sweep,
    sweep_key,
)
from core.cohort import build_cohort
from core.datasets import DEMO_NAME, open_dataset
from core.embed import embed_dataset
from core.jobs import JobRecord, _Journal
from core.projection import compute_or_load, map_params
from core.runs import RunStore
from core.settings import cache_root
from ui import data

APP = Path(__file__).resolve().parents[2] / "app.py"
TIMEOUT_S = 600
SUGGESTION = "Suggested number of clusters:"
DRIVERS = "A random forest predicts the cluster from metadata with cross-validated accuracy"


pytestmark = pytest.mark.usefixtures("worker_demo_cache")  # tests/app/conftest.py


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, str]]:
    """Every progress report any job makes, as (job key, fraction, message), in order (the
    reports still reach the job: this only watches them)."""
    seen: list[tuple[str, float, str]] = []
    lock = threading.Lock()
    report = core_jobs.Job.report

    def watched(job, fraction: float, message: str) -> None:
        with lock:
            seen.append((job.key, fraction, message))
        report(job, fraction, message)

    monkeypatch.setattr(core_jobs.Job, "report", watched)
    return seen


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def busy(at: AppTest) -> bool:
    """A job's progress bar, or the Map's note of a clustering or map being computed, shows."""
    return bool(at.get("progress")) or any(
        "in the background (about" in str(n.value) or "is being computed" in str(n.value) for n in at.info)


def run_until_idle(at: AppTest) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while busy(at):
        assert not at.exception, [e.value for e in at.exception]
        assert time.monotonic() < deadline, [str(bar.text) for bar in at.get("progress")]
        time.sleep(1.0)
        at.run()


def open_page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"encoder": "pixels", "algorithm": "kmeans", **query})
    at.run()
    return at.switch_page(f"app_pages/{page}.py").run()


def restarted_server() -> None:
    """A new job runner (it reads the journal) and empty caches, as after a server restart."""
    data.job_runner.clear()
    st.cache_resource.clear()


def demo_cohort():
    dataset = open_dataset(DEMO_NAME)
    return build_cohort(dataset, embed_dataset(dataset, "pixels"), level="patient")


def subheaders(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader]


def expander(at: AppTest, starts: str):
    (found,) = [e for e in at.expander if e.label.startswith(starts)]
    return found


def progress_texts(element) -> list[str]:
    return [str(bar.text) for bar in element.get("progress")]


def test_the_k_sweep_runs_in_a_worker_process_with_progress_while_the_page_draws(reports) -> None:
    at = open_page("clusters")
    run_until_idle(at)  # the clustering itself (this page waits for it, with its progress)
    assert_clean(at)
    cohort = demo_cohort()
    key = data.sweep_job_key(cohort, "kmeans")
    assert stored_sweep(cohort, "kmeans") is None and data.job_runner().get(key) is None

    at.button(key="clusters_sweep_run").click().run()
    assert_clean(at)
    # The sweep's progress in its expander; the rest of the page as usual, not stopped.
    (bar,) = progress_texts(expander(at, "How many groups?"))
    assert bar.startswith("kmeans with k = 2-10 on 80 patients") or bar in ("queued", "started")
    assert progress_texts(at) == [bar]
    assert subheaders(at) == ["Per cluster", "Most central scans per cluster"]
    assert any(m.value.startswith("**Cluster 0**") for m in at.markdown)
    assert not any(m.value.startswith(SUGGESTION) for m in at.markdown)

    run_until_idle(at)
    assert_clean(at)
    assert any(m.value.startswith(SUGGESTION) for m in at.markdown)
    job = data.job_runner().get(key)
    assert job.error is None and job.result()["pid"] != os.getpid()
    per_k = [(f, m) for k, f, m in reports if k == key and " done (" in m]
    label = "kmeans k sweep of 80 rows"  # the worker's own messages
    assert [m for _, m in per_k] == [f"{label}: k = {k} done ({i} of 9)" for i, k in enumerate(range(2, 11), 1)]
    fractions = [f for k, f, _ in reports if k == key]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert re.fullmatch(r"kmeans with k = 2-10 on 80 patients: 9 of 9 done in \d+ s; stored", job.message)
    assert stored_sweep(cohort, "kmeans") is not None

    # A restarted server reloads the stored sweep: shown without asking, no job.
    restarted_server()
    again = open_page("clusters")
    assert_clean(again)
    assert not busy(again) and any(m.value.startswith(SUGGESTION) for m in again.markdown)
    assert data.job_runner().get(key) is None


def test_the_cluster_drivers_run_in_a_worker_process_with_progress_while_the_page_draws(reports) -> None:
    at = open_page("clusters")
    run_until_idle(at)
    assert_clean(at)
    cohort = demo_cohort()
    cluster_key, _ = stored_clustering(cohort, algorithm="kmeans", k=int(at.session_state["k"]))
    key = data.drivers_job_key(cluster_key)
    assert stored_drivers(cluster_key) is None and data.job_runner().get(key) is None
    at.button(key="clusters_drivers_run").click().run()
    assert_clean(at)
    (bar,) = progress_texts(expander(at, "What drives these clusters?"))
    assert bar.startswith("What drives the clusters (80 patients)") or bar in ("queued", "started")
    assert progress_texts(at) == [bar]
    assert "Most central scans per cluster" in subheaders(at)
    assert not any(c.value.startswith(DRIVERS) for c in at.caption)
    assert data.job_runner().get(key) is not None

    run_until_idle(at)
    assert_clean(at)
    assert any(c.value.startswith(DRIVERS) for c in at.caption)
    job = data.job_runner().get(key)
    assert job.error is None and job.result()["pid"] != os.getpid()
    folds = [m for k, _, m in reports if k == key and "cross-validation fold" in m]
    assert folds and folds[-1].endswith(f"of {len(folds)} done")
    assert any(m.endswith("SHAP values done") for k, _, m in reports if k == key)
    assert stored_drivers(cluster_key) is not None

    restarted_server()
    again = open_page("clusters")
    assert_clean(again)
    assert not busy(again) and any(c.value.startswith(DRIVERS) for c in again.caption)
    assert data.job_runner().get(key) is None


def test_a_sweep_a_restart_interrupted_is_offered_again_with_a_button() -> None:
    cohort = demo_cohort()
    key = data.sweep_job_key(cohort, "kmeans")
    RunStore().delete(sweep_key(cohort.key, "kmeans", default_ks(cohort)))  # not stored
    assert stored_sweep(cohort, "kmeans") is None
    # The last server was sweeping, 40% through, when it went down.
    last = "kmeans k sweep of 80 rows: k = 5 done (4 of 9)"
    _Journal(cache_root() / "jobs").write(JobRecord(key, "running", 0.4, last, "2026-11-29T12:00:00+00:00"))
    restarted_server()
    assert key in [r.key for r in data.job_runner().interrupted]

    at = open_page("clusters")
    run_until_idle(at)
    assert_clean(at)
    warnings = [str(w.value) for w in expander(at, "How many groups?").warning]
    assert warnings == [f"The k sweep (kmeans) was interrupted by a server restart at 40% (last step: {last})."]
    assert data.job_runner().get(key) is None  # not started on its own
    at.run()
    assert data.job_runner().get(key) is None

    at.button(key="clusters_sweep_restart").click().run()
    assert data.job_runner().get(key) is not None
    run_until_idle(at)
    assert_clean(at)
    assert not any("interrupted" in str(w.value) for w in at.warning)
    assert any(m.value.startswith(SUGGESTION) for m in at.markdown)
    assert data.job_runner().record(key).status == "done"


def map_traces(at: AppTest) -> list[dict]:
    (chart,) = at.get("plotly_chart")
    return json.loads(chart.proto.spec)["data"]


def test_the_map_is_drawn_before_a_large_clustering_ends_and_recoloured_by_it_after() -> None:
    cohort = demo_cohort()
    n_valid = int(cohort.has_vector.sum())
    # The PCA map is stored (the page draws it at once) and the embedding job of this server
    # has run (a first session); then both of the runner's workers are held, so that the next
    # clustering waits in the queue for as long as this test needs to look at the page.
    compute_or_load(cohort.masked(), cohort.key, "pca", dataset=DEMO_NAME, **map_params("pca", n_valid))
    first = open_page("map", method="pca", k="3")
    run_until_idle(first)
    assert_clean(first)
    gate = threading.Event()
    for name in ("hold-1", "hold-2"):
        data.job_runner().submit(f"test:{name}", lambda *, progress: gate.wait(TIMEOUT_S))
    try:
        at = open_page("map", method="pca", k="7")
        assert_clean(at)
        notes = [str(n.value) for n in at.info]
        assert any(re.fullmatch(r"Clustering 80 patients with kmeans in the background \(about \d+ s; queued\); "
                                r"colours switch when it is ready\.", n) for n in notes), notes
        assert any(c.value == "Meanwhile coloured by label." for c in at.caption)
        colour = at.selectbox(key="map_colour_waiting")
        assert colour.value == "label" and "cluster" not in colour.options
        traces = map_traces(at)
        assert traces and {t["name"] for t in traces} <= {*cohort.table["label"].dropna().astype(str), "other", "missing"}
        assert not any(t["name"].startswith("C") and t["name"][1:].isdigit() for t in traces)
        assert any("clusters: kmeans (being computed)" in c.value for c in at.caption)
    finally:
        gate.set()
    run_until_idle(at)
    assert_clean(at)
    colour = at.selectbox(key="map_colour")
    assert colour.value == "cluster" and colour.options[0] == "cluster"
    names = {t["name"] for t in map_traces(at)}
    assert {f"C{i}" for i in range(7)} <= names
    assert any("clusters: kmeans (7)" in c.value for c in at.caption)
    assert not any("in the background" in str(n.value) for n in at.info)
