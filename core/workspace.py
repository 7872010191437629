"""From an ingested dataset to the matrices and named runs the app and CLI show.

A *cohort* is a feature matrix at patient or image level built from one embedding set (plus
optional metadata and text blocks), with the table whose rows it describes. Clusterings of a
cohort are named, cached runs (FiftyOne-brain style): the key is derived from the cohort key,
algorithm and parameters, and a stored run is reloaded rather than recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.clustering import Clustering, cluster, resolve_params
from core.features import FeatureMatrix, build_features, patient_embeddings
from core.ingest import Dataset

LEVELS = ("patient", "image")
CLUSTERING_VERSION = 1


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
    key = short_hash(
        "cohort", image_set.key, None if text_set is None else text_set.key, level, pooling,
        list(metadata), dict(weights or {}),
    )
    return Cohort(table=table, features=features, level=level, key=f"{level}-{key}", has_vector=has_vector)


def clustering_key(cohort_key: str, algorithm: str, params: Mapping[str, Any], random_state: int) -> str:
    return f"{algorithm}-{short_hash(cohort_key, algorithm, dict(params), random_state, CLUSTERING_VERSION)}"


class ClusteringStore:
    """Clustering runs on disk: ``root/clusterings/<key>.npz``-free: labels ``.npy`` + config ``.json``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.directory = Path(root) / "clusterings"

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not key or "/" in key or "\\" in key or key.startswith("."):
            raise ValueError(f"invalid clustering key {key!r}")
        return self.directory / f"{key}.npy", self.directory / f"{key}.json"

    def get(self, key: str) -> Clustering | None:
        labels_path, config_path = self._paths(key)
        try:
            config = json.loads(config_path.read_text())
            labels = np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        if config.get("version") != CLUSTERING_VERSION:
            return None
        return Clustering(
            labels=labels,
            algorithm=config["algorithm"],
            params=config["params"],
            n_clusters=int(config["n_clusters"]),
            scores={k: float(v) for k, v in config["scores"].items()},
            inertia=float(config.get("inertia", float("nan"))),
            n_noise=int(config.get("n_noise", 0)),
            n_excluded=int(config.get("n_excluded", 0)),
            notes=list(config.get("notes", [])),
        )

    def put(self, key: str, result: Clustering, *, cohort_key: str) -> None:
        labels_path, config_path = self._paths(key)
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {
            "key": key,
            "cohort_key": cohort_key,
            "algorithm": result.algorithm,
            "params": result.params,
            "n_clusters": result.n_clusters,
            "scores": {k: float(v) for k, v in result.scores.items()},
            "inertia": float(result.inertia),
            "n_noise": int(result.n_noise),
            "n_excluded": int(result.n_excluded),
            "notes": result.notes,
            "version": CLUSTERING_VERSION,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for path, write in (
            (labels_path, lambda fh: np.save(fh, np.asarray(result.labels, dtype=np.int64), allow_pickle=False)),
            (config_path, lambda fh: fh.write(json.dumps(config, indent=2, default=str).encode())),
        ):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                write(handle)
            os.replace(tmp, path)


def cluster_cohort(
    store: ClusteringStore,
    cohort: Cohort,
    *,
    algorithm: str = "kmeans",
    random_state: int = 0,
    **params: Any,
) -> tuple[str, Clustering]:
    """The named clustering of ``cohort``: loaded when stored, else computed and stored.

    Rows without any image vector are left out of the fit and labelled -1.
    Returns ``(key, clustering)``; the key is what cluster -> disease mappings are saved under.
    """
    resolved = resolve_params(algorithm, **params)
    key = clustering_key(cohort.key, algorithm, resolved, random_state)
    stored = store.get(key)
    if stored is not None and len(stored.labels) == len(cohort.table):
        return key, stored
    result = cluster(cohort.masked(), algorithm=algorithm, random_state=random_state, **resolved)
    store.put(key, result, cohort_key=cohort.key)
    return key, result
