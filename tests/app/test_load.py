"""Concurrent sessions on a real server: 5 sessions open Map together on a cold server (nothing
embedded, projected or clustered yet), then 5 open Clusters and 5 open Label. Every session
must draw its page with no error, and the shared heavy results must be computed once for all
of them: one embedding job, one cohort, one PCA and one UMAP projection, one clustering (counted by the server's
counters around those functions, and by the runs in the run store). No wall-clock assertions:
the timing side is ``benchmarks/load_test.py``.

The sessions are raw Streamlit websocket clients from ``benchmarks/load_test.py`` (what a
browser tab sends and receives, without the browser), on the ``pixels`` encoder so that the
cold start embeds in seconds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from pathlib import Path

import pytest

from core.runs import RunStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
N_SESSIONS = 5
QUERY = "encoder=pixels"  # a URL query parameter, as a shared link would carry it
SESSION_TIMEOUT_S = 600.0  # the cold Map makes the demo cohort and embeds 320 scans


def _load_test_module():
    spec = importlib.util.spec_from_file_location("scanatlas_load_test", REPO / "benchmarks" / "load_test.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


load_test = _load_test_module()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("load-cache")
    running = load_test.Server(REPO, cache, session_ttl=5, log_path=cache / "streamlit.log")
    try:
        running.wait_healthy()
        yield running
    finally:
        running.stop()


def _open_together(server, page: str) -> list[dict]:
    ws_url = f"ws://127.0.0.1:{server.port}/_stcore/stream"
    results, _ = asyncio.run(load_test.open_together(
        ws_url, page, N_SESSIONS, query=QUERY, timeout_s=SESSION_TIMEOUT_S, poll_embedding=True))
    return results


def _assert_all_drawn(results: list[dict], server) -> None:
    assert len(results) == N_SESSIONS
    errors = [r["error"] for r in results if r["error"] is not None]
    assert not errors, f"{errors}\n{server.log_tail()}"
    assert all(r["seconds"] is not None for r in results)


def test_concurrent_sessions_share_one_computation(server) -> None:
    assert server.counts() == {f"{m}.{a}": 0 for m, a in load_test.COUNTED}  # nothing yet: a cold server

    map_results = _open_together(server, "map")
    _assert_all_drawn(map_results, server)

    for page in ("clusters", "label"):
        _assert_all_drawn(_open_together(server, page), server)

    # The cold Map may have drawn each patient's middle slice first (a cohort, PCA and
    # clustering of its own; with the fast pixels encoder every slice may be embedded by then).
    # With every slice embedded, Map draws PCA at once while one UMAP job runs in the background
    # for all sessions: wait (bounded) until that job has stored its map, then count.
    _assert_all_drawn(_open_together(server, "map"), server)
    store = RunStore(server.counts_path.parent / "runs")
    deadline = time.monotonic() + 300
    while "umap" not in {run.config["method"] for run in store.runs(kind="projection")} and time.monotonic() < deadline:
        time.sleep(0.5)
    computed = server.counts()
    cohorts = len(store.runs(kind="clustering"))  # 2 with the middle-slice map, else 1
    assert cohorts in (1, 2)
    assert computed == {
        "core.embed.embed_dataset": 2,  # one background job for every session: middle slices, then all
        "core.cohort.build_cohort": cohorts,
        "core.projection.project": cohorts + 1,  # PCA of each cohort, UMAP in the background: once each
        "core.clustering.runs.cluster": cohorts,
    }, computed
    assert sorted(run.config["method"] for run in store.runs(kind="projection")) == ["pca"] * cohorts + ["umap"]

    # A second round of sessions on the warm server computes nothing new.
    _assert_all_drawn(_open_together(server, "map"), server)
    assert server.counts() == computed
