"""Maps, clusterings, k sweeps, cluster drivers and neighbour indexes of large cohorts,
computed in a worker process.

The pages run these through ``core.jobs.run_in_process`` when a cohort has at least
``PROCESS_MIN_ROWS`` rows (below that the start-up of a worker, measured at 4-16 s on the
loaded 2-core machine with UMAP's import, costs more than the page's GIL gains). What crosses to
the worker is small: a path, keys and parameters. The cohort's matrix is written once per cohort
(:func:`write_matrix`: float32 with NaN rows where no image embedded, the values
``Cohort.masked`` holds, in half the bytes) under ``cache/jobs/inputs`` and memory-mapped by
each worker (:func:`load_matrix`); projections and clusterings cast it exactly as they cast
``Cohort.masked()``, so a run is the same whichever process computed it.

Results go where the pages read them: projections and neighbour indexes straight into the run
store (kinds ``projection`` and ``neighbour-index``); a clustering comes back to the job's
thread, which stores it with its per-cluster summary (``core.clustering.runs.save_clustering``:
the worker never needs the cohort's table); so do a k sweep's scores and a clustering's drivers
(``save_sweep``, ``save_drivers``; the drivers' worker gets the cohort's metadata columns and the
labels, not the matrix). Progress is reported in stages (each k of a sweep, each fold of the
drivers' cross-validation), and during a fit that reports nothing itself as elapsed time
against an estimate from earlier runs ("about").

A primitive module: it takes the cohort as any object with ``key``, ``X`` (or ``features``) and
``has_vector``, and imports no task module.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import atomic_write, is_temp
from core.runs import RunStore, run_key

# Cohorts with at least this many rows run their maps, clusterings and index builds in a worker
# process (module docstring); ui/data.py reads it (tests lower it).
PROCESS_MIN_ROWS = 20_000
# Matrix files kept under cache/jobs/inputs (400 MB each for 200,000 x 512); older ones go.
KEEP_INPUTS = 4
INDEX_KIND, INDEX_VERSION = "neighbour-index", "1"
_MATRIX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}-[0-9a-f]{8,64}(\.[a-z0-9_-]{1,32})?$")
_CHUNK_ROWS = 16_384

Progress = Callable[[float, str], None]


def inputs_folder() -> Path:
    from core.settings import cache_root

    return cache_root() / "jobs" / "inputs"


def matrix_path(cohort_key: str, block: str | None = None, *, folder: Path | None = None) -> Path:
    """Where :func:`write_matrix` keeps cohort ``cohort_key``'s matrix (or one block of it).
    Raises ValueError for a key or block that is not a plain name (never a path)."""
    name = cohort_key if block is None else f"{cohort_key}.{block}"
    if not isinstance(name, str) or not _MATRIX_NAME.match(name):
        raise ValueError(f"{name!r} is not a cohort key (expected LEVEL-HEX, e.g. patient-3f2a...)")
    return (folder or inputs_folder()) / f"{name}.npy"


def write_matrix(cohort: Any, block: str | None = None, *, folder: Path | None = None) -> Path:
    """Write ``cohort``'s matrix (``block`` of it, or all of ``X``) as float32 with NaN rows
    where ``has_vector`` is False, once: an existing file of the right shape is kept. Written in
    chunks (no full copy in the page process) through ``core.atomic.atomic_write``."""
    path = matrix_path(cohort.key, block, folder=folder)
    values = cohort.X if block is None else cohort.features.block(block)
    has_vector = np.asarray(cohort.has_vector, dtype=bool)
    shape = (int(values.shape[0]), int(values.shape[1]))
    if path.is_file():
        try:
            if np.load(path, mmap_mode="r", allow_pickle=False).shape == shape:
                os.utime(path)  # newest-used, for the clean-up below
                return path
        except (OSError, ValueError):
            pass  # damaged: written again

    def write(handle: Any) -> None:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                     "fortran_order": False, "shape": shape})
        for start in range(0, shape[0], _CHUNK_ROWS):
            chunk = np.array(values[start:start + _CHUNK_ROWS], dtype=np.float32)
            chunk[~has_vector[start:start + _CHUNK_ROWS]] = np.nan
            handle.write(np.ascontiguousarray(chunk).tobytes())

    atomic_write(path, write)
    _clean(path.parent, keep=path)
    return path


def _clean(folder: Path, *, keep: Path) -> None:
    """Remove all but the ``KEEP_INPUTS`` newest matrix files. A worker that has one open keeps
    reading it (an unlinked file lives on while open)."""
    resolved = folder.resolve()
    files = sorted((p for p in folder.glob("*.npy")
                    if not is_temp(p) and p != keep and not p.is_symlink() and p.resolve().parent == resolved),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[KEEP_INPUTS - 1:]:
        old.unlink(missing_ok=True)


def load_matrix(path: str | os.PathLike[str]) -> np.ndarray:
    """A matrix :func:`write_matrix` wrote into :func:`inputs_folder`, memory-mapped read-only
    (no pickle). Raises ValueError for any other path, or a file that is not a 2-D float32
    array."""
    path = Path(path)
    if (path.suffix != ".npy" or not _MATRIX_NAME.match(path.stem)
            or path.resolve().parent != inputs_folder().resolve()):
        raise ValueError(f"{path} is not a cohort matrix file of {inputs_folder()}")
    matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    if matrix.ndim != 2 or matrix.dtype != np.float32:
        raise ValueError(f"{path.name}: expected a 2-D float32 matrix, got {matrix.dtype} "
                         f"{matrix.shape}")
    return matrix


@contextlib.contextmanager
def _ticking(progress: Progress, start: float, end: float, seconds: float, label: str
             ) -> Iterator[None]:
    """While the body runs, report ``start`` -> ``end`` once a second by elapsed time against
    the estimate ``seconds`` (never past 95% of the way: an estimate is not a measurement)."""
    stop = threading.Event()
    began = time.monotonic()

    def tick() -> None:
        while not stop.wait(1.0):
            elapsed = time.monotonic() - began
            share = min(0.95, elapsed / max(seconds, 1.0))
            left = max(0.0, seconds - elapsed)
            when = f"about {left:.0f} s left" if left >= 1 else "taking longer than estimated"
            progress(start + (end - start) * share, f"{label}: {elapsed:.0f} s, {when}")

    thread = threading.Thread(target=tick, daemon=True, name="scanatlas-progress")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)


def project_matrix(path: str, matrix_key: str, method: str, *, params: dict[str, Any],
                   dataset: str | None, estimate_s: float, progress: Progress) -> dict[str, Any]:
    """Worker: the ``method`` map of the matrix at ``path`` (named ``matrix_key``), computed and
    stored by ``core.projection.compute_or_load`` (loaded if another process stored it first).
    Returns ``{"key", "seconds", "pid"}``; the page loads the coordinates from the run store."""
    from core.projection import compute_or_load

    progress(0.02, f"worker process {os.getpid()}: reading the matrix")
    matrix = load_matrix(path)
    started = time.monotonic()
    label = f"{method.upper() if method != 'tsne' else 't-SNE'} of {len(matrix)} rows"
    with _ticking(progress, 0.05, 0.98, estimate_s, label):
        result = compute_or_load(matrix, matrix_key, method, dataset=dataset, **dict(params))
    progress(1.0, f"{label}: stored")
    return {"key": result.key, "seconds": round(time.monotonic() - started, 2), "pid": os.getpid()}


def cluster_matrix(path: str, algorithm: str, *, params: dict[str, Any], random_state: int,
                   estimate_s: float, progress: Progress) -> tuple[Any, float, int]:
    """Worker: ``core.clustering.cluster`` of the matrix at ``path``. Returns ``(Clustering,
    seconds, pid)``; the job's thread stores it with the cohort's table
    (``core.clustering.runs.save_clustering``)."""
    from core.clustering import cluster

    progress(0.02, f"worker process {os.getpid()}: reading the matrix")
    matrix = load_matrix(path)
    started = time.monotonic()
    label = f"{algorithm} of {len(matrix)} rows"
    with _ticking(progress, 0.05, 0.9, estimate_s, label):
        result = cluster(matrix, algorithm=algorithm, random_state=random_state, **dict(params))
    progress(0.9, f"{label}: storing")
    return result, round(time.monotonic() - started, 2), os.getpid()


def sweep_matrix(path: str, algorithm: str, *, ks: list[int], random_state: int,
                 progress: Progress) -> tuple[Any, float, int]:
    """Worker: ``core.clustering.k_sweep`` of the matrix at ``path`` (its NaN rows left out, as
    every clustering leaves them), reporting after each k. Returns ``(scores, seconds, pid)``;
    the job's thread stores the scores (``core.clustering.runs.save_sweep``)."""
    from core.clustering import k_sweep

    progress(0.01, f"worker process {os.getpid()}: reading the matrix")
    matrix = load_matrix(path)
    started = time.monotonic()
    label = f"{algorithm} k sweep of {len(matrix)} rows"

    def each_k(fraction: float, message: str) -> None:
        progress(0.02 + 0.96 * fraction, f"{label}: {message}")

    progress(0.02, f"{label}: k = {ks[0]} first" if ks else label)
    scores = k_sweep(matrix, algorithm=algorithm, ks=ks, random_state=random_state, progress=each_k)
    return scores, round(time.monotonic() - started, 2), os.getpid()


