"""Shared fixtures: fixed seeds and small real data (covid-chestxray, pydicom files, demo cohort)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
COVID_DIR = SHARED_DATA / "covid-chestxray"


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def covid_dir() -> Path:
    """The real COVID-19 image collection beside the project (never copied into it)."""
    if not (COVID_DIR / "metadata.csv").is_file():
        pytest.fail(f"real test data missing: {COVID_DIR} (set SCANATLAS_SHARED_DATA)")
    return COVID_DIR


@pytest.fixture(scope="session")
def covid_dataset(covid_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """covid-chestxray ingested once per test session."""
    from core.ingest import ingest

    return ingest(covid_dir, tmp_path_factory.mktemp("covid-dataset")).dataset


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo cohort (real DICOM files): 16 patients x 4 slices of 64 px."""
    from core.demo import make_demo_cohort

    root = tmp_path_factory.mktemp("demo-cohort")
    make_demo_cohort(root, n_patients=16, n_slices=4, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def demo_dataset(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from core.ingest import ingest

    return ingest(demo_dir, tmp_path_factory.mktemp("demo-dataset")).dataset


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private SCANATLAS_CACHE (datasets, embeddings, runs) for one test module."""
    root = tmp_path_factory.mktemp("scanatlas-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def demo40(cache_env: Path, tmp_path_factory: pytest.TempPathFactory):
    """40 patients x 4 slices of 128 px: big enough for clustering to mean something."""
    from core.demo import make_demo_cohort
    from core.ingest import ingest

    cohort = tmp_path_factory.mktemp("demo40")
    make_demo_cohort(cohort, n_patients=40, n_slices=4, size=128, seed=0)
    return ingest(cohort, cache_env / "datasets" / "demo40").dataset
