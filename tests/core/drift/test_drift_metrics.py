from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from sklearn.datasets import make_blobs

from core.drift import (
    assign_clusters,
    confounder_checks,
    contingency,
    cramers_v,
    drift_grid,
    drift_report,
)

TRUE = ["a", "a", "b", "b", "c", "c"]
FOUND = [0, 0, 1, 1, 1, 2]


def test_contingency_of_hand_case():
    table = contingency(TRUE, FOUND)
    assert list(table.index) == [0, 1, 2]
    assert list(table.columns) == ["a", "b", "c"]
    assert table.to_numpy().tolist() == [[2, 0, 0], [0, 2, 1], [0, 0, 1]]


def test_hungarian_mapping_and_scores_of_hand_case():
    assert assign_clusters(TRUE, FOUND) == {0: "a", 1: "b", 2: "c"}
    report = drift_report(TRUE, FOUND)
    assert report.method == "hungarian"
    assert report.mapping == {0: "a", 1: "b", 2: "c"}
    # Only sample 4 (true c, cluster 1 -> b) changes label: 1 of 6.
    assert report.label_change_pct == pytest.approx(100 / 6)
    assert round(report.label_change_pct, 2) == 16.67
    assert report.purity == pytest.approx(5 / 6)
    assert report.ari == pytest.approx(metrics.adjusted_rand_score(TRUE, FOUND))
    assert report.nmi == pytest.approx(metrics.normalized_mutual_info_score(TRUE, FOUND))
    h, c, v = metrics.homogeneity_completeness_v_measure(TRUE, FOUND)
    assert (report.homogeneity, report.completeness, report.v_measure) == pytest.approx((h, c, v))
    assert report.n_samples == 6 and report.n_missing_labels == 0
    assert list(report.mapped_labels) == ["a", "a", "b", "b", "b", "c"]


def test_hungarian_beats_greedy_majority_when_clusters_compete():
    # Both clusters are mostly "a"; one-to-one assignment must give one of them "b".
    truth = ["a", "a", "a", "a", "b", "b", "a"]
    found = [0, 0, 0, 1, 1, 1, 1]
    assert assign_clusters(truth, found, method="hungarian") == {0: "a", 1: "b"}
    assert assign_clusters(truth, found, method="majority") == {0: "a", 1: "a"}


def test_majority_mapping_when_more_clusters_than_labels():
    truth = ["a", "a", "a", "a", "b", "b", "b", "b"]
    found = [0, 0, 1, 1, 2, 2, 2, 3]
    assert assign_clusters(truth, found) == {0: "a", 1: "a", 2: "b", 3: "b"}
    report = drift_report(truth, found)
    assert report.method == "majority"
    assert report.label_change_pct == 0.0
    assert report.purity == 1.0


def test_majority_tie_goes_to_first_label_in_sorted_order():
    assert assign_clusters(["b", "a", "a", "b", "a"], [0, 0, 1, 2, 3])[0] == "a"


def test_forced_hungarian_with_extra_clusters_leaves_them_unmapped():
    truth = ["a", "a", "b", "b", "b"]
    found = [0, 0, 1, 1, 2]
    report = drift_report(truth, found, method="hungarian")
    assert report.mapping == {0: "a", 1: "b", 2: None}
    assert report.label_change_pct == pytest.approx(20.0)


def test_missing_true_labels_are_ignored_and_counted():
    truth = ["a", None, "a", np.nan, "b", "", "b"]
    found = [0, 1, 0, 1, 1, 0, 1]
    report = drift_report(truth, found)
    assert report.n_samples == 4
    assert report.n_missing_labels == 3
    assert report.label_change_pct == 0.0
    assert report.contingency.to_numpy().sum() == 4
    assert report.mapped_labels[1] is None


def test_noise_is_never_mapped_and_counts_as_changed():
    truth = ["a", "a", "b", "b"]
    found = [0, -1, 1, 1]
    report = drift_report(truth, found)
    assert -1 not in report.mapping
    assert report.n_noise == 1
    assert report.label_change_pct == pytest.approx(25.0)
    assert report.purity == pytest.approx(0.75)
    assert report.ari == pytest.approx(metrics.adjusted_rand_score(truth, found))


