"""AppTest of the Data page against hostile input: dataset names that are paths, server paths
outside the allowed roots, a name that would replace the demo, upload limits, reruns that must
not rewrite staged files, and scans with burned-in text.

Each test gets its own SCANATLAS_CACHE holding a small demo cohort (16 patients x 4 real DICOM
slices), so nothing is shared with tests/app/test_pages.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.auth import local_user
from core.datasets import DEMO_NAME, dataset_owner, list_datasets, open_dataset
from core.ingest import ingest
from core.roots import user_staging_root

APP = Path(__file__).resolve().parents[2] / "app.py"
UPLOAD = "Upload files"
SERVER = "Folder on the server"


@pytest.fixture
def cache(tmp_path: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache with the demo dataset already ingested, plus files that must survive."""
    root = tmp_path / "cache"
    monkeypatch.setenv("SCANATLAS_CACHE", str(root))
    monkeypatch.setenv("SCANATLAS_DB_URL", f"sqlite:///{tmp_path / 'labels.db'}")
    monkeypatch.delenv("SCANATLAS_DATA_ROOTS", raising=False)
    ingest(demo_dir, root / "datasets" / DEMO_NAME, name=DEMO_NAME)
    (root / "sentinel.txt").write_text("must survive")
    other = root / "uploads" / "someone-else" / "their-scans" / "set"
    other.mkdir(parents=True)
    (other / "scan.dcm").write_bytes(b"not mine")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield root
    st.cache_data.clear()
    st.cache_resource.clear()


def scan_files(demo_dir: Path, n: int) -> list[tuple[str, bytes, str]]:
    paths = sorted(demo_dir.rglob("*.dcm"))[:n]
    return [(f"{p.parent.name}_{p.name}", p.read_bytes(), "application/dicom") for p in paths]


