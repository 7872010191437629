"""Cached calls into ``core`` for the pages. Expensive results are computed once per
(dataset, encoder, config) key and shared by every page and session."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.clustering import k_sweep
from core.datasets import dataset_path, ensure_demo_dataset, list_datasets
from core.embed import EmbeddingSet, embed_dataset
from core.ingest import Dataset, load_dataset
from core.labels import LabelStore
from core.pixels import PixelError, load_pixels
from core.projection import ProjectionStore, compute_or_load
from core.settings import runs_root
from core.workspace import ClusteringStore, Cohort, build_cohort, cluster_cohort

TEXT_ENCODER = "minilm"


@st.cache_resource(show_spinner="Preparing the demo cohort (first start only)...")
def demo_ready() -> str:
    return ensure_demo_dataset().name


def dataset_names() -> list[str]:
    demo_ready()
    return list_datasets()


def _stamp(name: str) -> float:
    path = dataset_path(name) / "images.parquet"
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(show_spinner=False, max_entries=16)
def _load(name: str, stamp: float) -> Dataset:
    return load_dataset(dataset_path(name))


def current_dataset() -> Dataset:
    name = st.session_state["dataset"]
    return _load(name, _stamp(name))


def dataset_token(dataset: Dataset) -> str:
    """Changes whenever the dataset folder is re-ingested."""
    return f"{dataset.root}@{dataset.manifest.get('created', '')}"


def _progress_reporter(bar, encoder: str):
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if bar is None or total == 0:
            return
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed > 0 and done else 0
        eta = f", about {(total - done) / rate:.0f} s left" if rate and done < total else ""
        bar.progress(min(done / total, 1.0), text=f"{encoder}: {done}/{total} images{eta}")

    return progress


def run_embeddings(dataset: Dataset, encoder: str, *, device: str = "auto", batch_size: int = 32) -> EmbeddingSet:
    """Embed now (cache hits are read, the rest computed) with a progress bar and ETA."""
    bar = st.progress(0.0, text=f"{encoder}: checking the embedding cache...")
    try:
        return embed_dataset(dataset, encoder, device=device, batch_size=batch_size,
                             progress=_progress_reporter(bar, encoder))
    finally:
        bar.empty()


@st.cache_resource
def _embedding_memo() -> dict:
    """Embedding sets by (dataset token, encoder), shared by sessions; a dict rather than
    ``st.cache_data`` so that the progress bar lives outside the cached call."""
    return {}


def embeddings(dataset: Dataset, encoder: str) -> EmbeddingSet:
    """The embedding set of ``dataset`` (computed with a progress bar the first time)."""
    memo = _embedding_memo()
    key = (dataset_token(dataset), encoder)
    if key not in memo:
        holder = st.empty()
        try:
            memo[key] = embed_dataset(dataset, encoder, progress=_progress_reporter(holder, encoder))
        finally:
            holder.empty()
        while len(memo) > 32:
            memo.pop(next(iter(memo)))
    return memo[key]


def cohort(dataset: Dataset, encoder: str, level: str, metadata: tuple[str, ...] = (), with_text: bool = False) -> Cohort:
    image_set = embeddings(dataset, encoder)
    text_set = embeddings(dataset, TEXT_ENCODER) if with_text else None
    return _cohort(dataset_token(dataset), image_set.key, level, metadata, with_text, dataset, image_set, text_set)


# The dataset token and embedding key must be hashed (no leading underscore): they are what
# tells one dataset's or encoder's cohort from another's.
@st.cache_data(show_spinner=False, max_entries=32)
def _cohort(token: str, embedding_key: str, level: str, metadata: tuple, with_text: bool, _dataset, _image_set, _text_set) -> Cohort:
    return build_cohort(_dataset, _image_set, level=level, metadata=metadata, text_set=_text_set)


@st.cache_data(show_spinner="Clustering...", max_entries=64)
def _clustering(cohort_key: str, algorithm: str, params_items: tuple, _cohort: Cohort):
    return cluster_cohort(ClusteringStore(runs_root()), _cohort, algorithm=algorithm, **dict(params_items))


def clustering(cohort: Cohort, algorithm: str, params: dict[str, Any]):
    """``(key, Clustering)`` for the cohort; stored on disk and reloaded by key."""
    return _clustering(cohort.key, algorithm, tuple(sorted(params.items())), cohort)


@st.cache_data(show_spinner="Computing the map...", max_entries=64)
def _projection(cohort_key: str, method: str, n_components: int, _cohort: Cohort):
    X = _cohort.masked()
    params = {"n_components": n_components}
    if method in ("umap", "tsne"):
        n_valid = int(_cohort.has_vector.sum())
        key = "n_neighbors" if method == "umap" else "perplexity"
        params[key] = min(15 if method == "umap" else 30, max(2, n_valid - 1))
    return compute_or_load(ProjectionStore(runs_root()), X, cohort_key, method, **params)


def projection(cohort: Cohort, method: str, n_components: int = 2):
    return _projection(cohort.key, method, n_components, cohort)


@st.cache_data(show_spinner="Sweeping k...", max_entries=32)
def sweep(cohort_key: str, algorithm: str, _cohort: Cohort) -> pd.DataFrame:
    X = _cohort.X[_cohort.has_vector]
    top = min(10, len(X) - 1)
    return k_sweep(X, algorithm=algorithm, ks=range(2, top + 1))


@st.cache_resource
def label_store() -> LabelStore:
    return LabelStore()


@st.cache_data(show_spinner=False, max_entries=2048)
def thumbnail(path: str, frame: int, size: int = 256) -> np.ndarray | None:
    """A display copy of one scan (float32 [0, 1]), or None when it cannot be read."""
    try:
        image = load_pixels(path, frame)
    except (PixelError, OSError, ValueError):
        return None
    step = max(1, max(image.shape[:2]) // size)
    return np.ascontiguousarray(image[::step, ::step])


def representative_images(dataset: Dataset, table: pd.DataFrame, level: str) -> pd.DataFrame:
    """One image row per table row: the image itself, or the patient's middle slice."""
    images = dataset.images
    if level == "image":
        return table
    picked = images.groupby("patient_id", sort=False).apply(lambda g: g.iloc[len(g) // 2], include_groups=False)
    picked = picked.reset_index()
    return table[["patient_id"]].merge(picked, on="patient_id", how="left")


def current_clustering(cohort: Cohort):
    """The clustering the user chose on the Clusters page (defaults until they do)."""
    from core.clustering import get_algorithm

    algorithm = st.session_state["algorithm"]
    params = get_algorithm(algorithm).defaults()
    params.update(st.session_state.get("cluster_params", {}).get(algorithm, {}))
    if get_algorithm(algorithm).takes_k:
        params["k"] = int(st.session_state["k"])
    return clustering(cohort, algorithm, params)


@st.cache_resource
def job_runner():
    """One background job runner per server (drift studies, classifier runs)."""
    from core.jobs import JobRunner

    return JobRunner(max_workers=1)


@st.cache_data(show_spinner="Computing SHAP values...", max_entries=16)
def shap_for_study(study_key: str, _study):
    """SHAP for a classifier study (``core.explain.study_shap``, kept in the run store)."""
    from core.explain import study_shap

    return study_shap(_study)


@st.cache_data(show_spinner="Computing Grad-CAM...", max_entries=64)
def gradcam_for(study_key: str, _study, path: str, frame: int, class_index: int | None = None):
    """(scan, overlay) from ``core.explain.study_gradcam``, or None (see there)."""
    from core.explain import study_gradcam

    return study_gradcam(_study, path, frame, class_index)


@st.cache_resource(max_entries=16)
def _similar_index(cohort_key: str, _cohort: Cohort):
    from core.explain import SimilarCases

    vectors = _cohort.masked("image")
    return SimilarCases(metric="cosine").fit(vectors)


def similar_cases(cohort: Cohort, row: int, *, k: int = 8) -> pd.DataFrame:
    """The ``k`` rows nearest to ``row`` in image-embedding space (rank, id, distance, row)."""
    index = _similar_index(cohort.key, cohort)
    return index.query(int(row), k=min(k, int(cohort.has_vector.sum()) - 1))


def session_cohort(dataset: Dataset) -> Cohort:
    """The cohort for the sidebar's encoder and rows; stops the page with a next step when the
    encoder's weights are not on this machine."""
    from core.encoders import WeightsUnavailableError

    try:
        return cohort(dataset, st.session_state["encoder"], st.session_state["level"])
    except WeightsUnavailableError as error:
        st.error(f"{error}\n\nPick another encoder in the sidebar, or put the weights where the message says.")
        st.stop()


DRIVER_SKIP = {"patient_id", "image_id", "sha256", "path", "text", "label", "filename", "frame", "n_frames",
               "rows", "columns", "n_images", "cluster"}


@st.cache_data(show_spinner="Finding what drives the clusters...", max_entries=32)
def cluster_drivers_for(clustering_key: str, _labels: np.ndarray, _table: pd.DataFrame) -> pd.DataFrame:
    """Mean |SHAP| per metadata column and cluster (``core.explain.cluster_drivers``)."""
    from core.explain import cluster_drivers

    metadata = _table[[c for c in _table.columns if c not in DRIVER_SKIP and not c.endswith("_uid")]]
    return cluster_drivers(metadata, _labels)
