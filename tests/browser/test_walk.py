"""A clinician's first hour, in a real browser (issue 10): one walk through the real app in
headless Chromium, as a person would click it.

A real ``streamlit run app.py`` (tests/browser/conftest.py) on a fresh cache holding only a
small demo cohort. The first request is a deep link (``/embeddings?encoder=pixels``); then two
uploads in a row on the Data page, each a ZIP built here from real covid-chestxray images and
their ``metadata.csv`` rows; then Embeddings, Map (every patient drawn, a lasso opens their
scans), Clusters, Label (an edit saved twice, then undone), Export (the CSV), Agreement,
Classifiers (COVID-19 against the rest) and Fairness (by sex).

On every page it asserts: the header and the sidebar name the last upload (never the demo or
the first upload), no traceback or error, no server path in the page's text, and WCAG AA
contrast (axe-core for HTML, the same 4.5:1 formula for Plotly's SVG text). Along the way: the
clusters' structure sentence, the classifier's headline ("Found X of Y COVID-19 patients ..."),
"too few to judge" for the fairness groups with under 5 patients with (or without) the
condition, Undo disabled before there is anything to undo and "Restored version N" after it,
and the exported CSV (named for the dataset and day, UTF-8 with BOM, patient and label columns
first, the restored mapping). A full-page screenshot of each step lands in the test's tmp_path
(and in ``$SCANATLAS_SCREENSHOTS`` when set); with ``SCANATLAS_DOCS_SCREENS=docs/screens`` also
a 1400x900 view of each step for the README (that is how ``docs/screens/`` is made).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect

from core.auth import local_user
from core.datasets import DEMO_NAME
from core.export import EXPORT_FIRST_COLUMNS
from core.fairness import MIN_POSITIVES, TOO_FEW
from core.ingest import ingest
from core.labels import LabelStore
from core.palette import contrast_ratio

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1400, "height": 900}
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot'
STEP_MS = 240_000  # a busy 2-core box: UMAP's first compile, a classifier with bootstrap intervals
EDITED_DISEASE, EDITED_CODE = "Pneumonia, unspecified organism", "J18.9"
# (name, COVID-19 men, COVID-19 women, patients with another finding, patients skipped first):
# the walk's dataset has 4 women with COVID-19 (< MIN_POSITIVES), so Fairness by sex must say
# "too few to judge" for them.
UPLOADS = (("covid-first", 4, 2, 4, 20), ("covid-walk", 14, 4, 14, 0))
STRUCTURE = re.compile(r"^(No real structure|Weak structure|Reasonable structure|Strong structure|"
                       r"Whether there is real structure)")
# A path in page text: "/a/b..." after a space, quote, bracket or start (URLs' "//" do not match).
SERVER_PATH = re.compile(r"(?:^|[\s'\"(\[=])/(?:[\w.-]+/)+[\w.-]*", re.MULTILINE)
# axe-core 4.14.1 (MPL-2.0), vendored from the npm tarball (`npm pack axe-core`): no network here.
AXE = Path(__file__).with_name("vendor") / "axe.min.js"
# axe checks HTML text; Plotly draws its axis, legend and colour-bar text as SVG, which axe skips,
# so those are measured here with WCAG 2's formula against the chart's (white) background.
CHART_TEXT_CONTRAST = """() => {
  const luminance = rgb => {
    const [r, g, b] = rgb.match(/[\\d.]+/g).slice(0, 3).map(Number).map(c => c / 255)
      .map(c => c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const selector = ['.xtick text', '.ytick text', '.g-xtitle text', '.g-ytitle text', '.legendtext',
                    '.legendtitletext', '.gtitle', '.cbaxis text', '.cbtitle text']
    .map(s => `.js-plotly-plot ${s}`).join(', ');
  return [...document.querySelectorAll(selector)]
    .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
    .map(t => [t.textContent.trim(), getComputedStyle(t).fill,
               1.05 / (luminance(getComputedStyle(t).fill) + 0.05)])
    .filter(([, , ratio]) => ratio < 4.5)
    .map(([text, fill, ratio]) => `${text}: ${fill} is ${ratio.toFixed(2)}:1`);
}"""


# -- the uploads: real covid-chestxray images and their metadata rows ---------------------------

def covid_upload(covid_dir: Path, men: int, women: int, others: int, skip: int) -> tuple[bytes, pd.DataFrame]:
    """A ZIP (``metadata.csv`` + ``images/``) of X-ray patients: ``men`` and ``women`` with
    COVID-19 and ``others`` with another finding (at most 2 images each), after skipping the
    first ``skip`` of each kind; and its metadata rows."""
    rows = pd.read_csv(covid_dir / "metadata.csv", dtype=str, keep_default_na=False, encoding="latin-1")
    rows = rows[(rows["modality"] == "X-ray") & rows["filename"].map(lambda f: (covid_dir / "images" / f).is_file())]
    rows = rows.groupby("patientid", sort=False).head(2)
    patients = rows.drop_duplicates("patientid")
    covid = patients[patients["finding"] == "COVID-19"]
    chosen = [*covid[covid["sex"] == "M"]["patientid"].iloc[skip:skip + men],
              *covid[covid["sex"] == "F"]["patientid"].iloc[skip:skip + women],
              *patients[~patients["finding"].str.startswith("COVID")]["patientid"].iloc[skip:skip + others]]
    rows = rows[rows["patientid"].isin(chosen)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("metadata.csv", rows.to_csv(index=False))
        for name in rows["filename"]:
            archive.write(covid_dir / "images" / name, f"images/{name}")
    return buffer.getvalue(), rows


# -- waiting, reading and checking pages ----------------------------------------------------------

def wait_idle(page) -> None:
    page.wait_for_selector(IDLE)


def header_caption(page):
    """The caption under the page title that names the dataset."""
    return page.get_by_test_id("stCaptionContainer").filter(has_text="Dataset: ")


def sidebar_dataset(page):
    return page.get_by_test_id("stSidebar").get_by_role("combobox", name="Dataset", exact=True)


def open_page(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True, level=1).wait_for()


def metric(page, label: str, value: str):
    return (page.get_by_test_id("stMetric")
            .filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
            .filter(has=page.get_by_test_id("stMetricValue").get_by_text(value, exact=True)))


def assert_no_error_shown(page) -> None:
    assert page.get_by_test_id("stException").count() == 0, page.get_by_test_id("stException").all_text_contents()
    errors = page.get_by_test_id("stAlertContentError")
    assert errors.count() == 0, errors.all_text_contents()


def assert_no_server_paths(page, *private: Path) -> None:
    """No cache folder and no absolute path anywhere in the page's text (issue 10: the
    Agreement page showed ``.../cache/runs/drift/...``)."""
    text = page.evaluate("() => document.body.innerText")
    assert "/cache/" not in text
    for folder in private:
        assert str(folder) not in text, folder
    assert not SERVER_PATH.findall(text), SERVER_PATH.findall(text)


def assert_readable(page) -> None:
    """WCAG AA contrast (4.5:1) for all text on the page: axe-core's color-contrast rule for
    HTML, and the same ratio for Plotly's SVG chart text."""
    if not page.evaluate("() => typeof axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    failures = page.evaluate("""async () => (await axe.run(document, {runOnly: ['color-contrast']}))
        .violations.flatMap(v => v.nodes.map(n => n.any.map(a => a.message).join('; ')))""")
    assert not failures, failures
    charts = page.evaluate(CHART_TEXT_CONTRAST)
    assert not charts, charts


def check_page(page, title: str, dataset: str, folder: Path, *, shot: str | None = None,
               private: tuple[Path, ...] = ()) -> None:
    """What every page must get right: its title, the dataset named in its header and in the
    sidebar, no error, no server path, readable contrast; then its screenshot (``shot``)."""
    page.get_by_role("heading", name=title, exact=True, level=1).wait_for()
    expect(header_caption(page)).to_have_text(f"Dataset: {dataset}")
    expect(sidebar_dataset(page)).to_have_value(dataset)
    wait_idle(page)
    assert_no_error_shown(page)
    assert_no_server_paths(page, *private)
    # The viewport is stretched to the content (Streamlit scrolls inside its main pane), so that
    # the contrast check and the full-page screenshot see everything.
    docs = os.environ.get("SCANATLAS_DOCS_SCREENS")
    if shot and docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(docs) / f"{shot}.png"))
    height = page.evaluate("""() => Math.max(...['stMain', 'stSidebarContent'].map(
        id => document.querySelector(`[data-testid="${id}"]`)?.scrollHeight ?? 0))""")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]), 8000)})
    wait_idle(page)
    assert_readable(page)
    if shot:
        path = folder / f"{shot}.png"
        page.screenshot(path=str(path), full_page=True)
        notes = os.environ.get("SCANATLAS_SCREENSHOTS")
        if notes:
            Path(notes).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(notes) / path.name)
    page.set_viewport_size(VIEWPORT)


def traces_drawn(page, key: str) -> list[int]:
    """Points (or bars, or heatmap rows) of each trace Plotly drew in the chart with Streamlit
    key ``key``; empty while the chart is not drawn."""
    return page.evaluate("""(key) => (document.querySelector(`.st-key-${key} .js-plotly-plot`)?._fullData ?? [])
        .map(trace => trace._length ?? trace.z?.length ?? 0)""", key)


def wait_drawn(page, key: str) -> list[int]:
    page.wait_for_function("""(key) => document.querySelector(`.st-key-${key} .js-plotly-plot`)?._fullData?.length > 0""",
                           arg=key)
    return traces_drawn(page, key)


def points_drawn(page) -> int:
    return page.evaluate(f"""() => (document.querySelector('{CHART}')?._fullData ?? [])
        .reduce((total, trace) => total + trace._length, 0)""")


def points_inside(page, x0: float, y0: float, x1: float, y1: float) -> int:
    """How many drawn points lie inside the page-pixel rectangle, by Plotly's own axes."""
    return page.evaluate(f"""([x0, y0, x1, y1]) => {{
        const chart = document.querySelector('{CHART}');
        const area = chart.querySelector('.nsewdrag').getBoundingClientRect();
        const xaxis = chart._fullLayout.xaxis, yaxis = chart._fullLayout.yaxis;
        let inside = 0;
        for (const trace of chart._fullData) for (let i = 0; i < trace._length; i++) {{
            const x = area.left + xaxis.l2p(trace.x[i]), y = area.top + yaxis.l2p(trace.y[i]);
            if (x > x0 && x < x1 && y > y0 && y < y1) inside++;
        }}
        return inside;
    }}""", [x0, y0, x1, y1])


def edit_cell(page, *, column: int, value: str) -> None:
    """Type ``value`` into the label editor's first row at ``column`` (0-based)."""
    grid = page.get_by_test_id("data-grid-canvas").first
    grid.scroll_into_view_if_needed()
    area = grid.bounding_box()
    page.mouse.click(area["x"] + 20, area["y"] + 35 + 17)  # first cell below the header row
    # Each move must land before the next key: on a slow page a key pressed before the grid has
    # taken the click (or the previous move) is lost, and Enter then opens a read-only cell.
    # The grid marks its selection on its accessible cells (aria-selected).
    for step in range(column + 1):
        if step:
            page.keyboard.press("ArrowRight")
        expect(page.get_by_test_id(f"glide-cell-{step}-0").first).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")
    page.locator("textarea.gdg-input, input.gdg-input").first.fill(value)
    page.keyboard.press("Enter")
    expect(page.get_by_test_id(f"glide-cell-{column}-0").first).to_have_text(value)
    wait_idle(page)


def ingest_upload(page, name: str, archive: bytes, n_images: int, n_patients: int) -> None:
    remove = page.get_by_role("button", name=re.compile(r"^Remove .+\.zip$"))
    while remove.count():  # the uploader still holds the last upload: take it out first
        remove.first.click()
        wait_idle(page)
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(
        files=[{"name": f"{name}.zip", "mimeType": "application/zip", "buffer": archive}])
    expect(page.get_by_role("button", name=f"Remove {name}.zip", exact=True)).to_be_visible()
    # The upload's rerun fills the name from the ZIP ("covid-first.zip" -> "covid-first"): let it
    # finish before typing, or the two edits race in the text field.
    wait_idle(page)
    field = page.get_by_role("textbox", name="Dataset name")
    try:
        expect(field).to_have_value(name, timeout=10_000)
    except AssertionError:
        field.fill(name)
        field.press("Enter")
        wait_idle(page)
    expect(field).to_have_value(name)
    button = page.get_by_role("button", name="Ingest", exact=True)
    expect(button).to_be_enabled()
    button.click()
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Ingested ")).to_contain_text(
        f"Ingested {n_images} images from {n_patients} patients as {name}")
    wait_idle(page)
    expect(header_caption(page)).to_have_text(f"Dataset: {name}")
    expect(sidebar_dataset(page)).to_have_value(name)


# -- the walk -----------------------------------------------------------------------------------

def test_a_clinicians_walk(start_server, new_tab, covid_dir: Path, demo_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ingest(demo_dir, cache / "datasets" / DEMO_NAME, name=DEMO_NAME)  # a small demo: no first-start wait
    label_db = f"sqlite:///{tmp_path / 'labels.db'}"
    uploads = [covid_upload(covid_dir, *counts) for _, *counts in UPLOADS]
    server = start_server(cache=cache, db_url=label_db, unset=["SCANATLAS_DATA_ROOTS"])
    private = (cache, REPO, Path(covid_dir))
    last = UPLOADS[-1][0]
    rows = uploads[-1][1]
    patients = rows.drop_duplicates("patientid")
    n_patients = len(patients)
    expect.set_options(timeout=STEP_MS)

    with new_tab(timeout_ms=STEP_MS) as page:
        # A deep link as the very first request opens its page (with the encoder from the URL).
        page.goto(f"{server.base}/embeddings?encoder=pixels")
        check_page(page, "Embeddings", DEMO_NAME, tmp_path, private=private)
        expect(page.get_by_role("combobox", name="Image encoder")).to_be_visible()

        # Data: two uploads in a row; each switches every page to itself.
        open_page(page, "Data")
        page.get_by_test_id("stRadio").get_by_text("Upload files", exact=True).click()
        wait_idle(page)
        for (name, *_), (archive, upload_rows) in zip(UPLOADS, uploads, strict=True):
            ingest_upload(page, name, archive, len(upload_rows), upload_rows["patientid"].nunique())
        check_page(page, "Data", last, tmp_path, shot="data", private=private)

        open_page(page, "Embeddings")
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text=f"{len(rows)} images").first).to_be_visible()
        check_page(page, "Embeddings", last, tmp_path, shot="embeddings", private=private)

        # Map: the first map comes at once; wait for the finished one (every slice, UMAP), then
        # a lasso around the left part opens those patients' scans.
        open_page(page, "Map")
        page.wait_for_function(f"() => document.querySelector('{CHART}')?._fullData?.length > 0")
        page.get_by_text("First map: ").wait_for(state="hidden")
        page.get_by_text("UMAP is being computed").wait_for(state="hidden")
        wait_idle(page)
        expect(page.get_by_test_id("stCaptionContainer").filter(has_text="· UMAP ·")).to_be_visible()
        assert points_drawn(page) == n_patients
        assert page.locator(f"{CHART} canvas.gl-canvas-context").count() > 0
        area = page.locator(f"{CHART} .nsewdrag").first
        area.scroll_into_view_if_needed()
        box = area.bounding_box()
        x0, y0 = box["x"] + 2, box["y"] + 2
        x1, y1 = box["x"] + box["width"] * 0.5, box["y"] + box["height"] - 2
        # A point within a few pixels of the lasso's edge may fall either way: the count must lie
        # between the rectangle shrunk and grown by 3 px.
        fewest = points_inside(page, x0 + 3, y0 + 3, x1 - 3, y1 - 3)
        most = points_inside(page, x0 - 3, y0 - 3, x1 + 3, y1 + 3)
        assert 0 < fewest <= most < n_patients
        page.mouse.move(x0, y0)
        page.mouse.down()
        for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 1)]:
            page.mouse.move(x, y, steps=8)
        page.mouse.up()
        heading = page.get_by_role("heading", name=re.compile(r"^\d+ patients selected$"))
        heading.wait_for()
        selected = int(heading.inner_text().split()[0])
        assert fewest <= selected <= most
        wait_idle(page)
        assert page.get_by_test_id("stImage").count() >= min(selected, 24)  # the gallery of their scans
        check_page(page, "Map", last, tmp_path, shot="map", private=private)

        # Clusters: a plain sentence on whether there is real structure comes first.
        open_page(page, "Clusters")
        metric(page, "Clusters found", "4").wait_for()
        page.get_by_text(STRUCTURE).first.wait_for()
        check_page(page, "Clusters", last, tmp_path, shot="clusters", private=private)

        # Label: nothing to undo before the first save, nor right after it (nothing before v1);
        # a second save, then Undo restores version 1.
        open_page(page, "Label")
        save = page.get_by_role("button", name="Save mapping")
        undo = page.get_by_role("button", name="Undo last change")
        save.and_(page.locator(":enabled")).wait_for()
        wait_idle(page)
        expect(undo).to_be_disabled()
        edit_cell(page, column=3, value=EDITED_DISEASE)  # cluster, size, majority ground truth, disease
        edit_cell(page, column=4, value=EDITED_CODE)
        expect(page.get_by_test_id("glide-cell-5-0").first).to_have_text(re.compile(r"^Pneumonia"))  # "code means"
        save.click()
        page.get_by_text(f"Saved mapping, version 1, by {local_user().label}").wait_for()
        wait_idle(page)
        expect(undo).to_be_disabled()
        edit_cell(page, column=3, value="Second thoughts")
        save.click()
        page.get_by_text("Saved as version 2.").wait_for()
        wait_idle(page)
        expect(undo).to_be_enabled()
        undo.click()
        page.get_by_text("Restored version 1 (saved as version 3).").wait_for()
        wait_idle(page)
        expect(page.get_by_test_id("glide-cell-3-0").first).to_have_text(EDITED_DISEASE)
        check_page(page, "Label", last, tmp_path, shot="label", private=private)

        # Export: the restored mapping, one row per patient, named for the dataset and the day.
        open_page(page, "Export")
        page.get_by_text("Using mapping version 3").wait_for()
        wait_idle(page)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        file_name = download.value.suggested_filename
        assert re.fullmatch(rf"{last}-labels-\d{{4}}-\d{{2}}-\d{{2}}\.csv", file_name), file_name
        data = Path(download.value.path()).read_bytes()
        assert data.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM, for Excel
        exported = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig", dtype={"icd10_code": str})
        check_page(page, "Export", last, tmp_path, shot="export", private=private)
        with LabelStore(label_db) as store:
            (clustering_key,) = store.mapping_sets(last)["clustering_key"]
            saved = store.current_mapping(last, clustering_key).set_index("cluster")
        assert list(exported.columns[:5]) == list(EXPORT_FIRST_COLUMNS)
        assert len(exported) == n_patients and exported["patient_id"].is_unique
        assert (saved.loc[0, "disease"], saved.loc[0, "icd10_code"]) == (EDITED_DISEASE, EDITED_CODE)
        assert (exported.loc[exported["cluster"] == 0, "disease"] == EDITED_DISEASE).all()
        pd.testing.assert_series_equal(exported["disease"], exported["cluster"].map(saved["disease"]), check_names=False)

        # Agreement (the page once called Drift): clusters against the ground truth.
        open_page(page, "Agreement")
        assert len(wait_drawn(page, "drift_heatmap")) == 1
        page.get_by_role("heading", name="Agreement", exact=True, level=1).scroll_into_view_if_needed()
        check_page(page, "Agreement", last, tmp_path, shot="drift", private=private)

        # Classifiers: COVID-19 against the rest; the headline comes first, in words.
        open_page(page, "Classifiers")
        wait_idle(page)
        page.get_by_role("combobox", name="Positive class (binary) or all classes").click()
        page.get_by_role("option", name="COVID-19", exact=True).click()
        wait_idle(page)
        page.get_by_role("button", name="Train and evaluate").click()
        page.get_by_role("heading", name="Per class (binary, logreg)").wait_for()
        roc = wait_drawn(page, "classifiers_roc")
        assert len(roc) >= 2 and all(n >= 2 for n in roc)  # at least one curve and the diagonal
        positives = int((patients["finding"] == "COVID-19").sum())
        others = n_patients - positives
        found = page.get_by_role("heading", name=re.compile(rf"^Found \d+ of {positives} COVID-19 patients; "
                                                            rf"\d+ false alarms? among {others} without it"))
        found.wait_for()
        check_page(page, "Classifiers", last, tmp_path, shot="classifiers", private=private)

        # Fairness: the same model per sex; a group with under MIN_POSITIVES patients with the
        # condition (or without it) gets no bar but "too few to judge" (the default metric, AUC,
        # needs both).
        open_page(page, "Fairness")
        wait_drawn(page, "fairness_bars")
        page.get_by_role("combobox", name="Group by").click()
        page.get_by_role("option", name="sex", exact=True).click()
        wait_idle(page)
        bars = wait_drawn(page, "fairness_bars")
        sexes = patients.assign(positive=patients["finding"] == "COVID-19").groupby("sex")["positive"]
        too_few = sorted(sex for sex, group in sexes
                         if min(group.sum(), (~group).sum()) < MIN_POSITIVES)
        assert "F" in too_few and sum(bars) == patients["sex"].nunique()
        annotations = page.evaluate("""() => [...document.querySelectorAll('.st-key-fairness_bars .annotation-text')]
            .map(t => t.textContent)""")
        assert annotations.count(TOO_FEW) == len(too_few), annotations
        # Every group that can be judged has its bar painted, hatched small groups too (white
        # hatching on a transparent bar was invisible): a solid fill, or a pattern's background.
        judged = patients["sex"].nunique() - len(too_few)
        page.wait_for_function("""(n) => [...document.querySelectorAll('.st-key-fairness_bars .point path')]
            .filter(p => {
                if (p.getBoundingClientRect().height <= 1) return false;
                const fill = getComputedStyle(p).fill;
                const pattern = (fill.match(/url\\("?#([^")]+)"?\\)/) || [])[1];
                const paint = pattern ? document.getElementById(pattern)?.querySelector('rect')?.getAttribute('fill') : fill;
                return paint && !['none', 'transparent', 'rgba(0, 0, 0, 0)', 'rgb(255, 255, 255)'].includes(paint);
            }).length === n""", arg=judged, timeout=30_000)
        page.mouse.move(0, 0)  # no hover highlight in the screenshot
        check_page(page, "Fairness", last, tmp_path, shot="fairness", private=private)

        # Back on Data: still the last upload, and the source choice is still the upload form.
        open_page(page, "Data")
        expect(header_caption(page)).to_have_text(f"Dataset: {last}")
        expect(page.get_by_role("textbox", name="Dataset name")).to_be_visible()
        assert not page.problems, page.problems


