"""core.labels: ICD-10-CM search/validation, default mappings, the versioned store, labelled table."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from core.labels import (
    DEFAULT_LABEL_CODES,
    IcdCode,
    LabelStore,
    Mapping,
    labeled_patients,
    majority_labels,
    search_icd10,
    suggest_default_mapping,
    validate_icd10,
)

DEMO_GROUPS = ["Normal", "Dilated cardiomyopathy", "Hypertrophic cardiomyopathy", "Myocardial infarction"]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nested' / 'labels.db'}"


@pytest.fixture
def store(db_url: str):
    with LabelStore(db_url) as label_store:
        yield label_store


# -- ICD-10-CM search ----------------------------------------------------------------------------

def test_search_by_word_offers_the_cardiomyopathies():
    found = {c.code: c for c in search_icd10("cardiomyopathy")}
    assert found["I42.0"] == IcdCode("I42.0", "Dilated cardiomyopathy", True)
    assert found["I42.1"].description == "Obstructive hypertrophic cardiomyopathy"
    assert found["I42.2"].description == "Other hypertrophic cardiomyopathy"
    assert "I42.9" in found
    assert all("cardiomyopath" in c.description.lower() for c in found.values())


def test_search_needs_every_word_and_matches_plurals():
    codes = [c.code for c in search_icd10("hypertrophic cardiomyopathy")]
    assert codes == ["I42.1", "I42.2"]
    # "Other cardiomyopathies" is found by the singular.
    assert "I42.8" in [c.code for c in search_icd10("cardiomyopathy")]


def test_search_by_code_prefix_is_exact_then_children_in_code_order():
    results = search_icd10("i42", limit=5)
    assert [c.code for c in results] == ["I42", "I42.0", "I42.1", "I42.2", "I42.3"]
    assert results[0].billable is False and results[1].billable is True
    assert [c.code for c in search_icd10("I42.0")][0] == "I42.0"
    assert [c.code for c in search_icd10("j80")] == ["J80"]


def test_search_limit_and_empty_query():
    assert len(search_icd10("fracture", limit=7)) == 7
    assert search_icd10("   ") == []
    assert search_icd10("zzqqxx-no-such-words") == []
    with pytest.raises(ValueError, match="limit=0"):
        search_icd10("heart", limit=0)


def test_search_ranks_billable_codes_before_categories():
    codes = [c.code for c in search_icd10("heart failure", limit=50)]
    assert "I50.9" in codes
    assert codes.index("I50.9") < codes.index("I50.2")  # I50.2 is a non-billable subcategory


# -- ICD-10-CM validation -----------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["I42.0", "i420", " i42.0 ", "I42 0"])
def test_validate_normalises(raw: str):
    assert validate_icd10(raw) == IcdCode("I42.0", "Dilated cardiomyopathy", True)


def test_validate_accepts_categories_and_seventh_character_codes():
    assert validate_icd10("i42").billable is False
    assert validate_icd10("s72001a").code == "S72.001A"


def test_validate_refuses_unknown_code_with_close_suggestions():
    with pytest.raises(ValueError, match=r"'I42.99X' is not an ICD-10-CM code.*I42\.9"):
        validate_icd10("I42.99X")


@pytest.mark.parametrize("raw", ["XYZ", "9", "I30-I5A", "I4"])
def test_validate_refuses_non_codes_naming_the_value_and_shape(raw: str):
    with pytest.raises(ValueError, match="is not an ICD-10-CM code") as info:
        validate_icd10(raw)
    assert repr(raw) in str(info.value)
    assert "I42.0" in str(info.value)  # the example of a valid shape


@pytest.mark.parametrize("raw", ["", "  ", None])
def test_validate_refuses_empty(raw):
    with pytest.raises(ValueError, match="empty"):
        validate_icd10(raw)


def test_validate_suggests_codes_for_a_disease_name_typed_as_code():
    with pytest.raises(ValueError, match=r"I42\.0"):
        validate_icd10("dilated cardiomyopathy")


# -- default mappings ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(DEFAULT_LABEL_CODES))
def test_every_default_code_validates(name: str):
    code = DEFAULT_LABEL_CODES[name][0]
    if code is not None:
        assert validate_icd10(code).code == code  # stored already normalised
        assert validate_icd10(code).billable


def test_defaults_for_the_demo_heart_groups():
    mapping = suggest_default_mapping(dict(enumerate(DEMO_GROUPS)))
    assert mapping == {
        0: Mapping("Normal", None),
        1: Mapping("Dilated cardiomyopathy", "I42.0"),
        2: Mapping("Hypertrophic cardiomyopathy", "I42.2"),
        3: Mapping("Myocardial infarction", "I25.2"),
    }


def test_defaults_match_abbreviations_case_and_hierarchies():
    mapping = suggest_default_mapping(
        {0: "DCM", 1: "hcm", 2: "heart failure", 3: "Pneumonia/Viral/COVID-19", 4: "COVID-19, ARDS", 5: "MINF", 6: "ARDS"}
    )
    assert [m.code for m in mapping.values()] == ["I42.0", "I42.2", "I50.9", "U07.1", "U07.1", "I25.2", "J80"]
    assert mapping[4].disease == "COVID-19 with ARDS"


def test_defaults_for_unknown_or_missing_labels_are_cluster_k_without_code():
    mapping = suggest_default_mapping({7: None, 8: "Something new", -1: float("nan"), 9: "  "})
    assert mapping == {
        7: Mapping("Cluster 7", None), 8: Mapping("Cluster 8", None),
        -1: Mapping("Cluster -1", None), 9: Mapping("Cluster 9", None),
    }
    with pytest.raises(ValueError, match="'a' must be an integer"):
        suggest_default_mapping({"a": "Normal"})


def test_defaults_cover_every_finding_in_covid_chestxray(covid_dir: Path):
    findings = pd.read_csv(covid_dir / "metadata.csv")["finding"].dropna().unique()
    mapping = suggest_default_mapping(dict(enumerate(findings)))
    named = dict(zip(findings, mapping.values(), strict=True))
    assert named["COVID-19"] == Mapping("COVID-19", "U07.1")
    assert named["Pneumonia"] == Mapping("Pneumonia", "J18.9")
    assert named["ARDS"].code == "J80"
    assert named["SARS"].code == "J12.81"
    assert named["No Finding"].code is None
    unmapped = [f for f, m in named.items() if m.code is None and f != "No Finding"]
    assert unmapped == []


def test_majority_labels_by_cluster_with_ties_and_unknowns():
    clusters = pd.Series([0, 0, 0, 1, 1, 2, None], index=list("abcdefg"))
    labels = pd.Series(["x", "y", "y", "b", "a", None, "z"], index=list("abcdefg"))
    assert majority_labels(clusters, labels) == {0: "y", 1: "a", 2: None}


# -- the store -----------------------------------------------------------------------------------

def test_empty_store_has_empty_frames(store: LabelStore):
    assert store.current_mapping("ds", "k").empty
    assert list(store.current_mapping("ds", "k").columns) == [
        "cluster", "disease", "icd10_code", "icd10_description", "version", "author", "created_at"
    ]
    assert store.history("ds", "k").empty
    assert store.patient_overrides("ds").empty


def test_save_then_reload_in_a_new_store_survives_restart(db_url: str):
    before = datetime.now(UTC)
    first = LabelStore(db_url)
    version = first.save_mapping("demo", "kmeans-4", {1: ("DCM", "i420"), 0: ("Normal", None)}, author="ann")
    after = datetime.now(UTC)
    first.close()

    reopened = LabelStore(db_url)
    current = reopened.current_mapping("demo", "kmeans-4")
    assert version == 1
    assert current["cluster"].tolist() == [0, 1]
    assert current["disease"].tolist() == ["Normal", "DCM"]
    assert pd.isna(current.loc[0, "icd10_code"]) and current.loc[1, "icd10_code"] == "I42.0"
    assert current.loc[1, "icd10_description"] == "Dilated cardiomyopathy"
    assert (current["version"] == 1).all() and (current["author"] == "ann").all()
    assert str(current["created_at"].dt.tz) == "UTC"
    assert before <= current.loc[0, "created_at"].to_pydatetime() <= after
    reopened.close()


def test_versions_increase_and_history_keeps_all(store: LabelStore):
    assert store.save_mapping("ds", "k", {0: ("A", "I42.0")}, author="ann") == 1
    assert store.save_mapping("ds", "k", {0: ("B", "I42.2")}, author="bob") == 2
    assert store.save_mapping("ds", "other-key", {0: ("C", None)}, author="bob") == 1
    history = store.history("ds", "k")
    assert history[["version", "disease", "author", "action"]].values.tolist() == [
        [1, "A", "ann", "save"], [2, "B", "bob", "save"]
    ]
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["B"]
    assert store.mapping_at("ds", "k", 1)["disease"].tolist() == ["A"]
    sets = store.mapping_sets("ds")
    assert sets[["clustering_key", "version"]].values.tolist() == [["k", 2], ["other-key", 1]]


def test_empty_disease_takes_the_code_description(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("", "J80"), 1: (None, "u071")}, author="ann")
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["Acute respiratory distress syndrome", "COVID-19"]


def test_undo_restores_previous_and_is_itself_a_version(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("A", "I42.0"), 1: ("N", None)}, author="ann")
    store.save_mapping("ds", "k", {0: ("B", "I42.2")}, author="bob")
    store.save_mapping("ds", "k", {0: ("C", "I42.9")}, author="bob")

    assert store.undo("ds", "k", author="cat") == 4
    current = store.current_mapping("ds", "k")
    assert current[["cluster", "disease", "icd10_code", "version", "author"]].values.tolist() == [[0, "B", "I42.2", 4, "cat"]]
    # A second undo keeps going back rather than flipping between two versions.
    assert store.undo("ds", "k", author="cat") == 5
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["A", "N"]
    with pytest.raises(ValueError, match="nothing to undo.*version 5"):
        store.undo("ds", "k", author="cat")

    history = store.history("ds", "k")
    assert history.drop_duplicates("version")[["version", "action", "restored_version"]].astype(object).values.tolist() == [
        [1, "save", pd.NA], [2, "save", pd.NA], [3, "save", pd.NA], [4, "undo", 2], [5, "undo", 1]
    ]
    # Saving after an undo makes that save undoable back to the restored mapping.
    store.save_mapping("ds", "k", {0: ("D", None)}, author="ann")
    store.undo("ds", "k", author="ann")
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["A", "N"]


def test_undo_with_nothing_saved_is_refused(store: LabelStore):
    with pytest.raises(ValueError, match="no mapping saved for 'ds'/'k'"):
        store.undo("ds", "k", author="ann")
    store.save_mapping("ds", "k", {0: ("A", None)}, author="ann")
    with pytest.raises(ValueError, match="no earlier mapping"):
        store.undo("ds", "k", author="ann")
    assert store.history("ds", "k")["version"].tolist() == [1]


def test_invalid_code_saves_nothing_and_names_every_problem(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("A", "I42.0")}, author="ann")
    with pytest.raises(ValueError) as info:
        store.save_mapping("ds", "k", {0: ("A", "I42.0"), 1: ("B", "I42.99X"), 2: ("", None), "x": ("C", None)}, author="ann")
    message = str(info.value)
    assert "cluster 1: 'I42.99X' is not an ICD-10-CM code" in message
    assert "cluster 2: needs a disease name or an ICD-10-CM code" in message
    assert "cluster id 'x' must be an integer" in message
    assert store.history("ds", "k")["version"].tolist() == [1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "", "clustering_key": "k", "mapping": {0: ("A", None)}, "author": "a"}, "dataset=''"),
        ({"dataset": "d", "clustering_key": " ", "mapping": {0: ("A", None)}, "author": "a"}, "clustering_key=' '"),
        ({"dataset": "d", "clustering_key": "k", "mapping": {0: ("A", None)}, "author": ""}, "author=''"),
        ({"dataset": "d", "clustering_key": "k", "mapping": {}, "author": "a"}, "is empty"),
        ({"dataset": "d", "clustering_key": "k", "mapping": {0: "A"}, "author": "a"}, "must be \\(disease, code\\)"),
    ],
)
def test_save_mapping_bad_arguments(store: LabelStore, kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        store.save_mapping(**kwargs)


def test_save_accepts_suggested_defaults(store: LabelStore):
    defaults = suggest_default_mapping(dict(enumerate(DEMO_GROUPS)))
    store.save_mapping("demo", "k", defaults, author="auto")
    current = store.current_mapping("demo", "k")
    assert current["icd10_code"].tolist()[1:] == ["I42.0", "I42.2", "I25.2"]
    assert current.loc[3, "icd10_description"] == "Old myocardial infarction"


def test_patient_overrides_set_replace_clear(store: LabelStore, db_url: str):
    assert store.set_patient_override("ds", "p1", "ARDS", "j80", author="ann", note="seen on CT") == 1
    assert store.set_patient_override("ds", "p2", "Odd one", None, author="ann") == 1
    assert store.set_patient_override("ds", "p1", "COVID-19", "U07.1", author="bob") == 2
    assert store.set_patient_override("other", "p1", "X", None, author="bob") == 1
    assert store.clear_patient_override("ds", "p2", author="bob", note="was fine") == 2

    current = LabelStore(db_url).patient_overrides("ds")
    assert current[["patient_id", "disease", "icd10_code", "version", "author"]].values.tolist() == [
        ["p1", "COVID-19", "U07.1", 2, "bob"]
    ]
    history = store.override_history("ds")
    assert history[["patient_id", "version", "cleared"]].values.tolist() == [
        ["p1", 1, False], ["p1", 2, False], ["p2", 1, False], ["p2", 2, True]
    ]
    assert history.loc[0, "note"] == "seen on CT"
    # A cleared patient can be overridden again.
    assert store.set_patient_override("ds", "p2", "Back", None, author="ann") == 3
    assert sorted(store.patient_overrides("ds")["patient_id"]) == ["p1", "p2"]


def test_patient_override_errors(store: LabelStore):
    with pytest.raises(ValueError, match="'XYZ' is not an ICD-10-CM code"):
        store.set_patient_override("ds", "p1", "X", "XYZ", author="ann")
    with pytest.raises(ValueError, match="no override to clear"):
        store.clear_patient_override("ds", "p1", author="ann")
    with pytest.raises(ValueError, match="patient_id=''"):
        store.set_patient_override("ds", "", "X", None, author="ann")
    assert store.override_history("ds").empty


def test_concurrent_writers_get_distinct_versions(db_url: str):
    LabelStore(db_url).save_mapping("ds", "k", {0: ("start", None)}, author="setup")
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        store = LabelStore(db_url)
        try:
            for i in range(8):
                store.save_mapping("ds", "k", {0: (f"{name}-{i}", None)}, author=name)
        except BaseException as err:  # noqa: BLE001 - reported to the main thread
            errors.append(err)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    history = LabelStore(db_url).history("ds", "k")
    assert sorted(history["version"]) == list(range(1, 26))
    assert len(set(history["disease"])) == 25


def test_in_memory_sqlite_works_across_sessions():
    store = LabelStore("sqlite://")
    store.save_mapping("ds", "k", {0: ("A", None)}, author="ann")
    assert store.current_mapping("ds", "k")["disease"].tolist() == ["A"]


# -- labelled patients ---------------------------------------------------------------------------

def test_labeled_patients_override_wins_and_no_row_is_dropped(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("Normal", None), 1: ("DCM", "I42.0"), 2: ("HCM", "I42.2")}, author="ann")
    store.set_patient_override("ds", "p2", "ARDS", "J80", author="bob")
    store.set_patient_override("ds", "p4", "Seen by hand", None, author="bob")
    patients = pd.DataFrame({"patient_id": ["p0", "p1", "p2", "p3", "p4", "p5"], "age": [50, 60, 70, 80, 90, 40],
                             "cluster": [9, 9, 9, 9, 9, 9]})
    clusters = pd.Series([0, 1, 1, 3, float("nan")], index=["p0", "p1", "p2", "p3", "p4"])
    clusters["ghost"] = 2  # not a patient: ignored

    out = labeled_patients(patients, clusters, store.current_mapping("ds", "k"), store.patient_overrides("ds"))
    assert out["patient_id"].tolist() == ["p0", "p1", "p2", "p3", "p4", "p5"]
    assert out["age"].tolist() == [50, 60, 70, 80, 90, 40]
    assert out["cluster"].tolist() == [0, 1, 1, 3, pd.NA, pd.NA]
    assert str(out["cluster"].dtype) == "Int64"
    assert out["disease"].tolist() == ["Normal", "DCM", "ARDS", None, "Seen by hand", None]
    assert out["icd10_code"].tolist() == [None, "I42.0", "J80", None, None, None]
    assert out["icd10_description"].tolist()[1:3] == ["Dilated cardiomyopathy", "Acute respiratory distress syndrome"]
    assert out["label_source"].tolist() == ["cluster", "cluster", "override", "none", "override", "none"]


def test_labeled_patients_without_mapping_or_overrides():
    patients = pd.DataFrame({"patient_id": ["a", "b"]})
    out = labeled_patients(patients, pd.Series([0, 1], index=["a", "b"]), None, None)
    assert out["cluster"].tolist() == [0, 1]
    assert out["label_source"].tolist() == ["none", "none"]
    assert out["disease"].isna().all()


def test_labeled_patients_bad_inputs():
    patients = pd.DataFrame({"patient_id": ["a", "b"]})
    with pytest.raises(ValueError, match="needs a 'patient_id' column"):
        labeled_patients(pd.DataFrame({"id": ["a"]}), pd.Series(dtype=float), None)
    with pytest.raises(ValueError, match="repeats patient_id \\['a'\\]"):
        labeled_patients(pd.DataFrame({"patient_id": ["a", "a"]}), pd.Series(dtype=float), None)
    with pytest.raises(ValueError, match="more than one cluster for patient_id \\['a'\\]"):
        labeled_patients(patients, pd.Series([0, 1], index=["a", "a"]), None)
    with pytest.raises(ValueError, match="mapping_df is missing columns \\['icd10_code', 'icd10_description'\\]"):
        labeled_patients(patients, pd.Series([0], index=["a"]), pd.DataFrame({"cluster": [0], "disease": ["x"]}))


@pytest.mark.slow
def test_end_to_end_on_covid_chestxray(covid_dataset, store: LabelStore):
    patients = covid_dataset.patients
    # Stand-in clustering: one cluster per ground-truth label (unlabelled patients unclustered).
    codes = {label: i for i, label in enumerate(sorted(patients["label"].dropna().unique()))}
    clusters = pd.Series(patients["label"].map(codes).to_numpy(), index=patients["patient_id"])
    defaults = suggest_default_mapping(majority_labels(clusters, patients.set_index("patient_id")["label"]))
    store.save_mapping("covid", "by-label", defaults, author="test")
    first_patient = patients["patient_id"].iloc[0]
    store.set_patient_override("covid", first_patient, "Reviewed", "J18.9", author="test")

    out = labeled_patients(patients, clusters, store.current_mapping("covid", "by-label"), store.patient_overrides("covid"))
    assert len(out) == len(patients) and out["patient_id"].tolist() == patients["patient_id"].tolist()
    covid = out[(out["label"] == "COVID-19") & (out["patient_id"] != first_patient)]
    assert len(covid) > 100
    assert (covid["icd10_code"] == "U07.1").all() and (covid["label_source"] == "cluster").all()
    assert out.loc[out["patient_id"] == first_patient, "label_source"].item() == "override"
    assert (out.loc[out["label"].isna(), "label_source"] == "none").all()
