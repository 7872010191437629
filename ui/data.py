"""Cached calls into ``core`` for the pages. Expensive results are computed once per
(dataset, encoder, config) key and shared by every page and session.

Heavy shared objects (the dataset, cohorts, projections, clusterings, thumbnails) live in
``st.cache_resource``: one object per key for the whole server, handed to every session without
a copy. ``st.cache_data`` would unpickle a fresh copy on every call of every rerun. Shared
objects are read-only: their arrays are frozen (``writeable=False``) and pages copy a table
before changing it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core import worker_jobs
from core.clustering.runs import (
    CLUSTERING_KIND,
    cluster_cohort,
    clustering_key,
    clustering_summary,
    default_ks,
    driver_metadata,
    drivers_of_clustering,
    save_clustering,
    save_drivers,
    save_sweep,
    stored_clustering,
    stored_drivers,
    stored_sweep,
    sweep_cohort,
    sweep_key,
)
from core.cohort import Cohort, build_cohort
from core.cohort import representative_images as _representative_images
from core.datasets import (
    DEMO_NAME,
    dataset_path,
    demo_dataset_ready,
    ensure_demo_dataset,
    list_datasets,
)
from core.demo import DEMO_PATIENTS, DEMO_SLICES
from core.embed import EmbeddingSet, embed_middle_slices_first
from core.encoders import DEFAULT_TEXT_ENCODER, ENCODERS
from core.filters import FilterError, parse_where, select_dataset
from core.ingest import Dataset, load_dataset
from core.ingest.imported import imported_encoders
from core.labels import LabelStore
from core.pixels import PixelError, load_pixels
from core.previews import PREVIEW_FOLDER, PreviewStore
from core.projection import compute_or_load, estimate_seconds, map_params, stored_projection
from core.settings import cache_root
from core.windowing import ScanValues, load_scan_values

TEXT_ENCODER = DEFAULT_TEXT_ENCODER


FIRST_START = """**First start: preparing the demo cohort.** This happens once; later starts skip it.

1. **Generating the synthetic demo cohort** ({images} cardiac-MRI slices) and reading it in: about {generate_s} s (now)
2. **Embedding the {images} slices** with efficientnet-lite0, with a progress bar and the time left: about {embed_s} s on 2 shared cores.
   Each patient's middle slice comes first, so the Map page draws a first map after about a quarter of that time.
3. **Computing the map**: PCA at once, then UMAP in the background replaces it (about 10-20 s the first time)
"""
# Measured on 2 cores shared with other work, load 4-7 (benchmarks/results/first_map.json); for
# the first-start message only.
DEMO_GENERATE_S = 10
DEMO_IMAGES_PER_S = (10, 4)  # quieter, busier


def demo_job_key() -> str:
    return f"demo:{cache_root()}"


def demo_ready() -> str:
    """The demo dataset's name once it is generated and ingested. On a fresh cache it is made by
    a background job while the main area shows the first-start steps and progress, and the page
    stops (it reruns when the job ends); call it in the main area, before anything else draws."""
    if not demo_dataset_ready():
        from ui.jobs import wait_for

        job_runner().submit(demo_job_key(), lambda *, progress: ensure_demo_dataset(progress=progress).name)
        images = DEMO_PATIENTS * DEMO_SLICES
        fast, slow = (round(images / rate, -1) for rate in DEMO_IMAGES_PER_S)
        intro = FIRST_START.format(images=images, generate_s=DEMO_GENERATE_S, embed_s=f"{fast:.0f}-{slow:.0f}")
        job = wait_for(demo_job_key(), intro=intro)
        if job.error is not None:
            raise job.error
    return DEMO_NAME


def dataset_names() -> list[str]:
    demo_ready()
    return list_datasets()


def _stamp(name: str) -> float:
    path = dataset_path(name) / "images.parquet"
    return path.stat().st_mtime if path.exists() else 0.0


def _frozen(array):
    """``array`` made read-only, so that a page changing a shared result fails loudly instead of
    changing it for every session."""
    if isinstance(array, np.ndarray):
        array.flags.writeable = False
    return array


@st.cache_resource(show_spinner=False, max_entries=16)
def _load(name: str, stamp: float) -> Dataset:
    return load_dataset(dataset_path(name))


def whole_dataset() -> Dataset:
    """The sidebar's dataset, every row (no cohort filter)."""
    name = st.session_state["dataset"]
    return _load(name, _stamp(name))


@st.cache_resource(show_spinner=False, max_entries=32)
def _selected(name: str, stamp: float, where: tuple[str, ...], excluded: tuple[str, ...], _whole: Dataset) -> Dataset:
    return select_dataset(_whole, parse_where(where), exclude_ids=excluded)


