"""Streamlit AppTest of every page: each loads cleanly on the demo cohort and on the real
covid-chestxray collection, its controls change what it shows, labels persist across sessions,
bad ICD-10-CM codes are refused, and the URL query parameters reopen the same view.

The demo cohort's efficientnet-lite0 embeddings are computed once per test session, into a cache
folder that tests/browser/test_walk.py reuses; tests about page logic use the ``pixels`` encoder.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.auth import local_user
from core.datasets import DEMO_NAME, open_dataset
from core.encoders import encoder_availability
from core.ingest import ingest
from core.labels import LabelStore

APP = Path(__file__).resolve().parents[2] / "app.py"
PAGES_DIR = "app_pages"  # where app.py's st.Page files live, relative to app.py
PAGES = ("data", "embeddings", "map", "clusters", "label", "export", "drift", "classifiers", "fairness")
TIMEOUT_S = 900  # the first efficientnet-lite0 run embeds 320 scans on a 2-core CPU
PAGE_TITLES = {"drift": "Agreement"}  # app_pages/drift.py, URL /drift, shows "Agreement"
JOB_WAIT_S = 300  # a background job (classifier, drift study) on the pixels encoder takes seconds


@pytest.fixture(scope="session")
def app_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SCANATLAS_CACHE for the app tests; the same folder as tests/browser/test_signin.py's, so the
    demo cohort and its embeddings are made once per test session."""
    path = tmp_path_factory.getbasetemp() / "scanatlas-app-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def label_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('app-labels') / 'labels.db'}"


@pytest.fixture(scope="module", autouse=True)
def app_environment(app_cache: Path, label_db: str):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(app_cache))
        patch.setenv("SCANATLAS_DB_URL", label_db)
        st.cache_data.clear()
        st.cache_resource.clear()
        yield
        st.cache_data.clear()
        st.cache_resource.clear()


@pytest.fixture(scope="module")
def covid_name(app_cache: Path, covid_dir: Path) -> str:
    """The real covid-chestxray collection ingested as the app's dataset ``covid``."""
    target = app_cache / "datasets" / "covid"
    if not (target / "images.parquet").is_file():
        ingest(covid_dir, target, name="covid")
    return "covid"


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def embedding_in_progress(at: AppTest) -> bool:
    """The demo cohort is being made (first start), an embedding job runs, or a map waits for its
    UMAP / t-SNE job (PCA drawn meanwhile), or for the rest of the slices (the middle slices'
    map drawn meanwhile)."""
    return (any(str(bar.text).startswith("Embedding ") for bar in at.get("progress"))
            or any("First start: preparing the demo cohort" in str(m.value) for m in at.markdown)
            or any("is being computed" in str(note.value) or str(note.value).startswith("First map: ")
                   for note in at.info))


def settle(at: AppTest) -> AppTest:
    """Rerun until no embedding runs in the background (the page's progress fragment would)."""
    deadline = time.monotonic() + TIMEOUT_S
    while embedding_in_progress(at):
        assert time.monotonic() < deadline, "embedding did not finish"
        time.sleep(1.0)
        at.run()
    return at


def open_app(page: str = "data", **query: object) -> AppTest:
    """A fresh session (as a new browser tab) opened with ``query`` in the URL, on ``page``."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({key: str(value) for key, value in query.items()})
    settle(at.run())
    if page != "data":
        settle(at.switch_page(f"{PAGES_DIR}/{page}.py").run())
    assert_clean(at)
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def map_traces(at: AppTest) -> list[dict]:
    """The map's Plotly traces, with x decoded to an array (Plotly sends float32 as base64)."""
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    traces = json.loads(charts[0].proto.spec)["data"]
    for trace in traces:
        x = trace["x"]
        trace["x"] = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]) if isinstance(x, dict) else np.asarray(x)
    return traces


def map_coords(at: AppTest) -> np.ndarray:
    return np.sort(np.concatenate([trace["x"] for trace in map_traces(at)]))


