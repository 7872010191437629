"""The cohort: the rows a study looks at (patients or images) and their feature matrix.

A *cohort* is a feature matrix at patient or image level built from one embedding set (plus
optional metadata and text blocks), with the table whose rows it describes. Its key names the
inputs, so every run computed from it (projection, clustering, sweep...) is keyed by it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.features import FeatureMatrix, build_features, patient_embeddings
from core.ingest import Dataset
from core.metadata import ENCODING_VERSION as METADATA_ENCODING

LEVELS = ("patient", "image")


def short_hash(*parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


@dataclass
class Cohort:
    """Rows to map and cluster.

    table : DataFrame of shape (n_rows, ...), patients or images, aligned with ``features.X``
    features : FeatureMatrix, ``X`` of shape (n_rows, n_features)
    level : "patient" or "image"
    key : names this cohort (embedding set + level + pooling + blocks + weights)
    has_vector : ndarray of shape (n_rows,), bool; False where no image of the row embedded
    """

    table: pd.DataFrame
    features: FeatureMatrix
    level: str
    key: str
    has_vector: np.ndarray

    @property
    def X(self) -> np.ndarray:  # noqa: N802 (the estimator convention)
        return self.features.X

    @property
    def row_ids(self) -> np.ndarray:
        return self.features.row_ids

    def masked(self, block: str | None = None) -> np.ndarray:
        """``X`` (or one block of it) as float64 with NaN rows where no image embedded.

        ``build_features`` imputes such rows so that X stays finite; the estimators downstream
        (clustering, projection, neighbours) must instead leave them out and keep them aligned.
        """
        values = (self.X if block is None else self.features.block(block)).astype(np.float64, copy=True)
        values[~self.has_vector] = np.nan
        return values


def build_cohort(
    dataset: Dataset,
    image_set: Any,
    *,
    level: str = "patient",
    pooling: str = "mean",
    metadata: Sequence[str] = (),
    text_set: Any = None,
    weights: Mapping[str, float] | None = None,
) -> Cohort:
    """Build the feature matrix for ``dataset`` from an EmbeddingSet.

    Parameters
    ----------
    image_set : EmbeddingSet of an image encoder, aligned with ``dataset.images``
    level : "patient" (slice/image vectors pooled per patient) or "image"
    pooling : "mean", "max" or "series-mean" (patient level only)
    metadata : metadata columns to fuse (e.g. ("age", "sex")); empty for images only
    text_set : optional EmbeddingSet of the text encoder, aligned with ``dataset.images``
    weights : per-block weights, see ``core.features.build_features``
    """
    if level not in LEVELS:
        raise ValueError(f"level={level!r} must be one of {list(LEVELS)}")
    images = dataset.images
    vectors = np.asarray(image_set.vectors)
    if len(vectors) != len(images):
        raise ValueError(f"embedding set has {len(vectors)} rows, dataset has {len(images)} images")
    text_vectors = None if text_set is None else np.asarray(text_set.vectors)
    if level == "image":
        table = images.reset_index(drop=True)
        image_block = vectors
        text_block = text_vectors
    else:
        patient_ids, image_block = patient_embeddings(images, vectors, how=pooling)
        table = dataset.patients.set_index("patient_id").loc[patient_ids].reset_index()
        text_block = None
        if text_vectors is not None:
            _, text_block = patient_embeddings(images, text_vectors, how="mean")
    has_vector = np.isfinite(image_block).all(axis=1)
    features = build_features(table, image_block, text_block=text_block, metadata=tuple(metadata), weights=weights)
    # The encoding version joins the key only with a metadata block, so image-only cohort keys
    # (and the label mappings saved under their clusterings) stay what they were.
    key = short_hash(
        "cohort", image_set.key, None if text_set is None else text_set.key, level, pooling,
        list(metadata), dict(weights or {}), *([METADATA_ENCODING] if metadata else []),
        # A filtered dataset (core.filters) keys its cohorts by the filter; the whole one as before.
        *([f"where {dataset.selection}"] if getattr(dataset, "selection", "") else []),
    )
    return Cohort(table=table, features=features, level=level, key=f"{level}-{key}", has_vector=has_vector)


def representative_images(images: pd.DataFrame, table: pd.DataFrame, level: str) -> pd.DataFrame:
    """One image row per row of ``table``: the image itself (image level), or the patient's
    middle slice (patient level), in the order of ``table``."""
    if level == "image":
        return table
    # Vectorised (a Python call per patient took seconds at 200,000 patients): the row at
    # position len // 2 of each patient's images, in the images table's order.
    grouped = images.groupby("patient_id", sort=False)
    picked = images[grouped.cumcount().to_numpy() == grouped["patient_id"].transform("size").to_numpy() // 2]
    return table[["patient_id"]].merge(picked, on="patient_id", how="left")
