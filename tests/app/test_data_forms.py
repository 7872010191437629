"""AppTest of the Data page's upload form: why Ingest is disabled, the name rules stated up
front, a name suggested from an uploaded ZIP, the CSV mapping preview at once (plain field
names), and where the labels came from after the ingest."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.datasets import DEMO_NAME, NAME_RULES, open_dataset
from core.ingest import ingest

APP = Path(__file__).resolve().parents[2] / "app.py"


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


def class_folder_zip() -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for folder in ("normal", "sick"):
            for i in range(2):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(png, format="PNG")
                archive.writestr(f"{folder}/{folder}{i}.png", png.getvalue())
    return buffer.getvalue()


def open_upload_form() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.radio(key="data_source").set_value("Upload files").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_the_form_says_why_ingest_is_disabled_and_states_the_name_rules(cache: Path) -> None:
    at = open_upload_form()
    assert at.button(key="data_ingest").disabled
    assert "Ingest is disabled until you give a dataset name and scans to upload." in captions(at)
    assert NAME_RULES in captions(at)  # before any name is refused
    at.text_input(key="data_name").input("Covid chest xrays (40)").run()
    assert any("not allowed" in e.value for e in at.error)
    assert "a valid dataset name and scans to upload" in captions(at)


def test_a_zip_suggests_the_name_and_the_csv_preview_shows_at_once(cache: Path) -> None:
    at = open_upload_form()
    csv = b"filename,finding,Patient ID\nnormal0.png,Pneumonia,p1\nsick0.png,COVID-19,p2\n"
    at.file_uploader(key="data_upload_csv").set_value([("meta.csv", csv, "text/csv")]).run()
    # No name and no scans yet: the preview and the mapping (in plain words) are already there.
    assert list(at.dataframe[0].value.columns) == ["filename", "finding", "Patient ID"]
    assert at.selectbox(key="data_map_label").label == "Ground-truth label (diagnosis)"
    assert at.selectbox(key="data_map_label").value == "finding"
    assert at.selectbox(key="data_map_patient_id").label == "Patient ID"

    at.file_uploader(key="data_upload").set_value(
        [("Covid chest xrays (40).zip", class_folder_zip(), "application/zip")]).run()
    at.run()  # the suggestion fills the name field before it is drawn
    assert at.text_input(key="data_name").value == "covid-chest-xrays-40"
    assert "Suggested from the ZIP: **covid-chest-xrays-40**" in captions(at)
    assert not at.button(key="data_ingest").disabled
    at.button(key="data_ingest").click().run()
    assert not at.exception, [e.value for e in at.exception]
    message = " ".join(m.value for m in [*at.success, *at.warning])
    assert "as **covid-chest-xrays-40** (class-folders layout)" in message
    assert "from the CSV column 'finding'" in message
    labels = set(open_dataset("covid-chest-xrays-40").images["label"])
    assert labels == {"Pneumonia", "COVID-19", "normal", "sick"}
