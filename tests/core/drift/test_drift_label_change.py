"""label_change_pct with some true labels missing, checked against a hand count.

The only earlier case with missing labels expected 0%, so a wrong denominator (all rows instead
of the labelled ones) went unnoticed. Here the answer is non-zero and the two denominators
give different numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.drift import drift_report


def test_label_change_counts_only_labelled_rows():
    # row:      0    1    2    3     4    5    6       7
    truth = ["A", "A", "B", None, "B", "A", np.nan, "B"]
    clusters = [0, 0, 1, 0, 1, 1, 1, 0]
    # Labelled rows 0,1,2,4,5,7. Cluster 0 holds A,A,B -> A; cluster 1 holds B,B,A -> B.
    # Row 5 (A in cluster 1 -> B) and row 7 (B in cluster 0 -> A) change: 2 of 6 = 33.33%.
    # (2 of all 8 rows would be 25%.)
    report = drift_report(truth, clusters)
    assert report.mapping == {0: "A", 1: "B"}
    assert report.n_samples == 6
    assert report.n_missing_labels == 2
    assert report.label_change_pct == pytest.approx(100 * 2 / 6)
    assert list(report.mapped_labels) == ["A", "A", "B", None, "B", "B", None, "A"]
