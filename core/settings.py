"""Where ScanAtlas keeps its files. One environment variable moves them all.

``SCANATLAS_CACHE`` (default: ``cache/`` in the project) holds ingested datasets, the
embedding cache, projections, runs and the label database. ``SCANATLAS_DB_URL`` points the
label database at PostgreSQL (or any SQLAlchemy URL) instead of the SQLite file.
``SCANATLAS_DATA_ROOTS`` lists the server folders the app may read (``core.roots``);
``SCANATLAS_MAX_UPLOAD_FILES`` / ``SCANATLAS_MAX_UPLOAD_BYTES`` bound one upload
(``core.uploads``). Numba keeps UMAP's compiled functions in ``SCANATLAS_CACHE/numba``
unless ``NUMBA_CACHE_DIR`` is set (:func:`configure_numba_cache`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def cache_root() -> Path:
    return Path(os.environ.get("SCANATLAS_CACHE", PROJECT_ROOT / "cache"))


def datasets_root() -> Path:
    return cache_root() / "datasets"


def embeddings_root() -> Path:
    return cache_root() / "embeddings"


def runs_root() -> Path:
    return cache_root() / "runs"


def database_url() -> str:
    return os.environ.get("SCANATLAS_DB_URL", f"sqlite:///{cache_root() / 'scanatlas.db'}")


def numba_cache_dir() -> Path:
    return cache_root() / "numba"


# The NUMBA_CACHE_DIR value this module set (None: it set none), so that a later call under
# another SCANATLAS_CACHE moves it, while a value the user set is never touched.
_numba_dir_set: str | None = None


def configure_numba_cache() -> Path:
    """Point numba's on-disk cache of compiled functions (UMAP, pynndescent) at
    ``cache_root()/numba``, unless the user set ``NUMBA_CACHE_DIR``; return the folder in use.

    Call before ``umap`` is imported: the first UMAP of a fresh server then loads its compiled
    functions from disk instead of compiling them again (a minute on 2 cores). When numba is
    already imported its config is updated too (it reads the environment only once).
    """
    global _numba_dir_set
    current = os.environ.get("NUMBA_CACHE_DIR")
    if current and current != _numba_dir_set:
        return Path(current)
    path = numba_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = _numba_dir_set = str(path)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:
        numba_config.CACHE_DIR = str(path)
    return path
