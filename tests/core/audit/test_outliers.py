"""core.audit.outliers: kNN distance by hand, one far point flagged overall, one point unusual
only for its own cluster flagged per cluster, rows without a vector never flagged."""

from __future__ import annotations

import numpy as np
import pytest

from core.audit.outliers import find_outliers, knn_distance


def test_knn_distance_by_hand():
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # Row 0's nearest other row is row 1 (distance 0); row 2's is at cosine distance 1.
    assert knn_distance(vectors, k=1).tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert knn_distance(vectors, k=2).tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_far_point_is_flagged_overall_and_a_misfit_within_its_cluster():
    rng = np.random.default_rng(0)
    group_a = rng.normal([10, 0, 0], 0.3, size=(60, 3))
    group_b = rng.normal([0, 10, 0], 0.3, size=(60, 3))
    group_b[5] = [0, 10, 6]  # still nearer group B than A, but unlike the rest of B
    far = np.array([[0.0, 0.0, 10.0]])
    vectors = np.vstack([group_a, group_b, far, np.full((1, 3), np.nan)])
    clusters = np.array([0] * 60 + [1] * 60 + [1, -1])
    table = find_outliers(vectors, clusters, quantile=0.98)
    assert table.loc[120, "outlier"] and table.loc[120, "rank"] == 1
    assert table.loc[65, "cluster_outlier"]
    assert not table.loc[121, ["outlier", "cluster_outlier"]].any() and np.isnan(table.loc[121, "knn_distance"])
    assert table["outlier"].sum() <= 4
    with pytest.raises(ValueError, match="quantile"):
        find_outliers(vectors, quantile=0.3)
    with pytest.raises(ValueError, match="clusters has"):
        find_outliers(vectors, clusters[:5])
