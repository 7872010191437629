"""Where ScanAtlas keeps its files. One environment variable moves them all.

``SCANATLAS_CACHE`` (default: ``cache/`` in the project) holds ingested datasets, the
embedding cache, projections, runs and the label database. ``SCANATLAS_DB_URL`` points the
label database at PostgreSQL (or any SQLAlchemy URL) instead of the SQLite file.
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
