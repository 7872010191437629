"""AppTest of label propagation and report drafts in the app (issue 11.4, 11.7): the Label page
proposes labels from a few hand-labelled patients and saves accepted ones as versioned overrides
under the user; the Agreement page scores propagation against the demo cohort's ground truth as
a curve; the Map page drafts a report for a selected scan from its similar cases' notes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.auth import local_user
from core.datasets import DEMO_NAME, ensure_demo_dataset, open_dataset
from core.ingest import ingest
from core.labels import LabelStore

APP = Path(__file__).resolve().parents[2] / "app.py"
TIMEOUT_S = 900


@pytest.fixture(scope="module")
def label_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('propagation-labels') / 'labels.db'}"


@pytest.fixture(scope="module", autouse=True)
def app_environment(tmp_path_factory: pytest.TempPathFactory, label_db: str):
    # The demo cohort from the session's app cache when test_pages made it; its own otherwise.
    cache = tmp_path_factory.getbasetemp() / "scanatlas-app-cache"
    cache.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(cache))
        patch.setenv("SCANATLAS_DB_URL", label_db)
        st.cache_data.clear()
        st.cache_resource.clear()
        ensure_demo_dataset()
        yield
        st.cache_data.clear()
        st.cache_resource.clear()


def open_page(page: str, **query: object) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({key: str(value) for key, value in query.items()})
    at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    deadline = time.monotonic() + TIMEOUT_S
    while any(str(bar.text).startswith("Embedding ") for bar in at.get("progress")):
        assert time.monotonic() < deadline
        time.sleep(1.0)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_label_page_proposes_and_saves_accepted_proposals_as_overrides(label_db: str) -> None:
    patients = open_dataset(DEMO_NAME).patients
    store = LabelStore(label_db)
    seeds = patients.groupby("label").head(3)  # 3 hand-labelled patients per planted group
    for row in seeds.itertuples():
        store.set_patient_override(DEMO_NAME, row.patient_id, row.label, None, user=local_user(), base_version=None)
    at = open_page("label", encoder="pixels")
    at.button(key="label_propose").click().run()
    assert not at.exception, [e.value for e in at.exception]
    proposals = at.data_editor[-1].value
    assert {"patient_id", "disease", "confidence", "accept", "reject"} <= set(proposals.columns)
    assert len(proposals) == len(patients) - len(seeds)
    assert proposals["confidence"].is_monotonic_decreasing
    assert not set(proposals["patient_id"]) & set(seeds["patient_id"])
    truth = patients.set_index("patient_id")["label"]
    accuracy = (proposals["disease"] == proposals["patient_id"].map(truth)).mean()
    assert accuracy > 0.5  # four balanced groups: chance is 0.25
    ticked = proposals[proposals["accept"]]
    assert len(ticked) and (ticked["confidence"] >= 0.9).all()
    at.button(key="label_propose_accept").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"{len(ticked)} saved" in s.value for s in at.success)
    history = LabelStore(label_db).override_history(DEMO_NAME)
    accepted = history[history["note"].str.startswith("accepted label propagation label-propagation-")]
    assert set(accepted["patient_id"]) == set(ticked["patient_id"])
    assert set(accepted["author"]) == {local_user().label}
    # The accepted patients are hand-labelled now: they are no longer offered.
    assert not set(at.data_editor[-1].value["patient_id"]) & set(ticked["patient_id"])


def test_agreement_page_draws_the_propagation_curve() -> None:
    at = open_page("drift", encoder="pixels")
    at.button(key="drift_propagation").click().run()
    assert not at.exception, [e.value for e in at.exception]
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    curve = next(f for f in figures if any(t.get("name") == "propagated labels" for t in f["data"]))
    names = [t["name"] for t in curve["data"]]
    assert names == ["propagated labels", "commonest label (baseline)"]
    assert any("propagation-curve-" in c.value for c in at.caption)
    # Stored: a new session shows it without the button.
    again = open_page("drift", encoder="pixels")
    assert not any(b.key == "drift_propagation" for b in again.button)
    assert any("propagation-curve-" in c.value for c in again.caption)


def test_map_selection_shows_similar_cases_notes_and_an_editable_marked_draft(covid_dir: Path, tmp_path_factory) -> None:
    from streamlit.util import AttributeDictionary as Attributes

    cache = tmp_path_factory.getbasetemp() / "scanatlas-app-cache"
    if not (cache / "datasets" / "covid" / "images.parquet").is_file():
        ingest(covid_dir, cache / "datasets" / "covid", name="covid")
    at = open_page("map", dataset="covid", encoder="pixels", level="image", method="pca")
    # One point selected, as the browser sends it (the sixth point of the map's first trace).
    point = Attributes({"curve_number": 0, "point_index": 5, "point_number": 5})
    at.session_state["map_chart"] = Attributes({"selection": Attributes(
        {"points": [point], "box": [], "lasso": [], "point_indices": [5]})})
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("not a diagnosis" in w.value for w in at.warning)
    draft = at.text_area[0].value
    assert draft.startswith("DRAFT FROM SIMILAR CASES, NOT A DIAGNOSIS.") and "similar cases" in draft
    neighbours = next(d.value for d in at.dataframe if "note" in d.value.columns)
    assert list(neighbours.columns) == ["rank", "patient_id", "distance", "label", "note"]
    assert len(neighbours) == 8
    assert not neighbours.astype(str).apply(lambda c: c.str.contains(str(cache))).any().any()
    assert [b.label for b in at.get("download_button")] == ["Download this patient's row with the draft (CSV, de-identified)"]
    at.text_area[0].input("DRAFT FROM SIMILAR CASES, NOT A DIAGNOSIS.\nMy corrected draft.").run()
    assert at.text_area[0].value.endswith("My corrected draft.")
