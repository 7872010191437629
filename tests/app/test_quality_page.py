"""The Quality page shows a saved audit (from the run store, after a 'restart'), links each
finding to its scans, and a labeler's "Exclude" is saved as a versioned decision that
``core.exclusions.excluded_ids`` returns."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.audit.runs import audit_dataset
from core.datasets import ensure_demo_dataset
from core.exclusions import DecisionStore, excluded_ids

APP = Path(__file__).resolve().parents[2] / "app.py"
TIMEOUT_S = 600


@pytest.fixture(scope="module")
def app_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality-app-cache")


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('quality-labels') / 'labels.db'}"


@pytest.fixture(scope="module", autouse=True)
def app_environment(app_cache: Path, db_url: str):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(app_cache))
        patch.setenv("SCANATLAS_DB_URL", db_url)
        st.cache_data.clear()
        st.cache_resource.clear()
        yield
        st.cache_data.clear()
        st.cache_resource.clear()


@pytest.fixture(scope="module")
def saved_audit(app_environment):
    dataset = ensure_demo_dataset()
    return dataset, audit_dataset(dataset, encoder="pixels", use_cleanvision=False)


def quality_page() -> AppTest:
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"encoder": "pixels", "level": "image"})
    at.run()
    at.switch_page("app_pages/quality.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_quality_page_shows_the_saved_audit_and_saves_an_exclusion(saved_audit, db_url):
    dataset, audit = saved_audit
    counts = audit.counts()
    at = quality_page()
    assert any(audit.key in caption.value for caption in at.caption)
    shown = {metric.label: metric.value for metric in at.metric}
    assert shown["Likely label errors"] == str(counts["label_issues"])
    assert shown["Duplicate sets"] == str(counts["duplicate_sets"])
    assert counts["label_issues"] > 0  # the demo's groups overlap: some slices look like another group
    label_table = next(frame.value for frame in at.dataframe if "given_label" in frame.value.columns)
    assert len(label_table) == counts["label_issues"]
    assert "path" not in label_table.columns  # scans are named by ids, never by server paths
    assert excluded_ids(dataset.name, url=db_url) == frozenset()
    buttons = [b for b in at.button if b.key == "quality_lab_exclude"]
    assert buttons, [b.key for b in at.button]
    buttons[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    row = int(audit.label_issues.iloc[0]["row"])
    image_id = str(dataset.images.iloc[row]["image_id"])
    assert excluded_ids(dataset.name, url=db_url) == frozenset({image_id})
    history = DecisionStore(db_url).history(dataset.name)
    assert history["decision"].tolist() == ["excluded"] and history["version"].tolist() == [1]
    assert any("1 scan(s) of this dataset are excluded" in c.value for c in at.caption)
    # Every page's cohort leaves the excluded scan out (ui.data.current_dataset): the Map draws
    # one image fewer, and the Quality page still audits the whole dataset.
    st.cache_resource.clear()
    map_page = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    map_page.query_params.update({"encoder": "pixels", "level": "image", "method": "pca"})
    map_page.run()
    map_page.switch_page("app_pages/map.py").run()
    assert not map_page.exception, [e.value for e in map_page.exception]
    drawn = [c.value for c in map_page.caption if " images · pixels" in c.value]
    assert drawn and drawn[0].startswith(f"{len(dataset.images) - 1} images · "), drawn

    # The Agreement page names the clusters the audit finds mostly one problem (or says none is).
    map_page.switch_page("app_pages/drift.py").run()
    assert not map_page.exception, [e.value for e in map_page.exception]
    said = [w.value for w in map_page.warning if "quality audit finds clusters" in w.value]
    said += [c.value for c in map_page.caption if "quality audit finds no cluster" in c.value]
    assert len(said) == 1, said