def drivers_of_labels(metadata: Any, labels: np.ndarray, *, progress: Progress) -> tuple[Any, float, int]:
    """Worker: ``core.explain.cluster_drivers`` (a random forest and its SHAP values) of one
    clustering's ``labels`` from the cohort's ``metadata`` table, reporting each step. Returns
    ``(drivers, seconds, pid)``; the job's thread stores them (``core.clustering.runs.save_drivers``)."""
    from core.explain import cluster_drivers

    progress(0.01, f"worker process {os.getpid()}: {len(metadata)} rows, {metadata.shape[1]} metadata columns")
    started = time.monotonic()
    drivers = cluster_drivers(metadata, labels, progress=progress)
    return drivers, round(time.monotonic() - started, 2), os.getpid()


def index_key(cohort_key: str, block: str | None, metric: str) -> str:
    """Run key of the neighbour index of cohort ``cohort_key`` (``block`` of it) for ``metric``."""
    from core.explain.similar import HNSW_NEIGHBOURS

    return run_key(INDEX_KIND, inputs={"matrix": cohort_key, "block": block},
                   config={"index": "hnsw", "metric": metric, "m": HNSW_NEIGHBOURS},
                   version=INDEX_VERSION)


def build_index(path: str, key: str, *, metric: str, dataset: str | None, estimate_s: float,
                progress: Progress) -> dict[str, Any]:
    """Worker: a faiss HNSW index over the matrix at ``path``, stored as run ``key`` (the
    serialized index, read back by :func:`load_index`). Returns ``{"key", "seconds", "pid"}``."""
    from core.explain.similar import SimilarCases

    progress(0.02, f"worker process {os.getpid()}: reading the matrix")
    matrix = load_matrix(path)
    started = time.monotonic()
    label = f"neighbour index of {len(matrix)} rows"
    with _ticking(progress, 0.05, 0.9, estimate_s, label):
        search = SimilarCases(metric, index="hnsw").fit(matrix)
    progress(0.9, f"{label}: storing")
    seconds = round(time.monotonic() - started, 2)
    RunStore().save(INDEX_KIND, key, version=INDEX_VERSION, dataset=dataset,
                    config={"index": "hnsw", "metric": metric}, inputs={"matrix": Path(path).stem},
                    payload={"index": search.serialized_index()},
                    summary={"n_samples": len(matrix), "seconds": seconds})
    return {"key": key, "seconds": seconds, "pid": os.getpid()}