def check_page(at: AppTest, page: str, dataset) -> None:
    """What each page must show for ``dataset`` beyond loading cleanly."""
    n_patients = dataset.patients["patient_id"].nunique()
    assert at.title[0].value == PAGE_TITLES.get(page, page.capitalize())
    if page == "data":
        assert metric(at, "Images") == str(len(dataset.images))
        assert metric(at, "Patients") == str(n_patients)
    elif page == "embeddings":
        assert any(f"{len(dataset.images)} images" in c.value for c in at.caption)
    elif page == "map":
        n_points = sum(len(trace["x"]) for trace in map_traces(at))
        assert 0 < n_points <= n_patients
        assert any(f"{n_points} patients" in c.value for c in at.caption)
    elif page == "clusters":
        assert metric(at, "Clusters found") == "4"
        # One plain sentence on structure, matching the silhouette shown under "Advanced".
        from core.clustering import structure_verdict

        verdict = structure_verdict(float(metric(at, "Silhouette (higher is better)")))
        sentences = [a.value for a in [*at.warning, *at.success] if "structure" in a.value]
        assert len(sentences) == 1 and sentences[0].lower().startswith(
            "no real structure" if verdict == "none" else f"{verdict} structure"), sentences
    elif page == "label":
        editor = at.data_editor[0].value
        assert editor["cluster"].tolist() == [0, 1, 2, 3]
        # Suggested codes are real codes or empty (never "nan"), each shown with its meaning.
        assert not editor["code means"].str.startswith("(not").any()
        assert ((editor["icd10_code"] == "") == (editor["code means"] == "")).all()
    elif page == "export":
        exported = at.dataframe[0].value
        assert len(exported) == n_patients
        assert {"disease", "icd10_code"} <= set(exported.columns)
    elif page == "classifiers":
        target = at.selectbox(key="classifiers_target")
        assert target.value == "label" and "label" in target.options
        positives = at.selectbox(key="classifiers_positive").options
        assert sorted(positives[1:]) == sorted(dataset.images["label"].dropna().astype(str).unique())
    elif page == "fairness":
        # Before any binary classifier of this dataset: a next step; after one: its groups.
        hint = any("Train a binary classifier" in i.value for i in at.info)
        assert hint or "sex" in at.selectbox(key="fairness_attribute").options
    elif page == "drift":
        # The same numbers computed straight from core for the session's encoder and k.
        from core.clustering.runs import cluster_cohort
        from core.cohort import build_cohort
        from core.drift import drift_report
        from core.embed import embed_dataset

        cohort = build_cohort(dataset, embed_dataset(dataset, at.session_state["encoder"]), level="patient")
        _, result = cluster_cohort(cohort, algorithm="kmeans", k=int(at.session_state["k"]))
        expected = drift_report(cohort.table["label"].to_numpy(dtype=object), result.labels)
        assert metric(at, "Labels that change") == f"{expected.label_change_pct:.1f}%"
        assert metric(at, "ARI") == f"{expected.ari:.3f}"
        confounders = at.dataframe[0].value if len(at.dataframe) else pd.DataFrame(
            columns=["association (Cramér's V, 0-1)", "p-value", "clusters follow it", "values", "rows tested"])
        assert {"association (Cramér's V, 0-1)", "p-value", "clusters follow it"} <= set(confounders.columns)
        flagged = confounders[confounders["clusters follow it"]]
        assert (flagged["p-value"] < 0.05).all() and (flagged["association (Cramér's V, 0-1)"] >= 0.3).all()
        assert (confounders["values"] <= confounders["rows tested"] / 2).all()  # near-unique columns skipped
        if dataset.name == DEMO_NAME and at.session_state["encoder"] == "efficientnet-lite0":
            assert expected.ari > 0.3 and expected.label_change_pct < 50  # the planted groups


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_loads_on_demo_with_default_encoder(page: str) -> None:
    at = open_app(page)
    assert at.selectbox(key="widget_encoder").value == "efficientnet-lite0"
    assert at.selectbox(key="widget_dataset").value == DEMO_NAME
    check_page(at, page, open_dataset(DEMO_NAME))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_loads_on_real_covid_collection(page: str, covid_name: str) -> None:
    at = open_app()
    at.selectbox(key="widget_dataset").set_value(covid_name).run()
    at.selectbox(key="widget_encoder").set_value("pixels").run()
    settle(at.switch_page(f"{PAGES_DIR}/{page}.py").run())
    assert_clean(at)
    assert at.query_params["dataset"] == covid_name
    check_page(at, page, open_dataset(covid_name))


