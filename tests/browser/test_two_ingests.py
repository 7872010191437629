"""Issue 10 in a real browser: ingest two uploads in a row on the Data page, then walk every page
and check its header names the second dataset (and the sidebar holds it), and that Embeddings
counts the second dataset's images, not the demo's or the first upload's; the Export page's CSV
is named for it and the day, starts with a UTF-8 BOM and has the patient and label columns first.

A real ``streamlit run app.py`` on loopback, in its own cache with a small demo cohort; each
upload is a ZIP of real DICOM files from ``core.demo.make_demo_cohort`` (64 px), sent through
the file uploader's input. The ``pixels`` encoder (via the URL) keeps it to about a minute.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect, sync_playwright

from core.datasets import DEMO_NAME
from core.demo import make_demo_cohort
from core.export import EXPORT_FIRST_COLUMNS
from core.ingest import ingest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
STEP_MS = 60_000
PAGES = ("Data", "Embeddings", "Map", "Clusters", "Label", "Export", "Agreement", "Classifiers", "Fairness")
# (name, patients, slices): two uploads that differ from each other and from the demo
UPLOADS = (("first-upload", 4, 2), ("second-upload", 6, 3))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and anything it started
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def _zip_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*.dcm")):
            archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


@contextlib.contextmanager
def running_server(cache: Path, label_db: str, log_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "SCANATLAS_CACHE": str(cache), "SCANATLAS_DB_URL": label_db}
    env.pop("SCANATLAS_DATA_ROOTS", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base
    finally:
        _stop(process)


def header_caption(page):
    """The caption under the page title that names the dataset."""
    return page.get_by_test_id("stCaptionContainer").filter(has_text="Dataset: ")


def sidebar_dataset(page):
    return page.get_by_test_id("stSidebar").get_by_role("combobox", name="Dataset", exact=True)


def ingest_upload(page, name: str, archive: bytes, n_images: int, n_patients: int) -> None:
    remove = page.get_by_role("button", name=re.compile(r"^Remove .+\.zip$"))
    while remove.count():  # the uploader still holds the last upload: take it out first
        remove.first.click()
        page.wait_for_selector(IDLE)
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(
        files=[{"name": f"{name}.zip", "mimeType": "application/zip", "buffer": archive}])
    expect(page.get_by_role("button", name=f"Remove {name}.zip", exact=True)).to_be_visible()
    # The upload's rerun may fill the name from the ZIP ("first-upload.zip" -> "first-upload"):
    # let it finish before typing, or the two edits race in the text field.
    page.wait_for_selector(IDLE)
    field = page.get_by_role("textbox", name="Dataset name")
    try:
        expect(field).to_have_value(name, timeout=10_000)
    except AssertionError:
        field.fill(name)
        field.press("Enter")
        page.wait_for_selector(IDLE)
    expect(field).to_have_value(name)
    button = page.get_by_role("button", name="Ingest", exact=True)
    expect(button).to_be_enabled()
    button.click()
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text(
        f"Ingested {n_images} images from {n_patients} patients as {name}")
    page.wait_for_selector(IDLE)
    expect(header_caption(page)).to_have_text(f"Dataset: {name}")
    expect(sidebar_dataset(page)).to_have_value(name)


def test_two_ingests_in_a_row_every_page_shows_the_last(tmp_path: Path, demo_dir: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium)")
    cache = tmp_path / "cache"
    ingest(demo_dir, cache / "datasets" / DEMO_NAME, name=DEMO_NAME)  # a small demo: no first-start wait
    archives = []
    for i, (name, n_patients, n_slices) in enumerate(UPLOADS):
        folder = make_demo_cohort(tmp_path / name, n_patients=n_patients, n_slices=n_slices, size=64, seed=i + 1).parent
        archives.append(_zip_of(folder))

    with running_server(cache, f"sqlite:///{tmp_path / 'labels.db'}", tmp_path / "streamlit.log") as base, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True).new_page()
            page.set_default_timeout(STEP_MS)
            expect.set_options(timeout=STEP_MS)
            page.goto(f"{base}/?encoder=pixels")
            page.wait_for_selector('[data-testid="stAppViewContainer"]')
            expect(header_caption(page)).to_have_text(f"Dataset: {DEMO_NAME}")
            page.get_by_test_id("stRadio").get_by_text("Upload files", exact=True).click()
            page.get_by_role("combobox", name="Layout").click()  # folders of DICOM: not class folders
            page.get_by_role("option", name="dicom", exact=True).click()
            page.wait_for_selector(IDLE)

            for (name, n_patients, n_slices), archive in zip(UPLOADS, archives, strict=True):
                ingest_upload(page, name, archive, n_patients * n_slices, n_patients)

            last, n_patients, n_slices = UPLOADS[-1]
            for title in PAGES:
                page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
                page.get_by_role("heading", name=title, exact=True, level=1).wait_for()
                expect(header_caption(page)).to_have_text(f"Dataset: {last}")
                expect(sidebar_dataset(page)).to_have_value(last)
                if title == "Embeddings":
                    expect(page.get_by_test_id("stCaptionContainer").filter(
                        has_text=f"{n_patients * n_slices} images").first).to_be_visible()
                page.wait_for_selector(IDLE)
                assert page.get_by_test_id("stException").count() == 0, (title, page.get_by_test_id("stException").all_text_contents())
                if title == "Export":
                    with page.expect_download() as download:
                        page.get_by_role("button", name="Download CSV").click()
                    name = download.value.suggested_filename
                    assert re.fullmatch(rf"{last}-labels-\d{{4}}-\d{{2}}-\d{{2}}\.csv", name), name
                    data = Path(download.value.path()).read_bytes()
                    assert data.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM, for Excel
                    exported = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig")
                    assert list(exported.columns[:5]) == list(EXPORT_FIRST_COLUMNS) and len(exported) == n_patients
            # And back on Data, the source choice is still the upload form.
            page.get_by_test_id("stSidebarNav").get_by_role("link", name="Data", exact=True).click()
            expect(page.get_by_role("textbox", name="Dataset name")).to_be_visible()
        finally:
            browser.close()
