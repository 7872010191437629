"""Where ScanAtlas keeps its files. One environment variable moves them all.

``SCANATLAS_CACHE`` (default: ``cache/`` in the project) holds ingested datasets, the
embedding cache, projections, runs and the label database. ``SCANATLAS_DB_URL`` points the
label database at PostgreSQL (or any SQLAlchemy URL) instead of the SQLite file.
``SCANATLAS_DATA_ROOTS`` lists the server folders the app may read (``core.roots``);
``SCANATLAS_MAX_UPLOAD_FILES`` / ``SCANATLAS_MAX_UPLOAD_BYTES`` bound one upload
(``core.uploads``).
"""

from __future__ import annotations

import os
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