def test_k_slider_changes_clusters_found() -> None:
    at = open_app("clusters", encoder="pixels")
    assert metric(at, "Clusters found") == "4"
    at.slider(key="clusters_k").set_value(6).run()
    assert_clean(at)
    assert metric(at, "Clusters found") == "6"
    assert len(at.dataframe[0].value) == 6  # one summary row per cluster
    assert at.query_params["k"] == "6"


def test_projection_choice_changes_the_map() -> None:
    at = open_app("map", encoder="pixels", method="umap")
    umap_coords = map_coords(at)
    at.selectbox(key="widget_method").set_value("pca").run()
    assert_clean(at)
    pca_coords = map_coords(at)
    assert len(pca_coords) == len(umap_coords) == 80
    assert not np.allclose(pca_coords, umap_coords)
    assert any("PCA" in c.value for c in at.caption)
    assert at.query_params["method"] == "pca"


def test_colour_by_changes_the_legend() -> None:
    at = open_app("map", encoder="pixels")
    assert sorted(trace["name"] for trace in map_traces(at)) == ["C0", "C1", "C2", "C3"]
    at.selectbox(key="map_colour").set_value("label").run()
    assert_clean(at)
    truth = set(open_dataset(DEMO_NAME).patients["label"])
    traces = map_traces(at)
    assert {trace["name"] for trace in traces} == truth
    # Every label its own colour and marker shape; hover says who the point is, not where.
    assert len({t["marker"]["color"] for t in traces}) == len({t["marker"]["symbol"] for t in traces}) == len(traces)
    hover = traces[0]["text"][0]
    assert hover.startswith("patient_id: ") and "label: " in hover and "dim1" not in hover
    assert all(t["hovertemplate"] == "%{text}<extra></extra>" for t in traces)
    # Coordinates go packed as float32, with no per-point row ids: a selected point comes back as
    # (curve_number, point_index) and the page maps it to its row: a patient with that trace's label.
    from streamlit.util import AttributeDictionary as Attributes

    assert all(t["x"].dtype == np.float32 and "customdata" not in t for t in traces)
    for curve, trace in enumerate(traces[:2]):
        at.session_state["map_chart"] = Attributes({"selection": Attributes(
            {"points": [Attributes({"curve_number": curve, "point_index": 0, "point_number": 0})],
             "box": [], "lasso": [], "point_indices": [0]})})
        at.run()
        assert_clean(at)
        assert at.subheader[0].value == "1 patients selected"
        chosen = next(d.value for d in at.dataframe if "patient_id" in d.value.columns)
        assert chosen["label"].tolist() == [trace["name"]]
    at.selectbox(key="map_colour").set_value("age").run()
    assert_clean(at)
    (trace,) = map_traces(at)
    assert trace["marker"]["colorbar"]["title"]["text"] == "age"


def test_embeddings_button_reports_cache_hits() -> None:
    at = open_app("embeddings")
    at.multiselect(key="embeddings_encoders").set_value(["pixels"]).run()
    at.button(key="embeddings_run").click().run()
    run_until(at, lambda at: "from cache" in at.dataframe[-1].value.columns, what="the embedding run")
    first = at.dataframe[-1].value.iloc[0]
    assert first["from cache"] + first["computed"] == 320 and first["failed"] == 0
    at.button(key="embeddings_run").click().run()
    run_until(at, lambda at: "from cache" in at.dataframe[-1].value.columns, what="the second embedding run")
    again = at.dataframe[-1].value.iloc[0]
    assert (again["from cache"], again["computed"]) == (320, 0)


