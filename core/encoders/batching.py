"""Embedding many images: decode + preprocess in worker processes while the model runs.

A bounded window of decode jobs (two batches) runs ahead of the forward pass, so spare cores
decode the next images while the model runs, and on a GPU the model never waits for the disk.
The jobs run in worker processes (``core.decode_pool``): each file is decoded once, at the
reduced scale the encoder's input allows, then cropped and resized in the worker, and only the
small resized planes come back. Threads (the earlier design) shared one core for much of each
file, because pydicom's and Pillow's Python parts hold the GIL. Fewer images than
``PROCESS_MIN_ITEMS`` still decode in threads, where a pool's start-up would dominate.

Scheduling, for the case where decoding is the bottleneck (compressed DICOM: a 1,955 px JPEG
2000 file takes 0.6 s to decode, the model 15 ms per image): each batch's files are dispatched
to the workers largest first (file size), so that no worker is left with a big file while the
others have finished theirs; results still come back in input order, and the model gets each
batch as early as before. The model keeps its torch threads (a thread count that followed the
decoding would make the vectors depend on timing: oneDNN's sums differ in the last bits
between one and two threads); its idle OpenMP threads spin only briefly before they sleep
(``GOMP_SPINCOUNT=10000``, set in ``core/__init__.py``), so they leave the cores to the decode
workers.

Numbers: ``benchmarks/bench_decode.py`` (``benchmarks/results/decode.json``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
import torch

from core.decode_pool import DecodePool, decode_for_model, decode_processes, use_processes
from core.encoders.device import available_cores, default_batch_size
from core.encoders.image import ImageEncoder, planes_to_input
from core.pixels import DEFAULT_MAX_PIXELS

Item = tuple[str, str, int]
Failure = tuple[str, str, str]


@dataclass
class EmbeddedChunk:
    """One batch of results.

    image_ids : ids of the images embedded, in input order.
    vectors : ndarray of shape (len(image_ids), dim) float32, row i belongs to image_ids[i].
    failures : (image_id, path, reason) for the images of this batch that could not be
        embedded; they have no row in ``vectors``.
    """

    image_ids: list[str]
    vectors: np.ndarray
    failures: list[Failure] = field(default_factory=list)
    # image_id -> preview JPEG made by this batch's decodes (``previews`` of iter_image_embeddings)
    previews: dict[str, bytes] = field(default_factory=dict)


def _prepare_one(
    item: Item, encoder: ImageEncoder, max_pixels: int
) -> tuple[torch.Tensor | None, str | None]:
    """One item decoded and preprocessed here, as ``encoder.preprocess(load_pixels(...))``."""
    planes, reason = decode_for_model(item, encoder.preprocessing.input_size,
                                      encoder.preprocessing.channels, max_pixels)
    if planes is None:
        return None, reason
    return planes_to_input(planes, encoder.preprocessing), None


def default_num_workers(device: torch.device) -> int:
    """Decode threads for a device.

    On CPU the forward pass already uses every core and decoding costs about a sixth of it per
    image, so one thread per four cores keeps the model fed without stealing its cores. On a
    GPU the model outruns decoding, so all cores but one decode.
    """
    cores = available_cores()
    if device.type == "cpu":
        return max(1, cores // 4)
    return max(2, cores - 1)


def _largest_first(items: Sequence[Item], start: int, count: int, batch_size: int) -> list[int]:
    """Indices ``start .. start + count - 1`` of ``items`` in the order they go to the decode
    workers: batch after batch, and within a batch largest file first (ties and unreadable
    sizes keep input order), so that a batch's last jobs to start are short ones and the
    model still gets its batches in input order as early as before."""
    def key(index: int) -> tuple[int, int]:
        try:
            size = os.stat(items[index][1]).st_size
        except (OSError, ValueError):
            size = 0  # fails fast in the worker, with its reason
        return index // batch_size, -size

    return sorted(range(start, start + count), key=key)


def _check_items(items: Sequence[Item]) -> list[Item]:
    checked = []
    for index, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 3):
            raise ValueError(
                f"items[{index}] must be (image_id, path, frame), got {item!r}"
            )
        image_id, path, frame = item
        checked.append((str(image_id), os.fspath(path), int(frame)))
    return checked


def iter_image_embeddings(
    items: Sequence[Item],
    encoder: ImageEncoder,
    *,
    batch_size: int | None = 32,
    num_workers: int | None = None,
    processes: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
    previews: Collection[str] = (),
) -> Iterator[EmbeddedChunk]:
    """Embed images batch by batch, decoding ahead of the forward pass.

    items : sequence of (image_id, path, frame); each is one 2-D image (one frame of a
        multi-frame file).
    encoder : an image encoder from ``get_encoder``.
    batch_size : images per forward pass; None picks one for the device (128 on CUDA, 32
        otherwise).
    num_workers : decode threads when decoding stays in threads; None picks
        ``default_num_workers(encoder.device)``, or one per core for a single batch (nothing
        to overlap with the model then).
    processes : decode worker processes; None picks ``core.decode_pool.decode_processes``
        (``SCANATLAS_DECODE_PROCESSES``, else one per core); 0 keeps decoding in threads.
        Fewer than ``core.decode_pool.PROCESS_MIN_ITEMS`` items decode in threads too (a
        pool's start-up would cost more than it saves).
    max_pixels : per-frame decode budget passed to ``core.pixels.load_pixels``.
    progress : optional callable(done, total), called after every batch; failures count
        as done.
    previews : image ids whose decode also makes the stored preview
        (``core.previews.load_with_preview``), returned in ``EmbeddedChunk.previews``.

    Yields EmbeddedChunk per batch, in input order. Every item appears exactly once, either
    as a row (image_ids / vectors) or in failures with its reason; a batch in which every
    image failed yields an empty ``vectors`` of shape (0, dim).
    Raises ValueError for a text encoder, a malformed item, batch_size / num_workers < 1 or
    processes < 0.
    """
    if not isinstance(encoder, ImageEncoder):
        raise ValueError(
            f"iter_image_embeddings needs an image encoder, got {getattr(encoder, 'spec', encoder)!r}"
        )
    if batch_size is None:
        batch_size = default_batch_size(encoder.device)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers={num_workers} must be >= 1")
    items = _check_items(items)
    total = len(items)
    if num_workers is None:
        # One batch: the model waits for all of its decoding anyway, so every core decodes.
        num_workers = (default_num_workers(encoder.device) if total > batch_size
                       else available_cores())
    if processes is None:
        processes = decode_processes(encoder.device.type)
    if processes < 0:
        raise ValueError(f"processes={processes} must be >= 0")
    if use_processes(total, processes):
        kind, workers = "process", processes
    else:
        kind, workers = "thread", num_workers
    preprocessing = encoder.preprocessing
    pin = encoder.device.type == "cuda"
    # Two batches in flight: one being stacked and run, one decoding.
    window = 2 * batch_size
    done = 0
    wanted = frozenset(previews)
    with DecodePool(kind, workers, input_size=preprocessing.input_size,
                    channels=preprocessing.channels, max_pixels=max_pixels) as pool:
        pending: deque[tuple[Item, Future]] = deque()
        next_index = 0

        def top_up() -> None:
            nonlocal next_index
            count = max(0, min(total - next_index, window - len(pending)))
            order = (_largest_first(items, next_index, count, batch_size) if kind == "process"
                     else range(next_index, next_index + count))
            futures: dict[int, Future] = {}
            for index in order:
                item = items[index]
                try:
                    future = pool.submit(item, item[0] in wanted)
                except BrokenProcessPool as error:  # a worker died since the last result
                    future = Future()
                    future.set_exception(error)
                futures[index] = future
            pending.extend((items[index], futures[index])
                           for index in range(next_index, next_index + count))
            next_index += count

        def recover() -> None:
            # A worker process died: the jobs in flight went with it. Decode them again one at
            # a time, so only a file that kills a worker again fails; finished ones are kept.
            lost = [index for index, (_, future) in enumerate(pending)
                    if not future.done() or future.exception() is not None]
            redone = pool.recover([pending[index][0] for index in lost], wanted)
            for index, result in zip(lost, redone, strict=True):
                finished: Future = Future()
                finished.set_result(result)
                pending[index] = (pending[index][0], finished)

        top_up()
        while pending:
            ids: list[str] = []
            tensors: list[torch.Tensor] = []
            failures: list[Failure] = []
            made: dict[str, bytes] = {}
            for _ in range(min(batch_size, len(pending))):
                try:
                    result = pending[0][1].result()
                except BrokenProcessPool:
                    recover()
                    result = pending[0][1].result()
                planes, reason = result[0], result[1]
                item, _ = pending.popleft()
                if len(result) > 2 and result[2]:
                    made[item[0]] = result[2]
                if planes is None:
                    failures.append((item[0], item[1], reason or "unknown error"))
                    continue
                ids.append(item[0])
                tensors.append(planes_to_input(planes, preprocessing))
            top_up()  # keep decoding while this batch runs through the model
            if tensors:
                batch = torch.stack(tensors)
                if pin:
                    batch = batch.pin_memory()
                vectors = encoder.embed_batch(batch)
            else:
                vectors = np.zeros((0, encoder.spec.dim), dtype=np.float32)
            done += len(ids) + len(failures)
            if progress is not None:
                progress(done, total)
            yield EmbeddedChunk(image_ids=ids, vectors=vectors, failures=failures, previews=made)
