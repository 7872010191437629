"""Per-cluster summaries: the most central members and a metadata table per cluster."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

NOISE = -1


def _as_matrix(X: Any) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    return X


def cluster_medoids(X: np.ndarray, labels: np.ndarray, *, n: int = 5) -> dict[int, list[int]]:
    """Row indices of the ``n`` members closest to each cluster's mean (most central first).

    X : ndarray of shape (n_samples, n_features); labels : ndarray of shape (n_samples,).
    Noise (-1) and NaN rows are skipped. Raises ValueError on mismatched lengths or n < 1.
    """
    X = _as_matrix(X)
    labels = np.asarray(labels)
    if labels.shape != (X.shape[0],):
        raise ValueError(f"labels has shape {labels.shape}; expected ({X.shape[0]},) to match X")
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    valid = np.isfinite(X).all(axis=1)
    result: dict[int, list[int]] = {}
    for label in np.unique(labels[(labels != NOISE) & valid]):
        rows = np.flatnonzero((labels == label) & valid)
        distances = np.linalg.norm(X[rows] - X[rows].mean(axis=0), axis=1)
        order = np.argsort(distances, kind="stable")[:n]
        result[int(label)] = [int(i) for i in rows[order]]
    return result


def _mix(values: pd.Series, top: int = 3) -> tuple[Any, float, str]:
    """Most common value, its share of non-missing values, and a 'A 60%, B 40%' text."""
    present = values.dropna()
    present = present[present.astype(str).str.strip() != ""]
    n_missing = len(values) - len(present)
    if present.empty:
        return None, float("nan"), f"missing {100:.0f}%" if len(values) else ""
    counts = present.astype(str).value_counts()
    shares = counts / len(values)
    parts = [f"{name} {100 * share:.0f}%" for name, share in shares.iloc[:top].items()]
    if len(counts) > top:
        parts.append(f"other {100 * shares.iloc[top:].sum():.0f}%")
    if n_missing:
        parts.append(f"missing {100 * n_missing / len(values):.0f}%")
    return counts.index[0], float(counts.iloc[0] / len(present)), ", ".join(parts)


def cluster_summary(
    labels: np.ndarray, metadata_df: pd.DataFrame, *, label_column: str | None = None
) -> pd.DataFrame:
    """Describe each cluster by its metadata.

    labels : ndarray of shape (n_samples,), aligned by position with the rows of
    ``metadata_df`` (e.g. ``images.parquet``: columns age, sex, modality, view, label).
    label_column : ground-truth column; None uses "label" when present and not all missing.

    Returns one row per cluster (noise/unclustered -1 last): cluster, size, share_pct,
    age_mean, age_sd, sex_mix, and for modality, view and the label column ``<col>_top``,
    ``<col>_share`` (share of non-missing values) and ``<col>_mix``. Absent columns give
    empty values. Raises ValueError on mismatched lengths or an unknown ``label_column``.
    """
    labels = np.asarray(labels)
    if len(labels) != len(metadata_df):
        raise ValueError(
            f"labels has {len(labels)} rows but metadata_df has {len(metadata_df)}; they must align"
        )
    if label_column is not None and label_column not in metadata_df.columns:
        raise ValueError(
            f"label_column={label_column!r} not in metadata columns: {', '.join(map(str, metadata_df.columns))}"
        )
    if (
        label_column is None
        and "label" in metadata_df.columns
        and metadata_df["label"].notna().any()
    ):
        label_column = "label"
    meta = metadata_df.reset_index(drop=True)
    mix_columns = [("modality", "modality"), ("view", "view")]
    if label_column is not None:
        mix_columns.append((label_column, "label"))

    ids = sorted(set(labels.tolist()), key=lambda v: (v == NOISE, v))
    rows = []
    for cluster_id in ids:
        members = meta[labels == cluster_id]
        row: dict[str, Any] = {
            "cluster": int(cluster_id),
            "size": len(members),
            "share_pct": 100 * len(members) / len(meta),
        }
        if "age" in members.columns:
            age = pd.to_numeric(members["age"], errors="coerce")
            row["age_mean"] = float(age.mean()) if age.notna().any() else float("nan")
            row["age_sd"] = float(age.std()) if age.notna().sum() > 1 else float("nan")
        else:
            row["age_mean"] = row["age_sd"] = float("nan")
        row["sex_mix"] = _mix(members["sex"])[2] if "sex" in members.columns else ""
        for column, prefix in mix_columns:
            if column in members.columns:
                top, share, text = _mix(members[column])
            else:
                top, share, text = None, float("nan"), ""
            row[f"{prefix}_top"], row[f"{prefix}_share"], row[f"{prefix}_mix"] = top, share, text
        rows.append(row)
    return pd.DataFrame(rows)
