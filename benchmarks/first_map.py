"""Time to the first map (issue 10): a fresh install's first visit to the Map page.

    .venv/bin/python benchmarks/first_map.py [--out benchmarks/results/first_map.json]
        [--timeout 900] [--keep-cache DIR]

From a fresh temporary cache (``SCANATLAS_CACHE`` and ``NUMBA_CACHE_DIR`` both empty folders,
a fresh label database) it starts a real ``streamlit run app.py`` on a free 127.0.0.1 port, opens
``/map`` in headless Chromium (Debian's ``/usr/bin/chromium``, as in tests/browser/test_walk.py)
and records, in seconds from the server's launch:

  * ``healthy``: ``/_stcore/health`` answers;
  * ``first_start_status``: the main-area first-start steps are shown (the demo is being made);
  * ``embedding_progress``: the embedding progress bar is shown;
  * ``first_map``: a Plotly map is drawn with a point per patient: the PCA map of each
    patient's middle slice while the other slices are embedded;
  * ``full_map``: the map of every slice is drawn (PCA while UMAP computes). This is when the
    first map came before the middle-slice pass, so ``full_map / first_map`` in one run is the
    speed-up against that baseline under the same load (slightly flattering the new way: the
    middle-slice map's own PCA and clustering, a second or two, delay the full map);
  * ``umap_map``: the UMAP map has replaced it (caption names UMAP, no pending note, drawn).

Also the same times from the moment the tab opened the page, the load average before and after,
the demo's image count and how many numba index files the run left under ``NUMBA_CACHE_DIR``.
Everything stays on loopback; the server is stopped by its process group (SIGTERM, then
SIGKILL). Bounded by ``--timeout``. Not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import CHROMIUM, IDLE, ServerError, StreamlitServer, chromium  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot'
PENDING_NOTE = "UMAP is being computed"
FILLING_NOTE = "First map: PCA of each patient's middle slice"


def measure(base: str, started: float, timeout_s: float) -> dict:
    times: dict[str, float | None] = dict.fromkeys(
        ("first_start_status", "embedding_progress", "first_map", "full_map", "umap_map"))
    facts: dict[str, object] = {}
    with chromium() as browser:
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(timeout_s * 1000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        opened = time.monotonic()
        page.goto(f"{base}/map")
        facts["page_opened_s"] = round(opened - started, 2)
        deadline = opened + timeout_s
        # Poll what the page shows (every 0.25 s) instead of waiting on one thing at a time, so
        # that short phases (e.g. the first-start status) are seen too.
        while time.monotonic() < deadline:
            state = page.evaluate(f"""() => {{
                const chart = document.querySelector('{CHART}');
                const text = document.body.innerText;
                return {{
                    text: text,
                    points: chart && chart._fullData ? chart._fullData.reduce((n, t) => n + (t._length || 0), 0) : 0,
                    idle: document.querySelector('{IDLE}') !== null,
                    exception: document.querySelector('[data-testid="stException"]') !== null,
                }};
            }}""")
            now = round(time.monotonic() - started, 2)
            text = state["text"]
            if state["exception"]:
                facts["exception"] = text[-2000:]
                break
            if times["first_start_status"] is None and "First start: preparing the demo cohort" in text:
                times["first_start_status"] = now
            if times["embedding_progress"] is None and "Embedding " in text and " images" in text:
                times["embedding_progress"] = now
            if times["first_map"] is None and state["points"] > 0:
                times["first_map"] = now
                facts["first_map_points"] = state["points"]
                facts["first_map_method"] = "UMAP" if "· UMAP ·" in text else "PCA" if "· PCA ·" in text else None
                facts["first_map_note"] = next((line for line in text.splitlines()
                                                if PENDING_NOTE in line or FILLING_NOTE in line), None)
            if times["full_map"] is None and state["points"] > 0 and FILLING_NOTE not in text:
                times["full_map"] = now
                facts["full_map_points"] = state["points"]
            if (state["points"] > 0 and "· UMAP ·" in text and PENDING_NOTE not in text and state["idle"]):
                times["umap_map"] = now
                facts["umap_map_points"] = state["points"]
                break
            time.sleep(0.25)
        facts["page_errors"] = errors
    facts["from_server_launch_s"] = times
    facts["from_page_open_s"] = {k: (None if v is None else round(v - facts["page_opened_s"], 2))
                                 for k, v in times.items()}
    return facts


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else round(value / base, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "first_map.json")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole page to reach UMAP")
    parser.add_argument("--keep-cache", type=Path, default=None,
                        help="use (and keep) this empty folder as the cache instead of a temporary one")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is absent: apt-get install chromium")

    temporary = args.keep_cache is None
    cache = Path(tempfile.mkdtemp(prefix="scanatlas-first-map-")) if temporary else args.keep_cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if any(cache.iterdir()):
        raise SystemExit(f"{cache} is not empty: the benchmark needs a fresh cache")
    numba_dir = cache / "numba"
    numba_dir.mkdir()
    server = StreamlitServer(cache=cache, env={"NUMBA_CACHE_DIR": str(numba_dir)},
                             db_url=f"sqlite:///{cache / 'labels.db'}")
    load_before = os.getloadavg()
    try:
        server.start()
        started = server.started_at
        healthy = round(time.monotonic() - started, 2)
        facts = measure(server.base, started, args.timeout)
        facts["from_server_launch_s"] = {"healthy": healthy, **facts["from_server_launch_s"]}
    except ServerError as error:
        raise SystemExit(str(error)) from None
    finally:
        server.stop()
    log_path = server.log_path
    images = None
    images_file = cache / "datasets" / "demo-cardiac-mri" / "images.parquet"
    if images_file.is_file():
        import pyarrow.parquet as pq

        images = pq.ParquetFile(images_file).metadata.num_rows
    result = {
        **facts,
        "goal_s": 60,
        "first_map_within_goal": (facts["from_server_launch_s"]["first_map"] or 1e9) <= 60,
        "full_map_over_first_map": _ratio(facts["from_server_launch_s"]["full_map"],
                                          facts["from_server_launch_s"]["first_map"]),
        "demo_images": images,
        "numba_index_files": len(list(numba_dir.rglob("*.nbi"))),
        "cores": os.cpu_count(),
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "niceness": os.nice(0),
        "python": platform.python_version(),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "server_log_tail": log_path.read_text(errors="replace")[-1500:],
    }
    if temporary:
        shutil.rmtree(cache, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "server_log_tail"}, indent=2))


if __name__ == "__main__":
    main()