def test_integer_labels_work():
    report = drift_report([1, 1, 2, 2], [5, 5, 7, 7])
    assert report.mapping == {5: 1, 7: 2}
    assert report.label_change_pct == 0.0


def test_drift_validation_messages():
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\).*equal length"):
        drift_report(["a", "b", "c"], [0, 1])
    with pytest.raises(ValueError, match="method='best' is not valid; valid: 'auto'"):
        assign_clusters(TRUE, FOUND, method="best")
    with pytest.raises(ValueError, match="no row of 2 has a true label"):
        drift_report([None, np.nan], [0, 1])
    with pytest.raises(ValueError, match="clusters must be integers"):
        contingency(["a", "b"], [0.5, 1.0])


def test_cramers_v_perfect_independent_and_hand_computed():
    assert cramers_v(np.array([[20, 0], [0, 30]])) == pytest.approx(1.0)
    assert cramers_v(np.array([[0, 7, 0], [5, 0, 0], [0, 0, 9]])) == pytest.approx(1.0)
    assert cramers_v(np.array([[10, 10], [10, 10]])) == pytest.approx(0.0)
    # chi2 = 4 * (1/12 + 1/18 + 1/28 + 1/42) = 0.793651; V = sqrt(chi2 / 100)
    assert cramers_v(np.array([[10, 20], [30, 40]])) == pytest.approx(0.0890871, abs=1e-6)
    assert cramers_v(np.array([[10, 10], [10, 10]]), bias_correction=True) == 0.0
    assert cramers_v(np.array([[50, 0], [0, 50]]), bias_correction=True) == pytest.approx(
        1.0, abs=0.02
    )
    assert np.isnan(cramers_v(np.array([[5, 5]])))


@pytest.fixture
def confounded_metadata() -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(0)
    clusters = np.repeat([0, 1, 2], 40)
    metadata = pd.DataFrame(
        {
            "site": np.repeat(["north", "south", "east"], 40),  # follows the clusters exactly
            "sex": rng.choice(["M", "F"], size=120),  # independent of the clusters
            "age": np.concatenate(
                [rng.normal(30, 3, 40), rng.normal(50, 3, 40), rng.normal(70, 3, 40)]
            ),
            "modality": ["X-ray"] * 120,
            "view": [None] * 100 + ["PA"] * 10 + ["AP"] * 10,
            "image_id": [f"img-{i}" for i in range(120)],
            "hospital": [f"hospital-{i % 60}" for i in range(120)],
        }
    )
    return clusters, metadata


def test_confounder_checks_flags_site_and_age_not_sex(confounded_metadata):
    clusters, metadata = confounded_metadata
    result = confounder_checks(clusters, metadata).set_index("column")
    assert result.loc["site", "cramers_v"] == pytest.approx(1.0)
    assert result.loc["site", "dof"] == 4
    assert bool(result.loc["site", "flagged"])
    assert result.loc["site", "p_value"] < 1e-10
    assert result.loc["sex", "cramers_v"] < 0.3
    assert not bool(result.loc["sex", "flagged"])
    assert result.loc["age", "kind"] == "numeric (quantile bands)"
    assert result.loc["age", "n_levels"] == 4
    assert bool(result.loc["age", "flagged"])
    assert result.loc["modality", "note"] == "skipped: only one level"
    assert result.loc["view", "note"].startswith("skipped: mostly missing (83% missing)")
    assert result.loc["image_id", "note"] == "skipped: identifier-like (120 levels in 120 rows)"
    assert result.loc["hospital", "note"].startswith("skipped: too many levels (60 > max_levels=50")
    assert np.isnan(result.loc["modality", "cramers_v"])


