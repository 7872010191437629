"""Outliers in embedding space, over the whole cohort and within each cluster.

Two scores per row, both "higher = more unusual":

* ``knn_distance``: mean cosine distance to the ``k`` nearest other rows (a scan unlike any
  other: a wrong body part, a photo of a screen, a corrupt export);
* ``isolation``: scikit-learn's IsolationForest anomaly score (``-score_samples``) on the
  embedding's first principal components.

A row is an outlier when its kNN distance is above the ``quantile`` of the cohort's (overall), or
above that quantile within its own cluster (per cluster: unusual for its group even where the
group itself is unusual). Rows without a vector get NaN and are never flagged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

K = 5
QUANTILE = 0.98
MIN_CLUSTER = 10
OUTLIER_COLUMNS = ["knn_distance", "isolation", "cluster", "cluster_knn_distance", "outlier", "cluster_outlier", "rank"]


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def knn_distance(vectors: np.ndarray, k: int = K, *, block: int = 1024) -> np.ndarray:
    """Mean cosine distance of each row to its ``k`` nearest other rows.

    vectors : ndarray of shape (n_samples, dim), finite. Returns shape (n_samples,); all NaN
    when there are fewer than 2 rows.
    """
    n = len(vectors)
    if n < 2:
        return np.full(n, np.nan)
    k = min(k, n - 1)
    unit = _unit(np.asarray(vectors, dtype=np.float32))
    out = np.empty(n)
    for start in range(0, n, block):
        rows = slice(start, min(n, start + block))
        distance = 1.0 - unit[rows] @ unit.T
        distance[np.arange(distance.shape[0]), np.arange(start, min(n, start + block))] = np.inf
        out[rows] = np.sort(np.partition(distance, k - 1, axis=1)[:, :k], axis=1).mean(axis=1)
    return np.maximum(out, 0.0)


def isolation_scores(vectors: np.ndarray, *, random_state: int = 0) -> np.ndarray:
    """IsolationForest anomaly score (higher = more isolated) on up to 32 principal components."""
    n = len(vectors)
    if n < 8:
        return np.full(n, np.nan)
    components = min(32, n - 1, vectors.shape[1])
    reduced = PCA(n_components=components, random_state=random_state).fit_transform(vectors)
    forest = IsolationForest(n_estimators=200, random_state=random_state).fit(reduced)
    return -forest.score_samples(reduced)


def find_outliers(
    vectors: np.ndarray,
    clusters: np.ndarray | None = None,
    *,
    k: int = K,
    quantile: float = QUANTILE,
    random_state: int = 0,
) -> pd.DataFrame:
    """Scores and flags for every row (``OUTLIER_COLUMNS``), aligned with ``vectors``.

    vectors : (n_samples, dim), NaN rows allowed. clusters : (n_samples,) cluster ids or None.
    ``rank`` orders flagged rows by kNN distance (1 = most unusual; 0 for rows not flagged).
    Raises ValueError for a quantile outside (0.5, 1) or clusters of the wrong length.
    """
    if not 0.5 < quantile < 1.0:
        raise ValueError(f"quantile={quantile} must be in (0.5, 1)")
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if clusters is not None and len(clusters) != n:
        raise ValueError(f"clusters has {len(clusters)} rows, vectors {n}")
    ok = np.isfinite(vectors).all(axis=1)
    table = pd.DataFrame({"knn_distance": np.nan, "isolation": np.nan,
                          "cluster": -1 if clusters is None else np.asarray(clusters),
                          "cluster_knn_distance": np.nan}, index=range(n))
    if ok.sum() >= 2:
        table.loc[ok, "knn_distance"] = knn_distance(vectors[ok], k)
        table.loc[ok, "isolation"] = isolation_scores(vectors[ok], random_state=random_state)
    flagged = np.zeros(n, dtype=bool)
    if ok.sum() >= 2:
        limit = np.nanquantile(table["knn_distance"], quantile)
        flagged = (table["knn_distance"] > limit).to_numpy()
    cluster_flag = np.zeros(n, dtype=bool)
    if clusters is not None:
        for cluster in np.unique(np.asarray(clusters)[ok]):
            members = np.flatnonzero(ok & (np.asarray(clusters) == cluster))
            if len(members) < MIN_CLUSTER:
                continue
            scores = knn_distance(vectors[members], k)
            table.loc[members, "cluster_knn_distance"] = scores
            cluster_flag[members] = scores > np.quantile(scores, quantile)
    table["outlier"] = flagged
    table["cluster_outlier"] = cluster_flag
    order = table["knn_distance"].where(flagged | cluster_flag).rank(ascending=False, method="first")
    table["rank"] = order.fillna(0).astype("int64")
    return table[OUTLIER_COLUMNS]