def current_dataset() -> Dataset:
    """The sidebar's dataset restricted by the cohort filter (``ui.filters``; the whole dataset
    when the filter is empty or invalid, which the sidebar reports). ``st.session_state
    ["exclude_ids"]``, a ``{dataset name: image ids}`` mapping, is the hook through which another
    page leaves single images out of every study; the images analysts excluded on the Quality page
    (``core.exclusions``, saved and versioned) are always left out."""
    whole = whole_dataset()
    where = tuple(st.session_state.get("where") or ())
    excluded = tuple(sorted({*(st.session_state.get("exclude_ids") or {}).get(whole.name, ()),
                             *decision_store().excluded_ids(whole.name)}))
    if not where and not excluded:
        return whole
    try:
        return _selected(whole.name, _stamp(st.session_state["dataset"]), where, excluded, whole)
    except FilterError:
        return whole


def encoder_options() -> list[str]:
    """Image encoders the sidebar offers: an imported dataset's own vectors, else the registry's."""
    imported = list(imported_encoders(whole_dataset()))
    return imported or [name for name, spec in ENCODERS.items() if spec.kind == "image"]


def _progress_reporter(job_report, label: str):
    """``progress(done, total)`` for ``embed_dataset`` that reports a fraction and an ETA."""
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if total == 0:
            return
        elapsed = time.monotonic() - started
        rate = done / elapsed if elapsed > 0 and done else 0
        eta = f", about {(total - done) / rate:.0f} s left" if rate and done < total else ""
        job_report(min(done / total, 1.0), f"{label}: {done}/{total} images{eta}")

    return progress


def embedding_job_key(dataset: Dataset, encoder: str, device: str = "auto", batch_size: int = 32) -> str:
    return f"embed:{dataset.token}:{encoder}:{device}:{batch_size}"


# Embedding job key -> (row positions, EmbeddingSet) of each patient's middle slice, from the
# job's first pass (``core.embed.embed_middle_slices_first``); dropped when the job ends.
_first_passes: dict[str, tuple[np.ndarray, EmbeddingSet]] = {}


def start_embedding(dataset: Dataset, encoder: str, *, device: str = "auto", batch_size: int = 32,
                    rerun: bool = False):
    """Embed in the server's background runner (cache hits read, the rest computed), each
    patient's middle slice first so that the Map page can draw a first map early
    (``map_cohort``); the job outlives the tab that started it, and asking again returns the
    same job (a new one when ``rerun`` and the last one has finished)."""
    label = f"Embedding {dataset.name} with {encoder}"
    key = embedding_job_key(dataset, encoder, device, batch_size)

    def work(*, progress):
        try:
            return embed_middle_slices_first(
                dataset, encoder, device=device, batch_size=batch_size,
                progress=_progress_reporter(progress, label),
                on_first_pass=lambda rows, first: _first_passes.__setitem__(key, (rows, first)))
        finally:
            _first_passes.pop(key, None)

    return job_runner().submit(key, work, rerun=rerun)


def _embedding_intro(dataset: Dataset, encoder: str) -> str:
    return (f"**Embedding {len(dataset.images)} images with {encoder}**: once per dataset and encoder "
            "(kept in the cache). The Map page draws a first map as soon as each patient's middle "
            "slice is embedded, then PCA of every slice, then UMAP in the background.")


def embeddings(dataset: Dataset, encoder: str) -> EmbeddingSet:
    """The embedding set of ``dataset``: computed in the background the first time, while the
    page shows the job's progress and stops; the finished set is shared by every session."""
    from ui.jobs import wait_for

    start_embedding(dataset, encoder)  # the running or finished job when there is one
    job = wait_for(embedding_job_key(dataset, encoder), intro=_embedding_intro(dataset, encoder))
    if job.error is not None:
        raise job.error
    return job.result()


def map_cohort(dataset: Dataset) -> tuple[Cohort, str | None]:
    """``(cohort, filling note or None)`` for the Map page.

    While the sidebar encoder's embedding job runs, the page shows its progress and stops until
    each patient's middle slice is embedded; from then until the job ends this returns the
    cohort of those middle slices (one image per patient, its own cohort key) with a note, and
    the caller draws its PCA map and reruns when the job ends
    (``ui.jobs.rerun_when_done(embedding_job_key(dataset, encoder))``). Otherwise (and always
    once the job has ended) it is ``session_cohort(dataset)`` and None."""
    from ui.jobs import wait_for

    encoder, level = st.session_state["encoder"], st.session_state["level"]
    key = embedding_job_key(dataset, encoder)
    job = start_embedding(dataset, encoder)
    if not job.done:
        job = wait_for(key, intro=_embedding_intro(dataset, encoder), until=lambda: key in _first_passes)
    first_pass = None if job.done else _first_passes.get(key)
    if first_pass is None:
        return session_cohort(dataset), None
    rows, first = first_pass
    subset = replace(dataset, images=dataset.images.iloc[rows].reset_index(drop=True))
    preview = _cohort(dataset.token, first.key, level, (), False, subset, first, None)
    note = (f"First map: PCA of each patient's middle slice ({len(rows)} of {len(dataset.images)} "
            f"images). The other slices are being embedded ({job.message or 'starting'}); the map "
            "updates when they are done.")
    return preview, note


