"""A grid of encoders x clustering algorithms, each scored against the true labels."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import atomic_write
from core.clustering import ALGORITHMS, cluster, get_algorithm
from core.drift.metrics import _is_missing, drift_report

DEFAULT_GRID_ALGORITHMS = ("kmeans", "gmm", "agglomerative", "spectral", "birch", "hdbscan")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"


def labels_filename(encoder: str, algorithm: str) -> str:
    """File name of one grid combination's per-row labels, as ``drift_grid`` writes it."""
    return f"labels_{_safe_name(encoder)}__{_safe_name(algorithm)}.csv"


def drift_grid(
    feature_sets: Mapping[str, np.ndarray],
    labels_true: Sequence[Any],
    *,
    algorithms: Sequence[str] = DEFAULT_GRID_ALGORITHMS,
    n_clusters: int | None = None,
    algorithm_params: Mapping[str, Mapping[str, Any]] | None = None,
    row_ids: Sequence[Any] | None = None,
    out_dir: str | Path | None = None,
    labels_out: dict[tuple[str, str], np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
    random_state: int = 0,
) -> pd.DataFrame:
    """Cluster every feature set with every algorithm and score each against the true labels.

    feature_sets : {encoder name: ndarray of shape (n_samples, n_features)}, rows aligned with
    ``labels_true`` (array-like of shape (n_samples,)). All rows are clustered (NaN rows get -1);
    drift is scored on rows with a true label.
    n_clusters : k for algorithms that take one (default: number of distinct true labels);
    density algorithms find their own. algorithm_params : extra parameters per algorithm.
    out_dir : when given, writes ``grid.csv`` and ``labels_<encoder>__<algorithm>.csv``
    (row, row_id, label_true, cluster, mapped_label) per successful combination.
    labels_out : when given, receives ``{(encoder, algorithm): cluster labels}`` per successful
    combination (kept in memory, e.g. to store the study as a run).
    progress : called as ``progress(done, total)`` after each combination.

    Returns one row per encoder x algorithm: encoder, algorithm, n_clusters_requested,
    n_clusters, n_noise, label_change_pct, ari, nmi, purity, silhouette, seconds, error. A
    combination that fails gets its message in ``error`` and NaN scores; the grid goes on.
    Raises ValueError (before any work) for no feature sets, an unknown algorithm, no labelled
    row, ``n_clusters < 2`` or ``row_ids`` of the wrong length.
    """
    if not feature_sets:
        raise ValueError("feature_sets is empty; give at least one {name: matrix}")
    for name in algorithms:
        get_algorithm(name)
    labels_true = np.asarray(labels_true, dtype=object)
    labelled = [v for v in labels_true if not _is_missing(v)]
    if not labelled:
        raise ValueError(f"no row of {len(labels_true)} has a true label; nothing to compare")
    if n_clusters is None:
        n_clusters = len(set(labelled))
    if n_clusters < 2:
        raise ValueError(f"n_clusters={n_clusters} must be >= 2")
    if row_ids is not None and len(row_ids) != len(labels_true):
        raise ValueError(f"row_ids has {len(row_ids)} entries; expected {len(labels_true)}")
    algorithm_params = algorithm_params or {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    total = len(feature_sets) * len(algorithms)
    rows = []
    done = 0
    for encoder, X in feature_sets.items():
        for algorithm in algorithms:
            row: dict[str, Any] = {
                "encoder": encoder,
                "algorithm": algorithm,
                "n_clusters_requested": np.nan,
                "n_clusters": np.nan,
                "n_noise": np.nan,
                "label_change_pct": np.nan,
                "ari": np.nan,
                "nmi": np.nan,
                "purity": np.nan,
                "silhouette": np.nan,
                "seconds": np.nan,
                "error": "",
            }
            started = time.perf_counter()
            try:
                params = dict(algorithm_params.get(algorithm, {}))
                if ALGORITHMS[algorithm].takes_k:
                    params.setdefault("k", n_clusters)
                    row["n_clusters_requested"] = params["k"]
                X = np.asarray(X)
                if X.ndim != 2 or X.shape[0] != len(labels_true):
                    raise ValueError(
                        f"feature set has shape {X.shape}; expected ({len(labels_true)}, n_features)"
                    )
                result = cluster(X, algorithm=algorithm, random_state=random_state, **params)
                report = drift_report(labels_true, result.labels)
                row.update(
                    n_clusters=result.n_clusters,
                    n_noise=result.n_noise + result.n_excluded,
                    label_change_pct=report.label_change_pct,
                    ari=report.ari,
                    nmi=report.nmi,
                    purity=report.purity,
                    silhouette=result.scores["silhouette"],
                )
                if labels_out is not None:
                    labels_out[(encoder, algorithm)] = np.asarray(result.labels, dtype=np.int64)
                if out is not None:
                    per_row = pd.DataFrame(
                        {
                            "row": np.arange(len(labels_true)),
                            "row_id": list(row_ids)
                            if row_ids is not None
                            else np.arange(len(labels_true)),
                            "label_true": labels_true,
                            "cluster": result.labels,
                            "mapped_label": report.mapped_labels,
                        }
                    )
                    name = labels_filename(encoder, algorithm)
                    atomic_write(out / name, lambda fh, frame=per_row: frame.to_csv(fh, index=False))
            except Exception as error:  # one bad combination must not sink the whole grid
                row["error"] = f"{type(error).__name__}: {error}"
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
            done += 1
            if progress is not None:
                progress(done, total)
    grid = pd.DataFrame(rows)
    if out is not None:
        atomic_write(out / "grid.csv", lambda fh: grid.to_csv(fh, index=False))
    return grid
