"""The gallery shows the preview ingest stored, without opening the original file; a dataset
ingested without previews (an older one) still shows its scans from the originals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.datasets import DEMO_NAME
from core.ingest import ingest
from core.previews import PREVIEW_FOLDER, PreviewStore

APP = Path(__file__).resolve().parents[2] / "app.py"


@pytest.fixture
def cache(tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SCANATLAS_CACHE", str(root))
    monkeypatch.setenv("SCANATLAS_DB_URL", f"sqlite:///{tmp_path / 'labels.db'}")
    monkeypatch.delenv("SCANATLAS_DATA_ROOTS", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield root
    st.cache_data.clear()
    st.cache_resource.clear()


def _shown(at: AppTest) -> tuple[int, list[str]]:
    assert not at.exception, [e.value for e in at.exception]
    pictures = sum(len(image.proto.imgs) for image in at.get("image"))
    return pictures, [w.value for w in at.warning if "Cannot display" in w.value]


def _data_page() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.radio(key="data_source").set_value("Built-in demo cohort").run()
    return at


def test_the_gallery_uses_stored_previews_and_old_datasets_still_show(cache: Path, demo_dir: Path, tmp_path: Path):
    copy = tmp_path / "cohort"
    shutil.copytree(demo_dir, copy)
    dataset = ingest(copy, cache / "datasets" / DEMO_NAME, name=DEMO_NAME).dataset
    assert len(PreviewStore.open(dataset.root)) == len(dataset.images)

    pictures, cannot = _shown(_data_page())  # the originals are there: scans shown
    assert pictures > 0 and not cannot

    shutil.rmtree(copy)  # only the previews are left to show
    st.cache_resource.clear()
    pictures_without_originals, cannot = _shown(_data_page())
    assert pictures_without_originals == pictures and not cannot

    shutil.rmtree(dataset.root / PREVIEW_FOLDER)  # an older dataset, originals gone: says so
    st.cache_resource.clear()
    pictures_old, cannot_old = _shown(_data_page())
    assert pictures_old == 0 and len(cannot_old) == pictures

    shutil.copytree(demo_dir, copy)  # an older dataset with its originals: decoded as before
    st.cache_resource.clear()
    pictures_old, cannot_old = _shown(_data_page())
    assert pictures_old == pictures and not cannot_old
