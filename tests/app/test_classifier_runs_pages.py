"""The Classifiers and Fairness pages read classifier studies from the run store: a study
trained before a server restart (no job in memory, every Streamlit cache cleared) is still
listed, offered for reuse and broken down by subgroup."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.classify.runs import run_time
from core.classify.study import classifier_study
from core.datasets import ensure_demo_dataset

APP = Path(__file__).resolve().parents[2] / "app.py"
TIMEOUT_S = 600
POSITIVE = "Dilated cardiomyopathy"


@pytest.fixture(scope="module")
def app_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder of this module's own, so that the runs it lists are the ones it made."""
    return tmp_path_factory.mktemp("classifier-runs-app-cache")


@pytest.fixture(scope="module", autouse=True)
def app_environment(app_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(app_cache))
        patch.setenv("SCANATLAS_DB_URL", f"sqlite:///{tmp_path_factory.mktemp('labels') / 'labels.db'}")
        st.cache_data.clear()
        st.cache_resource.clear()
        yield
        st.cache_data.clear()
        st.cache_resource.clear()


@pytest.fixture(scope="module")
def saved_study(app_environment):
    """A binary study with the Classifiers page's default settings (pixels, patients), trained
    and saved by core alone, as by an earlier server."""
    dataset = ensure_demo_dataset()
    study = classifier_study(dataset, positive=POSITIVE, encoder="pixels", use_text=False, level="patient")
    assert not study.from_store
    return study


def restarted_app(page: str) -> AppTest:
    """A fresh session on a 'restarted server': no cached study, no background job."""
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"encoder": "pixels", "level": "patient"})
    at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_fairness_page_shows_a_study_that_exists_only_in_the_store(saved_study):
    at = restarted_app("fairness")
    assert not any("Train a binary classifier" in info.value for info in at.info)
    chosen = at.selectbox[0]
    assert chosen.value == saved_study.key and chosen.options[0].endswith("AUC " + f"{saved_study.report.mean_auc:.3f}")
    assert any("Model: logreg on pixels + age + sex" in c.value and POSITIVE in c.value for c in at.caption)
    at.selectbox(key="fairness_attribute").set_value("sex").run()
    table = at.dataframe[0].value
    groups = table[table["grouped by"] == "sex"]
    assert groups["rows"].sum() == 80  # every patient of the demo cohort in one group
    # The saved study's own numbers, as core.fairness.readable_fairness words them.
    from core.fairness import readable_fairness

    readable = readable_fairness(saved_study.fairness)
    expected = readable[readable["grouped by"] == "sex"].set_index("group")["AUC"]
    assert groups.set_index("group")["AUC"].to_dict() == expected.to_dict()
    assert all(cell == "too few to judge" or cell[:4].replace(".", "").isdigit() for cell in expected)


def test_classifiers_page_offers_the_saved_run_and_reuses_it_without_training(saved_study):
    at = restarted_app("classifiers")
    at.selectbox(key="classifiers_positive").set_value(POSITIVE).run()
    reuse = at.button(key="classifiers_reuse")
    assert reuse.label == f"Reuse the run from {run_time_of(saved_study)}"
    assert at.button(key="classifiers_run").label == "Compute again"
    reuse.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Per class (binary, logreg)" in [s.value for s in at.subheader]
    per_class = next(d.value for d in at.dataframe if "support" in d.value.columns)  # under "How the model decides"
    assert per_class["class"].tolist() == [f"not {POSITIVE}", POSITIVE, "mean"]
    assert per_class["support"].tolist() == [60, 20, 80]
    assert "classifiers_job" not in at.session_state  # nothing was trained
    assert at.session_state["classifier_run"] == saved_study.key
    # The saved-runs list names it too, and the Fairness page follows the open run.
    assert at.selectbox(key="classifiers_saved").value == saved_study.key
    at.switch_page("app_pages/fairness.py").run()
    assert at.selectbox[0].value == saved_study.key


def run_time_of(study) -> str:
    from core.runs import RunStore

    return run_time(RunStore().load("classifier-study", study.key))
