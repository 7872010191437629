"""core.settings: numba's cache of compiled functions lives under SCANATLAS_CACHE unless the user
set NUMBA_CACHE_DIR (issue 10: UMAP's first call compiled for a minute on every fresh start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numba.core.config
import pytest

import core.settings as settings
from core.settings import configure_numba_cache


@pytest.fixture
def no_numba_setting(monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(settings, "_numba_dir_set", None)
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", numba.core.config.CACHE_DIR)


def test_numba_cache_dir_goes_under_the_cache(no_numba_setting, monkeypatch, tmp_path):
    monkeypatch.setenv("SCANATLAS_CACHE", str(tmp_path / "a"))
    assert configure_numba_cache() == tmp_path / "a" / "numba"
    assert (tmp_path / "a" / "numba").is_dir()
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "a" / "numba")
    # numba was imported before: its config, read once at import, follows too.
    assert str(tmp_path / "a" / "numba") == numba.core.config.CACHE_DIR
    # Set by ScanAtlas itself: a new SCANATLAS_CACHE moves it.
    monkeypatch.setenv("SCANATLAS_CACHE", str(tmp_path / "b"))
    assert configure_numba_cache() == tmp_path / "b" / "numba"
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "b" / "numba")


def test_a_numba_cache_dir_the_user_set_is_kept(no_numba_setting, monkeypatch, tmp_path):
    monkeypatch.setenv("SCANATLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert configure_numba_cache() == tmp_path / "mine"
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")
    assert not (tmp_path / "cache" / "numba").exists()


@pytest.mark.slow
def test_a_umap_run_leaves_compiled_functions_under_the_cache(tmp_path):
    """A real UMAP in a fresh process (numba not imported before) writes its cache there."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["SCANATLAS_CACHE"] = str(tmp_path)
    code = (
        "import numpy as np; from core.projection import project\n"
        "project(np.random.default_rng(0).normal(size=(30, 4)), method='umap', n_neighbors=5)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2], env=env, check=True,
                   capture_output=True, timeout=600)
    assert list((tmp_path / "numba").rglob("*.nbi")), "no numba index files under the cache"
