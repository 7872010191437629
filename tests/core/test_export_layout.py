"""The export's layout (issue 10): the patient, cluster, disease and ICD-10 columns come first,
the CSV a spreadsheet opens keeps non-ASCII text, download names say dataset and date, and the
mappings saved for other clusterings of a dataset are named in words."""

from __future__ import annotations

import io
from datetime import date

import numpy as np
import pandas as pd
import pytest

from core.auth import local_user
from core.clustering.runs import cluster_cohort
from core.cohort import build_cohort
from core.embed import embed_dataset
from core.export import (
    EXPORT_FIRST_COLUMNS,
    describe_clustering,
    export_file_name,
    labeled_export,
    mappings_elsewhere,
    to_csv_bytes,
)
from core.labels import LabelStore
from core.runs import RunStore


def _patients() -> pd.DataFrame:
    # Metadata columns before the label columns, as a real dataset's patient table has them.
    return pd.DataFrame({
        "age": [61.0, 47.0, 70.0], "sex": ["F", "M", "F"], "site": ["A", "B", "A"],
        "temperature": ["37.5 °C", "38.1 °C", "36.9 °C"], "patient_id": ["p1", "p2", "p3"],
    })


@pytest.mark.parametrize("deidentify", [True, False])
def test_patient_cluster_disease_and_code_come_first(deidentify: bool) -> None:
    mapping = pd.DataFrame({"cluster": [0, 1], "disease": ["Pneumonia", "Normal"],
                            "icd10_code": ["J18.9", None], "icd10_description": ["Pneumonia, unspecified organism", None]})
    export = labeled_export(_patients(), ["p1", "p2", "p3"], np.array([0, 1, 0]), mapping,
                            deidentify=deidentify, is_admin=True, salt=b"sixteen-byte-test-salt")
    table = export.table
    assert list(table.columns[:5]) == list(EXPORT_FIRST_COLUMNS)
    assert {"age", "sex", "site", "temperature"} <= set(table.columns[5:])  # nothing lost, only moved
    assert table["disease"].tolist() == ["Pneumonia", "Normal", "Pneumonia"]
    assert table["icd10_code"].tolist()[0] == "J18.9"
    header = to_csv_bytes(table, bom=True)[3:].split(b"\n", 1)[0].decode("utf-8")
    assert header.split(",")[:5] == [f'"{c}"' for c in EXPORT_FIRST_COLUMNS]


def test_csv_with_bom_keeps_the_degree_sign_for_a_bom_aware_reader() -> None:
    data = to_csv_bytes(_patients(), bom=True)
    assert data.startswith(b"\xef\xbb\xbf")
    # What Excel does with a BOM: reads UTF-8. The degree sign stays one character.
    back = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig")
    assert back.columns[0] == "age"  # the BOM is not glued to the first header
    assert back["temperature"].tolist() == ["37.5 °C", "38.1 °C", "36.9 °C"]


def test_export_file_name_says_dataset_and_date() -> None:
    assert export_file_name("covid-xray", "csv", day=date(2026, 11, 29)) == "covid-xray-labels-2026-11-29.csv"
    assert export_file_name("demo-cohort", "parquet", day=date(2025, 1, 2)) == "demo-cohort-labels-2025-01-02.parquet"
    assert export_file_name("x", "csv").startswith("x-labels-20")


@pytest.mark.parametrize(("dataset", "extension"), [("../etc", "csv"), ("a/b", "csv"), ("ok", "exe"), ("ok", "csv/../x")])
def test_export_file_name_refuses_paths(dataset: str, extension: str) -> None:
    with pytest.raises(ValueError, match="not allowed|must be 'csv' or 'parquet'"):
        export_file_name(dataset, extension)


def test_describe_clustering() -> None:
    assert describe_clustering({"algorithm": "kmeans", "params": {"k": 4, "n_init": 10}}) == "kmeans k=4"
    assert (describe_clustering({"algorithm": "hdbscan", "params": {"min_cluster_size": 5, "min_samples": 3}})
            == "hdbscan min_cluster_size=5, min_samples=3")


def test_mappings_elsewhere_names_the_k_of_each_saved_mapping(demo_dataset, tmp_path) -> None:
    runs = RunStore(tmp_path / "runs")
    cohort = build_cohort(demo_dataset, embed_dataset(demo_dataset, "pixels", cache_root=tmp_path / "emb"), level="patient")
    key4, _ = cluster_cohort(cohort, algorithm="kmeans", k=4, store=runs, dataset="demo")
    key3, _ = cluster_cohort(cohort, algorithm="kmeans", k=3, store=runs, dataset="demo")
    image_cohort = build_cohort(demo_dataset, embed_dataset(demo_dataset, "pixels", cache_root=tmp_path / "emb"), level="image")
    key_images, _ = cluster_cohort(image_cohort, algorithm="kmeans", k=2, store=runs, dataset="demo")
    store = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    assert mappings_elsewhere(store.mapping_sets("demo"), key3, cohort_key=cohort.key, runs=runs) == []

    user = local_user()
    store.save_mapping("demo", key4, {0: ("Pneumonia", "J18.9")}, user=user, base_version=None)
    store.save_mapping("demo", key4, {0: ("Pneumonia", "J18.9"), 1: ("Normal", None)}, user=user, base_version=1)
    store.save_mapping("demo", key_images, {0: ("Normal", None)}, user=user, base_version=None)
    store.save_mapping("other-dataset", key3, {0: ("Normal", None)}, user=user, base_version=None)

    found = mappings_elsewhere(store.mapping_sets("demo"), key3, cohort_key=cohort.key, runs=runs)
    assert found == ["kmeans k=2 on other features (image level) (mapping version 1)",
                     "kmeans k=4 (mapping version 2)"]
    # The current clustering's own mapping is never listed.
    assert mappings_elsewhere(store.mapping_sets("demo"), key4, cohort_key=cohort.key, runs=runs) == [
        "kmeans k=2 on other features (image level) (mapping version 1)"]
    # A clustering whose run was deleted is still named, by its key.
    assert runs.delete(key_images)
    found = mappings_elsewhere(store.mapping_sets("demo"), key3, cohort_key=cohort.key, runs=runs)
    assert found[0] == f"clustering {key_images} (mapping version 1)"
