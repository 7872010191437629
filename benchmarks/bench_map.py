"""The Map at 10k and 200k points in headless Chromium; writes benchmarks/results/map.json.

    .venv/bin/python benchmarks/bench_map.py [--sizes 10000 200000] [--atlas-site DIR]
        [--skip-side-by-side] [--repeats 3] [--lasso-steps 12] [--out FILE]

Data: ``core.ingest.synthetic.make_synthetic_dataset`` (synthetic vectors imported as a dataset,
dimension 32, PCA map, k-means k=4), in a temporary cache.

1. **The Map page** (``app.py``, what ScanAtlas ships: Plotly ``scattergl`` with float32 typed
   arrays and one cached figure for every session), one server per size:
   * ``first_open_s``: page open -> every point drawn, the first time (cohort, clustering and PCA
     computed on the server: not a drawing time);
   * ``drawn_s``: the same in a fresh browser session once the server holds them (the median of
     ``--repeats``); drawn = the sum of Plotly's trace lengths equals the row count and a WebGL
     canvas exists;
   * ``lasso_s``: mouse up after a lasso around a square holding about 1,000 points -> the
     "N images selected" heading shown (the selection table and the gallery's place below it)
     and the rerun finished; ``lasso_bytes`` what the server sent for that rerun;
     ``lasso_selected_event_s`` (Plotly's "selected" event) and ``lasso_rerun_started_s`` (the
     rerun starting: the selection has left the page) split it into page and server time;
     ``--lasso-steps``: mouse moves per side of the square while dragging (Plotly redraws the
     selection as the lasso moves; only mouse up -> gallery is timed);
   * ``open_bytes``: websocket bytes of the first page load;
   * ``server_rss_mb`` after the first session; ``session_rss_mb``: what one more session
     (open, draw, lasso) adds to the server's resident memory.
   Ratios within this run: ``drawn_ratio`` (200k / 10k, target <= 3) and ``lasso_ratio`` (target
   <= 2).
2. **Side by side**: the same 10k / 200k points (x, y, label) in two minimal apps
   (``benchmarks/map_apps``): Plotly as the Map draws it, and Apple's ``embedding-atlas``
   Streamlit widget (installed with ``pip install --no-deps --target DIR embedding-atlas``
   and given as ``--atlas-site DIR``; skipped without it): drawn time (from a cold server: the
   first script run included), bytes of the first load and of a rerun (a button), the server's
   resident memory after one session (the Plotly app imports ScanAtlas's ``ui``, and so torch),
   and any request the page could not make (the widget fetches DuckDB-WASM from a CDN).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


server_tools = _load("scanatlas_bench_server", REPO / "benchmarks" / "_server.py")
map_tools = _load("scanatlas_map_browser", REPO / "benchmarks" / "_map_browser.py")
VIEWPORT = {"width": 1400, "height": 900}
ENCODER = "synthetic-vectors"


def dataset_name(n: int) -> str:
    return f"synthetic-{n}"


def map_query(n: int) -> str:
    return f"dataset={dataset_name(n)}&encoder={ENCODER}&level=image&method=pca"


def make_datasets(cache: Path, sizes: list[int]) -> dict[int, float]:
    """Import each size's synthetic dataset into ``cache``; seconds each took."""
    os.environ["SCANATLAS_CACHE"] = str(cache)
    from core.datasets import dataset_path
    from core.ingest.synthetic import make_synthetic_dataset

    seconds = {}
    for n in sizes:
        started = time.perf_counter()
        make_synthetic_dataset(dataset_path(dataset_name(n)), n)
        seconds[n] = round(time.perf_counter() - started, 2)
    return seconds


