"""From per-image embeddings to feature matrices: patient pooling and weighted blocks.

Block weighting. A feature matrix concatenates blocks (image embedding, metadata, text
embedding) of very different widths: 1280 image columns would drown two metadata columns, and
standardised metadata would drown nothing if it were simply appended. So every block ``b`` of
width ``p_b`` is standardised column by column (``StandardScaler``: mean 0, population variance
1) and then multiplied by ``sqrt(w_b / p_b)``, where ``w_b`` is the block's weight and ``p_b``
counts its non-constant columns. Each column then has variance ``w_b / p_b`` and the block's
total variance (the sum of its column variances, which is its share of the expected squared
Euclidean distance between two rows) is exactly ``w_b``. Constant columns stay 0.

Missing values. An image that failed to embed has a NaN row; a patient whose images all failed
has a NaN pooled row. ``build_features`` imputes those rows with the block mean (0 after
standardising) so downstream methods get finite input, and reports which rows were imputed in
``FeatureMatrix.missing[block_name]``; no row is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from core.metadata import encode_metadata

POOLING = ("mean", "max", "series-mean")
BLOCK_NAMES = ("image", "metadata", "text")
DEFAULT_WEIGHTS = {"image": 1.0, "metadata": 1.0, "text": 1.0}


@dataclass
class Block:
    """Columns ``columns`` (a slice of ``FeatureMatrix.X``) that came from one source."""

    name: str
    columns: slice
    weight: float
    column_names: list[str]

    @property
    def start(self) -> int:
        return self.columns.start

    @property
    def stop(self) -> int:
        return self.columns.stop


@dataclass
class FeatureMatrix:
    """``X`` of shape (n_rows, n_features), float32, finite; rows aligned with ``row_ids``."""

    X: np.ndarray
    row_ids: np.ndarray
    blocks: list[Block]
    description: str
    missing: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def index(self) -> np.ndarray:
        """Alias of ``row_ids`` (the name INTERFACES.md uses)."""
        return self.row_ids

    @property
    def column_names(self) -> list[str]:
        return [name for block in self.blocks for name in block.column_names]

    def block(self, name: str) -> np.ndarray:
        """The columns of block ``name``, shape (n_rows, width)."""
        for block in self.blocks:
            if block.name == name:
                return self.X[:, block.columns]
        raise KeyError(f"no block {name!r}; blocks are {[b.name for b in self.blocks]}")


def _vectors_of(images_df: pd.DataFrame, vectors: Any) -> np.ndarray:
    """Accept an ndarray or an EmbeddingSet; check it lines up with ``images_df``."""
    if hasattr(vectors, "vectors"):
        ids = getattr(vectors, "image_ids", None)
        expected = images_df["image_id"] if "image_id" in images_df.columns else None
        aligned = (
            ids is None
            or expected is None
            or np.array_equal(
                np.asarray(ids, dtype=object), expected.astype(str).to_numpy(dtype=object)
            )
        )
        if not aligned:
            raise ValueError("embedding set's image_ids are not in the order of images_df's rows")
        vectors = vectors.vectors
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(images_df):
        raise ValueError(
            f"vectors must have shape (n_images={len(images_df)}, dim), got {vectors.shape}"
        )
    return vectors


def _group_mean(codes: np.ndarray, n_groups: int, values: np.ndarray) -> np.ndarray:
    """Mean of the rows of ``values`` per group code; groups with no rows are NaN."""
    onehot = sparse.csr_matrix(
        (np.ones(len(codes), np.float64), (codes, np.arange(len(codes)))),
        shape=(n_groups, len(codes)),
    )
    sums = np.asarray(onehot @ values.astype(np.float64))
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts[:, None]).astype(np.float32)


def patient_embeddings(
    images_df: pd.DataFrame, vectors: Any, *, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Pool image embeddings into one vector per patient.

    Parameters
    ----------
    images_df : DataFrame with a ``patient_id`` column (and ``series_uid`` for series-mean)
    vectors : ndarray of shape (n_images, dim), or an EmbeddingSet aligned with images_df
        NaN rows (failed images) are ignored.
    how : "mean", "max" or "series-mean"
        "series-mean" averages per-series means, so a 200-slice CT series counts as much as a
        single radiograph; without a ``series_uid`` column (or where it is missing) each image
        is its own series, which makes it equal to "mean".

    Returns
    -------
    patient_ids : ndarray of shape (n_patients,), in order of first appearance
    matrix : ndarray of shape (n_patients, dim), float32
        A patient none of whose images has a vector gets a NaN row (it is not dropped).
    """
    if how not in POOLING:
        raise ValueError(f"how={how!r} must be one of {list(POOLING)}")
    if "patient_id" not in images_df.columns:
        raise ValueError(f"images_df needs a patient_id column; it has {list(images_df.columns)}")
    vectors = _vectors_of(images_df, vectors)
    codes, patient_ids = pd.factorize(images_df["patient_id"].astype(str), sort=False)
    patient_ids = np.asarray(patient_ids, dtype=object)
    n_patients, dim = len(patient_ids), vectors.shape[1]
    valid = np.isfinite(vectors).all(axis=1)
    codes_valid, values = codes[valid], vectors[valid]
    if how == "max":
        out = np.full((n_patients, dim), np.nan, np.float32)
        if len(values):
            order = np.argsort(codes_valid, kind="stable")
            sorted_codes = codes_valid[order]
            starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
            out[sorted_codes[starts]] = np.maximum.reduceat(values[order], starts, axis=0)
        return patient_ids, out
    if how == "series-mean" and "series_uid" in images_df.columns:
        series = images_df["series_uid"].astype(object).to_numpy()
        # A missing series uid is its own series rather than one big "unknown" series.
        fallback = np.array([f"\0row{i}" for i in range(len(series))], dtype=object)
        series = np.where(pd.isna(series), fallback, series.astype(str))
        pairs = pd.MultiIndex.from_arrays([codes_valid, series[valid]])
        series_codes, unique_pairs = pd.factorize(pairs, sort=False)
        series_means = _group_mean(series_codes, len(unique_pairs), values)
        series_patient = np.asarray(unique_pairs.get_level_values(0), dtype=np.intp)
        return patient_ids, _group_mean(series_patient, n_patients, series_means)
    return patient_ids, _group_mean(codes_valid, n_patients, values)


