"""Confounder checks need significance and skip near-unique columns; drift tables are rounded and
never show server paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.drift import confounder_checks
from core.drift.readable import hide_paths, readable_confounders, readable_grid, significant


def test_near_unique_column_is_skipped_like_the_issues_location() -> None:
    # 35 patients, 27 locations: most locations hold one patient, so V is large by chance.
    rng = np.random.default_rng(0)
    clusters = rng.integers(0, 3, 35)
    location = [f"city-{i}" for i in range(27)] + [f"city-{i}" for i in range(8)]
    row = confounder_checks(clusters, pd.DataFrame({"location": location})).iloc[0]
    assert row["note"] == "skipped: near-unique (27 values for 35 rows; too few rows per value to test)"
    assert not row["flagged"] and np.isnan(row["cramers_v"])


def test_strong_but_not_significant_is_not_flagged() -> None:
    # 2 x 2 table [[3, 1], [1, 3]]: V = sqrt(chi2 / n) = sqrt(2 / 8) = 0.5, p = 0.157 (chi2 = 2, 1 dof).
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    site = ["a", "a", "a", "b", "a", "b", "b", "b"]
    row = confounder_checks(clusters, pd.DataFrame({"site": site})).iloc[0]
    assert row["cramers_v"] == pytest.approx(0.5)
    assert row["p_value"] == pytest.approx(0.1573, abs=1e-4)
    assert not row["flagged"]
    # The same proportions in 10x the rows: chi2 = 20, p < 0.05, flagged.
    bigger = confounder_checks(np.repeat(clusters, 10), pd.DataFrame({"site": np.repeat(site, 10)})).iloc[0]
    assert bigger["cramers_v"] == pytest.approx(0.5) and bigger["p_value"] < 0.05 and bigger["flagged"]
    # alpha is a parameter: at alpha=0.2 the small table counts.
    assert confounder_checks(clusters, pd.DataFrame({"site": site}), alpha=0.2).iloc[0]["flagged"]


def test_alpha_is_validated() -> None:
    with pytest.raises(ValueError, match=r"alpha=1.5 must be in \(0, 1\)"):
        confounder_checks([0, 1], pd.DataFrame({"x": ["a", "b"]}), alpha=1.5)


@pytest.mark.parametrize(("value", "digits", "expected"), [
    (65.7895, 3, 65.8), (0.0004567, 3, 0.000457), (0.5712, 2, 0.57), (1234.5, 3, 1230.0), (-0.02549, 2, -0.025),
])
def test_significant_by_hand(value: float, digits: int, expected: float) -> None:
    assert significant(value, digits) == pytest.approx(expected)


def test_significant_leaves_non_numbers() -> None:
    assert np.isnan(significant(float("nan")))
    assert significant(True) is True and significant("x") == "x" and significant(0.0) == 0.0
    with pytest.raises(ValueError, match="digits=0 must be >= 1"):
        significant(1.0, 0)


def test_hide_paths() -> None:
    assert hide_paths("OSError: cannot read '/srv/scanatlas/runs/ab/cd.npy'") == "OSError: cannot read 'cd.npy'"
    assert hide_paths(r"missing C:\Users\me\weights.pt") == "missing weights.pt"
    assert hide_paths("k=3/4/5 ratio") == "k=3/4/5 ratio"
    assert hide_paths(None) is None


def test_readable_tables() -> None:
    checks = pd.DataFrame({"column": ["sex", "location"], "kind": ["categorical"] * 2, "n": [35, 35],
                           "n_levels": [2, 27], "chi2": [1.0, np.nan], "p_value": [0.31731, np.nan],
                           "dof": [1, np.nan], "cramers_v": [0.16903, np.nan], "flagged": [False, False],
                           "note": ["", "skipped: near-unique"]})
    table = readable_confounders(checks)
    assert table.to_dict("records") == [{"column": "sex", "rows tested": 35, "values": 2,
                                         "association (Cramér's V, 0-1)": 0.17, "p-value": 0.32,
                                         "clusters follow it": False, "note": ""}]
    grid = pd.DataFrame({"encoder": ["pixels"], "algorithm": ["kmeans"], "label_change_pct": [65.7895],
                         "ari": [0.123456], "error": ["ValueError: bad file /work/data/runs/x/y.parquet"]})
    shown = readable_grid(grid).iloc[0]
    assert shown["labels that change (%)"] == 65.8 and shown["agreement (ARI)"] == 0.123
    assert shown["error"] == "ValueError: bad file y.parquet"