def measure_map_page(browser, cache: Path, n: int, repeats: int, lasso_steps: int = 12) -> dict:
    with server_tools.StreamlitServer(cache=cache) as server:
        pid = server.process.pid
        rss_idle = map_tools.rss_mb(pid)
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        first_open = map_tools.open_map(page, server.base, map_query(n), n, timeout_s=600)
        map_tools.wait_clustered(page, 600_000)  # the later sessions find it stored
        map_tools.wait_idle(page, 600_000)
        context.close()
        rss_first = map_tools.rss_mb(pid)
        drawn, lassos, open_bytes = [], [], []
        for _ in range(repeats):
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            frames = map_tools.FrameCounter().attach(page)
            drawn.append(map_tools.open_map(page, server.base, map_query(n), n))
            map_tools.wait_idle(page)
            open_bytes.append(frames.received)
            lassos.append(map_tools.lasso(page, frames, steps=lasso_steps))
            rss_open = map_tools.rss_mb(pid)  # this session still open
            context.close()
        lasso = sorted(lassos, key=lambda found: found.seconds)[(len(lassos) - 1) // 2]  # the (lower) median
        return {
            "points": n,
            "first_open_s": round(first_open, 2),
            "drawn_s": round(statistics.median(drawn), 2),
            "drawn_runs_s": [round(s, 2) for s in drawn],
            "open_bytes": int(statistics.median(open_bytes)),
            "open_bytes_per_point": round(statistics.median(open_bytes) / n, 1),
            "lasso_s": round(lasso.seconds, 2),
            "lasso_runs_s": [round(found.seconds, 2) for found in lassos],
            "lasso_points_inside": lasso.expected,
            "lasso_points_selected": lasso.selected,
            "lasso_bytes": lasso.bytes_received,
            "lasso_selected_event_s": lasso.selected_event_s,
            "lasso_rerun_started_s": lasso.rerun_started_s,
            "lasso_rerun_started_runs_s": [found.rerun_started_s for found in lassos],
            "server_rss_idle_mb": round(rss_idle, 1),
            "server_rss_mb": round(rss_first, 1),
            "session_rss_mb": round(rss_open - rss_first, 1),
        }


def atlas_drawn(page, timeout_s: float) -> tuple[float | None, str]:
    """Seconds until the Embedding Atlas widget's canvas appears in its iframe, or None and why."""
    started = time.perf_counter()
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        for frame in page.frames:
            if frame == page.main_frame:
                continue
            try:
                if frame.evaluate("() => document.querySelectorAll('canvas').length") > 0:
                    return time.perf_counter() - started, "canvas shown"
            except Exception:  # noqa: BLE001 (a frame navigating away answers nothing)
                continue
        time.sleep(0.1)
    return None, f"no canvas after {timeout_s:.0f} s"


def measure_side_by_side(browser, tmp: Path, sizes: list[int], atlas_site: Path | None) -> dict:
    import numpy as np

    from core.demo import DEMO_GROUPS, synthetic_vectors

    results: dict[str, dict] = {"plotly": {}, "embedding_atlas": {}}
    for n in sizes:
        vectors, groups = synthetic_vectors(n, dim=32)
        centred = vectors - vectors.mean(axis=0)
        _, _, basis = np.linalg.svd(centred[:5000], full_matrices=False)
        xy = (centred @ basis[:2].T).astype(np.float32)
        points = tmp / f"points-{n}.npz"
        np.savez(points, x=xy[:, 0], y=xy[:, 1], label=np.array(DEMO_GROUPS)[groups])
        for kind in ("plotly", "embedding_atlas"):
            if kind == "embedding_atlas" and atlas_site is None:
                results[kind][str(n)] = {"skipped": "no --atlas-site"}
                continue
            env = {"SCANATLAS_BENCH_MAP_POINTS": str(points)}
            if kind == "embedding_atlas":
                env["PYTHONPATH"] = str(atlas_site)
            app_dir = REPO / "benchmarks" / "map_apps" / ("plotly" if kind == "plotly" else "atlas")
            cache = tmp / f"cache-{kind}-{n}"
            with server_tools.StreamlitServer(cache=cache, env=env, app_dir=app_dir) as server:
                context = browser.new_context(viewport=VIEWPORT)
                page = context.new_page()
                frames = map_tools.FrameCounter().attach(page)
                failed: list[str] = []
                page.on("requestfailed", lambda request, failed=failed: failed.append(
                    f"{request.url.split('?')[0][:120]} ({request.failure})"))
                started = time.perf_counter()
                page.goto(server.base)
                if kind == "plotly":
                    while map_tools.drawn_points(page) != n and time.perf_counter() - started < 120:
                        time.sleep(0.05)
                    drawn = time.perf_counter() - started if map_tools.drawn_points(page) == n else None
                    how = "every point drawn" if drawn else "not drawn in 120 s"
                else:
                    drawn, how = atlas_drawn(page, 60)
                map_tools.wait_idle(page)
                time.sleep(1.0)  # what the widget fetches after its first render
                open_bytes = frames.received
                before = frames.received
                rerun_started = time.perf_counter()
                page.get_by_role("button", name="Rerun").click()
                time.sleep(0.3)
                map_tools.wait_idle(page)
                rerun_s = time.perf_counter() - rerun_started
                results[kind][str(n)] = {
                    "drawn_s": None if drawn is None else round(drawn, 2), "drawn": how,
                    "open_bytes": open_bytes, "rerun_bytes": frames.received - before,
                    "rerun_s": round(rerun_s, 2),
                    # absolute: the Plotly app imports ScanAtlas's ui (and so torch), the other pandas
                    "server_rss_mb": round(map_tools.rss_mb(server.process.pid), 1),
                    "failed_requests": sorted(set(failed))[:5],
                }
                context.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 200_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--atlas-site", type=Path, default=None,
                        help="a folder holding embedding_atlas (pip install --no-deps --target DIR embedding-atlas)")
    parser.add_argument("--skip-side-by-side", action="store_true")
    parser.add_argument("--lasso-steps", type=int, default=12,
                        help="mouse moves per side of the lassoed square (each one may redraw the map)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "map.json",
                        help="the results file (default benchmarks/results/map.json)")
    args = parser.parse_args()
    small, large = args.sizes
    with tempfile.TemporaryDirectory(prefix="scanatlas-bench-map-") as scratch:
        tmp = Path(scratch)
        cache = tmp / "cache"
        import_seconds = make_datasets(cache, [small, large])
        with server_tools.chromium() as browser:
            page_results = {str(n): measure_map_page(browser, cache, n, args.repeats, args.lasso_steps)
                            for n in (small, large)}
            side = None if args.skip_side_by_side else measure_side_by_side(browser, tmp, [small, large], args.atlas_site)
    out = args.out
    if side is None and out.is_file():  # keep the last side-by-side measurement, marked as such
        side = json.loads(out.read_text()).get("side_by_side")
        if side is not None:
            side = {**side, "note": "from an earlier run of this script (--skip-side-by-side)"}
    a, b = page_results[str(small)], page_results[str(large)]
    results = {
        "what": "Map page (Plotly scattergl, float32 typed arrays, one shared cached figure) at two sizes in "
                "headless Chromium (SwiftShader WebGL), synthetic vectors imported as a dataset, PCA map",
        "machine": f"{os.cpu_count()} cores, shared; times in seconds",
        "import_s": {str(n): s for n, s in import_seconds.items()},
        "map_page": page_results,
        "drawn_ratio": round(b["drawn_s"] / a["drawn_s"], 2),
        "drawn_ratio_target": 3.0,
        "lasso_ratio": round(b["lasso_s"] / a["lasso_s"], 2),
        "lasso_ratio_target": 2.0,
        "session_rss_mb_target": 300,
        "side_by_side": side,
    }
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
