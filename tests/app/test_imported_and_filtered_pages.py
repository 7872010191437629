"""AppTest: every page works on a dataset imported as vectors (no images; pages that need
pixels say so), and the sidebar cohort filter restricts every page, lives in the URL, and refuses
an invalid condition without changing anything."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "app.py"
PAGES = ("data", "embeddings", "map", "clusters", "label", "export", "drift", "classifiers", "fairness")
TITLES = {"drift": "Agreement"}
IMPORTED, ENCODER = "demo-imported", "demo-pixels"
TIMEOUT_S = 600


@pytest.fixture(scope="module", autouse=True)
def imported_app(tmp_path_factory: pytest.TempPathFactory):
    """A fresh cache with the demo cohort and, beside it, the demo cohort's own ``pixels``
    vectors imported as ``demo-imported`` (encoder ``demo-pixels``)."""
    cache = tmp_path_factory.mktemp("imported-app-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(cache))
        patch.setenv("SCANATLAS_DB_URL", f"sqlite:///{cache / 'labels.db'}")
        st.cache_data.clear()
        st.cache_resource.clear()
        from core.datasets import dataset_path, ensure_demo_dataset
        from core.embed import embed_dataset
        from core.ingest.imported import import_embeddings

        demo = ensure_demo_dataset()
        vectors = embed_dataset(demo, "pixels")
        folder = tmp_path_factory.mktemp("exported")
        pq.write_table(pa.table({"image_id": demo.images["image_id"].tolist(),
                                 "embedding": pa.array(list(vectors.vectors), type=pa.list_(pa.float32()))}),
                       folder / "vectors.parquet")
        demo.images[["image_id", "patient_id", "age", "sex", "label", "modality"]].to_csv(folder / "meta.csv", index=False)
        import_embeddings(folder / "vectors.parquet", folder / "meta.csv", dataset_path(IMPORTED), encoder=ENCODER)
        patch.setenv("SCANATLAS_DATA_ROOTS", str(folder))  # the Data page may import from there
        demo.exported = folder
        yield demo
        st.cache_data.clear()
        st.cache_resource.clear()


def settle(at: AppTest) -> AppTest:
    """Rerun while a background job (embedding cache reads for a new filter, a UMAP) is shown."""
    deadline = time.monotonic() + TIMEOUT_S
    while (any(str(bar.text).startswith("Embedding ") for bar in at.get("progress"))
           or any("is being computed" in str(note.value) for note in at.info)):
        assert time.monotonic() < deadline, "background job did not finish"
        time.sleep(0.5)
        at.run()
    return at


def open_app(page: str, **query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update(query)
    settle(at.run())
    if page != "data":
        settle(at.switch_page(f"app_pages/{page}.py").run())
    assert not at.exception, [e.value for e in at.exception]
    return at


def url_where(at: AppTest) -> list[str]:
    value = at.query_params.get("where")
    return list(value) if isinstance(value, list) else ([value] if value else [])


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_works_on_an_imported_dataset(page: str, imported_app):
    at = open_app(page, dataset=IMPORTED, encoder=ENCODER)
    assert not at.error, texts(at.error)
    assert at.title[0].value == TITLES.get(page, page.capitalize())
    encoder = at.selectbox(key="widget_encoder")
    assert encoder.value == ENCODER and encoder.options == [ENCODER]  # its own vectors, nothing to embed
    n_patients = imported_app.patients["patient_id"].nunique()
    no_images = [i for i in texts(at.info) if "This dataset has no images" in i]
    if page == "data":
        assert next(m.value for m in at.metric if m.label == "Images") == str(len(imported_app.images))
        assert no_images  # the sample scans
    elif page == "embeddings":
        assert any("was imported as vectors" in i for i in texts(at.info))
    elif page == "map":
        assert any(f"{n_patients} patients · {ENCODER}" in c for c in texts(at.caption))
    elif page == "clusters":
        assert no_images and next(m.value for m in at.metric if m.label == "Clusters found") == "4"
    elif page == "export":
        assert len(at.dataframe[0].value) == n_patients
    elif page == "classifiers":
        assert at.selectbox(key="classifiers_target").value == "label"
    elif page == "drift":
        assert at.multiselect(key="drift_encoders").options == [ENCODER]


def test_filter_from_the_url_restricts_every_page_and_bad_filters_change_nothing(imported_app):
    patients = imported_app.patients
    normal = patients[patients["label"] == "Normal"]
    at = open_app("map", where=["label in [Normal]"], encoder="pixels")
    assert any(f"{len(normal)} patients · pixels" in c for c in texts(at.caption)), texts(at.caption)
    assert any(f"{len(normal)} of {len(patients)} patients" in c for c in texts(at.sidebar.caption))
    settle(at.switch_page("app_pages/clusters.py").run())
    assert not at.exception and not at.error
    sizes = [int(m.group(1)) for m in (re.search(r"^\*\*Cluster \d+\*\* \((\d+) patients\)", t) for t in texts(at.markdown)) if m]
    assert len(sizes) == 4 and sum(sizes) == len(normal)  # clustered the filtered rows only
    assert url_where(at) == ["label in [Normal]"]  # kept in the URL across pages

    # An unknown column in a shared link: said so in the sidebar, and every row is used.
    bad = open_app("map", where=["scanner in [A]"], encoder="pixels")
    assert any("Filter not applied" in e and "no column 'scanner'" in e for e in texts(bad.sidebar.error))
    assert any(f"{len(patients)} patients · pixels" in c for c in texts(bad.caption))


def test_adding_conditions_in_the_sidebar(imported_app):
    patients = imported_app.patients
    at = open_app("map", encoder="pixels")
    at.sidebar.selectbox(key="filter_column").set_value("sex").run()
    at.sidebar.multiselect(key="filter_values_sex").set_value(["F"]).run()
    settle(at.sidebar.button(key="filter_add").click().run())
    assert at.session_state["where"] == ["sex in [F]"] and url_where(at) == ["sex in [F]"]
    women = int((patients["sex"] == "F").sum())
    assert any(f"{women} patients · pixels" in c for c in texts(at.caption)), texts(at.caption)

    # A condition that leaves no rows is refused, with the reason; the filter stays as it was.
    at.sidebar.selectbox(key="filter_column").set_value("age").run()
    at.sidebar.selectbox(key="filter_op_number").set_value(">").run()
    at.sidebar.number_input(key="filter_number_age").set_value(500.0).run()
    at.sidebar.button(key="filter_add").click().run()
    assert any("Not added" in e and "leaves no rows" in e for e in texts(at.sidebar.error))
    assert at.session_state["where"] == ["sex in [F]"]
    assert any(f"{women} patients · pixels" in c for c in texts(at.caption))

    settle(at.sidebar.button(key="filter_remove_0").click().run())
    assert at.session_state["where"] == [] and url_where(at) == []
    assert any(f"{len(patients)} patients · pixels" in c for c in texts(at.caption))


def test_data_page_imports_vectors_from_the_server_and_switches_to_them(imported_app):
    at = open_app("data")
    assert "Import embeddings" in at.radio(key="data_source").options  # admin (single-user mode)
    at.radio(key="data_source").set_value("Import embeddings").run()
    assert any("Import is disabled until you give a valid dataset name" in c for c in texts(at.caption))
    at.text_input(key="import_name").input("demo-again").run()
    at.text_input(key="import_encoder").input("demo-pixels-2").run()
    at.toggle(key="import_on_server").set_value(True).run()
    at.text_input(key="import_vectors_path").input(str(imported_app.exported / "vectors.parquet")).run()
    at.text_input(key="import_metadata_path").input(str(imported_app.exported / "meta.csv")).run()
    at.button(key="import_run").click().run()
    assert not at.error, texts(at.error)
    assert any(f"Imported {len(imported_app.images)} vectors of dimension" in s for s in texts(at.success))
    assert at.selectbox(key="widget_dataset").value == "demo-again"
    assert at.selectbox(key="widget_encoder").value == "demo-pixels-2"

    # Outside the allowed folders: refused with the reason, nothing imported.
    at.radio(key="data_source").set_value("Import embeddings").run()
    at.text_input(key="import_name").input("nowhere").run()
    at.text_input(key="import_vectors_path").input("/etc/passwd").run()
    at.button(key="import_run").click().run()
    assert any("Could not import" in e for e in texts(at.error))
    assert "nowhere" not in at.selectbox(key="widget_dataset").options
