"""Similar cases: the nearest rows to a scan or patient in embedding space.

Up to ``INDEX_MIN_ROWS`` rows the search is exact (brute force, float64). Above, ``index="auto"``
builds an approximate index in float32: faiss HNSW (Malkov & Yashunin) for cosine and euclidean
when faiss is installed, pynndescent (umap's own dependency) otherwise and for manhattan.
``benchmarks/bench_scale.py`` measures build time, query time and recall against the exact
answer at 10k, 50k and 200k rows.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

METRICS = ("cosine", "euclidean", "manhattan")
INDEXES = ("auto", "exact", "hnsw", "nndescent")
RESULT_COLUMNS = ["rank", "id", "distance", "row"]
# Above this many rows "auto" uses an approximate index; below, a query is a few ms exact.
INDEX_MIN_ROWS = 50_000
HNSW_NEIGHBOURS = 32  # graph degree M: recall ~0.99 at 200k rows with ef_search 128


def faiss_available() -> bool:
    """Whether faiss (``pip install faiss-cpu``) can be imported here."""
    return importlib.util.find_spec("faiss") is not None


class _HnswIndex:
    """faiss HNSW over float32 rows; cosine as inner product of unit vectors."""

    def __init__(self, data: np.ndarray | None, metric: str, serialized: np.ndarray | None = None
                 ) -> None:
        import faiss

        self.metric = metric
        if serialized is not None:  # an index this class built and serialized (run store)
            self.index = faiss.deserialize_index(np.ascontiguousarray(serialized, dtype=np.uint8))
            return
        data = np.ascontiguousarray(data, dtype=np.float32)
        if metric == "cosine":
            data = _unit(data)
            self.index = faiss.IndexHNSWFlat(data.shape[1], HNSW_NEIGHBOURS,
                                             faiss.METRIC_INNER_PRODUCT)
        else:
            self.index = faiss.IndexHNSWFlat(data.shape[1], HNSW_NEIGHBOURS)
        self.index.hnsw.efConstruction = 64
        self.index.add(data)

    def kneighbors(self, query: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        query = np.ascontiguousarray(query, dtype=np.float32)
        if self.metric == "cosine":
            query = _unit(query)
        self.index.hnsw.efSearch = max(128, 2 * n_neighbors)
        scores, positions = self.index.search(query, n_neighbors)
        # faiss gives inner products of unit vectors (cosine) or squared L2 distances.
        distances = 1.0 - scores if self.metric == "cosine" else np.sqrt(np.maximum(scores, 0.0))
        return distances.astype(np.float64), positions


class _NNDescentIndex:
    """pynndescent's neighbour graph, prepared for queries."""

    def __init__(self, data: np.ndarray, metric: str, random_state: int) -> None:
        from pynndescent import NNDescent

        self.index = NNDescent(np.asarray(data, dtype=np.float32), metric=metric,
                               random_state=random_state, n_jobs=1, low_memory=True)
        self.index.prepare()

    def kneighbors(self, query: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
        positions, distances = self.index.query(np.asarray(query, dtype=np.float32),
                                                k=n_neighbors)
        return distances.astype(np.float64), positions


def _unit(data: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return data / norms


class SimilarCases:
    """Nearest-neighbour search over embedding vectors, keyed by row ids.

    metric : "cosine" (default; angle between embeddings, the usual choice for CNN
    features), "euclidean" or "manhattan".
    index : "auto" (default: exact up to ``INDEX_MIN_ROWS`` rows, then "hnsw" where faiss is
    installed and the metric allows, else "nndescent"), "exact", "hnsw" (faiss) or
    "nndescent" (pynndescent). The approximate indexes may miss a true neighbour now and
    then (recall measured in ``benchmarks/results/scale.json``); distances are exact for
    the rows they return.

    Rows with NaN vectors (images that failed to embed) are left out of the index but keep
    their place: ``row`` positions and ``ids`` refer to the vectors as given to ``fit``.
    """

    def __init__(self, metric: str = "cosine", *, index: str = "auto",
                 random_state: int = 0) -> None:
        self.metric = metric
        self.index = index
        self.random_state = random_state

    def fit(self, vectors: np.ndarray, ids: Any = None) -> SimilarCases:
        """vectors : ndarray of shape (n_rows, dim); ids : n_rows ids (default 0..n_rows-1).

        Raises ValueError for an unknown metric, a wrong shape, ids of another length, or no
        row without NaN.
        """
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is not supported; use one of {list(METRICS)}")
        if self.index not in INDEXES:
            raise ValueError(f"index={self.index!r} is not supported; use one of {list(INDEXES)}")
        matrix = np.asarray(vectors)
        if matrix.ndim != 2 or matrix.shape[1] < 1:
            raise ValueError(f"vectors must have shape (n_rows, dim), got {matrix.shape}")
        n_rows = matrix.shape[0]
        row_ids = np.arange(n_rows) if ids is None else np.asarray(list(ids), dtype=object)
        if len(row_ids) != n_rows:
            raise ValueError(f"ids has {len(row_ids)} values but vectors has {n_rows} rows")
        valid = np.isfinite(matrix).all(axis=1)
        if not valid.any():
            raise ValueError(f"all {n_rows} vectors contain NaN or inf; nothing to search")
        kind = self._index_kind(int(valid.sum()))
        if kind == "hnsw" and not faiss_available():
            raise ValueError("index='hnsw' needs faiss (pip install faiss-cpu); "
                             "use index='nndescent' or 'exact'")
        if kind == "hnsw" and self.metric == "manhattan":
            raise ValueError("index='hnsw' supports cosine and euclidean; use index='nndescent' "
                             "for manhattan")
        # float32 for the approximate indexes: 200,000 x 1,280 is 1 GB instead of 2.
        matrix = matrix.astype(np.float64 if kind == "exact" else np.float32, copy=False)
        fitted = matrix if valid.all() else matrix[valid]
        self.vectors_ = matrix
        self.ids_ = row_ids
        self.valid_ = valid
        self.rows_ = np.flatnonzero(valid)
        self.excluded_ids_ = list(row_ids[~valid])
        self.index_kind_ = kind
        if kind == "hnsw":
            self.index_ = _HnswIndex(fitted, self.metric)
        elif kind == "nndescent":
            self.index_ = _NNDescentIndex(fitted, self.metric, self.random_state)
        else:
            self.index_ = NearestNeighbors(metric=self.metric, algorithm="brute").fit(fitted)
        return self

    def serialized_index(self) -> np.ndarray:
        """The fitted HNSW index as bytes (uint8 array) for the run store; read back by
        :meth:`fit_serialized`. Raises ValueError for another index kind."""
        self._check_fitted()
        if self.index_kind_ != "hnsw":
            raise ValueError(f"only an hnsw index can be stored; this one is {self.index_kind_!r}")
        import faiss

        return faiss.serialize_index(self.index_.index)

    def fit_serialized(self, vectors: np.ndarray, serialized: np.ndarray,
                       ids: Any = None) -> SimilarCases:
        """Fit from a stored HNSW index (:meth:`serialized_index`) built over ``vectors``, the
        same rows as given to that ``fit``, instead of building it again. Raises ValueError when
        the index does not hold one entry per row of ``vectors`` without NaN."""
        matrix = np.asarray(vectors)
        if matrix.ndim != 2:
            raise ValueError(f"vectors must have shape (n_rows, dim), got {matrix.shape}")
        valid = np.isfinite(matrix).all(axis=1)
        index = _HnswIndex(None, self.metric, serialized=serialized)
        if index.index.ntotal != int(valid.sum()) or index.index.d != matrix.shape[1]:
            raise ValueError(f"the stored index holds {index.index.ntotal} x {index.index.d} "
                             f"vectors; these are {int(valid.sum())} x {matrix.shape[1]}")
        row_ids = np.arange(len(matrix)) if ids is None else np.asarray(list(ids), dtype=object)
        self.vectors_ = matrix.astype(np.float32, copy=False)
        self.ids_, self.valid_, self.rows_ = row_ids, valid, np.flatnonzero(valid)
        self.excluded_ids_ = list(row_ids[~valid])
        self.index_kind_, self.index_ = "hnsw", index
        return self

    def _index_kind(self, n_valid: int) -> str:
        if self.index != "auto":
            return self.index
        if n_valid <= INDEX_MIN_ROWS:
            return "exact"
        return "hnsw" if faiss_available() and self.metric != "manhattan" else "nndescent"

    def _check_fitted(self) -> None:
        if not hasattr(self, "index_"):
            raise ValueError("SimilarCases is not fitted; call fit(vectors, ids) first")

    def query(self, query: Any, k: int = 8) -> pd.DataFrame:
        """The ``k`` nearest rows to ``query``.

        query : an integer row position (0..n_rows-1; that row itself is left out of the
            answer) or a vector of shape (dim,).
        Returns a DataFrame with columns rank (1 = nearest), id, distance, row (position in
        the fitted vectors), nearest first; rows with NaN vectors never appear.
        Raises ValueError when not fitted, k < 1 or k > the rows available, the row is out
        of range or has no vector, or the vector has the wrong length or NaN.
        """
        self._check_fitted()
        n_rows, dim = self.vectors_.shape
        exclude: int | None = None
        if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
            if not 0 <= query < n_rows:
                raise ValueError(f"row={query} must be in 0..{n_rows - 1}")
            if not self.valid_[query]:
                raise ValueError(
                    f"row {query} (id {self.ids_[query]!r}) has no vector (NaN); it cannot be "
                    "queried"
                )
            exclude = int(query)
            vector = self.vectors_[query]
        else:
            vector = np.asarray(query, dtype=self.vectors_.dtype).reshape(-1)
            if vector.shape != (dim,):
                raise ValueError(
                    f"query must be a row position or a vector of length {dim}, got shape "
                    f"{np.shape(query)}"
                )
            if not np.isfinite(vector).all():
                raise ValueError("query vector contains NaN or inf")
        available = self.rows_.size - (exclude is not None)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= available:
            raise ValueError(f"k={k!r} must be an integer in 1..{available} (rows available)")
        asked = min(k + (exclude is not None), self.rows_.size)
        distances, positions = self.index_.kneighbors(vector[None, :], n_neighbors=asked)
        found = positions[0] >= 0  # an approximate index may return fewer than asked (-1)
        rows = self.rows_[positions[0][found]]
        distances = distances[0][found]
        if exclude is not None:
            # Drop the query row by position, not by distance 0: exact duplicates of it are
            # real answers ("the same image ingested twice").
            keep = rows != exclude
            if keep.all():
                keep[-1] = False
            rows, distances = rows[keep], distances[keep]
        rows, distances = rows[:k], distances[:k]
        return pd.DataFrame({
            "rank": np.arange(1, rows.size + 1),
            "id": self.ids_[rows],
            "distance": distances.astype(np.float64),
            "row": rows,
        }, columns=RESULT_COLUMNS)

    def neighbours(self, k: int, *, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest other rows of every row with a vector, through the same index as
        :meth:`query`, ``chunk`` query rows at a time (the exact search holds chunk x n
        distances: 80 MB at 10,000 rows): (rows, distances), each of shape (n_rows, k),
        nearest first, positions in the fitted vectors. A row never
        lists itself; rows without a vector, and places an approximate index left empty, hold
        row -1 and distance inf. Raises ValueError when not fitted or k is out of range."""
        self._check_fitted()
        available = self.rows_.size - 1
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= available:
            raise ValueError(f"k={k!r} must be an integer in 1..{available} (rows available)")
        n_rows = self.vectors_.shape[0]
        rows_out = np.full((n_rows, k), -1, dtype=np.int64)
        distances_out = np.full((n_rows, k), np.inf)
        for start in range(0, self.rows_.size, chunk):
            own = np.arange(start, min(start + chunk, self.rows_.size))
            distances, positions = self.index_.kneighbors(self.vectors_[self.rows_[own]],
                                                          n_neighbors=k + 1)
            # Drop each row itself by position (not by distance 0: exact copies are answers),
            # else the farthest of the k + 1.
            keep = positions != own[:, None]
            keep[keep.all(axis=1), -1] = False
            positions = positions[keep].reshape(len(own), k)
            distances = distances[keep].reshape(len(own), k)
            found = positions >= 0
            rows_out[self.rows_[own]] = np.where(found, self.rows_[np.maximum(positions, 0)], -1)
            distances_out[self.rows_[own]] = np.where(found, distances, np.inf)
        return rows_out, distances_out