def cohort(dataset: Dataset, encoder: str, level: str, metadata: tuple[str, ...] = (), with_text: bool = False) -> Cohort:
    image_set = embeddings(dataset, encoder)
    text_set = embeddings(dataset, TEXT_ENCODER) if with_text else None
    return _cohort(dataset.token, image_set.key, level, metadata, with_text, dataset, image_set, text_set)



# The dataset token and embedding key must be hashed (no leading underscore): they are what
# tells one dataset's or encoder's cohort from another's.
@st.cache_resource(show_spinner=False, max_entries=32)
def _cohort(token: str, embedding_key: str, level: str, metadata: tuple, with_text: bool, _dataset, _image_set, _text_set) -> Cohort:
    built = build_cohort(_dataset, _image_set, level=level, metadata=metadata, text_set=_text_set)
    _frozen(built.features.X)
    _frozen(built.has_vector)
    return built


@st.cache_resource(show_spinner="Clustering...", max_entries=64)
def _clustering(cohort_key: str, algorithm: str, params_items: tuple, dataset: str, _cohort: Cohort):
    key, result = cluster_cohort(_cohort, algorithm=algorithm, dataset=dataset, **dict(params_items))
    for name in ("labels", "centers", "medoid_indices", "membership"):
        _frozen(getattr(result, name))
    return key, result


def in_worker(cohort: Cohort) -> bool:
    """Whether the cohort's maps, clusterings and neighbour indexes are computed by a background
    job in a worker process (``core.worker_jobs.PROCESS_MIN_ROWS`` rows or more)."""
    return int(cohort.has_vector.sum()) >= worker_jobs.PROCESS_MIN_ROWS


def clustering_job_key(cohort: Cohort, algorithm: str, params: dict[str, Any]) -> str:
    from core.clustering import resolve_params

    return f"clustering:{clustering_key(cohort.key, algorithm, resolve_params(algorithm, **params), 0)}"


def start_clustering(cohort: Cohort, algorithm: str, params: dict[str, Any], *, rerun: bool = False):
    """Cluster a large cohort in the background: the fit in a worker process (it gets the path
    of the cohort's matrix, written once), then stored here with the cohort's table; asking
    again returns the same job."""
    dataset = st.session_state["dataset"]
    n_valid = int(cohort.has_vector.sum())
    estimate = worker_jobs.estimate_seconds(CLUSTERING_KIND, n_valid)

    def work(*, progress):
        from core.jobs import run_in_process

        progress(0.0, f"{algorithm}: writing the cohort's matrix for the worker process")
        path = worker_jobs.write_matrix(cohort)
        result, seconds, pid = run_in_process(
            worker_jobs.cluster_matrix, str(path), algorithm, params=dict(params), random_state=0,
            estimate_s=estimate, progress=progress)
        key = save_clustering(cohort, result, random_state=0, dataset=dataset, seconds=seconds)
        progress(1.0, f"{algorithm} of {n_valid} rows: stored")
        return {"key": key, "seconds": seconds, "pid": pid}

    return job_runner().submit(clustering_job_key(cohort, algorithm, params), work, rerun=rerun)


def clustering(cohort: Cohort, algorithm: str, params: dict[str, Any]):
    """``(key, Clustering)`` for the cohort; a named run, stored on disk and reloaded by key.

    A large cohort's clustering that is not stored yet is computed by a background job in a
    worker process while the page shows its progress and stops (it reruns when the job ends);
    one a server restart interrupted is offered again with a button, not restarted on its own."""
    items = tuple(sorted(params.items()))
    if in_worker(cohort):
        from ui.jobs import offer_restart, stop_if_failed, wait_for

        key = clustering_job_key(cohort, algorithm, params)
        job = job_runner().get(key)
        if job is None and stored_clustering(cohort, algorithm=algorithm, **params) is None:
            if offer_restart(key, lambda: start_clustering(cohort, algorithm, params),
                             what=f"Clustering ({algorithm})", button_key=f"restart_{key}"):
                st.stop()
            job = start_clustering(cohort, algorithm, params)
        if job is not None:
            intro = (f"**Clustering {int(cohort.has_vector.sum())} {cohort.level}s with {algorithm}** "
                     "in a background worker process; other pages stay usable meanwhile.")
            job = wait_for(key, intro=intro)
            stop_if_failed(job, lambda: start_clustering(cohort, algorithm, params, rerun=True),
                           what=f"Clustering ({algorithm})", button_key=f"retry_{key}")
    return _clustering(cohort.key, algorithm, items, st.session_state["dataset"], cohort)


