"""Embed a dataset's images (or texts) with one encoder, computing only what the cache lacks.

``embed_dataset`` looks every row up in the ``EmbeddingCache``, sends only the misses through
the encoder, and writes each computed chunk to the cache as it arrives, so an interrupted run
keeps everything up to the last flushed chunk and the next run resumes from there.

Failures (unreadable files, images the encoder rejects, rows without text) are reported in
``EmbeddingSet.failures`` and get NaN rows; they are never cached, so they are retried on the
next run (a fixed file or a new decoder then just works).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.cache import DEFAULT_CHUNK_SIZE, EmbeddingCache, text_key

FAILURE_COLUMNS = ["image_id", "path", "reason"]
# Merge a namespace's shards once they are this many, so cold reads stay one file.
COMPACT_AFTER_SHARDS = 64


@dataclass
class EmbeddingSet:
    """Vectors for every row of a dataset's images table, in row order.

    image_ids : ndarray of shape (n_images,), object (str)
    vectors : ndarray of shape (n_images, dim), float32; NaN rows for failures
    encoder, version : the encoder that made them
    n_cached, n_computed : rows served from the cache / computed in this call
    failures : DataFrame (image_id, path, reason), one row per failed image row
    key : ``f"{namespace}-{hash of the image ids}"``, names this set (encoder config + rows)
    namespace : the cache namespace (encoder, version, preprocessing)
    """

    image_ids: np.ndarray
    vectors: np.ndarray
    encoder: str
    version: str
    n_cached: int
    n_computed: int
    failures: pd.DataFrame
    key: str
    namespace: str

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def ok(self) -> np.ndarray:
        """Mask of shape (n_images,): rows that have a vector."""
        return np.isfinite(self.vectors).all(axis=1)


def _images_frame(dataset: Any) -> pd.DataFrame:
    images = getattr(dataset, "images", dataset)
    if not isinstance(images, pd.DataFrame):
        raise ValueError(
            f"dataset must be a Dataset (with .images) or a DataFrame, got {type(dataset).__name__}"
        )
    return images


def _require(images: pd.DataFrame, columns: list[str], encoder_name: str) -> None:
    lacking = [c for c in columns if c not in images.columns]
    if lacking:
        raise ValueError(
            f"images table lacks column(s) {lacking} needed by encoder {encoder_name!r}; "
            f"it has {list(images.columns)}"
        )


def _set_key(namespace: str, image_ids: np.ndarray) -> str:
    digest = hashlib.sha256("\n".join(image_ids.tolist()).encode("utf-8")).hexdigest()[:12]
    return f"{namespace}-{digest}"


def _imported_set(dataset: Any, encoder_name: str, progress: Callable[[int, int], None] | None) -> EmbeddingSet:
    """The vectors imported under ``encoder_name`` (``core.ingest.imported``), as a set; raises
    ValueError when the dataset has none under that name (it has no images to embed)."""
    from core.ingest.imported import load_imported_vectors

    vectors, namespace, version, missing = load_imported_vectors(dataset, encoder_name)
    image_ids = dataset.images["image_id"].astype(str).to_numpy(dtype=object)
    failed = np.flatnonzero(missing | ~np.isfinite(vectors).all(axis=1))
    failures = pd.DataFrame({"image_id": image_ids[failed], "path": "",
                             "reason": "no imported vector for this id"}, columns=FAILURE_COLUMNS)
    if progress is not None:
        progress(len(image_ids), len(image_ids))
    return EmbeddingSet(image_ids=image_ids, vectors=vectors, encoder=encoder_name, version=version,
                        n_cached=len(image_ids) - len(failed), n_computed=0, failures=failures,
                        key=_set_key(namespace, image_ids), namespace=namespace)


class _MissingPreviews:
    """The stored previews an embedding adds: frame 0 of each file the dataset's preview index
    lacks (ingest leaves PNGs to the embedding's full decode, ``core.previews``). Written a pack
    at a time (``core.previews.PreviewWriter(append=True)``); a failure to write them costs the
    previews only (galleries then decode the originals), never the embedding."""

    def __init__(self, root: Path, wanted: frozenset[str]) -> None:
        from core.previews import PreviewWriter

        self.wanted = wanted
        self.added = 0
        self._writer: Any = PreviewWriter(root, append=True)

    @classmethod
    def open(cls, dataset: Any, items: list[tuple[str, str, int]]) -> _MissingPreviews | None:
        root = getattr(dataset, "root", None)
        if not isinstance(root, Path) or not isinstance(getattr(dataset, "images", None), pd.DataFrame):
            return None  # a bare table: no dataset folder to keep previews in
        from core.previews import PreviewStore

        store = PreviewStore.open(root)
        if store is None:  # ingested without previews: none are made here either
            return None
        wanted = frozenset(image_id for image_id, _path, frame in items
                           if frame == 0 and image_id not in store)
        return cls(root, wanted) if wanted else None

    def add(self, made: dict[str, bytes]) -> None:
        if self._writer is None:
            return
        try:
            for image_id, jpeg in made.items():
                if image_id in self.wanted:
                    self._writer.add(image_id, jpeg)
        except (OSError, ValueError):
            self._writer = None

    def close(self) -> None:
        if self._writer is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.added = self._writer.close()
        self._writer = None


def _default_cache_root() -> Path:
    from core.settings import embeddings_root

    return embeddings_root()


def embed_dataset(
    dataset: Any,
    encoder_name: str,
    *,
    cache_root: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    weights_path: str | os.PathLike | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    image_embedder: Callable[..., Any] | None = None,
) -> EmbeddingSet:
    """Vectors for every row of ``dataset.images`` with encoder ``encoder_name``.

    Parameters
    ----------
    dataset : Dataset or DataFrame
        Its images table needs ``image_id``, ``path`` and ``frame`` (image encoders) or
        ``image_id`` and ``text`` (encoders of kind "text"; the cache key is then
        ``text_key(text)``, so equal texts are embedded once).
    encoder_name : a name in ``core.encoders.ENCODERS``
    cache_root : cache directory, default ``core.settings.embeddings_root()``
        (``cache/embeddings`` in the project)
    device : "auto", "cpu", "cuda", ... (see ``core.encoders``)
    batch_size : images per forward pass
    progress : optional callable(done, total) over all rows, cached rows counted as done
    weights_path : optional weights file for encoders that take one
    chunk_size : vectors per cache shard; an interrupted run loses at most this many
    image_embedder : what embeds the images the cache lacks, called like
        ``iter_image_embeddings(items, encoder, batch_size=, progress=)`` (the default); e.g.
        ``core.ray_engine.ray_image_embedder`` runs them through Ray Data

    Returns
    -------
    EmbeddingSet
        ``vectors`` of shape (n_images, dim) aligned with the images rows.
        ``n_cached + n_computed + n_failed == n_images``.

    Raises ``ValueError`` for an unknown encoder, a bad device or missing columns, and
    ``core.encoders.WeightsUnavailableError`` when the encoder's weights are not here.
    """
    from core.encoders import ENCODERS, get_encoder, iter_image_embeddings
    from core.ingest.imported import imported_encoders

    images = _images_frame(dataset)
    imported = imported_encoders(dataset)
    spec = ENCODERS.get(encoder_name)
    if imported and (encoder_name in imported or spec is None or spec.kind == "image"):
        return _imported_set(dataset, encoder_name, progress)  # no images: the imported vectors
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if spec is not None and spec.kind == "image":
        from core.decode_pool import prestart_workers, use_processes

        if use_processes(len(images)):
            prestart_workers()  # the decode workers' imports run while the encoder loads
    encoder = get_encoder(encoder_name, device=device, weights_path=weights_path)
    spec = encoder.spec
    is_text = spec.kind == "text"
    _require(images, ["image_id", "text"] if is_text else ["image_id", "path", "frame"], spec.name)

    cache = EmbeddingCache(cache_root if cache_root is not None else _default_cache_root())
    # An embedder that decodes differently (e.g. on the GPU) names that in its own namespace.
    params = {**encoder.preprocess_params(), **getattr(image_embedder, "preprocess_extra", {})}
    namespace = cache.namespace(spec.name, spec.version, params, dim=spec.dim)
    image_ids = images["image_id"].astype(str).to_numpy(dtype=object)
    paths = (
        images["path"]
        .astype(object)
        .where(images["path"].notna(), "")
        .astype(str)
        .to_numpy(dtype=object)
        if "path" in images.columns
        else np.full(len(images), "", dtype=object)
    )
    n = len(images)
    failures: dict[int, str] = {}  # row -> reason

    if is_text:
        texts = images["text"].astype(object).to_numpy()
        has_text = np.array([isinstance(t, str) and t.strip() != "" for t in texts], dtype=bool)
        keys = np.array(
            [text_key(t) if ok else "" for t, ok in zip(texts, has_text, strict=True)], dtype=object
        )
        for row in np.flatnonzero(~has_text):
            failures[int(row)] = "no text"
    else:
        has_text = np.ones(n, dtype=bool)
        keys = image_ids

    vectors = np.empty((n, spec.dim), np.float32)
    vectors.fill(np.nan)
    lookup = np.flatnonzero(has_text)
    cached, hit = cache.get(namespace, keys[lookup]) if len(lookup) else (None, np.zeros(0, bool))
    if hit.any():
        vectors[lookup[hit]] = cached[hit]
    n_cached = int(hit.sum())
    todo_rows = lookup[~hit]
    # Each distinct key is computed once, however many rows share it.
    rows_of_key: dict[str, list[int]] = {}
    for row in todo_rows:
        rows_of_key.setdefault(keys[row], []).append(int(row))
    todo_keys = list(rows_of_key)
    first_rows = [rows[0] for rows in rows_of_key.values()]

    total = n
    if progress is not None:
        progress(n_cached + len(failures), total)
    done_base = n_cached + len(failures)

    def place(chunk_keys: list[str], chunk_vectors: np.ndarray, writer) -> None:
        chunk_vectors = np.asarray(chunk_vectors, dtype=np.float32)
        finite = np.isfinite(chunk_vectors).all(axis=1) if len(chunk_keys) else np.zeros(0, bool)
        good_keys = [k for k, ok in zip(chunk_keys, finite, strict=True) if ok]
        if good_keys:
            writer.add(good_keys, chunk_vectors[finite])
        for key, vector, ok in zip(chunk_keys, chunk_vectors, finite, strict=True):
            for row in rows_of_key.get(key, []):
                if ok:
                    vectors[row] = vector
                else:
                    failures[row] = "encoder returned non-finite values"

    with cache.writer(namespace, chunk_size=chunk_size) as writer:
        if is_text and len(todo_keys):
            all_texts = images["text"].to_numpy(dtype=object)
            for start in range(0, len(todo_keys), batch_size):
                batch_keys = todo_keys[start : start + batch_size]
                batch_rows = first_rows[start : start + batch_size]
                place(batch_keys, encoder.embed_texts([all_texts[r] for r in batch_rows]), writer)
                if progress is not None:
                    progress(done_base + min(start + batch_size, len(todo_keys)), total)
        elif len(todo_keys):
            frames = images["frame"].to_numpy()
            items = [
                (str(k), str(paths[r]), int(frames[r]))
                for k, r in zip(todo_keys, first_rows, strict=True)
            ]
            inner = None
            if progress is not None:

                def inner(done: int, _total: int) -> None:
                    progress(done_base + done, total)

            # Files whose preview ingest left to this decode (PNG): the same decode makes it.
            previews = None if image_embedder is not None else _MissingPreviews.open(dataset, items)
            extra = {"previews": previews.wanted} if previews is not None else {}
            for chunk in (image_embedder or iter_image_embeddings)(
                items, encoder, batch_size=batch_size, progress=inner, **extra
            ):
                place(list(chunk.image_ids), chunk.vectors, writer)
                for image_id, _path, reason in chunk.failures:
                    for row in rows_of_key.get(image_id, []):
                        failures[row] = str(reason)
                if previews is not None:
                    previews.add(getattr(chunk, "previews", None) or {})
            if previews is not None:
                previews.close()

    # A row the encoder neither embedded nor reported must not vanish silently.
    for row in todo_rows:
        if row not in failures and not np.isfinite(vectors[row]).all():
            failures[int(row)] = "encoder returned no result for this image"
    if cache.shard_count(namespace) > COMPACT_AFTER_SHARDS:
        cache.compact(namespace)

    failed_rows = sorted(failures)
    vectors[failed_rows] = np.nan
    failure_frame = pd.DataFrame(
        {
            "image_id": image_ids[failed_rows],
            "path": paths[failed_rows],
            "reason": [failures[r] for r in failed_rows],
        },
        columns=FAILURE_COLUMNS,
    )
    n_computed = n - n_cached - len(failed_rows)
    if progress is not None:
        progress(total, total)
    return EmbeddingSet(
        image_ids=image_ids,
        vectors=vectors,
        encoder=spec.name,
        version=spec.version,
        n_cached=n_cached,
        n_computed=n_computed,
        failures=failure_frame,
        key=_set_key(namespace, image_ids),
        namespace=namespace,
    )


def middle_slice_rows(images: pd.DataFrame) -> np.ndarray:
    """Row positions (ascending) of each patient's middle image: the one
    ``core.cohort.representative_images`` shows for a patient (``len(group) // 2`` in table
    order). Rows without a patient id are left out. ndarray of shape (n_patients,), int."""
    if "patient_id" not in images.columns:
        raise ValueError(f"images table lacks column 'patient_id'; it has {list(images.columns)}")
    groups = images.reset_index(drop=True).groupby("patient_id", sort=False).indices
    return np.sort(np.array([rows[len(rows) // 2] for rows in groups.values()], dtype=np.int64))


def embed_middle_slices_first(
    dataset: Any,
    encoder_name: str,
    *,
    on_first_pass: Callable[[np.ndarray, EmbeddingSet], None],
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> EmbeddingSet:
    """``embed_dataset`` in two passes, so that a first map can be drawn from one image per
    patient long before every slice is embedded.

    Pass 1 embeds each patient's middle image (``middle_slice_rows``) and hands
    ``(rows, set)`` to ``on_first_pass``: ``rows`` are positions in ``dataset.images`` and
    ``set`` is the EmbeddingSet of ``images.iloc[rows]`` (its own key). Pass 2 embeds every row;
    pass 1's vectors come back from the cache, so the result is the same EmbeddingSet a single
    ``embed_dataset`` call returns (``n_cached`` / ``n_computed`` count both passes together).
    When every patient has one image (nothing to gain), or the dataset's vectors were imported
    (nothing to embed), there is one pass and no callback.

    ``progress(done, total)`` counts over all rows through both passes; other keyword
    arguments go to ``embed_dataset``. Raises what ``embed_dataset`` raises.
    """
    from core.ingest.imported import imported_encoders

    images = _images_frame(dataset)
    rows = middle_slice_rows(images) if "patient_id" in images.columns else np.arange(len(images))
    if len(rows) == len(images) or imported_encoders(dataset):  # imported vectors: nothing to embed
        return embed_dataset(dataset, encoder_name, progress=progress, **kwargs)
    total = len(images)
    first_progress = None if progress is None else (lambda done, _n: progress(done, total))
    subset = images.iloc[rows].reset_index(drop=True)
    if dataclasses.is_dataclass(dataset) and hasattr(dataset, "root"):
        # Keep the dataset folder: pass 1's decodes make the previews ingest left to them (PNG).
        subset = dataclasses.replace(dataset, images=subset)
    first = embed_dataset(subset, encoder_name, progress=first_progress, **kwargs)
    on_first_pass(rows, first)
    full = embed_dataset(dataset, encoder_name, progress=progress, **kwargs)
    # Pass 1's computed vectors were cache hits in pass 2: count them as computed.
    moved = min(first.n_computed, full.n_cached)
    full.n_cached -= moved
    full.n_computed += moved
    return full
