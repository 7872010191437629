"""Process-wide tuning of the Streamlit server that runs the app.

**Long-lived objects out of the garbage collector's way.** The server holds millions of objects
that live as long as the process: torch, scikit-learn, UMAP, Plotly and their modules. Python's
full (generation 2) collection walks all of them, about 1 s of CPU on 2 cores with everything
loaded, and every queued script run waits for it (``benchmarks/load_test.py`` counts them: one
landed in a batch of 20 Clusters sessions and quadrupled its p95). ``gc.freeze()`` moves what
exists now into a permanent generation that collections skip (as pre-fork servers do).
Objects are still freed by reference counting as usual; only cyclic garbage among the frozen
objects would stay, so we freeze after a full collection and only when a wave of imports made
the heap grow, a handful of times per process (the first run; the first UMAP; the first SHAP...).
"""

from __future__ import annotations

import gc
import sys
import threading

NEW_MODULES_BEFORE_REFREEZE = 50

_lock = threading.Lock()
_modules_at_freeze = 0


def freeze_long_lived_objects() -> bool:
    """Collect, then freeze everything alive now, when at least ``NEW_MODULES_BEFORE_REFREEZE``
    modules were imported since the last freeze (or never frozen). True when it froze. Cheap
    otherwise (a length check); call it at the end of every script run."""
    global _modules_at_freeze
    if len(sys.modules) - _modules_at_freeze < NEW_MODULES_BEFORE_REFREEZE:
        return False
    with _lock:
        if len(sys.modules) - _modules_at_freeze < NEW_MODULES_BEFORE_REFREEZE:
            return False
        gc.collect()  # garbage first: frozen cycles would never be collected
        gc.freeze()
        _modules_at_freeze = len(sys.modules)
        return True
