"""Projection, clustering and neighbours at archive scale (issue 12, goal 4).

    .venv/bin/python benchmarks/bench_scale.py [--sizes 10000,50000,200000] [--dim 512]
        [--tasks pca,umap,kmeans,minibatch-kmeans,hdbscan,hnsw,nndescent,exact-nn,tsne,opentsne]
        [--timeout 900] [--out benchmarks/results/scale.json]

Input: ``core.demo.synthetic_vectors`` (planted groups on curved 8-D manifolds plus noise; not
an encoder's output, but the shape and size of one: ``--dim`` 512 is resnet18's width). Each
(task, size) runs in its own child process, so that its peak memory (``ru_maxrss``) is its own;
the record holds the seconds of the task itself (data generation excluded), the peak resident
memory of the child, the memory the input alone needed (measured before the task), and a
quality figure: adjusted Rand index against the planted groups for clusterings, recall@10
against the exact search for the approximate neighbour indexes (100 queries), the fraction of
10-nearest neighbours kept for maps (trustworthiness-like, 500 rows). The growth exponent of a
task is the least-squares slope of log(seconds) on log(rows): 1 is linear, 2 quadratic.
``cpu_s`` is the CPU time of the task (all its threads): on a machine shared with other work
(and under ``nice``) it says how much work a task is when wall seconds mostly say how long it
waited for a core.

Tasks: ``pca``, ``umap`` (PCA pre-reduction 512 -> 50 first), ``tsne`` (openTSNE above 20k rows)
through ``core.projection.project``; ``opentsne``: the same PCA pre-reduction then openTSNE at
every size (``core.projection._fit_opentsne``), so that its growth exponent compares one
implementation;
``kmeans``, ``minibatch-kmeans``, ``hdbscan`` (sampled above 20k rows) through
``core.clustering.cluster``; ``hnsw`` (faiss), ``nndescent`` (pynndescent) and ``exact-nn``
(brute force) through ``core.explain.similar.SimilarCases``: index build plus 100 queries.
A child that runs past ``--timeout`` is stopped and recorded as such, never left out. Not a
test: it asserts nothing, it measures.

Warm-up. umap, pynndescent (numba) compile their functions on first use, a minute or more on 2
cores, and cache them on disk only per signature; openTSNE loads its FFT code. So for ``umap``,
``nndescent`` and ``opentsne`` the child first runs the same work on a ``WARMUP_ROWS``-row
slice of the same dtype, untimed (its seconds are recorded as ``warmup_s``;
its memory is part of ``peak_rss_mb``, small next to the task's own). Without it the 10k row of
an earlier run held the compile time (UMAP 10k slower than 50k).

Results merge into ``--out``: the tasks run now replace their own entries, every other task's
entry stays as it was, and ``runs_measured_at`` says when each group of tasks was measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TASKS = ("pca", "umap", "kmeans", "minibatch-kmeans", "hdbscan", "hnsw", "nndescent",
                 "exact-nn")
N_GROUPS = 4
N_QUERIES = 100
# Rows of the untimed warm-up run (above umap's 4,096-row switch to its approximate neighbours).
WARMUP_ROWS = 5_000
WARMUP_TASKS = ("umap", "nndescent", "opentsne")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _neighbour_overlap(X, coords, rows: int = 500, k: int = 10) -> float:
    """Mean fraction of each sampled row's 10 nearest neighbours (in X) kept on the map."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    sample = rng.choice(len(X), min(rows, len(X)), replace=False)
    high = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X[sample], return_distance=False)
    low = NearestNeighbors(n_neighbors=k + 1).fit(coords).kneighbors(coords[sample],
                                                                     return_distance=False)
    return float(np.mean([len(set(h[1:]) & set(lo[1:])) / k for h, lo in zip(high, low,
                                                                             strict=True)]))


def _opentsne(X, notes: list[str]):
    """PCA pre-reduction and openTSNE, as ``core.projection.project`` runs t-SNE above 20k rows,
    at any size."""
    import numpy as np

    from core.projection import LARGE_ROWS, _fit_opentsne, _pre_reduce, resolve_params

    X = X.astype(np.float32 if len(X) > LARGE_ROWS else np.float64, copy=False)
    params = resolve_params("tsne")
    data = _pre_reduce(X, params["pre_pca_dims"], params["random_state"], notes)
    return _fit_opentsne(data, params, notes)


