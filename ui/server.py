"""Process-wide tuning of the Streamlit server that runs the app.

**Long-lived objects out of the garbage collector's way.** The server holds millions of objects
that live as long as the process: torch, scikit-learn, UMAP, Plotly and their modules. Python's
full (generation 2) collection walks all of them, about 1 s of CPU on 2 cores with everything
loaded, and every queued script run waits for it (``benchmarks/load_test.py`` counts them: one
landed in a batch of 20 Clusters sessions and quadrupled its p95). ``gc.freeze()`` moves what
exists now into a permanent generation that collections skip (as pre-fork servers do).
Objects are still freed by reference counting as usual; only cyclic garbage among the frozen
objects would stay, so we freeze right after a full collection, and only when the heap grew: after
a wave of imports (the first run; the first UMAP; the first SHAP...) or after a full collection
that took longer than ``SLOW_FULL_COLLECTION_S`` (e.g. numba compiling UMAP in a background job
leaves many long-lived objects without importing anything). A handful of times per process.
"""

from __future__ import annotations

import gc
import sys
import threading
import time

NEW_MODULES_BEFORE_REFREEZE = 50
SLOW_FULL_COLLECTION_S = 0.05

_lock = threading.Lock()
_modules_at_freeze = 0
_slow_collection = threading.Event()  # a full collection just walked a large unfrozen heap
_started: list[float] = []


def _watch_full_collections(phase: str, info: dict) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started and time.perf_counter() - _started[0] > SLOW_FULL_COLLECTION_S:
        _slow_collection.set()


def freeze_long_lived_objects() -> bool:
    """Freeze everything alive now (after a full collection) when at least
    ``NEW_MODULES_BEFORE_REFREEZE`` modules were imported since the last freeze, or a full
    collection since then was slow. True when it froze. Cheap otherwise (a length check and a
    flag); call it at the end of every script run."""
    global _modules_at_freeze
    if _watch_full_collections not in gc.callbacks:
        gc.callbacks.append(_watch_full_collections)
    grew = len(sys.modules) - _modules_at_freeze >= NEW_MODULES_BEFORE_REFREEZE
    if not grew and not _slow_collection.is_set():
        return False
    with _lock:
        grew = len(sys.modules) - _modules_at_freeze >= NEW_MODULES_BEFORE_REFREEZE
        if not grew and not _slow_collection.is_set():
            return False
        if grew:  # after a slow full collection the garbage has just been collected
            gc.collect()  # garbage first: frozen cycles would never be collected
        gc.freeze()
        _slow_collection.clear()
        _modules_at_freeze = len(sys.modules)
        return True
