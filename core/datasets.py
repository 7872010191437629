"""The datasets a user has: ingested folders under ``datasets_root()``, side by side."""

from __future__ import annotations

import json
from pathlib import Path

from core.ingest import Dataset, ingest, load_dataset
from core.settings import cache_root, datasets_root

DEMO_NAME = "demo-cardiac-mri"


def list_datasets(root: Path | None = None) -> list[str]:
    """Names of the ingested datasets under ``root``, demo first, then alphabetical."""
    root = Path(root or datasets_root())
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if (p / "images.parquet").is_file())
    return sorted(names, key=lambda n: (n != DEMO_NAME, n))


def dataset_path(name: str, root: Path | None = None) -> Path:
    path = Path(root or datasets_root()) / name
    if path.resolve().parent != Path(root or datasets_root()).resolve():
        raise ValueError(f"dataset name {name!r} must be a plain folder name")
    return path


def open_dataset(name: str, root: Path | None = None) -> Dataset:
    return load_dataset(dataset_path(name, root))


def ensure_demo_dataset(root: Path | None = None) -> Dataset:
    """Generate (once) the synthetic demo cohort and ingest it (once); return it."""
    from core.demo import ensure_demo_cohort

    target = dataset_path(DEMO_NAME, root)
    if (target / "images.parquet").is_file():
        return load_dataset(target)
    cohort = ensure_demo_cohort(cache_root() / "demo-cohort")
    return ingest(cohort, target, name=DEMO_NAME).dataset


def dataset_manifest(name: str, root: Path | None = None) -> dict:
    path = dataset_path(name, root) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}