def run_one(task: str, n_rows: int, dim: int) -> dict:
    """Run one task on ``n_rows`` synthetic rows in this process (after an untimed warm-up on
    ``WARMUP_ROWS`` rows for the tasks that compile code); returns its record."""
    from core.demo import synthetic_vectors

    X, groups = synthetic_vectors(n_rows, dim=dim, n_groups=N_GROUPS, seed=0)
    baseline = _rss_mb()
    record: dict = {"task": task, "rows": n_rows, "dim": dim, "input_mb": round(X.nbytes / 2**20)}
    if task in WARMUP_TASKS:
        started = time.perf_counter()
        _warm_up(task, X, n_rows)
        record["warmup_s"] = round(time.perf_counter() - started, 1)
        record["warmup_rows"] = WARMUP_ROWS
    _measure(task, X, groups, record)
    record["seconds"] = round(record["seconds"], 3)
    record["baseline_rss_mb"] = round(baseline)
    record["peak_rss_mb"] = round(_rss_mb())
    return record


def _warm_up(task: str, X, n_rows: int) -> None:
    """Run what ``task`` compiles on a ``WARMUP_ROWS``-row slice, untimed. numba compiles per
    argument type, so UMAP is warmed on the dtype the timed run hands it (float32 above
    ``LARGE_ROWS``, float64 below; 50 columns, as after the pre-reduction)."""
    import numpy as np

    from core.projection import LARGE_ROWS, METHOD_DEFAULTS, _estimator_class

    warm = X[:WARMUP_ROWS]
    if task == "umap":
        dtype = np.float32 if n_rows > LARGE_ROWS else np.float64
        _estimator_class("umap")(n_jobs=1, random_state=0, **METHOD_DEFAULTS["umap"]
                                 ).fit_transform(np.ascontiguousarray(warm[:, :50], dtype=dtype))
    elif task == "nndescent":
        from core.explain.similar import SimilarCases

        SimilarCases("cosine", index="nndescent").fit(warm).query(0, k=10)
    else:
        _opentsne(warm, [])


def _measure(task: str, X, groups, record: dict) -> None:
    """Run ``task`` on ``X``, filling ``record`` with its seconds and quality figures."""
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    n_rows = len(X)
    if task in ("pca", "umap", "tsne", "opentsne"):
        from core.projection import project

        if task == "umap":
            from core.projection import _estimator_class

            _estimator_class("umap")  # numba start-up is not the fit
        notes: list[str] = []
        started, cpu_started = time.perf_counter(), time.process_time()
        if task == "opentsne":
            coords = _opentsne(X, notes)
        else:
            result = project(X, method=task)
            coords, notes = result.coords, result.notes
        record["seconds"] = time.perf_counter() - started
        record["cpu_s"] = round(time.process_time() - cpu_started, 1)
        record["notes"] = notes
        record["neighbours_kept"] = round(_neighbour_overlap(X, coords), 3)
    elif task in ("kmeans", "minibatch-kmeans", "hdbscan"):
        from core.clustering import cluster

        params = {"min_cluster_size": 50} if task == "hdbscan" else {"k": N_GROUPS}
        started, cpu_started = time.perf_counter(), time.process_time()
        result = cluster(X, algorithm=task, **params)
        record["seconds"] = time.perf_counter() - started
        record["cpu_s"] = round(time.process_time() - cpu_started, 1)
        record["n_clusters"] = result.n_clusters
        record["ari_vs_planted"] = round(float(adjusted_rand_score(groups, result.labels)), 3)
        record["notes"] = result.notes
    else:
        from core.explain.similar import SimilarCases

        index = {"hnsw": "hnsw", "nndescent": "nndescent", "exact-nn": "exact"}[task]
        queries = np.random.default_rng(1).choice(n_rows, N_QUERIES, replace=False)
        started, cpu_started = time.perf_counter(), time.process_time()
        search = SimilarCases("cosine", index=index).fit(X)
        built = time.perf_counter()
        answers = [set(search.query(int(row), k=10)["row"]) for row in queries]
        done = time.perf_counter()
        record["seconds"] = done - started
        record["cpu_s"] = round(time.process_time() - cpu_started, 1)
        record["build_s"] = round(built - started, 3)
        record["query_ms"] = round((done - built) / N_QUERIES * 1000, 2)
        if index != "exact":
            # The exact answer, computed directly (unit vectors, one matrix product per query).
            unit = X / np.linalg.norm(X, axis=1, keepdims=True)
            hits = 0
            for row, answer in zip(queries, answers, strict=True):
                similarity = unit @ unit[row]
                similarity[row] = -np.inf
                hits += len(answer & set(np.argpartition(-similarity, 10)[:10].tolist()))
            record["recall_at_10"] = round(hits / (10 * N_QUERIES), 3)


