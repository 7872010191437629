"""Decoding for a model, in worker processes: each file decoded once, at the scale the encoder
needs, and cropped and resized to its input in the worker.

Pillow, pydicom's codecs and numpy release the GIL for their big loops, but the Python around
them (pydicom's header parsing, LUT set-up, Pillow's chunk reading) does not, so decode threads
share one core for much of each file: 16-bit PNG and compressed DICOM then leave cores idle.
Worker processes decode truly in parallel. Only what the model needs crosses the process
boundary: the resized planes, float32 of shape (1 or 3, S, S), about 200 KB for a grey
224 px input, whatever the file's size.

This module imports no torch, and the workers are forked from a fork server (where the
platform has one: Linux, macOS) that has already imported numpy, Pillow and pydicom, so a
worker starts in a few tens of milliseconds instead of the third of a second (on a quiet
2-core machine; more under load) that a spawned one spends importing them; the server starts
once per process, and :func:`prestart_workers` starts it while the encoder loads. Elsewhere
(Windows) the workers are spawned. ``core.encoders.image.preprocess_image`` is
``planes_to_input(model_planes(...))``, so the process path, the thread path and a single
``encoder.preprocess`` give the same numbers bit for bit.

Settings: ``SCANATLAS_DECODE_PROCESSES`` (default: see :func:`decode_processes`; 0 turns
worker processes off, so decoding stays in threads).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from PIL import Image

from core.pixels import DEFAULT_MAX_PIXELS, PixelError, load_pixels

__all__ = [
    "PROCESS_MIN_ITEMS",
    "DecodePool",
    "centre_square",
    "check_image",
    "decode_for_model",
    "decode_processes",
    "model_planes",
    "prestart_workers",
    "use_processes",
]

# Values may overshoot [0, 1] by rounding in upstream rescaling; beyond this it is a bug.
_RANGE_TOLERANCE = 1e-3
# Below this many images a process pool's start-up costs more than it saves: full-size
# radiographs decode in 20-60 ms each, so 24 images are about one start-up's worth of decoding
# per core when the workers are spawned (0.5-0.7 s for two on the 2-core dev box, measured) or
# the fork server starts cold (its imports, about as long, unless prestart_workers overlapped
# them with something). Forking two workers from a running server took 0.05-0.16 s there, on a
# machine shared with other work (bench_decode's worker_start).
PROCESS_MIN_ITEMS = 24
DECODE_PROCESSES_ENV = "SCANATLAS_DECODE_PROCESSES"
# What the fork server imports before it forks a worker: third-party modules only. Python
# 3.11's fork server imports them before it has the parent's sys.path, so a preloaded ``core``
# could be another checkout's; ``core``'s own modules (about 30 ms) load in each worker.
_WORKER_PRELOAD = ["numpy", "PIL.Image", "PIL.JpegImagePlugin", "PIL.PngImagePlugin", "pydicom",
                   "pydicom.pixels"]


def check_image(image: Any) -> np.ndarray:
    """``image`` as float32 (H, W) or (H, W, 3) in [0, 1]; raises ValueError otherwise."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    image = np.asarray(image, dtype=np.float32)
    low, high = float(np.min(image)), float(np.max(image))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("image contains NaN or infinite values")
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"image values must be in [0, 1], got [{low:.4g}, {high:.4g}]")
    return image


def centre_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an (H, W[, C]) array."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    # PIL's bilinear filter widens its support when shrinking, i.e. it antialiases, and it
    # releases the GIL, so decode threads resize truly in parallel.
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def model_planes(image: np.ndarray, *, input_size: int, channels: int) -> np.ndarray:
    """Centre square crop and antialiased bilinear resize of one image, before normalisation.

    image : ndarray of shape (H, W) or (H, W, 3), float32 in [0, 1].
    channels : what the model takes, 1 (grey: colour is averaged) or 3.
    Returns float32 of shape (1, S, S) for a grey result (a 3-channel model replicates it) or
    (3, S, S), S = ``input_size``. Raises ValueError as :func:`check_image`.
    """
    image = centre_square(check_image(image))
    if channels == 1:
        grey = image.mean(axis=2) if image.ndim == 3 else image
        return _resize_plane(grey, input_size)[None]
    if image.ndim == 2:
        return _resize_plane(image, input_size)[None]
    return np.stack([_resize_plane(image[:, :, c], input_size) for c in range(3)])


