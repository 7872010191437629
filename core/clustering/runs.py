"""Clusterings of a cohort, k sweeps and cluster drivers as named runs in the run store.

Each function computes once and stores its result under a key derived from the cohort key (or
the clustering key), the parameters and a version; a second call (any session, any process,
after a restart) loads it. Pages and the command line call these, never the algorithms
directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.clustering.algorithms import Clustering, cluster, get_algorithm, k_sweep, resolve_params
from core.clustering.summary import cluster_summary
from core.cohort import Cohort, short_hash
from core.columns import metadata_columns
from core.runs import Run, RunStore, run_key

CLUSTERING_KIND, CLUSTERING_VERSION = "clustering", "2"
# Clustering keys name label mappings in the label database, so their form never changes:
# ``f"{algorithm}-{hash}"`` over (cohort key, algorithm, params, random_state, 1).
_KEY_FORMAT = 1
SWEEP_KIND, SWEEP_VERSION = "k-sweep", "1"
DRIVERS_KIND, DRIVERS_VERSION = "cluster-drivers", "1"
SWEEP_SCORES = ("silhouette", "davies_bouldin", "calinski_harabasz")


def clustering_key(cohort_key: str, algorithm: str, params: Mapping[str, Any], random_state: int) -> str:
    """Key of the clustering of cohort ``cohort_key`` with ``algorithm`` and full ``params``
    (also the key its cluster -> disease mappings are saved under)."""
    return f"{algorithm}-{short_hash(cohort_key, algorithm, dict(params), random_state, _KEY_FORMAT)}"


def _optional(run: Run, name: str) -> np.ndarray | None:
    return run.load(name) if run.has(name) else None


def _clustering_from_run(run: Run) -> Clustering:
    scores = run.load("scores")
    return Clustering(
        labels=run.load("labels"),
        algorithm=run.config["algorithm"],
        params=run.config["params"],
        n_clusters=int(scores["n_clusters"]),
        scores={k: float("nan") if v is None else float(v) for k, v in scores["scores"].items()},
        centers=_optional(run, "centers"),
        medoid_indices=_optional(run, "medoid_indices"),
        membership=_optional(run, "membership"),
        inertia=float("nan") if scores["inertia"] is None else float(scores["inertia"]),
        n_noise=int(scores["n_noise"]),
        n_excluded=int(scores["n_excluded"]),
        standardized=bool(scores["standardized"]),
        notes=list(scores["notes"]),
    )


def _clustering_payload(result: Clustering, table: pd.DataFrame) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "labels": np.asarray(result.labels, dtype=np.int64),
        "scores": {
            "n_clusters": result.n_clusters, "scores": result.scores, "inertia": result.inertia,
            "n_noise": result.n_noise, "n_excluded": result.n_excluded,
            "standardized": result.standardized, "notes": result.notes,
        },
        # Per-cluster metadata, computed once with the run rather than on every page rerun.
        "summary": cluster_summary(result.labels, table),
    }
    for name in ("centers", "medoid_indices", "membership"):
        value = getattr(result, name)
        if value is not None:
            payload[name] = np.asarray(value)
    return payload


def cluster_cohort(
    cohort: Cohort,
    *,
    algorithm: str = "kmeans",
    random_state: int = 0,
    store: RunStore | None = None,
    dataset: str | None = None,
    **params: Any,
) -> tuple[str, Clustering]:
    """The named clustering of ``cohort``: loaded when stored, else computed and stored.

    Rows without any image vector are left out of the fit and labelled -1.
    Returns ``(key, clustering)``; the key is what cluster -> disease mappings are saved under.
    Raises what :func:`core.clustering.cluster` raises for bad parameters.
    """
    stored = stored_clustering(cohort, algorithm=algorithm, random_state=random_state, store=store,
                               **params)
    if stored is not None:
        return stored
    resolved = resolve_params(algorithm, **params)
    started = time.monotonic()
    result = cluster(cohort.masked(), algorithm=algorithm, random_state=random_state, **resolved)
    key = save_clustering(cohort, result, random_state=random_state, store=store, dataset=dataset,
                          seconds=time.monotonic() - started)
    return key, result


def stored_clustering(cohort: Cohort, *, algorithm: str = "kmeans", random_state: int = 0,
                      store: RunStore | None = None, **params: Any) -> tuple[str, Clustering] | None:
    """``(key, clustering)`` when :func:`cluster_cohort` would load it, else None (computes
    nothing). Raises ValueError for bad parameters, as :func:`cluster_cohort`."""
    resolved = resolve_params(algorithm, **params)
    key = clustering_key(cohort.key, algorithm, resolved, random_state)
    stored = (store or RunStore()).load(CLUSTERING_KIND, key, version=CLUSTERING_VERSION)
    if stored is not None and len(stored.load("labels")) == len(cohort.table):
        return key, _clustering_from_run(stored)
    return None


def save_clustering(cohort: Cohort, result: Clustering, *, random_state: int = 0,
                    store: RunStore | None = None, dataset: str | None = None,
                    seconds: float | None = None) -> str:
    """Store ``result`` (a clustering of ``cohort``'s rows, e.g. computed in a worker process)
    as the named run :func:`cluster_cohort` loads, with its per-cluster summary; returns its key.
    ``seconds``: how long the fit took (kept in the summary for progress estimates)."""
    if len(result.labels) != len(cohort.table):
        raise ValueError(f"clustering has {len(result.labels)} labels but the cohort has "
                         f"{len(cohort.table)} rows")
    key = clustering_key(cohort.key, result.algorithm, result.params, random_state)
    summary = {"algorithm": result.algorithm, "n_clusters": result.n_clusters, "level": cohort.level,
               "silhouette": round(float(result.scores.get("silhouette", np.nan)), 4),
               "n_samples": len(cohort.table)}
    if seconds is not None:
        summary["seconds"] = round(float(seconds), 2)
    (store or RunStore()).save(
        CLUSTERING_KIND, key, version=CLUSTERING_VERSION, dataset=dataset,
        config={"algorithm": result.algorithm, "params": result.params, "random_state": random_state},
        inputs={"cohort": cohort.key}, payload=_clustering_payload(result, cohort.table),
        summary=summary,
    )
    return key


def clustering_summary(key: str, *, store: RunStore | None = None) -> pd.DataFrame:
    """The per-cluster summary stored with clustering ``key`` (``core.clustering.cluster_summary``).

    Raises KeyError when no such clustering is stored.
    """
    run = (store or RunStore()).load(CLUSTERING_KIND, key, version=CLUSTERING_VERSION)
    if run is None:
        raise KeyError(f"no stored clustering {key!r}")
    return run.load("summary")


def suggested_k(sweep: pd.DataFrame) -> int | None:
    """The k with the best silhouette in a sweep (None when no k has one)."""
    scored = sweep.dropna(subset=["silhouette"])
    return None if scored.empty else int(scored.loc[scored["silhouette"].idxmax(), "k"])


def sweep_key(cohort_key: str, algorithm: str, ks: Iterable[int], random_state: int = 0) -> str:
    return run_key(SWEEP_KIND, inputs={"cohort": cohort_key},
                   config={"algorithm": algorithm, "ks": [int(k) for k in ks], "random_state": random_state},
                   version=SWEEP_VERSION)


def default_ks(cohort: Cohort) -> range:
    """k = 2..10, fewer for tiny cohorts (k must stay below the number of embedded rows)."""
    return range(2, max(3, min(10, int(cohort.has_vector.sum()) - 1) + 1))


def stored_sweep(cohort: Cohort, algorithm: str, *, ks: Iterable[int] | None = None, random_state: int = 0,
                 store: RunStore | None = None) -> pd.DataFrame | None:
    """The stored k sweep of ``cohort`` for ``algorithm``, or None (nothing is computed)."""
    ks = list(default_ks(cohort) if ks is None else ks)
    run = (store or RunStore()).load(SWEEP_KIND, sweep_key(cohort.key, algorithm, ks, random_state),
                                     version=SWEEP_VERSION)
    return None if run is None else run.load("scores")


def sweep_cohort(cohort: Cohort, algorithm: str, *, ks: Iterable[int] | None = None, random_state: int = 0,
                 store: RunStore | None = None, dataset: str | None = None,
                 progress: Callable[[float, str], None] | None = None) -> pd.DataFrame:
    """Scores of ``algorithm`` for each k on the embedded rows of ``cohort`` (a stored run).

    Returns one row per k: k, n_clusters, silhouette, davies_bouldin, calinski_harabasz, inertia.
    ``progress(fraction, message)`` is called after each k. Raises ValueError for an algorithm
    that takes no k (see :func:`core.clustering.k_sweep`).
    """
    ks = list(default_ks(cohort) if ks is None else ks)
    if not get_algorithm(algorithm).takes_k:
        raise ValueError(f"algorithm {algorithm!r} does not take k; nothing to sweep")
    store = store or RunStore()
    stored = stored_sweep(cohort, algorithm, ks=ks, random_state=random_state, store=store)
    if stored is not None:
        return stored
    scores = k_sweep(cohort.X[cohort.has_vector], algorithm=algorithm, ks=ks, random_state=random_state,
                     progress=progress)
    return save_sweep(cohort, algorithm, scores, ks=ks, random_state=random_state, store=store, dataset=dataset)


def save_sweep(cohort: Cohort, algorithm: str, scores: pd.DataFrame, *, ks: Iterable[int] | None = None,
               random_state: int = 0, store: RunStore | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Store ``scores`` (``core.clustering.k_sweep`` of ``cohort``'s embedded rows, e.g. computed
    in a worker process) as the run :func:`sweep_cohort` and :func:`stored_sweep` load; returns
    the stored table."""
    ks = list(default_ks(cohort) if ks is None else ks)
    if sorted(int(k) for k in scores["k"]) != sorted(ks):
        raise ValueError(f"the sweep has k = {list(scores['k'])}, expected {ks}")
    run = (store or RunStore()).save(
        SWEEP_KIND, sweep_key(cohort.key, algorithm, ks, random_state), version=SWEEP_VERSION,
        dataset=dataset, config={"algorithm": algorithm, "ks": ks, "random_state": random_state},
        inputs={"cohort": cohort.key}, payload={"scores": scores},
        summary={"algorithm": algorithm, "suggested_k": suggested_k(scores)})
    return run.load("scores")


def _drivers_key(clustering_key: str) -> str:
    return run_key(DRIVERS_KIND, inputs={"clustering": clustering_key}, config={}, version=DRIVERS_VERSION)


_DRIVER_ATTRS = ("cv_accuracy", "cv_accuracy_std", "baseline_accuracy", "n_splits", "n_rows_used",
                 "n_rows_shap", "n_rows_unlabelled", "skipped_columns", "notes")


def _drivers_from_run(run: Run) -> pd.DataFrame:
    frame = run.load("drivers")
    attrs = run.load("attrs")
    frame.attrs.update({k: float("nan") if v is None and k.startswith(("cv_", "baseline")) else v
                        for k, v in attrs.items()})
    return frame


def stored_drivers(clustering_key: str, *, store: RunStore | None = None) -> pd.DataFrame | None:
    """The stored cluster drivers of clustering ``clustering_key``, or None."""
    run = (store or RunStore()).load(DRIVERS_KIND, _drivers_key(clustering_key), version=DRIVERS_VERSION)
    return None if run is None else _drivers_from_run(run)


def driver_metadata(cohort: Cohort) -> pd.DataFrame:
    """The metadata columns of ``cohort``'s table that :func:`drivers_of_clustering` learns from."""
    table = cohort.table
    return table[metadata_columns(table)]


def drivers_of_clustering(
    cohort: Cohort,
    clustering_key: str,
    labels: np.ndarray,
    *,
    store: RunStore | None = None,
    dataset: str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> pd.DataFrame:
    """Mean |SHAP| per metadata column and cluster (``core.explain.cluster_drivers``), stored.

    Returns the drivers table with ``.attrs`` (cv_accuracy, baseline_accuracy, ...).
    ``progress(fraction, message)`` is called after each step (folds, fit, SHAP).
    Raises ValueError when the table has no usable metadata column.
    """
    from core.explain import cluster_drivers

    store = store or RunStore()
    stored = stored_drivers(clustering_key, store=store)
    if stored is not None:
        return stored
    drivers = cluster_drivers(driver_metadata(cohort), labels, progress=progress)
    return save_drivers(cohort, clustering_key, drivers, store=store, dataset=dataset)


def save_drivers(cohort: Cohort, clustering_key: str, drivers: pd.DataFrame, *,
                 store: RunStore | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Store ``drivers`` (``core.explain.cluster_drivers`` of clustering ``clustering_key`` of
    ``cohort``, e.g. computed in a worker process, ``.attrs`` included) as the run
    :func:`stored_drivers` loads; returns the stored table."""
    attrs = {k: drivers.attrs.get(k) for k in _DRIVER_ATTRS}
    run = (store or RunStore()).save(
        DRIVERS_KIND, _drivers_key(clustering_key), version=DRIVERS_VERSION, config={}, dataset=dataset,
        inputs={"clustering": clustering_key, "cohort": cohort.key},
        payload={"drivers": drivers, "attrs": attrs},
        summary={"cv_accuracy": attrs["cv_accuracy"], "baseline": attrs["baseline_accuracy"]})
    return _drivers_from_run(run)