def test_saved_mapping_survives_a_new_session(label_db: str) -> None:
    view = {"encoder": "pixels", "k": 3}  # a clustering no other test labels
    at = open_app("label", **view)
    assert not any("Saved mapping" in s.value for s in at.success)
    suggested = at.data_editor[0].value
    suggested_codes = set(suggested["icd10_code"]) - {""}
    assert suggested_codes  # the demo's ground truth suggests codes (e.g. I42.0) to save
    at.button(key="label_save").click().run()
    assert_clean(at)
    assert any(f"Saved mapping, version 1, by {local_user().label}" in s.value for s in at.success)

    st.cache_resource.clear()  # as after a server restart: a new LabelStore, same database
    st.cache_data.clear()
    fresh = open_app("label", **view)
    assert any("Saved mapping, version 1" in s.value for s in fresh.success)
    fresh.switch_page(f"{PAGES_DIR}/export.py").run()
    assert_clean(fresh)
    assert any("mapping version 1" in s.value for s in fresh.success)
    exported = fresh.dataframe[0].value
    assert set(exported["disease"]) == set(suggested["disease"])
    assert set(exported["icd10_code"].dropna()) == suggested_codes


def test_invalid_icd10_code_in_a_patient_override_is_refused(label_db: str) -> None:
    at = open_app("label", encoder="pixels")
    patient = at.selectbox(key="label_override_patient").value
    at.text_input(key="label_override_disease").input("Hypertrophic cardiomyopathy").run()
    at.text_input(key="label_override_code").input("Q99.99").run()
    at.button(key="label_override_save").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "Not saved" in at.error[0].value and "Q99.99" in at.error[0].value
    overrides = LabelStore(label_db).patient_overrides(DEMO_NAME)
    assert patient not in set(overrides["patient_id"])


def test_label_store_refuses_an_invalid_code(label_db: str) -> None:
    store = LabelStore(label_db)
    with pytest.raises(ValueError, match="XYZ123"):
        store.save_mapping(DEMO_NAME, "refused-clustering", {0: ("Pneumonia", "XYZ123")}, user=local_user(), base_version=None)
    assert store.history(DEMO_NAME, "refused-clustering").empty


def test_query_params_reopen_the_same_view() -> None:
    at = open_app("clusters", encoder="pixels")
    at.slider(key="clusters_k").set_value(5).run()
    at.switch_page(f"{PAGES_DIR}/map.py").run()
    at.selectbox(key="widget_method").set_value("pca").run()
    link = dict(at.query_params)
    assert link["k"] == "5" and link["method"] == "pca" and link["encoder"] == "pixels"

    reopened = open_app("map", **link)
    assert reopened.selectbox(key="widget_method").value == "pca"
    assert reopened.selectbox(key="widget_encoder").value == "pixels"
    np.testing.assert_allclose(map_coords(reopened), map_coords(at))
    reopened.switch_page(f"{PAGES_DIR}/clusters.py").run()
    assert reopened.slider(key="clusters_k").value == 5
    assert metric(reopened, "Clusters found") == "5"


def test_unknown_query_values_fall_back_to_defaults() -> None:
    at = open_app("data", dataset="no-such-dataset", k="many", encoder="pixels")
    assert at.selectbox(key="widget_dataset").value == DEMO_NAME
    assert at.session_state["k"] == 4
    assert at.query_params["dataset"] == DEMO_NAME


