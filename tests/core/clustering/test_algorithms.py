from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from core.clustering import (
    ALGORITHMS,
    algorithm_table,
    cluster,
    cluster_medoids,
    cluster_summary,
    clustering_scores,
    k_sweep,
    resolve_params,
)

# Parameters that suit three tight blobs in 5-D (pairwise distances inside a blob ~1.5).
BLOB_PARAMS = {
    "kmeans": {"k": 3},
    "minibatch-kmeans": {"k": 3, "batch_size": 64},
    "gmm": {"k": 3},
    "agglomerative": {"k": 3},
    "spectral": {"k": 3},
    "dbscan": {"eps": 1.5, "min_samples": 4},
    "hdbscan": {"min_cluster_size": 10},
    "birch": {"k": 3},
    "kmedoids": {"k": 3},
    "fuzzy-cmeans": {"k": 3},
}


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    return make_blobs(n_samples=90, centers=3, n_features=5, cluster_std=0.6, random_state=0)


def test_every_registered_algorithm_is_tested():
    assert set(BLOB_PARAMS) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", list(BLOB_PARAMS))
def test_algorithm_recovers_separated_blobs(blobs, algorithm):
    X, y = blobs
    result = cluster(X, algorithm=algorithm, **BLOB_PARAMS[algorithm])
    assert adjusted_rand_score(y, result.labels) > 0.9
    assert result.n_clusters == 3
    assert result.labels.shape == (90,) and result.labels.dtype == np.int64
    assert set(np.unique(result.labels)) <= {-1, 0, 1, 2}
    assert result.scores["silhouette"] > 0.7
    assert result.params == resolve_params(algorithm, **BLOB_PARAMS[algorithm])


def test_nan_rows_get_minus_one_and_stay_aligned(blobs):
    X, y = blobs
    X_nan = X.copy()
    failed = [0, 17, 89]
    X_nan[failed, 2] = np.nan
    result = cluster(X_nan, algorithm="kmeans", k=3)
    assert result.labels.shape == (90,)
    assert (result.labels[failed] == -1).all()
    kept = np.setdiff1d(np.arange(90), failed)
    assert adjusted_rand_score(y[kept], result.labels[kept]) == 1.0
    assert result.n_excluded == 3 and result.n_noise == 0
    assert any("3 row(s) with NaN" in note for note in result.notes)


def test_soft_memberships_and_medoids_stay_aligned(blobs):
    X, _ = blobs
    X_nan = X.copy()
    X_nan[5] = np.nan
    fuzzy = cluster(X_nan, algorithm="fuzzy-cmeans", k=3)
    assert fuzzy.membership.shape == (90, 3)
    assert np.isnan(fuzzy.membership[5]).all()
    rows = np.delete(np.arange(90), 5)
    np.testing.assert_allclose(fuzzy.membership[rows].sum(axis=1), 1.0)
    assert (fuzzy.membership[rows].argmax(axis=1) == fuzzy.labels[rows]).all()

    medoids = cluster(X_nan, algorithm="kmedoids", k=3)
    assert medoids.medoid_indices.shape == (3,)
    assert 5 not in medoids.medoid_indices
    np.testing.assert_allclose(medoids.centers, X[medoids.medoid_indices])
    # Each medoid belongs to the cluster it is the medoid of.
    assert medoids.labels[medoids.medoid_indices].tolist() == [0, 1, 2]


def test_noise_is_excluded_from_scores(blobs):
    X, _ = blobs
    outliers = np.full((3, 5), 40.0) + np.arange(3)[:, None] * 15
    data = np.vstack([X, outliers])
    result = cluster(data, algorithm="dbscan", eps=1.5, min_samples=4)
    assert result.n_noise >= 3
    assert (result.labels[-3:] == -1).all()
    core_rows = result.labels != -1
    expected = clustering_scores(data[core_rows], result.labels[core_rows])
    assert result.scores == pytest.approx(expected)


def test_single_cluster_scores_are_nan(blobs):
    X, _ = blobs
    result = cluster(X, algorithm="dbscan", eps=1000.0)
    assert result.n_clusters == 1
    assert all(np.isnan(v) for v in result.scores.values())


def test_standardize_rescues_a_dominating_column():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 40)
    # Column 0 separates the groups on a small scale; column 1 is large-scale noise.
    X = np.column_stack([groups * 1.0 + rng.normal(0, 0.05, 80), rng.normal(0, 100, 80)])
    raw = cluster(X, algorithm="kmeans", k=2)
    scaled = cluster(X, algorithm="kmeans", k=2, standardize=True)
    assert adjusted_rand_score(groups, raw.labels) < 0.5
    assert adjusted_rand_score(groups, scaled.labels) == 1.0
    assert scaled.standardized


def test_inertia_matches_kmeans(blobs):
    X, _ = blobs
    from sklearn.cluster import KMeans

    result = cluster(X, algorithm="kmeans", k=3)
    reference = KMeans(n_clusters=3, n_init=10, random_state=0).fit(X)
    assert result.inertia == pytest.approx(reference.inertia_, rel=1e-6)


def test_k_sweep_shape_and_best_k():
    X, _ = make_blobs(n_samples=120, centers=4, n_features=3, cluster_std=0.5, random_state=3)
    sweep = k_sweep(X, ks=range(2, 8))
    assert list(sweep.columns) == [
        "k",
        "n_clusters",
        "silhouette",
        "davies_bouldin",
        "calinski_harabasz",
        "inertia",
    ]
    assert sweep["k"].tolist() == [2, 3, 4, 5, 6, 7]
    assert sweep.loc[sweep["silhouette"].idxmax(), "k"] == 4
    assert sweep.loc[sweep["davies_bouldin"].idxmin(), "k"] == 4
    assert sweep["inertia"].is_monotonic_decreasing