def open_data_page(source: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.radio(key="data_source").set_value(source).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> str:
    assert not at.exception, [e.value for e in at.exception]
    return " | ".join(e.value for e in at.error)


def all_files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", ["..", ".", "../uploads", "a/b", ".hidden", "x" * 65])
def test_a_path_as_dataset_name_touches_nothing(cache: Path, demo_dir: Path, name: str) -> None:
    before = all_files(cache)
    at = open_data_page(UPLOAD)
    at.file_uploader(key="data_upload").set_value(scan_files(demo_dir, 2)).run()
    at.text_input(key="data_name").input(name).run()
    assert "is not allowed" in errors(at)
    assert at.button(key="data_ingest").disabled
    after = all_files(cache)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing deleted or rewritten
    assert not user_staging_root(local_user().id).exists()  # and nothing staged


def test_server_folder_outside_the_roots_is_refused(cache: Path) -> None:
    at = open_data_page(SERVER)
    assert any("SCANATLAS_DATA_ROOTS" in i.value for i in at.info)
    at.text_input(key="data_name").input("etc").run()
    at.text_input(key="data_folder").input("/etc").run()
    message = errors(at)
    assert "outside the folders the app may read" in message and str(cache.resolve() / "demo-cohort") in message
    assert not at.main.button  # no Ingest button to press (the sidebar has the filter's)
    assert "etc" not in list_datasets()


def test_server_metadata_csv_outside_the_roots_is_never_read(cache: Path) -> None:
    at = open_data_page(SERVER)
    at.text_input(key="data_metadata_path").input("/etc/passwd").run()
    assert "outside the folders the app may read" in errors(at)
    shown = [frame.value for frame in at.dataframe]
    assert not any("root" in frame.to_string() for frame in shown)


def test_server_folder_inside_a_configured_root_ingests(cache: Path, demo_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCANATLAS_DATA_ROOTS", f"/nonexistent{os.pathsep}{demo_dir.parent}")
    at = open_data_page(SERVER)
    assert not any("SCANATLAS_DATA_ROOTS" in i.value for i in at.info)
    at.text_input(key="data_name").input("from-server").run()
    at.text_input(key="data_folder").input(str(demo_dir / "DEMO-001" / ".." / "")).run()
    at.button(key="data_ingest").click().run()
    assert errors(at) == ""
    assert any("as **from-server**" in s.value for s in at.success)
    assert "from-server" in list_datasets() and dataset_owner("from-server") == local_user().id
    # A symlink inside the root that points out of it is refused.
    link = demo_dir.parent / "escape-link"
    link.symlink_to("/etc")
    try:
        at.text_input(key="data_folder").input(str(link)).run()
        assert "outside the folders the app may read" in errors(at)
    finally:
        link.unlink()


def test_upload_named_like_the_demo_never_replaces_it(cache: Path, demo_dir: Path) -> None:
    demo_images = cache / "datasets" / DEMO_NAME / "images.parquet"
    stamp = demo_images.stat().st_mtime_ns
    at = open_data_page(UPLOAD)
    at.file_uploader(key="data_upload").set_value(scan_files(demo_dir, 2)).run()
    at.text_input(key="data_name").input(DEMO_NAME).run()
    assert "never replaced" in errors(at)
    assert not at.main.button  # no Ingest button to press (the sidebar has the filter's)
    assert demo_images.stat().st_mtime_ns == stamp
    assert len(open_dataset(DEMO_NAME).images) == 64


def test_upload_is_staged_once_ingested_and_replaced_only_when_confirmed(cache: Path, demo_dir: Path) -> None:
    at = open_data_page(UPLOAD)
    at.file_uploader(key="data_upload").set_value(scan_files(demo_dir, 4)).run()
    at.text_input(key="data_name").input("my-upload").run()
    assert errors(at) == ""
    staging = user_staging_root(local_user().id) / "my-upload"
    staged = all_files(staging)
    assert sum(name.endswith(".dcm") for name in staged) == 4
    at.run()
    at.selectbox(key="data_layout").set_value("dicom").run()
    assert all_files(staging) == staged  # reruns do not write the files again

    at.button(key="data_ingest").click().run()
    assert errors(at) == ""
    assert any("Ingested 4 images" in s.value for s in at.success)
    assert at.session_state["dataset"] == "my-upload"
    assert all("images.parquet" not in p for p in all_files(staging))
    assert open_dataset("my-upload").images["path"].map(lambda p: Path(p).is_relative_to(staging.resolve())).all()

    # The name is now taken: Ingest waits for an explicit confirmation.
    at.run()
    assert at.button(key="data_ingest").disabled
    at.checkbox(key="data_replace").check().run()
    assert not at.button(key="data_ingest").disabled
    assert (cache / "sentinel.txt").is_file() and (cache / "uploads" / "someone-else").is_dir()


def test_upload_over_the_limits_writes_nothing(cache: Path, demo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCANATLAS_MAX_UPLOAD_FILES", "3")
    at = open_data_page(UPLOAD)
    at.file_uploader(key="data_upload").set_value(scan_files(demo_dir, 4)).run()
    at.text_input(key="data_name").input("too-many").run()
    assert "over the limit of 3 files" in errors(at)
    assert not user_staging_root(local_user().id).exists()

    monkeypatch.setenv("SCANATLAS_MAX_UPLOAD_FILES", "20000")
    monkeypatch.setenv("SCANATLAS_MAX_UPLOAD_BYTES", "1000")
    at.file_uploader(key="data_upload").set_value(scan_files(demo_dir, 1)).run()
    assert "over the limit of 0.0 MiB" in errors(at)
    assert not user_staging_root(local_user().id).exists()


def test_scans_with_burned_in_text_are_hidden_until_an_admin_reveals_them(cache: Path) -> None:
    images_path = cache / "datasets" / DEMO_NAME / "images.parquet"
    images = pd.read_parquet(images_path)
    images["burned_in_annotation"] = True
    images.to_parquet(images_path, index=False)
    at = open_data_page("Built-in demo cohort")
    captions = [c.caption for image in at.get("image") for c in image.proto.imgs]
    assert captions and all(c.endswith("burned-in text hidden") for c in captions)
    at.toggle(key="data_reveal").set_value(True).run()
    captions = [c.caption for image in at.get("image") for c in image.proto.imgs]
    assert captions and not any("burned-in" in c for c in captions)