def test_confounder_checks_chi2_matches_scipy(confounded_metadata):
    from scipy.stats import chi2_contingency

    clusters, metadata = confounded_metadata
    row = confounder_checks(clusters, metadata, ["sex"]).iloc[0]
    table = pd.crosstab(clusters, metadata["sex"].to_numpy())
    chi2, p, dof, _ = chi2_contingency(table, correction=False)
    assert (row["chi2"], row["p_value"], row["dof"], row["n"]) == pytest.approx((chi2, p, dof, 120))


def test_confounder_checks_validation(confounded_metadata):
    clusters, metadata = confounded_metadata
    with pytest.raises(ValueError, match="unknown column.*clinic; metadata columns: site"):
        confounder_checks(clusters, metadata, ["clinic"])
    with pytest.raises(ValueError, match="clusters has 3 rows but metadata_df has 120"):
        confounder_checks([0, 1, 2], metadata)
    with pytest.raises(ValueError, match=r"strong=1.5 must be in \(0, 1\]"):
        confounder_checks(clusters, metadata, strong=1.5)


@pytest.fixture
def grid_inputs() -> tuple[dict[str, np.ndarray], np.ndarray]:
    X, y = make_blobs(n_samples=60, centers=3, n_features=4, cluster_std=0.5, random_state=1)
    labels = np.array(["covid", "normal", "pneumonia"], dtype=object)[y]
    labels[:3] = None  # unlabelled rows are clustered but not scored
    noise = np.random.default_rng(0).normal(size=(60, 4))
    return {"good": X, "noise": noise, "broken": X[:-1]}, labels


def test_drift_grid_rows_files_and_failing_combination(grid_inputs, tmp_path):
    feature_sets, labels = grid_inputs
    calls = []
    grid = drift_grid(
        feature_sets,
        labels,
        algorithms=["kmeans", "hdbscan"],
        out_dir=tmp_path,
        progress=lambda done, total: calls.append((done, total)),
        row_ids=[f"id{i}" for i in range(60)],
    )
    assert len(grid) == 6
    assert calls == [(i, 6) for i in range(1, 7)]
    rows = grid.set_index(["encoder", "algorithm"])
    good = rows.loc[("good", "kmeans")]
    assert good["error"] == ""
    assert good["n_clusters_requested"] == 3 and good["n_clusters"] == 3
    assert good["ari"] > 0.95 and good["label_change_pct"] == 0.0
    assert rows.loc[("noise", "kmeans"), "ari"] < 0.2
    assert np.isnan(rows.loc[("good", "hdbscan"), "n_clusters_requested"])
    for algorithm in ("kmeans", "hdbscan"):
        broken = rows.loc[("broken", algorithm)]
        assert broken["error"].startswith("ValueError: feature set has shape (59, 4)")
        assert np.isnan(broken["ari"])

    written = pd.read_csv(tmp_path / "grid.csv", keep_default_na=False)
    assert len(written) == 6
    per_row = pd.read_csv(tmp_path / "labels_good__kmeans.csv")
    assert list(per_row.columns) == ["row", "row_id", "label_true", "cluster", "mapped_label"]
    assert len(per_row) == 60 and per_row["row_id"].iloc[5] == "id5"
    labelled = per_row.dropna(subset=["label_true"])
    assert (labelled["label_true"] == labelled["mapped_label"]).all()
    assert not (tmp_path / "labels_broken__kmeans.csv").exists()


def test_drift_grid_validation(grid_inputs):
    feature_sets, labels = grid_inputs
    with pytest.raises(ValueError, match="unknown clustering algorithm 'optics'; valid: kmeans"):
        drift_grid(feature_sets, labels, algorithms=["optics"])
    with pytest.raises(ValueError, match="feature_sets is empty"):
        drift_grid({}, labels)
    with pytest.raises(ValueError, match="n_clusters=1 must be >= 2"):
        drift_grid(feature_sets, labels, n_clusters=1)
    with pytest.raises(ValueError, match="row_ids has 2 entries; expected 60"):
        drift_grid(feature_sets, labels, row_ids=["a", "b"])