def decode_for_model(
    item: tuple[str, str, int], input_size: int, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS,
    preview: bool = False,
) -> tuple:
    """One (image_id, path, frame) as the model's planes, or (None, reason) when it fails.

    The file is decoded at the reduced scale ``load_pixels(min_size=input_size)`` allows. Never
    raises for a bad file: the reason names the failure (``"status: reason"`` for a
    ``PixelError``), so one bad file costs its own row only. Runs in worker processes.
    With ``preview`` a decoded image also gives its stored preview
    (``core.previews.load_with_preview``): (planes, None, JPEG bytes or None).
    """
    _, path, frame = item
    try:
        if preview:  # the one decode of a file ingest did not inflate (a PNG) makes its preview
            from core.previews import load_with_preview

            image, jpeg = load_with_preview(path, int(frame), max_pixels=max_pixels, min_size=input_size)
            return model_planes(image, input_size=input_size, channels=channels), None, jpeg
        image = load_pixels(path, int(frame), max_pixels=max_pixels, min_size=input_size)
        return model_planes(image, input_size=input_size, channels=channels), None
    except PixelError as error:
        return None, f"{error.status}: {error.reason}"
    except MemoryError as error:
        return None, f"too_large: ran out of memory decoding the image ({error})"
    except Exception as error:  # one bad image must not stop the batch; its reason is kept
        return None, f"{type(error).__name__}: {error}"


def decode_processes(device_type: str = "cpu") -> int:
    """Worker processes for decoding: ``SCANATLAS_DECODE_PROCESSES`` if set (0 = none, decode in
    threads), else one per core (``os.cpu_count()``), whether the model runs on a GPU (the cores
    only decode) or on the CPU (``benchmarks/bench_decode.py`` compares threads, one process
    and one per core beside the model; see ``benchmarks/results/decode.json``).
    ``device_type`` is where the model runs ("cpu", "cuda", "mps"). Raises ValueError for a
    setting that is not an integer >= 0.
    """
    raw = os.environ.get(DECODE_PROCESSES_ENV, "").strip()
    if not raw:
        return max(1, os.cpu_count() or 1)
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{DECODE_PROCESSES_ENV}={raw!r} must be an integer >= 0") from None
    if value < 0:
        raise ValueError(f"{DECODE_PROCESSES_ENV}={raw!r} must be an integer >= 0")
    return value


def use_processes(n_items: int, processes: int | None = None) -> bool:
    """Whether ``n_items`` images are worth a process pool: at least ``PROCESS_MIN_ITEMS`` of
    them and at least one worker process allowed (``processes``, default
    :func:`decode_processes`)."""
    processes = decode_processes() if processes is None else processes
    return processes >= 1 and n_items >= PROCESS_MIN_ITEMS


def _plain_main():
    # A page script running as __main__ must not run again in a spawned worker; core.jobs owns
    # the one lock around swapping __main__ (two owners could restore each other's stand-in).
    from core.jobs import _plain_main as plain_main

    return plain_main()


