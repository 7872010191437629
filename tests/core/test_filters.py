"""Cohort filters (core.filters): parsing, checks against the table, masks on the real
covid-chestxray collection, and runs keyed by the filter (unfiltered keys unchanged)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.filters import (
    Condition,
    FilterError,
    canonical,
    parse_condition,
    parse_where,
    select_dataset,
    table_mask,
    validate,
)


@pytest.mark.parametrize("text, expected", [
    ("view in [PA, AP]", Condition("view", "in", ("PA", "AP"))),
    ("view not in ['AP Supine', \"a, b\"]", Condition("view", "not in", ("AP Supine", "a, b"))),
    ("  age>=18 ", Condition("age", ">=", ("18",))),
    ("sex = F", Condition("sex", "==", ("F",))),
    ("finding != COVID-19", Condition("finding", "!=", ("COVID-19",))),
    ("age < 90", Condition("age", "<", ("90",))),
])
def test_parse(text: str, expected: Condition):
    assert parse_condition(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "an empty filter"),
    ("age", "cannot read the filter 'age'"),
    ("view in []", "the list is empty"),
    ("view in ['PA, AP]", r"a quote \(\'\) is not closed"),
    ("age >= ", "cannot read the filter"),
])
def test_parse_refuses_with_the_forms_understood(text: str, message: str):
    with pytest.raises(FilterError, match=message):
        parse_condition(text)


def test_validate_names_the_problem(covid_dataset):
    images = covid_dataset.images
    with pytest.raises(FilterError, match=r"no column 'viewpoint' to filter on; columns: .*view"):
        validate(parse_where(["viewpoint in [PA]"]), images)
    with pytest.raises(FilterError, match=r"'adult' is not a number, and column 'age' holds numbers"):
        validate(parse_where(["age >= adult"]), images)
    with pytest.raises(FilterError, match=r">= needs a numeric column, and 'view' holds text"):
        validate(parse_where(["view >= PA"]), images)
    with pytest.raises(FilterError, match="no column 'path'"):  # server paths never reach a filter or a URL
        validate(parse_where(["path in [x]"]), images)
    assert validate(parse_where(["age >= 18"]), images)[0].values == (18.0,)


def test_masks_on_the_real_collection_match_pandas(covid_dataset):
    images = covid_dataset.images
    mask = table_mask(parse_where(["view in [PA, AP]", "age >= 18"]), images)
    expected = images["view"].isin(["PA", "AP"]) & (images["age"] >= 18)
    np.testing.assert_array_equal(mask, expected.to_numpy())
    assert 0 < mask.sum() < len(images)
    # A missing value never matches, "!=" and "not in" included.
    not_pa = table_mask(parse_where(["view != PA"]), images)
    assert not_pa.sum() == (images["view"].notna() & (images["view"] != "PA")).sum()
    assert table_mask(parse_where(["age >= 0"]), images).sum() == images["age"].notna().sum()
    modality = table_mask(parse_where(["modality not in [CT]"]), images)
    assert set(images.loc[modality, "modality"]) == {"X-ray"}


def test_select_dataset_keeps_patients_with_images_left_and_refuses_an_empty_result(covid_dataset):
    selected = select_dataset(covid_dataset, parse_where(["view in [PA]", "sex == F"]))
    assert set(selected.images["view"]) == {"PA"} and set(selected.images["sex"]) == {"F"}
    assert set(selected.patients["patient_id"]) == set(selected.images["patient_id"])
    assert selected.name == covid_dataset.name and selected.root == covid_dataset.root
    with pytest.raises(FilterError, match=r"leaves no rows of \d+ images .*view in \[PA\] keeps \d+; age > 200 keeps 0"):
        select_dataset(covid_dataset, parse_where(["view in [PA]", "age > 200"]))
    assert select_dataset(covid_dataset, ()) is covid_dataset  # no filter: the same dataset, same keys


def test_canonical_form_ignores_order_and_spelling():
    first = validate(parse_where(["view in [PA, AP]", "age>=18"]), pd.DataFrame({"view": ["PA"], "age": [30.0]}))
    second = validate(parse_where(["age >= 18.0", "view in [AP,PA]"]), pd.DataFrame({"view": ["PA"], "age": [30.0]}))
    assert canonical(first) == canonical(second) == "age >= 18; view in [AP, PA]"
    assert canonical(()) == ""
    assert canonical((), exclude_ids=["b", "a"]).startswith("exclude 2 images ")


def test_exclusion_hook_leaves_images_out_and_keys_the_dataset(covid_dataset):
    dropped = covid_dataset.images["image_id"].iloc[:3].tolist()
    kept = select_dataset(covid_dataset, exclude_ids=dropped)
    assert len(kept.images) == len(covid_dataset.images) - 3
    assert not kept.images["image_id"].isin(dropped).any()
    assert kept.token != covid_dataset.token and "exclude 3 images" in kept.token
    both = select_dataset(covid_dataset, parse_where(["view in [PA]"]), exclude_ids=dropped)
    assert both.token not in (kept.token, select_dataset(covid_dataset, parse_where(["view in [PA]"])).token)


def test_runs_are_keyed_by_the_filter_and_unfiltered_keys_do_not_change(demo_dataset, cache_env):
    from core.clustering.runs import clustering_key
    from core.cohort import build_cohort, short_hash
    from core.drift.study import drift_study_key
    from core.embed import embed_dataset

    whole = embed_dataset(demo_dataset, "pixels")
    cohort = build_cohort(demo_dataset, whole, level="patient")
    # The key of an unfiltered cohort is what it always was (label mappings are saved under it).
    assert cohort.key == "patient-" + short_hash("cohort", whole.key, None, "patient", "mean", [], {})
    keys = {cohort.key}
    for where in (["age >= 0"], ["age >= 50"], ["age >= 50", "sex in [F]"]):
        subset = select_dataset(demo_dataset, parse_where(where))
        built = build_cohort(subset, embed_dataset(subset, "pixels"), level="patient")
        keys.add(built.key)
        assert clustering_key(built.key, "kmeans", {"k": 2}, 0) != clustering_key(cohort.key, "kmeans", {"k": 2}, 0)
        assert drift_study_key(subset, ["pixels"], ["kmeans"], "patient", "label") != drift_study_key(
            demo_dataset, ["pixels"], ["kmeans"], "patient", "label")
    # "age >= 0" keeps every row and still has a key of its own: runs never collide across filters.
    assert len(keys) == 4
    adults = select_dataset(demo_dataset, parse_where(["age >= 50"]))
    assert (adults.patients["age"] >= 50).all() and len(adults.patients) < len(demo_dataset.patients)
