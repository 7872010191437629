"""AppTest of issue 10 ("wrong cohort"): after an ingest the sidebar and every page move to the
new dataset and say its name under the title; the Data page keeps its source choice across
visits; the Export page names the mapping saved for another k, puts the label columns first.

Each test gets its own SCANATLAS_CACHE holding a small demo cohort (16 patients x 4 real DICOM
slices) and uses the cheap ``pixels`` encoder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.datasets import DEMO_NAME
from core.export import EXPORT_FIRST_COLUMNS
from core.ingest import ingest

APP = Path(__file__).resolve().parents[2] / "app.py"
PAGES_DIR = "app_pages"
PAGES = ("data", "embeddings", "map", "clusters", "label", "export", "drift", "classifiers", "fairness")
UPLOAD = "Upload files"


@pytest.fixture
def cache(tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SCANATLAS_CACHE", str(root))
    monkeypatch.setenv("SCANATLAS_DB_URL", f"sqlite:///{tmp_path / 'labels.db'}")
    monkeypatch.delenv("SCANATLAS_DATA_ROOTS", raising=False)
    ingest(demo_dir, root / "datasets" / DEMO_NAME, name=DEMO_NAME)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield root
    st.cache_data.clear()
    st.cache_resource.clear()


def open_app(page: str = "data", **query: object) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"encoder": "pixels", **{key: str(value) for key, value in query.items()}})
    at.run()
    if page != "data":
        at.switch_page(f"{PAGES_DIR}/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def scan_files(demo_dir: Path, start: int, n: int) -> list[tuple[str, bytes, str]]:
    paths = sorted(demo_dir.rglob("*.dcm"))[start:start + n]
    return [(f"{p.parent.name}_{p.name}", p.read_bytes(), "application/dicom") for p in paths]


def header_dataset(at: AppTest) -> str:
    """The dataset named in the caption under the page title ("Dataset: `name`")."""
    names = [c.value.removeprefix("Dataset: `").removesuffix("`") for c in at.caption if c.value.startswith("Dataset: `")]
    assert len(names) == 1, [c.value for c in at.caption]
    return names[0]


def ingest_upload(at: AppTest, name: str, files: list) -> None:
    at.file_uploader(key="data_upload").set_value(files).run()
    at.text_input(key="data_name").input(name).run()
    at.button(key="data_ingest").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]


def test_two_ingests_in_a_row_move_the_sidebar_and_every_page(cache: Path, demo_dir: Path) -> None:
    at = open_app()
    assert header_dataset(at) == DEMO_NAME
    at.radio(key="data_source").set_value(UPLOAD).run()

    ingest_upload(at, "first-upload", scan_files(demo_dir, 0, 24))
    assert at.selectbox(key="widget_dataset").value == "first-upload"
    assert header_dataset(at) == "first-upload"
    assert any("Ingested 24 images from 6 patients" in s.value for s in at.success)  # shown after the rerun

    ingest_upload(at, "second-upload", scan_files(demo_dir, 24, 40))
    assert at.selectbox(key="widget_dataset").value == "second-upload"
    assert at.query_params["dataset"] == "second-upload"
    assert any("Ingested 40 images from 10 patients" in s.value for s in at.success)
    assert next(m.value for m in at.metric if m.label == "Images") == "40"

    for page in PAGES:
        at.switch_page(f"{PAGES_DIR}/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert at.title[0].value == ("Agreement" if page == "drift" else page.capitalize())
        assert header_dataset(at) == "second-upload", page
        assert at.selectbox(key="widget_dataset").value == "second-upload", page
    # The user's own pick in the sidebar still wins over the last ingest.
    at.selectbox(key="widget_dataset").set_value("first-upload").run()
    assert header_dataset(at) == "first-upload" and at.session_state["dataset"] == "first-upload"


def test_use_the_demo_button_moves_the_sidebar(cache: Path, demo_dir: Path) -> None:
    at = open_app()
    at.radio(key="data_source").set_value(UPLOAD).run()
    ingest_upload(at, "mine", scan_files(demo_dir, 0, 8))
    at.radio(key="data_source").set_value("Built-in demo cohort").run()
    at.button(key="data_use_demo").click().run()
    assert at.selectbox(key="widget_dataset").value == DEMO_NAME
    assert header_dataset(at) == DEMO_NAME


def test_data_source_choice_survives_a_visit_to_another_page(cache: Path) -> None:
    at = open_app()
    assert at.radio(key="data_source").value == "Built-in demo cohort"
    at.radio(key="data_source").set_value(UPLOAD).run()
    at.switch_page(f"{PAGES_DIR}/embeddings.py").run()
    at.switch_page(f"{PAGES_DIR}/data.py").run()
    assert not at.exception
    assert at.radio(key="data_source").value == UPLOAD
    assert at.text_input(key="data_name") is not None  # the upload form, not the demo's card


def test_export_names_the_mapping_saved_for_another_k(cache: Path) -> None:
    at = open_app("label", k=4)
    at.button(key="label_save").click().run()
    assert any("Saved mapping, version 1" in s.value for s in at.success)

    at = open_app("export", k=3)
    assert header_dataset(at) == DEMO_NAME
    warning = " ".join(w.value for w in at.warning)
    assert "A mapping is saved for kmeans k=4 (mapping version 1)" in warning
    assert "Clusters" in warning
    assert at.dataframe[0].value["disease"].isna().all()

    at = open_app("export", k=4)
    assert any("Using mapping version 1" in s.value for s in at.success)
    exported = at.dataframe[0].value
    assert list(exported.columns[:5]) == list(EXPORT_FIRST_COLUMNS)
    assert exported["disease"].notna().all()