def _process_context() -> Any:
    """The multiprocessing context of the decode workers: ``forkserver`` where the platform has
    it (workers forked from a lean server process that never imports torch, not from a threaded
    server), else ``spawn``."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_WORKER_PRELOAD)
    return context


def prestart_workers() -> None:
    """Start the decode workers' fork server now, without waiting for it, so that its imports
    (about a third of a second) run while the caller does something else, e.g. loading the
    encoder. It runs until this process ends; later pools fork their workers from it. Does
    nothing where workers are spawned, or when the server is already running."""
    if _process_context().get_start_method() == "forkserver":
        _start_fork_server()


_SERVER_START = threading.Lock()


def _start_fork_server() -> None:
    """Start the fork server (and multiprocessing's resource tracker) unless it runs already,
    with ``PYTHONSAFEPATH=1``: both run ``python -c ...``, which would otherwise put the current
    directory first on ``sys.path``, so a ``numpy.py``, ``pydicom.py`` or ``multiprocessing/``
    in the folder the app or CLI was started from (a dataset folder, say) would run in the
    server and in every worker forked from it. The variable is set only while the server
    starts (its workers set ``sys.path`` from this process)."""
    from multiprocessing import forkserver

    with _SERVER_START:
        saved = os.environ.get("PYTHONSAFEPATH")
        os.environ["PYTHONSAFEPATH"] = "1"
        try:
            forkserver.ensure_running()
        finally:
            if saved is None:
                os.environ.pop("PYTHONSAFEPATH", None)
            else:
                os.environ["PYTHONSAFEPATH"] = saved


def _worker_ready() -> None:
    # A job that makes a new worker import this module (unpickling names it) before any decode.
    return None


def _new_executor(kind: str, workers: int) -> Executor:
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scanatlas-decode")
    context = _process_context()
    if context.get_start_method() == "forkserver":
        _start_fork_server()  # safely, before the pool would start it (see _start_fork_server)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    # The pool starts a worker on a submit that finds none idle. Start them all now, under a
    # bare __main__: one started later would import the real __main__ (a page script, or a
    # benchmark that imports torch). Jobs submitted back to back find none idle yet.
    with _plain_main():
        for started in [executor.submit(_worker_ready) for _ in range(workers)]:
            started.result()
    return executor


class DecodePool:
    """Decode jobs (:func:`decode_for_model`) on worker processes (``kind="process"``, spawned)
    or threads (``kind="thread"``); use as a context manager.

    A file that kills its worker process (a decoder crash, the kernel's out-of-memory killer)
    breaks a process pool and every job in flight with it. :meth:`recover` then decodes those
    jobs again one at a time in fresh workers, so only the file that kills a worker again fails,
    with a reason saying so, and the rest of the batch goes on.
    """

    def __init__(self, kind: str, workers: int, *, input_size: int, channels: int,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if kind not in ("process", "thread"):
            raise ValueError(f"kind={kind!r} must be 'process' or 'thread'")
        if workers < 1:
            raise ValueError(f"workers={workers} must be >= 1")
        self.kind, self.workers = kind, workers
        self._job = (input_size, channels, max_pixels)
        self._executor: Executor | None = None

    def __enter__(self) -> DecodePool:
        self._executor = _new_executor(self.kind, self.workers)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Cancel what has not started and wait for the rest (decodes are short)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def submit(self, item: tuple[str, str, int], preview: bool = False) -> Future:
        """Schedule one item; its future gives ``decode_for_model``'s (planes, reason[, preview])
        and raises ``BrokenProcessPool`` only when a worker process died."""
        if self._executor is None:
            raise RuntimeError("DecodePool is not open: use it in a with block")
        return self._executor.submit(decode_for_model, item, *self._job, preview=preview)

    def recover(self, items: list[tuple[str, str, int]], previews: frozenset[str] = frozenset()
                ) -> list[tuple]:
        """After a worker died: decode ``items`` (the jobs that were in flight) again one at a
        time in a one-worker pool, replaced whenever a file kills it (that file fails, with a
        reason saying so), and leave a full pool for the jobs after them. An item whose id is
        in ``previews`` is decoded with its preview, as :meth:`submit` ``(preview=True)``."""
        results: list[tuple] = []
        self.close()
        for item in items:
            if self._executor is None:
                self._executor = _new_executor(self.kind, 1)
            try:
                results.append(self.submit(item, item[0] in previews).result())
            except BrokenProcessPool:
                self.close()
                results.append((None, "unreadable: the decoder's worker process died on this "
                                "file (a decoder crash, or out of memory)"))
        self.close()
        self._executor = _new_executor(self.kind, self.workers)
        return results
