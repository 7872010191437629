"""core.fairness: when a group is too small to judge, and the table as people read it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.fairness import TOO_FEW, fairness_table, judgeable, readable_fairness


@pytest.mark.parametrize(("n_positive", "n_negative", "metric", "expected"), [
    (4, 100, "tpr", False), (5, 100, "tpr", True), (1, 1, "tpr", False),
    (100, 4, "fpr", False), (0, 5, "fpr", True),
    (5, 4, "auc", False), (5, 5, "auc", True), (4, 50, "precision", False), (6, 0, "selection_rate", True),
])
def test_judgeable_by_hand(n_positive: int, n_negative: int, metric: str, expected: bool) -> None:
    assert judgeable(n_positive, n_negative, metric) is expected


def test_judgeable_rejects_unknown_metric() -> None:
    with pytest.raises(ValueError, match="metric='tpr_gap' is not valid"):
        judgeable(5, 5, "tpr_gap")


def test_a_group_with_one_positive_is_too_few_to_judge_not_certain() -> None:
    # Group B has a single positive, always found: TPR 1 with interval 1-1, which looks certain.
    truth = np.array([1] * 10 + [0] * 10 + [1] + [0] * 9)
    score = np.array([0.9] * 6 + [0.1] * 4 + [0.2] * 10 + [0.9] + [0.1] * 9)
    sex = pd.DataFrame({"sex": ["A"] * 20 + ["B"] * 10})
    table = fairness_table(truth, score, sex, threshold=0.5, n_bootstrap=50, random_state=0).table
    b = table.set_index("group").loc["B"]
    assert (b["tpr"], b["tpr_lo"], b["tpr_hi"]) == (1.0, 1.0, 1.0)
    shown = readable_fairness(table, ["tpr", "fpr"]).set_index("group")
    assert shown.loc["B", "sensitivity"] == TOO_FEW
    assert np.isnan(shown.loc["B", "sensitivity: behind the best group by"])
    # Group A: 6 of 10 found (0.60), its interval from the bootstrap; FPR 0 of 10.
    assert shown.loc["A", "sensitivity"].startswith("0.60 (")
    assert shown.loc["A", "false-positive rate"] == "0.00"
    assert shown.loc["B", "false-positive rate"] == "0.00"  # 9 without the condition: judged
    assert {"grouped by", "rows", "share of data", "with the condition", "small group"} <= set(shown.columns)
    assert not any("_" in column for column in shown.columns)