def _metadata_columns(frame: pd.DataFrame, names: Sequence[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Raw (unscaled) metadata columns through the one encoder, ``core.metadata.encode_metadata``:
    numbers median-imputed with a "<column> missing" flag, categories one-hot (missing is its own
    category). Returns (matrix, feature names, {skipped column: reason})."""
    for name in names:
        if name not in frame.columns:
            raise ValueError(
                f"metadata column {name!r} not found; columns are {list(frame.columns)}"
            )
    encoded = encode_metadata(frame[list(names)])
    return encoded.matrix, encoded.feature_names, encoded.skipped


def _weighted_block(values: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Standardise columns, impute NaN rows with 0 (the mean), scale to total variance = weight.

    Returns the scaled block and the boolean mask of imputed rows.
    """
    values = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(values).all(axis=1)
    present = values[~missing]
    out = np.zeros_like(values)
    if len(present):
        mean = present.mean(axis=0)
        std = present.std(axis=0)
        varying = std > 0
        n_varying = int(varying.sum())
        if n_varying:
            scale = np.sqrt(weight / n_varying)
            block = np.zeros_like(present)
            block[:, varying] = (present[:, varying] - mean[varying]) / std[varying] * scale
            out[~missing] = block
    return out, missing


def build_features(
    patients_df: pd.DataFrame,
    image_block: np.ndarray | None,
    *,
    text_block: np.ndarray | None = None,
    metadata: Sequence[str] | None = ("age", "sex"),
    weights: Mapping[str, float] | None = None,
) -> FeatureMatrix:
    """Concatenate weighted, standardised blocks into one feature matrix.

    Parameters
    ----------
    patients_df : DataFrame, one row per output row
        Patient level (row ids from ``patient_id``) or image level (row ids from
        ``image_id``, which wins when both columns are present); holds the metadata columns.
    image_block : ndarray of shape (n_rows, d_image) or None
        E.g. ``patient_embeddings(...)[1]``; NaN rows are imputed and reported.
    text_block : ndarray of shape (n_rows, d_text), optional
    metadata : column names, default ("age", "sex")
        encoded by ``core.metadata.encode_metadata`` (the encoder the classifiers and SHAP
        use): numbers median-imputed plus a "<column> missing" flag, categories one-hot
        (``sex=M``, ``sex=F``, ``sex=unknown``...); constant and identifier-like columns are
        left out and named in ``description``. ``None`` or ``()`` for no metadata block.
    weights : mapping block name -> weight >= 0, default 1.0 each
        Each block's total variance in ``X`` equals its weight (see the module docstring);
        weight 0 leaves the block out.

    Returns
    -------
    FeatureMatrix
        ``X`` of shape (n_rows, n_features) float32 and finite; ``blocks`` say which columns
        came from where; ``missing[name]`` marks rows whose block was imputed.

    Raises ``ValueError`` for mismatched row counts, unknown weight names, negative weights,
    missing metadata columns, or when no block is left.
    """
    merged = dict(DEFAULT_WEIGHTS)
    for name, weight in (weights or {}).items():
        if name not in BLOCK_NAMES:
            raise ValueError(f"weights has unknown block {name!r}; blocks are {list(BLOCK_NAMES)}")
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"weight for {name!r} is {weight!r}; it must be a finite number >= 0")
        merged[name] = float(weight)
    n = len(patients_df)
    id_column = "image_id" if "image_id" in patients_df.columns else "patient_id"
    if id_column in patients_df.columns:
        row_ids = patients_df[id_column].astype(str).to_numpy(dtype=object)
    else:
        row_ids = patients_df.index.astype(str).to_numpy(dtype=object)

    raw: list[tuple[str, np.ndarray, list[str]]] = []
    if image_block is not None:
        raw.append(("image", np.asarray(image_block), None))
    skipped: dict[str, str] = {}
    if metadata:
        values, names, skipped = _metadata_columns(patients_df, list(metadata))
        raw.append(("metadata", values, names))
    if text_block is not None:
        raw.append(("text", np.asarray(text_block), None))

    parts: list[np.ndarray] = []
    blocks: list[Block] = []
    missing: dict[str, np.ndarray] = {}
    start = 0
    for name, values, names in raw:
        if values.ndim != 2 or len(values) != n:
            raise ValueError(
                f"{name} block must have shape (n_rows={n}, width), got {values.shape}"
            )
        weight = merged[name]
        if weight == 0 or values.shape[1] == 0:
            continue
        scaled, missing[name] = _weighted_block(values, weight)
        width = scaled.shape[1]
        column_names = names or [f"{name}_{i}" for i in range(width)]
        blocks.append(Block(name, slice(start, start + width), weight, column_names))
        parts.append(scaled)
        start += width
    if not parts:
        raise ValueError(
            "no feature block left: give an image/text block or metadata with weight > 0"
        )
    X = np.hstack(parts).astype(np.float32)
    level = "images" if id_column == "image_id" else "patients"
    summary = ", ".join(
        f"{b.name} ({b.stop - b.start} cols, weight {b.weight:g}"
        + (f", {int(missing[b.name].sum())} rows imputed" if missing[b.name].any() else "")
        + ")"
        for b in blocks
    )
    description = f"{n} {level} x {X.shape[1]} features: {summary}"
    if skipped:
        description += "; metadata left out: " + ", ".join(f"{c} ({why})" for c, why in skipped.items())
    return FeatureMatrix(X, row_ids, blocks, description, missing)
