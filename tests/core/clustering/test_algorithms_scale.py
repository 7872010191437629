"""Clustering at archive scale (issue 12): size limits that name an alternative, HDBSCAN on a
sample in reduced dimensions, mini-batch k-means."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import core.clustering.algorithms as algorithms
from core.clustering import ALGORITHMS, cluster


@pytest.mark.parametrize(
    ("algorithm", "limit", "alternative"),
    [("agglomerative", algorithms.QUADRATIC_MAX_ROWS, "birch"),
     ("spectral", algorithms.QUADRATIC_MAX_ROWS, "hdbscan"),
     ("kmedoids", algorithms.KMEDOIDS_MAX_SAMPLES, "minibatch-kmeans"),
     ("dbscan", algorithms.DBSCAN_MAX_ROWS, "hdbscan")],
)
def test_quadratic_algorithms_refuse_above_their_limit(algorithm, limit, alternative):
    # Refused before any fitting: a matrix of zeros is enough.
    X = np.zeros((limit + 1, 2), np.float32)
    with pytest.raises(ValueError, match=f"n_samples={limit + 1} exceeds its limit of {limit}; "
                                         f"use {alternative}"):
        cluster(X, algorithm=algorithm)
    assert ALGORITHMS[algorithm].max_rows == limit


def test_limits_count_only_rows_that_are_fitted():
    X, _ = make_blobs(n_samples=60, centers=3, n_features=4, random_state=1)
    padded = np.vstack([X, np.full((algorithms.KMEDOIDS_MAX_SAMPLES, 4), np.nan)])
    result = cluster(padded, algorithm="kmedoids", k=3)
    assert result.n_clusters == 3 and result.n_excluded == algorithms.KMEDOIDS_MAX_SAMPLES


def test_hdbscan_on_a_sample_in_reduced_dimensions(monkeypatch):
    X, y = make_blobs(n_samples=1500, centers=4, n_features=30, cluster_std=1.0, random_state=0)
    monkeypatch.setattr(algorithms, "HDBSCAN_REDUCE_ROWS", 300)
    monkeypatch.setattr(algorithms, "HDBSCAN_FIT_ROWS", 400)
    result = cluster(X, algorithm="hdbscan", min_cluster_size=20)
    assert result.labels.shape == (1500,)
    assert result.n_clusters == 4
    assert adjusted_rand_score(y, result.labels) > 0.95
    assert any("random sample of 400 rows in 10 PCA dimensions" in note and
               "other 1100 rows took the label of their nearest sampled row" in note
               for note in result.notes)
    again = cluster(X, algorithm="hdbscan", min_cluster_size=20)
    assert np.array_equal(result.labels, again.labels)


def test_mid_sized_hdbscan_runs_on_reduced_dimensions_unsampled(monkeypatch):
    X, y = make_blobs(n_samples=1000, centers=4, n_features=30, cluster_std=1.0, random_state=4)
    monkeypatch.setattr(algorithms, "HDBSCAN_REDUCE_ROWS", 300)
    result = cluster(X, algorithm="hdbscan", min_cluster_size=20)
    assert adjusted_rand_score(y, result.labels) > 0.95
    assert any("HDBSCAN of 1000 rows ran on 10 PCA dimensions" in note for note in result.notes)
    assert not any("sample" in note for note in result.notes)


def test_small_hdbscan_is_unchanged_and_has_no_note():
    X, _ = make_blobs(n_samples=300, centers=3, n_features=30, random_state=0)
    result = cluster(X, algorithm="hdbscan", min_cluster_size=20)
    assert not any("sample" in note for note in result.notes)


def test_minibatch_kmeans_matches_kmeans_on_separated_groups():
    X, y = make_blobs(n_samples=5000, centers=5, n_features=20, random_state=2)
    fast = cluster(X, algorithm="minibatch-kmeans", k=5, batch_size=512)
    exact = cluster(X, algorithm="kmeans", k=5, n_init=3)
    assert adjusted_rand_score(y, fast.labels) > 0.99
    assert adjusted_rand_score(exact.labels, fast.labels) > 0.99
    assert fast.centers.shape == (5, 20)


def test_large_inputs_stay_float32(monkeypatch):
    X, _ = make_blobs(n_samples=400, centers=3, n_features=8, random_state=3)
    monkeypatch.setattr(algorithms, "LARGE_ROWS", 100)
    seen = {}
    original = algorithms.ALGORITHMS["kmeans"].fit

    def spy(data, params, random_state):
        seen["dtype"] = data.dtype
        return original(data, params, random_state)

    monkeypatch.setitem(algorithms.ALGORITHMS, "kmeans",
                        algorithms.ALGORITHMS["kmeans"].__class__(
                            **{**algorithms.ALGORITHMS["kmeans"].__dict__, "fit": spy}))
    cluster(X.astype(np.float32), algorithm="kmeans", k=3)
    assert seen["dtype"] == np.float32