def _child(task: str, n_rows: int, dim: int, timeout: float) -> dict:
    command = [sys.executable, __file__, "--child", task, str(n_rows), str(dim)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return {"task": task, "rows": n_rows, "dim": dim, "timed_out_after_s": timeout}
    if done.returncode != 0:
        return {"task": task, "rows": n_rows, "dim": dim, "error": done.stderr[-2000:],
                "wall_s": round(time.perf_counter() - started, 1)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def growth_exponent(records: list[dict]) -> float | None:
    """Least-squares slope of log(seconds) on log(rows) over the records that finished."""
    points = [(math.log(r["rows"]), math.log(max(r["seconds"], 1e-3))) for r in records
              if "seconds" in r]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
        (x - mean_x) ** 2 for x, _ in points)
    return round(slope, 2)


def _write_merged(out: Path, results: dict[str, dict], dim: int, sizes: list[int], started_at: str,
                  load: list[float], group: str) -> None:
    """Write ``results`` into ``out``: these tasks' entries replaced, every other one kept;
    ``group`` names this run's tasks in ``runs_measured_at``."""
    try:
        report = json.loads(out.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    report.update({
        "what": "issue 12 goal 4: projection, clustering and neighbours on synthetic vectors",
        "input": f"core.demo.synthetic_vectors(n, dim={dim}, n_groups={N_GROUPS}, seed=0)",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    })
    report["sizes"] = sorted({*report.get("sizes", []), *sizes})
    report.setdefault("tasks", {}).update(results)
    # Earlier groups keep their time, less the tasks measured again now.
    measured = {}
    for names, when in report.get("runs_measured_at", {}).items():
        left = ", ".join(n for n in names.split(", ") if n not in results)
        if left and names != group:
            measured[left] = when
    report["runs_measured_at"] = {**measured, group: started_at}
    loads = report.get("load_average_1min_before_after", {})
    if not isinstance(loads, dict):  # the first file's single pair
        loads = {"first run": loads}
    report["load_average_1min_before_after"] = {**loads, group: load}
    out.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "scale.json"))
    parser.add_argument("--child", nargs=3, metavar=("TASK", "ROWS", "DIM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        task, n_rows, dim = args.child
        print(json.dumps(run_one(task, int(n_rows), int(dim))))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    tasks = [t for t in args.tasks.split(",") if t]
    load_before = os.getloadavg()[0]
    results: dict[str, dict] = {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
    for task in tasks:
        records = []
        for n_rows in sizes:
            load = os.getloadavg()[0]
            record = _child(task, n_rows, args.dim, args.timeout)
            record["load_average_1min_before"] = round(load, 2)
            records.append(record)
            print(json.dumps(record), flush=True)
            results[task] = {"runs": records, "growth_exponent": growth_exponent(records)}
            # Written after every run, so that a long run that is stopped keeps what it measured.
            _write_merged(out, results, args.dim, sizes, started_at,
                          [round(load_before, 2), round(os.getloadavg()[0], 2)], ", ".join(tasks))
            if "seconds" not in record:
                break  # a larger size would not finish either
    for task, entry in results.items():
        times = ", ".join(f"{r['rows']}: {r['seconds']:.1f} s / {r['peak_rss_mb']} MB"
                          if "seconds" in r else f"{r['rows']}: not finished"
                          for r in entry["runs"])
        print(f"{task:18s} {times}; exponent {entry['growth_exponent']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