def test_k_sweep_with_other_algorithm_passes_params(blobs):
    X, _ = blobs
    sweep = k_sweep(X, algorithm="agglomerative", ks=[2, 3], linkage="average")
    assert sweep["n_clusters"].tolist() == [2, 3]


def test_cluster_medoids_hand_case():
    X = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [12.0], [np.nan]])
    labels = np.array([0, 0, 0, 1, 1, 1, -1])
    assert cluster_medoids(X, labels, n=1) == {0: [1], 1: [4]}
    assert cluster_medoids(X, labels, n=2) == {0: [1, 0], 1: [4, 3]}
    with pytest.raises(ValueError, match=r"labels has shape \(2,\); expected \(7,\)"):
        cluster_medoids(X, labels[:2])
    with pytest.raises(ValueError, match="n=0 must be >= 1"):
        cluster_medoids(X, labels, n=0)


def test_cluster_summary_hand_case():
    metadata = pd.DataFrame(
        {
            "age": [20.0, 40.0, np.nan, 60.0, 70.0],
            "sex": ["M", "F", "M", "F", "F"],
            "modality": ["CT", "CT", "X-ray", "X-ray", None],
            "label": ["covid", "covid", "normal", None, None],
        }
    )
    summary = cluster_summary(np.array([0, 0, 0, 1, -1]), metadata)
    assert summary["cluster"].tolist() == [0, 1, -1]
    assert summary["size"].tolist() == [3, 1, 1]
    first = summary.iloc[0]
    assert first["age_mean"] == 30.0 and first["age_sd"] == pytest.approx(np.std([20, 40], ddof=1))
    assert first["sex_mix"] == "M 67%, F 33%"
    assert first["modality_top"] == "CT" and first["modality_share"] == pytest.approx(2 / 3)
    assert first["label_top"] == "covid" and first["label_mix"] == "covid 67%, normal 33%"
    assert summary.iloc[1]["label_mix"] == "missing 100%"
    assert summary.iloc[2]["modality_mix"] == "missing 100%"
    assert summary["view_mix"].tolist() == ["", "", ""]


def test_cluster_summary_validation():
    metadata = pd.DataFrame({"age": [1.0, 2.0]})
    with pytest.raises(ValueError, match="labels has 3 rows but metadata_df has 2"):
        cluster_summary(np.array([0, 1, 1]), metadata)
    with pytest.raises(ValueError, match="label_column='finding' not in metadata columns: age"):
        cluster_summary(np.array([0, 1]), metadata, label_column="finding")


def test_registry_declares_valid_defaults_and_k():
    for name, spec in ALGORITHMS.items():
        names = [p.name for p in spec.params]
        assert ("k" in names) == spec.takes_k, name
        assert resolve_params(name) == spec.defaults()
        for param in spec.params:
            assert param.kind in {"int", "float", "choice"}
            if param.kind == "choice":
                assert param.default in param.choices
    assert ALGORITHMS["kmeans"].defaults()["k"] == 4
    assert ALGORITHMS["agglomerative"].defaults()["linkage"] == "ward"
    table = algorithm_table()
    assert table["name"].tolist() == list(ALGORITHMS)


def test_validation_messages(blobs):
    X, _ = blobs
    with pytest.raises(ValueError, match="^k=91 must be <= n_samples=90$"):
        cluster(X, k=91)
    with pytest.raises(
        ValueError, match="unknown clustering algorithm 'optics'; valid: kmeans, minibatch-kmeans, gmm"
    ):
        cluster(X, algorithm="optics")
    with pytest.raises(
        ValueError, match="unknown parameter.*n_clusters for algorithm 'kmeans'; valid: k, n_init"
    ):
        cluster(X, n_clusters=3)
    with pytest.raises(ValueError, match=r"k=1 must be in \[2, inf\] for algorithm 'kmeans'"):
        cluster(X, k=1)
    with pytest.raises(ValueError, match="k=2.5 must be an integer"):
        cluster(X, k=2.5)
    with pytest.raises(ValueError, match="k='3' must be a number"):
        cluster(X, k="3")
    with pytest.raises(
        ValueError, match="linkage='median' is not valid.*valid: 'ward', 'complete'"
    ):
        cluster(X, algorithm="agglomerative", linkage="median")
    with pytest.raises(ValueError, match="eps=None is not allowed"):
        cluster(X, algorithm="dbscan", eps=None)
    with pytest.raises(ValueError, match="n_neighbors=90 must be < n_samples=90"):
        cluster(X, algorithm="spectral", n_neighbors=90)
    with pytest.raises(ValueError, match="min_cluster_size=100 must be <= n_samples=90"):
        cluster(X, algorithm="hdbscan", min_cluster_size=100)
    with pytest.raises(ValueError, match=r"X must be 2-D .*got shape \(90,\)"):
        cluster(X[:, 0])
    with pytest.raises(ValueError, match="at least 2 rows without NaN; got n_samples=1"):
        cluster(np.array([[1.0, 2.0], [np.nan, 1.0]]), k=2)
    with pytest.raises(ValueError, match="^k=3 must be <= n_samples=2$"):
        cluster(np.array([[1.0], [2.0], [np.nan]]), k=3)
    with pytest.raises(ValueError, match="'dbscan' does not take k; k_sweep works with: kmeans"):
        k_sweep(X, algorithm="dbscan")
    with pytest.raises(ValueError, match="^k=100 must be <= n_samples=90$"):
        k_sweep(X, ks=[2, 100])
    with pytest.raises(ValueError, match="pass the values of k as ks="):
        k_sweep(X, k=3)
    with pytest.raises(ValueError, match="ks is empty"):
        k_sweep(X, ks=[])
