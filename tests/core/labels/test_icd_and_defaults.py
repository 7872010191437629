"""core.labels: ICD-10-CM search/validation, default mappings, the labelled table. The versioned
store is tested in tests/core/labels/ (on SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.auth import User
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

ANN = User(id="iss|ann", email="ann@example.org", name="Ann", role="labeler", source="claim")
BOB = User(id="iss|bob", email="bob@example.org", name="Bob", role="labeler", source="claim")
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


# -- labelled patients ---------------------------------------------------------------------------

def test_labeled_patients_override_wins_and_no_row_is_dropped(store: LabelStore):
    store.save_mapping("ds", "k", {0: ("Normal", None), 1: ("DCM", "I42.0"), 2: ("HCM", "I42.2")}, user=ANN, base_version=None)
    store.set_patient_override("ds", "p2", "ARDS", "J80", user=BOB, base_version=None)
    store.set_patient_override("ds", "p4", "Seen by hand", None, user=BOB, base_version=None)
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
    store.save_mapping("covid", "by-label", defaults, user=ANN, base_version=None)
    first_patient = patients["patient_id"].iloc[0]
    store.set_patient_override("covid", first_patient, "Reviewed", "J18.9", user=ANN, base_version=None)

    out = labeled_patients(patients, clusters, store.current_mapping("covid", "by-label"), store.patient_overrides("covid"))
    assert len(out) == len(patients) and out["patient_id"].tolist() == patients["patient_id"].tolist()
    covid = out[(out["label"] == "COVID-19") & (out["patient_id"] != first_patient)]
    assert len(covid) > 100
    assert (covid["icd10_code"] == "U07.1").all() and (covid["label_source"] == "cluster").all()
    assert out.loc[out["patient_id"] == first_patient, "label_source"].item() == "override"
    assert (out.loc[out["label"].isna(), "label_source"] == "none").all()
