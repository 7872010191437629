"""``score_out_of_fold`` scores probabilities from elsewhere exactly as ``evaluate`` scores its
own: same metrics, same patient-bootstrap intervals (so a fine-tuned row is comparable)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.classify import evaluate, prepare_target
from core.classify.compare import comparison_row, score_out_of_fold


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(60), 2)
    label = np.where(rng.random(60) < 0.4, "yes", "no")[patients]
    X = rng.normal(size=(120, 5)) + (label == "yes")[:, None] * 0.8
    return X, prepare_target(pd.DataFrame({"label": label}), "label", positive="yes"), patients.astype(str)


def test_matches_evaluate_on_its_own_out_of_fold_probabilities():
    X, target, groups = _problem()
    report = evaluate(X, target, groups, n_splits=5, n_bootstrap=100, random_state=3)
    thresholds = report.fold_thresholds[target.classes[1]].to_numpy()
    table = score_out_of_fold(report.oof[:, 1], target, groups, report.folds, thresholds,
                              n_bootstrap=100, random_state=3)
    columns = ["class", "n_rows", "support", "auc", "auc_lo", "auc_hi", "f1", "f1_lo", "f1_hi",
               "accuracy", "accuracy_lo", "accuracy_hi", "recall", "precision"]
    pd.testing.assert_frame_equal(table[columns], report.per_class[columns])
    row = comparison_row("elsewhere", 5, table, report.classes)
    assert row["mean_auc"] == pytest.approx(report.mean_auc) and row["n_rows"] == 120


def test_rows_without_a_probability_are_left_out_and_bad_input_refused():
    X, target, groups = _problem(1)
    report = evaluate(X, target, groups, n_splits=3, n_bootstrap=20)
    probability = report.oof[:, 1].copy()
    probability[:10] = np.nan
    table = score_out_of_fold(probability, target, groups, report.folds, np.full(3, np.nan), n_bootstrap=20)
    assert table.set_index("class").loc["mean", "n_rows"] == 110
    with pytest.raises(ValueError, match="shape"):
        score_out_of_fold(probability[:5], target, groups, report.folds, np.full(3, 0.5))
    multiclass = prepare_target(pd.DataFrame({"label": ["a", "b", "c"] * 40}), "label")
    with pytest.raises(ValueError, match="binary"):
        score_out_of_fold(probability, multiclass, groups, report.folds, np.full(3, 0.5))
