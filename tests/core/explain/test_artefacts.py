"""core.explain.artefacts: missingness features among the top drivers are flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.explain import artefact_warnings, missingness_column
from core.metadata import encode_metadata


def test_missingness_column_by_hand() -> None:
    assert missingness_column("age missing") == "age"
    assert missingness_column("sex=(missing)") == "sex"
    for name in ("age", "sex=F", "PC1", " missing", "=(missing)"):
        assert missingness_column(name) is None


def test_names_match_the_real_metadata_encoder() -> None:
    table = pd.DataFrame({"age": [40, np.nan, 60, 70], "sex": ["F", None, "M", "F"]})
    names = encode_metadata(table).feature_names
    flagged = {missingness_column(n) for n in names} - {None}
    assert flagged == {"age", "sex"}


def test_warning_for_age_missing_as_strongest_driver() -> None:
    warnings = artefact_warnings(["age missing", "PC1", "sex=M"], target="COVID-19")
    assert warnings == [
        "'age missing' is the strongest driver: whether age was recorded, not the patient's age, is what "
        "predicts COVID-19. This usually reflects where the scans came from (a data-collection artefact), "
        "not disease."
    ]


def test_no_warning_without_missingness_and_rank_otherwise() -> None:
    assert artefact_warnings(["PC1", "age", "sex=F"]) == []
    [warning] = artefact_warnings(["PC1", "PC2", "sex=(missing)"])
    assert warning.startswith("'sex=(missing)' is driver number 3") and "drives the prediction" in warning
