"""core.classify.clinical: sensitivity, specificity, PPV, NPV with patient-bootstrap intervals,
and the one-sentence headline. Hand-computed cases plus a real cross-validated report."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.classify import evaluate, prepare_target
from core.classify.clinical import clinical_metrics, headline, rates_from_counts


def test_rates_from_counts_by_hand() -> None:
    # 11 of 18 found, 7 false alarms among 20: sens 11/18, spec 13/20, PPV 11/18, NPV 13/20.
    rates = rates_from_counts(tp=11, fp=7, fn=7, tn=13)
    assert rates["sensitivity"] == pytest.approx(11 / 18)
    assert rates["specificity"] == pytest.approx(13 / 20)
    assert rates["ppv"] == pytest.approx(11 / 18)
    assert rates["npv"] == pytest.approx(13 / 20)
    # No predicted positives: PPV undefined (NaN), not 0.
    assert np.isnan(rates_from_counts(tp=0, fp=0, fn=3, tn=5)["ppv"])


def hand_report(truth: list[int], predicted: list[int]) -> SimpleNamespace:
    """A binary report holding only what clinical_metrics reads (the out-of-fold predictions)."""
    target = prepare_target(pd.DataFrame({"label": np.where(np.array(truth) == 1, "yes", "no")}), "label",
                            positive="yes")
    n = len(truth)
    return SimpleNamespace(kind="binary", classes=list(target.classes), target=target, used=np.ones(n, bool),
                           predictions=np.array(predicted), params={"n_bootstrap": 200, "random_state": 0,
                                                                    "ci_level": 0.95})


def test_clinical_metrics_counts_and_values_by_hand() -> None:
    # 4 positives (3 found), 6 negatives (1 false alarm): sens 3/4, spec 5/6, PPV 3/4, NPV 5/6.
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    predicted = [1, 1, 1, 0, 1, 0, 0, 0, 0, 0]
    table = clinical_metrics(hand_report(truth, predicted), [f"p{i}" for i in range(10)]).set_index("class")
    positive = table.loc["yes"]
    assert (positive["tp"], positive["fn"], positive["fp"], positive["tn"]) == (3, 1, 1, 5)
    assert positive["n_patients"] == 10
    assert positive["sensitivity"] == pytest.approx(3 / 4)
    assert positive["specificity"] == pytest.approx(5 / 6)
    assert positive["ppv"] == pytest.approx(3 / 4)
    assert positive["npv"] == pytest.approx(5 / 6)
    # The negative class one-vs-rest mirrors it: its sensitivity is the positive's specificity.
    assert table.loc["not yes", "sensitivity"] == pytest.approx(5 / 6)
    for metric in ("sensitivity", "specificity", "ppv", "npv"):
        assert 0 <= positive[f"{metric}_lo"] <= positive[metric] <= positive[f"{metric}_hi"] <= 1


def test_bootstrap_keeps_a_patients_images_together() -> None:
    # Two images per patient: 5 patients, the same counts as one image each doubled.
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    predicted = [1, 1, 0, 0, 1, 1, 0, 0, 0, 0]
    groups = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    row = clinical_metrics(hand_report(truth, predicted), groups).set_index("class").loc["yes"]
    assert row["n_patients"] == 5
    assert row["sensitivity"] == pytest.approx(0.5)
    # Resampling patients, sensitivity can only be 0, 1/2 or 1 (patient a found, b missed).
    assert {row["sensitivity_lo"], row["sensitivity_hi"]} <= {0.0, 0.5, 1.0}


def test_groups_must_align() -> None:
    with pytest.raises(ValueError, match="groups has 3 entries; the report has 10 rows"):
        clinical_metrics(hand_report([1] * 5 + [0] * 5, [1] * 10), ["a", "b", "c"])


def test_matches_the_reports_recall_and_precision_on_a_real_run() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    groups = np.repeat(np.arange(40), 2).astype(str)
    y = labels[np.repeat(np.arange(40), 2)]
    X = rng.normal(size=(80, 4))
    X[:, 0] += 1.5 * y
    target = prepare_target(pd.DataFrame({"label": np.where(y == 1, "sick", "well")}), "label", positive="sick")
    report = evaluate(X, target, groups, n_bootstrap=100)
    table = clinical_metrics(report, groups).set_index("class")
    per_class = report.per_class.set_index("class")
    # Same predictions, same bootstrap: sensitivity is the report's recall, PPV its precision.
    for column, theirs in (("sensitivity", "recall"), ("ppv", "precision")):
        assert table.loc["sick", column] == pytest.approx(per_class.loc["sick", theirs])
        assert table.loc["sick", f"{column}_lo"] == pytest.approx(per_class.loc["sick", f"{theirs}_lo"])
    assert table.loc["sick", "specificity"] == pytest.approx(per_class.loc["not sick", "recall"])
    assert table.loc["sick", "npv"] == pytest.approx(per_class.loc["not sick", "precision"])
    confusion = report.confusion
    assert table.loc["sick", "tp"] == confusion.loc["sick", "sick"]
    assert table.loc["sick", "fp"] == confusion.loc["not sick", "sick"]


def test_headline_reads_like_the_issue() -> None:
    row = {"class": "COVID-19", "tp": 11, "fn": 7, "fp": 7, "tn": 13, "n_patients": 38,
           "sensitivity_lo": 0.39, "sensitivity_hi": 0.83, "specificity_lo": 0.45, "specificity_hi": 0.85}
    assert headline(row) == ("Found 11 of 18 COVID-19 patients; 7 false alarms among 20 without it; "
                             "wide uncertainty: only 38 patients.")


def test_headline_without_wide_uncertainty_and_singular_words() -> None:
    row = {"class": "DCM", "tp": 1, "fn": 0, "fp": 1, "tn": 99, "n_patients": 400,
           "sensitivity_lo": 0.9, "sensitivity_hi": 1.0, "specificity_lo": 0.95, "specificity_hi": 1.0}
    assert headline(row, unit="image") == "Found 1 of 1 DCM image; 1 false alarm among 100 without it."