def load_index(key: str, vectors: np.ndarray, *, metric: str,
               store: RunStore | None = None) -> Any | None:
    """The stored neighbour index ``key`` over ``vectors`` (the matrix it was built from) as a
    fitted ``SimilarCases``, or None when it is not stored (or was built over other rows)."""
    from core.explain.similar import SimilarCases

    run = (store or RunStore()).load(INDEX_KIND, key, version=INDEX_VERSION)
    if run is None or run.summary.get("n_samples") != len(vectors):
        return None
    buffer = np.load(run.path("index"), mmap_mode="r", allow_pickle=False)
    return SimilarCases(metric, index="hnsw").fit_serialized(vectors, buffer)


def estimate_seconds(kind: str, n_rows: int, *, store: RunStore | None = None,
                     default_per_row: float = 1e-3) -> float:
    """About how long a run of ``kind`` takes on ``n_rows`` rows: the newest stored run of that
    kind that recorded its seconds, scaled by rows; else ``default_per_row`` seconds a row.
    For progress messages only."""
    for run in (store or RunStore()).runs(kind=kind):
        seconds, n = run.summary.get("seconds"), run.summary.get("n_samples")
        if isinstance(seconds, int | float) and n:
            return max(1.0, float(seconds) * n_rows / float(n))
    return max(5.0, n_rows * default_per_row)