def run_until(at: AppTest, finished: Callable[[AppTest], bool], *, what: str) -> None:
    """Rerun ``at`` (as the page's 2 s progress fragment would) until a background job's
    results show; fails after JOB_WAIT_S, showing the progress text it last saw."""
    deadline = time.monotonic() + JOB_WAIT_S
    while not finished(at):
        assert not at.exception, [e.value for e in at.exception]
        if time.monotonic() > deadline:
            progress = [bar.text for bar in at.get("progress")]
            pytest.fail(f"{what} not shown after {JOB_WAIT_S} s; progress: {progress}")
        time.sleep(0.5)
        at.run()
    assert_clean(at)


def subheaders(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader]


def train_classifier(at: AppTest, positive: str) -> None:
    """On the Classifiers page: pick ``positive``, train, and wait for the per-class table."""
    assert any("Patient-grouped 5-fold" in c.value for c in at.caption)  # the hint before any run
    at.selectbox(key="classifiers_positive").set_value(positive).run()
    at.button(key="classifiers_run").click().run()
    run_until(at, lambda at: any(s.startswith("Per class") for s in subheaders(at)), what="the per-class table")


def interval(text: str) -> tuple[float, float, float]:
    """``(value, lo, hi)`` from a table cell such as "0.912 (0.851-0.960)"."""
    match = re.fullmatch(r"(\d\.\d{3}) \((\d\.\d{3})-(\d\.\d{3})\)", text)
    assert match, f"not 'value (lo-hi)': {text!r}"
    return tuple(float(group) for group in match.groups())


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_binary_classifier_then_fairness_by_sex_and_age_band() -> None:
    at = open_app("classifiers", encoder="pixels")
    train_classifier(at, "Dilated cardiomyopathy")
    assert "Per class (binary, logreg)" in subheaders(at)
    # The answer first: found x of the 20 DCM patients, false alarms among the other 60.
    [head] = [m.value for m in at.markdown if m.value.startswith("#### Found ")]
    assert re.fullmatch(r"#### Found \d+ of 20 Dilated cardiomyopathy patients; \d+ false alarms? among 60 "
                        r"without it(; wide uncertainty: only 80 patients)?\.", head), head
    answers = at.dataframe[0].value
    assert answers["class"].tolist() == ["Dilated cardiomyopathy"]  # the negative row would mirror it
    assert answers["patients"].tolist() == [80] and answers["with this class"].tolist() == [20]
    found = int(re.match(r"#### Found (\d+)", head).group(1))
    assert interval(answers["sensitivity"].iloc[0])[0] == pytest.approx(found / 20, abs=1e-3)
    for column in ("AUC", "sensitivity", "specificity", "PPV (positive predictive value)",
                   "NPV (negative predictive value)"):
        for value, lo, hi in answers[column].map(interval):
            assert 0 <= lo <= value <= hi <= 1
    per_class = at.dataframe[2].value  # under "How the model decides", after the modality table
    assert per_class["class"].tolist() == ["not Dilated cardiomyopathy", "Dilated cardiomyopathy", "mean"]
    assert per_class["n_rows"].tolist() == [80, 80, 80]  # patients
    assert per_class["support"].tolist() == [60, 20, 80]  # 20 of the demo's 80 patients have DCM
    for column in ("AUC", "sensitivity (recall)", "precision", "F1", "accuracy"):
        for value, lo, hi in per_class[column].map(interval):
            assert 0 <= lo <= value <= hi <= 1
    # A dilated cavity is visible in the pixels: even the raw-pixel encoder separates it.
    assert interval(per_class.set_index("class").at["mean", "AUC"])[0] > 0.8
    charts = plotly_specs(at)
    roc = next(c for c in charts if c["layout"].get("title", {}).get("text") == "ROC curves")
    assert [t.get("name") for t in roc["data"] if t.get("showlegend") is not False] == ["Dilated cardiomyopathy"]
    assert any("towards class Dilated cardiomyopathy" in c["layout"]["title"]["text"]
               for c in charts if "title" in c["layout"])  # SHAP explains the positive class

    at.switch_page(f"{PAGES_DIR}/fairness.py").run()
    assert_clean(at)
    attribute = at.selectbox(key="fairness_attribute")
    assert {"sex", "age band"} <= set(attribute.options)  # shown without underscores
    patients = open_dataset(DEMO_NAME).patients
    for name, expected in (("sex", set(patients["sex"].astype(str))), ("age_band", None)):
        attribute.set_value(name).run()
        assert_clean(at)
        table = at.dataframe[0].value
        assert set(table["grouped by"]) == {"overall", name}
        groups = table[table["grouped by"] == name]
        assert groups["rows"].sum() == 80  # every patient in exactly one group
        # Under 5 patients with (or without) DCM a group's AUC is not judged; else "value (lo-hi)".
        for with_it, without, cell in zip(groups["with the condition"], groups["without the condition"],
                                          groups["AUC"], strict=True):
            assert (cell == "too few to judge") == (min(with_it, without) < 5), cell
            assert cell == "too few to judge" or re.fullmatch(r"\d\.\d\d \(\d\.\d\d-\d\.\d\d\)", cell), cell
        if expected is not None:
            assert set(groups["group"]) == expected
        else:
            assert len(groups) >= 2 and all(g[:1].isdigit() for g in groups["group"])  # "40-59", "80+" ...
        bars = plotly_specs(at)[0]["data"]
        assert sorted(g for trace in bars for g in trace["x"]) == sorted(groups["group"])
        attribute = at.selectbox(key="fairness_attribute")