@st.cache_resource(show_spinner=False, max_entries=64)
def cluster_table(clustering_key: str) -> pd.DataFrame:
    """The per-cluster summary stored with the clustering run."""
    return clustering_summary(clustering_key)


@st.cache_resource(show_spinner="Computing the map...", max_entries=64)
def _projection(cohort_key: str, method: str, n_components: int, dataset: str, _cohort: Cohort):
    params = map_params(method, int(_cohort.has_vector.sum()), n_components=n_components)
    result = compute_or_load(_cohort.masked(), cohort_key, method, dataset=dataset, **params)
    _frozen(result.coords)
    return result


def projection(cohort: Cohort, method: str, n_components: int = 2):
    """The stored (or, below ``in_worker`` size, computed) ``method`` map of ``cohort``. A large
    cohort's PCA map not stored yet is computed by a background job in a worker process while
    the page shows its progress and stops (UMAP and t-SNE come through ``map_projection``)."""
    if method == "pca" and in_worker(cohort):
        key = projection_job_key(cohort, method, n_components)
        job = job_runner().get(key)
        params = map_params(method, int(cohort.has_vector.sum()), n_components=n_components)
        if job is None and stored_projection(len(cohort.has_vector), cohort.key, method, **params) is None:
            from ui.jobs import offer_restart

            if offer_restart(key, lambda: start_projection(cohort, method, n_components),
                             what="The PCA map", button_key=f"restart_{key}"):
                st.stop()
            job = start_projection(cohort, method, n_components)
        if job is not None:
            from ui.jobs import stop_if_failed, wait_for

            job = wait_for(key, intro=f"**Computing the PCA map of {int(cohort.has_vector.sum())} "
                                      f"{cohort.level}s** in a background worker process (once; stored).")
            stop_if_failed(job, lambda: start_projection(cohort, method, n_components, rerun=True),
                           what="The PCA map", button_key=f"retry_{key}")
    return _projection(cohort.key, method, n_components, st.session_state["dataset"], cohort)