@pytest.mark.parametrize("grey, passes", [("#808495", False), ("#595959", True)])
def test_contrast_check_catches_grey_text(new_tab, grey: str, passes: bool) -> None:
    """The walk's contrast check fails on Streamlit's 3.7:1 axis grey, in HTML and in a
    Plotly-style SVG tick label, and passes the 7:1 grey the app now uses."""
    with new_tab() as tab:
        tab.set_content(f"""<html lang="en"><body style="background:#fff"><p style="color:{grey}">caption</p>
            <div class="js-plotly-plot"><svg width="200" height="50"><g class="xtick">
            <text x="10" y="20" style="fill:{grey}">0.5</text></g></svg></div></body></html>""")
        if passes:
            assert_readable(tab)
        else:
            with pytest.raises(AssertionError, match="contrast"):
                assert_readable(tab)
            ratio = contrast_ratio(grey, "#FFFFFF")  # core's WCAG formula: 3.72
            assert tab.evaluate(CHART_TEXT_CONTRAST) == [f"0.5: rgb(128, 132, 149) is {ratio:.2f}:1"]


def test_the_path_check_catches_a_server_path(new_tab, tmp_path: Path) -> None:
    """The walk's server-path check fails on a cache path and on an absolute path in page text,
    and passes URLs and ordinary slashes."""
    with new_tab() as tab:
        tab.set_content("<p>Saved. See https://example.org/a/b and COVID-19/ARDS, 3 / 4.</p>")
        assert_no_server_paths(tab, tmp_path)
        for text in (f"Stored in {tmp_path}/runs/drift/x.json", "under .../cache/runs/drift/...",
                     "weights at '/opt/models/lite0.pt'"):
            tab.set_content(f"<p>{text}</p>")
            with pytest.raises(AssertionError):
                assert_no_server_paths(tab, tmp_path)
