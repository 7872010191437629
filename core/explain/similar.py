"""Similar cases: the nearest rows to a scan or patient in embedding space."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

METRICS = ("cosine", "euclidean", "manhattan")
RESULT_COLUMNS = ["rank", "id", "distance", "row"]


class SimilarCases:
    """Nearest-neighbour search over embedding vectors, keyed by row ids.

    metric : "cosine" (default; angle between embeddings, the usual choice for CNN
    features), "euclidean" or "manhattan".

    Rows with NaN vectors (images that failed to embed) are left out of the index but keep
    their place: ``row`` positions and ``ids`` refer to the vectors as given to ``fit``.
    """

    def __init__(self, metric: str = "cosine") -> None:
        self.metric = metric

    def fit(self, vectors: np.ndarray, ids: Any = None) -> SimilarCases:
        """vectors : ndarray of shape (n_rows, dim); ids : n_rows ids (default 0..n_rows-1).

        Raises ValueError for an unknown metric, a wrong shape, ids of another length, or no
        row without NaN.
        """
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is not supported; use one of {list(METRICS)}")
        matrix = np.asarray(vectors, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] < 1:
            raise ValueError(f"vectors must have shape (n_rows, dim), got {matrix.shape}")
        n_rows = matrix.shape[0]
        row_ids = np.arange(n_rows) if ids is None else np.asarray(list(ids), dtype=object)
        if len(row_ids) != n_rows:
            raise ValueError(f"ids has {len(row_ids)} values but vectors has {n_rows} rows")
        valid = np.isfinite(matrix).all(axis=1)
        if not valid.any():
            raise ValueError(f"all {n_rows} vectors contain NaN or inf; nothing to search")
        self.vectors_ = matrix
        self.ids_ = row_ids
        self.valid_ = valid
        self.rows_ = np.flatnonzero(valid)
        self.excluded_ids_ = list(row_ids[~valid])
        self.index_ = NearestNeighbors(metric=self.metric, algorithm="brute").fit(matrix[valid])
        return self

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
            vector = np.asarray(query, dtype=np.float64).reshape(-1)
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
        rows = self.rows_[positions[0]]
        distances = distances[0]
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