METHOD_NAMES = {"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}


def projection_job_key(cohort: Cohort, method: str, n_components: int = 2) -> str:
    return f"projection:{cohort.key}:{method}:{n_components}"


# Seconds each projection job was expected to take when it started (for the pending note).
_projection_estimates: dict[str, float] = {}


def start_projection(cohort: Cohort, method: str, n_components: int = 2, *, rerun: bool = False):
    """Compute (and store) the ``method`` map of ``cohort`` in the background runner, in a
    worker process for a large cohort (``in_worker``: it gets the path of the cohort's matrix,
    written once, and stores the map in the run store itself); asking again returns the same
    job."""
    dataset = st.session_state["dataset"]
    n_valid = int(cohort.has_vector.sum())
    params = map_params(method, n_valid, n_components=n_components)
    key = projection_job_key(cohort, method, n_components)
    estimate = estimate_seconds(method, n_valid)
    if job_runner().get(key) is None:  # the note counts down from the estimate at the start
        _projection_estimates[key] = estimate
    label = f"Computing the {METHOD_NAMES.get(method, method)} map"

    if in_worker(cohort):
        def work(*, progress):
            from core.jobs import run_in_process

            progress(0.0, f"{label}: writing the cohort's matrix for the worker process")
            path = worker_jobs.write_matrix(cohort)
            return run_in_process(worker_jobs.project_matrix, str(path), cohort.key, method,
                                  params=params, dataset=dataset, estimate_s=estimate,
                                  progress=progress)
    else:
        def work(*, progress):
            progress(0.0, label)
            return compute_or_load(cohort.masked(), cohort.key, method, dataset=dataset, **params)

    return job_runner().submit(key, work, rerun=rerun)


def map_projection(cohort: Cohort, method: str, n_components: int = 2):
    """``(projection to draw now, pending note or None)``.

    PCA, and a UMAP / t-SNE map already stored, come at once. Otherwise the method's map is
    computed in the background and the PCA map (a second) is drawn meanwhile, with a note that
    says so and about how long; the caller reruns the page when the job ends
    (``ui.jobs.rerun_when_done(projection_job_key(...))``). A failed job raises its error."""
    if method == "pca":
        return projection(cohort, method, n_components), None
    n_valid = int(cohort.has_vector.sum())
    params = map_params(method, n_valid, n_components=n_components)
    key = projection_job_key(cohort, method, n_components)
    job = job_runner().get(key)
    if job is None:
        if stored_projection(len(cohort.has_vector), cohort.key, method, **params) is not None:
            return projection(cohort, method, n_components), None  # stored: loaded, not computed
        from ui.jobs import interrupted

        if interrupted(key) is not None:  # the caller offers to start it again (ui.jobs.offer_restart)
            return projection(cohort, "pca", n_components), (
                f"Meanwhile this is the PCA map; the {METHOD_NAMES.get(method, method)} map is not computed.")
        job = start_projection(cohort, method, n_components)
    if job.done:
        if job.error is not None:
            raise job.error
        return projection(cohort, method, n_components), None  # now stored: loaded
    name = METHOD_NAMES.get(method, method)
    eta = _projection_estimates.get(key) or estimate_seconds(method, n_valid)
    if job.started_at is not None:
        eta = max(1.0, eta - (time.monotonic() - job.started_at))
    where = " in a background worker process" if in_worker(cohort) else ""
    note = (f"{name} is being computed{where} (about {eta:.0f} s; {job.message}); the map will "
            "switch when it is ready. Meanwhile this is the PCA map.")
    return projection(cohort, "pca", n_components), note


def sweep_job_key(cohort: Cohort, algorithm: str) -> str:
    return f"sweep:{sweep_key(cohort.key, algorithm, default_ks(cohort))}"


def start_sweep(cohort: Cohort, algorithm: str, *, rerun: bool = False):
    """The k sweep (k = 2-10) of ``cohort`` in the background runner, reporting each k: in a
    worker process for a large cohort (``in_worker``: it gets the path of the cohort's matrix,
    written once; the scores come back to the job's thread, which stores them), else in the
    runner's thread; asking again returns the same job."""
    dataset = st.session_state["dataset"]
    ks = list(default_ks(cohort))
    label = f"{algorithm} with k = {ks[0]}-{ks[-1]} on {int(cohort.has_vector.sum())} {cohort.level}s"

    if in_worker(cohort):
        def work(*, progress):
            from core.jobs import run_in_process

            progress(0.0, f"{label}: writing the cohort's matrix for the worker process")
            path = worker_jobs.write_matrix(cohort)
            scores, seconds, pid = run_in_process(worker_jobs.sweep_matrix, str(path), algorithm, ks=ks,
                                                  random_state=0, progress=progress)
            save_sweep(cohort, algorithm, scores, ks=ks, dataset=dataset)
            progress(1.0, f"{label}: {len(ks)} of {len(ks)} done in {seconds:.0f} s; stored")
            return {"seconds": seconds, "pid": pid}
    else:
        def work(*, progress):
            progress(0.0, label)
            sweep_cohort(cohort, algorithm, ks=ks, dataset=dataset,
                         progress=lambda fraction, message: progress(fraction, f"{label}: {message}"))
            return {"pid": os.getpid()}

    return job_runner().submit(sweep_job_key(cohort, algorithm), work, rerun=rerun)


def sweep(cohort: Cohort, algorithm: str, *, compute: bool) -> pd.DataFrame | None:
    """The stored k sweep (a named run, reloaded), or None: not asked for yet, or (when
    ``compute``, or already running) computed by a background job whose progress is drawn here
    while the rest of the page draws as usual (``ui.jobs.on_request``). Raises the job's
    ValueError (a refusal) for the page to show."""
    from ui.jobs import on_request

    return on_request(sweep_job_key(cohort, algorithm), stored=lambda: stored_sweep(cohort, algorithm),
                      start=lambda rerun: start_sweep(cohort, algorithm, rerun=rerun), asked=compute,
                      what=f"The k sweep ({algorithm})", button_key="clusters_sweep",
                      quick=not in_worker(cohort))


def drivers_job_key(clustering_key: str) -> str:
    return f"drivers:{clustering_key}"


def start_drivers(cohort: Cohort, clustering_key: str, labels: np.ndarray, *, rerun: bool = False):
    """What drives clustering ``clustering_key`` (a random forest on the metadata and its SHAP
    values) in the background runner, reporting each step: in a worker process for a large
    cohort (it gets the metadata columns and the labels; the drivers come back to the job's
    thread, which stores them), else in the runner's thread; asking again returns the same job."""
    dataset = st.session_state["dataset"]
    label = f"What drives the clusters ({len(labels)} {cohort.level}s)"

    def report(progress):
        return lambda fraction, message: progress(fraction, f"{label}: {message}")

    if in_worker(cohort):
        def work(*, progress):
            from core.jobs import run_in_process

            progress(0.0, f"{label}: starting a worker process")
            drivers, seconds, pid = run_in_process(worker_jobs.drivers_of_labels, driver_metadata(cohort),
                                                   np.asarray(labels), progress=report(progress))
            save_drivers(cohort, clustering_key, drivers, dataset=dataset)
            progress(1.0, f"{label}: done in {seconds:.0f} s; stored")
            return {"seconds": seconds, "pid": pid}
    else:
        def work(*, progress):
            progress(0.0, label)
            drivers_of_clustering(cohort, clustering_key, labels, dataset=dataset, progress=report(progress))
            return {"pid": os.getpid()}

    return job_runner().submit(drivers_job_key(clustering_key), work, rerun=rerun)


def cluster_drivers(cohort: Cohort, clustering_key: str, labels: np.ndarray, *, compute: bool) -> pd.DataFrame | None:
    """Mean |SHAP| per metadata column and cluster: stored (reloaded), or None: not asked for
    yet, or (when ``compute``, or already running) computed by a background job whose progress
    is drawn here while the rest of the page draws (``ui.jobs.on_request``). Raises the job's
    ValueError (e.g. no usable metadata column) for the page to show."""
    from ui.jobs import on_request

    return on_request(drivers_job_key(clustering_key), stored=lambda: stored_drivers(clustering_key),
                      start=lambda rerun: start_drivers(cohort, clustering_key, labels, rerun=rerun),
                      asked=compute, what="Finding what drives the clusters", button_key="clusters_drivers",
                      quick=not in_worker(cohort))


@st.cache_resource
def decision_store():
    """The audit decisions (``core.exclusions.DecisionStore``), one client per server."""
    from core.exclusions import DecisionStore

    return DecisionStore()


@st.cache_resource
def label_store() -> LabelStore:
    store = LabelStore()
    # Open the database (and create its tables) here, once, under this cache's lock: the first
    # sessions of a fresh server otherwise race to create the tables (tests/app/test_load.py).
    store.patient_overrides("")
    return store


# At most 16 x 4 MB (a 1024 px float32 frame) for every session together: the scan viewer's
# values in their own units (HU for CT), windowed per rerun.
@st.cache_resource(show_spinner=False, max_entries=16)
def scan_values(path: str, frame: int, size: int = 1024) -> ScanValues | None:
    """One scan in its own units for the window/level viewer (read-only, shared), or None when
    it cannot be read."""
    try:
        scan = load_scan_values(path, frame)
    except (PixelError, OSError, ValueError):
        return None
    step = max(1, max(scan.values.shape[:2]) // size)
    return replace(scan, values=_frozen(np.ascontiguousarray(scan.values[::step, ::step])))


# At most 1024 x 256 KB (a 256 px float32 gallery thumbnail) held for every session together.
@st.cache_resource(show_spinner=False, max_entries=1024)
def thumbnail(path: str, frame: int, size: int = 256) -> np.ndarray | None:
    """A display copy of one scan (float32 [0, 1], read-only, shared by every session), or None
    when it cannot be read."""
    try:
        image = load_pixels(path, frame)
    except (PixelError, OSError, ValueError):
        return None
    step = max(1, max(image.shape[:2]) // size)
    return _frozen(np.ascontiguousarray(image[::step, ::step]))


@st.cache_resource(show_spinner=False, max_entries=16)
def _preview_store(root: str, stamp: float) -> PreviewStore | None:
    return PreviewStore.open(root)


def preview_jpeg(root: str, image_id: str) -> bytes | None:
    """The preview ingest stored for ``image_id`` in the dataset folder ``root`` (JPEG bytes),
    or None: a dataset ingested before previews existed, a frame other than 0, an unknown id."""
    if not root or not image_id:
        return None
    try:
        stamp = (Path(root) / PREVIEW_FOLDER / "index.parquet").stat().st_mtime
    except OSError:
        return None
    store = _preview_store(root, stamp)
    return store.jpeg(image_id) if store is not None else None


def representative_images(dataset: Dataset, table: pd.DataFrame, level: str) -> pd.DataFrame:
    """One image row per table row: the image itself, or the patient's middle slice."""
    return _representative_images(dataset.images, table, level)


def current_clustering_params() -> tuple[str, dict[str, Any]]:
    """``(algorithm, params)`` the user chose on the Clusters page (defaults until they do)."""
    from core.clustering import get_algorithm

    algorithm = st.session_state["algorithm"]
    params = get_algorithm(algorithm).defaults()
    params.update(st.session_state.get("cluster_params", {}).get(algorithm, {}))
    if get_algorithm(algorithm).takes_k:
        params["k"] = int(st.session_state["k"])
    return algorithm, params


def current_clustering(cohort: Cohort):
    """The clustering the user chose on the Clusters page (defaults until they do); a large
    cohort's is computed in the background while the page shows its progress and stops."""
    algorithm, params = current_clustering_params()
    return clustering(cohort, algorithm, params)


@dataclass(frozen=True)
class ClusteringWait:
    """A large cohort's clustering that is not ready (``current_clustering_when_ready``).

    status: "running" (``note`` says what and about how long), "interrupted" (by a server
    restart; ``restart()`` starts it again), "failed" (``note`` says why; ``restart()`` starts it
    again) or "refused" (a ValueError: ``note`` is the reason)."""

    job_key: str
    algorithm: str
    status: str
    note: str
    restart: Any


# Seconds each clustering job was expected to take when it started (for the pending note).
_clustering_estimates: dict[str, float] = {}


def current_clustering_when_ready(cohort: Cohort):
    """``current_clustering`` without holding the page: ``(key, Clustering)`` when it is
    stored (or the cohort is small enough to cluster here), else a ``ClusteringWait`` while a
    large cohort's clustering runs in a background worker process (started here; a server
    restart's interrupted one is not restarted on its own). The caller draws what it can
    meanwhile and reruns when the job ends (``ui.jobs.show_clustering_wait``)."""
    algorithm, params = current_clustering_params()
    if not in_worker(cohort):
        return clustering(cohort, algorithm, params)
    try:
        key = clustering_job_key(cohort, algorithm, params)
        job = job_runner().get(key)
        if job is None and stored_clustering(cohort, algorithm=algorithm, **params) is not None:
            return clustering(cohort, algorithm, params)  # stored: loaded
    except ValueError as error:  # parameters the algorithm refuses
        return ClusteringWait("", algorithm, "refused", str(error), None)

    def restart():
        return start_clustering(cohort, algorithm, params, rerun=True)

    if job is None:
        from ui.jobs import interrupted

        if interrupted(key) is not None:
            return ClusteringWait(key, algorithm, "interrupted", "", restart)
        n_valid = int(cohort.has_vector.sum())
        _clustering_estimates[key] = worker_jobs.estimate_seconds(CLUSTERING_KIND, n_valid)
        job = start_clustering(cohort, algorithm, params)
    if job.done:
        if job.error is None:
            return clustering(cohort, algorithm, params)  # now stored: loaded
        status = "refused" if isinstance(job.error, ValueError) else "failed"
        return ClusteringWait(key, algorithm, status, str(job.error), restart)
    n_valid = int(cohort.has_vector.sum())
    eta = _clustering_estimates.get(key) or worker_jobs.estimate_seconds(CLUSTERING_KIND, n_valid)
    if job.started_at is not None:
        eta = max(1.0, eta - (time.monotonic() - job.started_at))
    note = (f"Clustering {n_valid:,} {cohort.level}s with {algorithm} in the background (about {eta:.0f} s; "
            f"{job.message}); colours switch when it is ready.")
    return ClusteringWait(key, algorithm, "running", note, restart)


@st.cache_resource
def job_runner():
    """One background job runner per server (embeddings, drift studies, classifier runs). Two
    workers, so that one long study does not hold every other user's embedding back."""
    from core.jobs import JobRunner
    from core.settings import cache_root

    # The journal lets a restarted server say which jobs it lost (ui.jobs.wait_for).
    return JobRunner(max_workers=2, journal=cache_root() / "jobs")


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


@st.cache_resource(show_spinner=False, max_entries=16)
def _similar_index(cohort_key: str, _cohort: Cohort):
    from core.explain import SimilarCases

    vectors = _cohort.masked("image")
    return SimilarCases(metric="cosine").fit(vectors)


def neighbour_job_key(cohort: Cohort) -> str:
    return f"neighbours:{cohort.key}:cosine"


def start_neighbour_index(cohort: Cohort, *, rerun: bool = False):
    """Build a large cohort's neighbour index (faiss HNSW over its image block) in a worker
    process, stored in the run store; asking again returns the same job."""
    dataset = st.session_state["dataset"]
    key = worker_jobs.index_key(cohort.key, "image", "cosine")
    estimate = worker_jobs.estimate_seconds(worker_jobs.INDEX_KIND, int(cohort.has_vector.sum()))

    def work(*, progress):
        from core.jobs import run_in_process

        progress(0.0, "Neighbour index: writing the cohort's matrix for the worker process")
        path = worker_jobs.write_matrix(cohort, "image")
        return run_in_process(worker_jobs.build_index, str(path), key, metric="cosine",
                              dataset=dataset, estimate_s=estimate, progress=progress)

    return job_runner().submit(neighbour_job_key(cohort), work, rerun=rerun)


def _index_stored(index_key: str) -> bool:
    from core.runs import RunStore

    return RunStore().load(worker_jobs.INDEX_KIND, index_key, version=worker_jobs.INDEX_VERSION) is not None


@st.cache_resource(show_spinner="Loading the neighbour index...", max_entries=4)
def _stored_index(index_key: str, cohort_key: str, _cohort: Cohort):
    # The vectors are the memory-mapped matrix the index was built from: no copy in the server.
    vectors = worker_jobs.load_matrix(worker_jobs.write_matrix(_cohort, "image"))
    found = worker_jobs.load_index(index_key, vectors, metric="cosine")
    if found is None:
        raise ValueError(f"the stored neighbour index {index_key} does not match this cohort's rows")
    return found


def _large_index(cohort: Cohort):
    """The stored neighbour index of a large cohort, built first by a background job in a worker
    process while the page shows its progress and stops (it reruns when the job ends)."""
    from ui.jobs import offer_restart, stop_if_failed, wait_for

    index_key = worker_jobs.index_key(cohort.key, "image", "cosine")
    job_key = neighbour_job_key(cohort)
    if job_runner().get(job_key) is None:
        if _index_stored(index_key):
            return _stored_index(index_key, cohort.key, cohort)
        if offer_restart(job_key, lambda: start_neighbour_index(cohort), what="The neighbour index",
                         button_key="restart_neighbours"):
            st.stop()
        start_neighbour_index(cohort)
    job = wait_for(job_key, intro=f"**Building the neighbour index of {int(cohort.has_vector.sum())} "
                                  f"{cohort.level}s** in a background worker process (once; stored).")
    stop_if_failed(job, lambda: start_neighbour_index(cohort, rerun=True), what="The neighbour index",
                   button_key="retry_neighbours")
    return _stored_index(index_key, cohort.key, cohort)


def similar_cases(cohort: Cohort, row: int, *, k: int = 8) -> pd.DataFrame:
    """The ``k`` rows nearest to ``row`` in image-embedding space (rank, id, distance, row).
    Above ``core.explain.similar.INDEX_MIN_ROWS`` rows (with faiss) the index is built once by a
    background job in a worker process and stored (``_large_index``)."""
    from core.explain.similar import INDEX_MIN_ROWS, faiss_available

    n_valid = int(cohort.has_vector.sum())
    if in_worker(cohort) and n_valid > INDEX_MIN_ROWS and faiss_available():
        index = _large_index(cohort)
    else:
        index = _similar_index(cohort.key, cohort)
    return index.query(int(row), k=min(k, n_valid - 1))


def similar_index_job_key(cohort: Cohort) -> str:
    return f"similar-index:{cohort.key}"


def similar_cases_when_ready(cohort: Cohort, row: int, *, k: int = 8) -> pd.DataFrame | None:
    """``similar_cases``, or None while the neighbour index of a large cohort (more than
    ``core.explain.similar.INDEX_MIN_ROWS`` rows: an approximate index, about a minute to build
    at 200,000 rows on 2 cores) is built in the background, so that a selection shows its rows at
    once; the caller says so and reruns when the job ends
    (``ui.jobs.rerun_when_done(similar_index_job_key(cohort))``). A failed build raises its error."""
    from core.explain.similar import INDEX_MIN_ROWS

    if int(cohort.has_vector.sum()) > INDEX_MIN_ROWS:
        key = similar_index_job_key(cohort)
        job = job_runner().submit(key, lambda *, progress: _similar_index(cohort.key, cohort))  # the same job again
        if not job.done:
            return None
        if job.error is not None:
            raise job.error
    return similar_cases(cohort, row, k=k)


def session_cohort(dataset: Dataset) -> Cohort:
    """The cohort for the sidebar's encoder and rows; stops the page with a next step when the
    encoder's weights are not on this machine."""
    from core.encoders import WeightsUnavailableError

    try:
        return cohort(dataset, st.session_state["encoder"], st.session_state["level"])
    except WeightsUnavailableError as error:
        st.error(f"{error}\n\nPick another encoder in the sidebar, or put the weights where the message says.")
        st.stop()
