"""Shared AppTest fixtures for the pages' background jobs."""

from __future__ import annotations

import pytest
import streamlit as st

from core import worker_jobs
from core.datasets import ensure_demo_dataset


@pytest.fixture(scope="module")
def worker_demo_cache(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """A fresh cache and label database for one test module, with the demo dataset in it and
    every cohort counted as large (``PROCESS_MIN_ROWS`` = 1), so the pages' jobs run in worker
    processes. Use with ``pytestmark = pytest.mark.usefixtures("worker_demo_cache")``."""
    root = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1] + "-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(root))
        patch.setenv("SCANATLAS_DB_URL", f"sqlite:///{root / 'labels.db'}")
        patch.setattr(worker_jobs, "PROCESS_MIN_ROWS", 1)  # every cohort is "large"
        st.cache_data.clear()
        st.cache_resource.clear()
        ensure_demo_dataset()
        yield root
        st.cache_data.clear()
        st.cache_resource.clear()
