"""ICD-10-CM word-search ranking and close-code suggestions by meaning, on the real code set."""

from __future__ import annotations

import pytest

from core.labels import search_icd10, suggest_icd10, validate_icd10


def codes(query: str, limit: int = 20) -> list[str]:
    return [c.code for c in search_icd10(query, limit=limit)]


def test_pneumonia_ranks_the_unspecified_pneumonia_code_first_and_typhoid_below_it():
    found = codes("pneumonia")
    assert found[0] == "J18.9"  # Pneumonia, unspecified organism
    assert "A01.03" in found  # Typhoid pneumonia: a real match, but a specific one
    assert found.index("J18.9") < found.index("A01.03")
    # "Pneumonia due to staphylococcus, unspecified" is not the main pneumonia code.
    assert found.index("J18.9") < codes("pneumonia", limit=100).index("J15.20")


def test_exact_disease_name_ranks_first_then_its_unspecified_code():
    assert codes("typhoid fever", limit=2) == ["A01.0", "A01.00"]  # "Typhoid fever", "Typhoid fever, unspecified"
    assert codes("heart failure", limit=2) == ["I50", "I50.9"]
    assert codes("typhoid", limit=1) == ["A01.00"]  # Typhoid fever, unspecified


def test_then_shorter_descriptions():
    found = search_icd10("pneumonia", limit=6)[1:]
    # After J18.9, billable two-word pneumonias ("Typhoid pneumonia") before longer ones.
    lengths = [len(c.description.split()) for c in found]
    assert lengths == sorted(lengths)


def test_suggestions_by_meaning_of_the_typed_disease_come_before_spelling_neighbours():
    offered = [c.code for c in suggest_icd10("X99.999", "pneumonia")]
    assert offered[0] == "J18.9"
    assert offered.index("J18.9") < offered.index("X99.9")  # X99.9 is assault by a sharp object
    assert len(offered) == 5 and len(set(offered)) == 5
    # Without a disease name only spelling is left.
    assert [c.code for c in suggest_icd10("X99.999")][0] == "X99.9"


def test_validate_message_names_meaning_based_codes_with_their_descriptions():
    with pytest.raises(ValueError, match=r"close codes: J18\.9 \(Pneumonia, unspecified organism\)"):
        validate_icd10("X99.999", disease="pneumonia")


def test_suggestions_for_blank_inputs_are_empty():
    assert suggest_icd10("", "") == []
    assert suggest_icd10("", None) == []