def test_drift_study_with_one_encoder_and_two_algorithms() -> None:
    at = open_app("drift", encoder="pixels")
    at.multiselect(key="drift_encoders").set_value(["pixels"]).run()
    at.multiselect(key="drift_algorithms").set_value(["kmeans", "birch"]).run()
    at.button(key="drift_run").click().run()
    run_until(at, lambda at: len(at.dataframe) == 2, what="the study grid")  # confounders, then grid
    grid = at.dataframe[1].value
    assert len(grid) == 2
    assert grid["encoder"].tolist() == ["pixels", "pixels"]
    assert sorted(grid["algorithm"]) == ["birch", "kmeans"]
    assert grid["agreement (ARI)"].between(-1, 1).all() and grid["labels that change (%)"].between(0, 100).all()
    assert (grid["error"].fillna("") == "").all()
    for column in ("agreement (ARI)", "labels that change (%)", "seconds"):  # 3 significant digits at most
        assert all(len(f"{v:.10g}".lstrip("-0.").replace(".", "")) <= 3 for v in grid[column].dropna()), grid[column]
    assert any(c.value.startswith("Saved study from") for c in at.caption)
    assert not any("/runs/" in c.value or "cache" in c.value for c in at.caption)  # no server paths


@pytest.mark.slow
def test_classifier_on_real_covid_compares_image_text_metadata_and_fused(covid_name: str) -> None:
    at = open_app("classifiers", dataset=covid_name, encoder="pixels")
    assert at.checkbox(key="classifiers_text").value  # the collection has clinical notes
    train_classifier(at, "COVID-19")
    [head] = [m.value for m in at.markdown if m.value.startswith("#### Found ")]
    assert " COVID-19 patients; " in head and " among " in head
    print(head, *[w.value for w in at.warning], sep="\n")  # the real numbers, for the README
    comparison = at.dataframe[1].value
    assert sorted(comparison["modality"]) == ["fused", "image", "metadata", "text"]
    assert all(0 <= lo <= value <= hi <= 1 for value, lo, hi in comparison["AUC"].map(interval))
    assert sorted(comparison["rank"]) == [1, 2, 3, 4]


def test_k_sweep_suggests_a_k_with_readable_score_names() -> None:
    at = open_app("clusters", encoder="pixels")
    at.button(key="clusters_sweep_run").click().run()
    # A background job: shown at once when it takes under ui.jobs.QUICK_S, else its progress first.
    run_until(at, lambda at: any(m.value.startswith("Suggested number") for m in at.markdown), what="the sweep")
    [suggestion] = [m.value for m in at.markdown if m.value.startswith("Suggested number of clusters:")]
    assert re.match(r"Suggested number of clusters: ([2-9]|10) \(best separation in the sweep\)\.", suggestion)
    sweep = next(spec for spec in plotly_specs(at) if any(t.get("mode") == "lines+markers" for t in spec["data"]))
    titles = {a["text"] for a in sweep["layout"]["annotations"]}
    assert titles == {"Separation (silhouette, higher is better)", "Overlap (Davies-Bouldin, lower is better)",
                      "Compactness (Calinski-Harabasz, higher is better)"}


def test_label_search_ranks_pneumonia_and_applies_a_picked_code_to_a_cluster() -> None:
    at = open_app("label", encoder="pixels", k=5)  # a clustering no other test labels
    before = at.data_editor[0].value
    at.text_input(key="label_search").input("pneumonia").run()
    assert_clean(at)
    hits = next(d.value for d in at.dataframe if "description" in d.value.columns)
    codes = hits["code"].tolist()
    assert codes[0] == "J18.9" and codes.index("J18.9") < codes.index("A01.03")  # above typhoid pneumonia
    assert at.selectbox(key="label_apply_code").value == "J18.9 Pneumonia, unspecified organism"
    at.selectbox(key="label_apply_cluster").set_value(2).run()
    at.button(key="label_apply").click().run()
    assert_clean(at)
    after = at.data_editor[0].value.set_index("cluster")
    assert after.loc[2, "icd10_code"] == "J18.9"
    assert after.loc[2, "code means"] == "Pneumonia, unspecified organism"
    untouched = before.set_index("cluster").drop(index=2)
    assert after.drop(index=2)[["disease", "icd10_code"]].equals(untouched[["disease", "icd10_code"]])
    assert any("Applied J18.9" in s.value for s in at.success)
    at.button(key="label_save").click().run()
    assert_clean(at)
    assert any("Saved as version" in s.value for s in at.success)
    # The editor now shows the saved version, with the applied code in it.
    assert at.data_editor[0].value.set_index("cluster").loc[2, "icd10_code"] == "J18.9"


def test_embeddings_recommends_an_encoder_and_keeps_the_rest_under_advanced(covid_name: str) -> None:
    here = encoder_availability()
    available = set(here.loc[here["weights_available"], "name"])
    at = open_app("embeddings")
    picker = at.multiselect(key="embeddings_encoders")
    assert picker.value == ["efficientnet-lite0"] and picker.options[0].endswith("(recommended for this dataset)")
    assert any("Recommended for this dataset: efficientnet-lite0" in m.value for m in at.markdown)
    # Device and batch size live inside the "Advanced" expander, not on the page itself.
    advanced = next(e for e in at.expander if e.label.startswith("Advanced"))
    assert advanced.selectbox(key="embeddings_device").value == "auto"
    assert advanced.number_input(key="embeddings_batch").value == 32
    for name in sorted(set(here["name"]) - available):
        assert any(c.value.startswith(f"**{name}** is not available here. Administrator:") for c in at.caption), name

    at.selectbox(key="widget_dataset").set_value(covid_name).run()
    assert_clean(at)
    expected = "densenet121-xrv" if "densenet121-xrv" in available else "efficientnet-lite0"
    assert at.multiselect(key="embeddings_encoders").value == [expected]
    assert any(f"Recommended for this dataset: {expected}" in m.value and "Chest X-rays" in m.value for m in at.markdown)
    # Leaving the page and coming back still preselects it.
    at.switch_page(f"{PAGES_DIR}/data.py").run()
    at.switch_page(f"{PAGES_DIR}/embeddings.py").run()
    assert at.multiselect(key="embeddings_encoders").value == [expected]
