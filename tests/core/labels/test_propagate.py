"""core.labels.propagate: labels spread from a few hand-labelled clusters and patients, saved as
a named run; accepted proposals become versioned overrides (who, when, conflicts), rejected ones
are audited and not offered again; on the demo cohort (answer known) accuracy rises with the
fraction hand-labelled and beats the majority-class baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.auth import AccessStore, User
from core.labels import LabelStore
from core.labels.propagate import (
    accept_proposals,
    propagate,
    propagate_labels,
    propagation_curve,
    reject_proposals,
    rejected_patients,
    stored_propagation,
)
from core.runs import RunStore

ANN = User(id="https://idp.example|ann", email="ann@example.org", name="Ann", role="labeler", source="claim")
BOB = User(id="https://idp.example|bob", email="bob@example.org", name="Bob", role="labeler", source="claim")
VIEWER = User(id="https://idp.example|vic", email="vic@example.org", name="Vic", role="viewer", source="claim")


def blobs(n_per: int = 20, directions: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points around ``directions`` orthogonal directions in 8-d (cosine-separable)."""
    rng = np.random.default_rng(seed)
    vectors, truth = [], []
    for d in range(directions):
        centre = np.zeros(8)
        centre[d] = 5.0
        vectors.append(centre + rng.normal(0, 0.5, size=(n_per, 8)))
        truth += [d] * n_per
    return np.vstack(vectors), np.array(truth)


def test_spreading_labels_each_blob_from_two_seeds_with_high_confidence():
    vectors, truth = blobs()
    names = np.array(["A", "B", "C"])[truth]
    seeds = np.full(len(truth), None, dtype=object)
    for d in range(3):
        seeds[np.flatnonzero(truth == d)[:2]] = names[truth == d][0]
    distributions, valid, classes = propagate(vectors, seeds)
    assert classes == ["A", "B", "C"] and valid.all()
    assert np.allclose(distributions.sum(axis=1), 1)
    guesses = np.array(classes)[distributions.argmax(axis=1)]
    assert (guesses == names).mean() == 1.0
    assert distributions.max(axis=1).min() > 0.5


def test_self_training_also_recovers_the_blobs():
    vectors, truth = blobs(seed=1)
    names = np.array(["A", "B", "C"])[truth]
    seeds = np.where(np.isin(np.arange(len(truth)), [0, 1, 20, 21, 40, 41]), names, None)
    distributions, _, classes = propagate(vectors, seeds, method="self-training")
    assert (np.array(classes)[distributions.argmax(axis=1)] == names).mean() >= 0.95


def test_rows_without_vectors_or_seeds_nearby_get_no_proposal():
    vectors, truth = blobs(n_per=10)
    vectors[5] = np.nan
    seeds = np.full(len(truth), None, dtype=object)
    seeds[[0, 1]] = "A"
    seeds[[10, 11]] = "B"  # blob 2 has no seed and no edge to a seeded blob
    distributions, valid, _ = propagate(vectors, seeds)
    assert not valid[5] and np.isnan(distributions[5]).all()
    assert np.isnan(distributions[20:]).all()
    assert np.isfinite(distributions[np.r_[0:5, 6:20]]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "magic"}, "method='magic'"),
    ({"n_neighbors": 0}, "n_neighbors=0"),
    ({"alpha": 1.0}, "alpha=1.0"),
])
def test_bad_parameters_are_refused(kwargs, message):
    vectors, truth = blobs(n_per=5)
    with pytest.raises(ValueError, match=message):
        propagate(vectors, np.where(truth == 0, "A", "B"), **kwargs)


def test_one_disease_or_no_unlabelled_patient_is_refused():
    vectors, truth = blobs(n_per=5)
    with pytest.raises(ValueError, match="at least two diseases"):
        propagate(vectors, ["A"] + [None] * (len(truth) - 1))
    with pytest.raises(ValueError, match="nothing to propose"):
        propagate(vectors, np.where(truth == 0, "A", "B"))
    with pytest.raises(ValueError, match="seeds has 3 values"):
        propagate(vectors, ["A", "B", None])


@pytest.fixture
def store(tmp_path):
    with LabelStore(f"sqlite:///{tmp_path / 'labels.db'}") as label_store:
        yield label_store


def cohort_like(n_per: int = 12):
    vectors, truth = blobs(n_per=n_per)
    table = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(len(truth))]})
    names = np.array(["Dilated", "Hypertrophic", "Normal"])[truth]
    return table, vectors, truth, names


def test_propagation_from_a_mapped_cluster_and_overrides_is_a_named_run(store, tmp_path):
    table, vectors, truth, names = cohort_like()
    clusters = truth.copy()  # the clustering found the blobs; the analyst mapped only cluster 0
    store.save_mapping("ds", "kmeans-abc", {0: ("Dilated cardiomyopathy", "I42.0")}, user=ANN, base_version=None)
    store.set_patient_override("ds", "P012", "Hypertrophic cardiomyopathy", "I42.2", user=ANN, base_version=None)
    runs = RunStore(tmp_path / "runs")
    args = (table, vectors, clusters, store.current_mapping("ds", "kmeans-abc"), store.patient_overrides("ds"))
    result = propagate_labels(*args, cohort_key="patient-x", clustering_key="kmeans-abc", dataset="ds", store=runs)
    assert not result.from_store
    proposals = result.proposals
    assert result.classes == ["Dilated cardiomyopathy", "Hypertrophic cardiomyopathy"]
    seeds = proposals[proposals["seed"]]
    assert set(seeds["patient_id"]) == {f"P{i:03d}" for i in range(12)} | {"P012"}
    assert seeds.set_index("patient_id").loc["P012", "seed_source"] == "override"
    open_ = result.open_proposals
    # Blob 2: nobody in it was labelled and the neighbour graph has no edge to it; it says so.
    blob2 = proposals[proposals["patient_id"].isin([f"P{i:03d}" for i in range(24, 36)])]
    assert blob2["disease"].isna().all() and blob2["confidence"].isna().all()
    assert (blob2["reason"] == "no hand-labelled patient is connected to it").all()
    assert len(open_) == 11
    assert open_["confidence"].is_monotonic_decreasing
    assert ((open_["confidence"] > 0) & (open_["confidence"] <= 1)).all()
    # Blob 1 (cluster 1) follows the one hand-labelled patient in it; codes come from the seeds.
    blob1 = open_[open_["patient_id"].isin([f"P{i:03d}" for i in range(13, 24)])]
    assert (blob1["disease"] == "Hypertrophic cardiomyopathy").all()
    assert (blob1["icd10_code"] == "I42.2").all()
    # Same inputs: loaded, not recomputed; new seeds: a new run.
    again = propagate_labels(*args, cohort_key="patient-x", clustering_key="kmeans-abc", dataset="ds", store=runs)
    assert again.from_store and again.key == result.key
    assert stored_propagation(result.key, store=runs).proposals.equals(proposals)
    store.set_patient_override("ds", "P030", "Normal", None, user=ANN, base_version=None)
    changed = propagate_labels(table, vectors, clusters, store.current_mapping("ds", "kmeans-abc"),
                               store.patient_overrides("ds"), cohort_key="patient-x", clustering_key="kmeans-abc",
                               dataset="ds", store=runs)
    assert changed.key != result.key and "Normal" in changed.classes


def test_image_level_rows_are_pooled_per_patient(store, tmp_path):
    table, vectors, truth, _ = cohort_like(n_per=8)
    images = pd.DataFrame({"patient_id": np.repeat(table["patient_id"], 2).to_numpy()})
    image_vectors = np.repeat(vectors, 2, axis=0) + np.random.default_rng(0).normal(0, 0.05, (2 * len(vectors), 8))
    store.save_mapping("ds", "k1", {0: ("Dilated cardiomyopathy", None), 1: ("Normal", None)}, user=ANN, base_version=None)
    store.set_patient_override("ds", "P016", "Hypertrophic cardiomyopathy", None, user=ANN, base_version=None)
    result = propagate_labels(images, image_vectors, np.repeat(truth, 2), store.current_mapping("ds", "k1"),
                              store.patient_overrides("ds"),
                              cohort_key="image-x", clustering_key="k1", store=RunStore(tmp_path / "runs"))
    assert result.proposals["patient_id"].is_unique and len(result.proposals) == len(table)
    open_ = result.open_proposals
    assert sorted(open_["patient_id"]) == [f"P{i:03d}" for i in range(17, 24)]
    assert (open_["disease"] == "Hypertrophic cardiomyopathy").all()


def test_accepting_saves_versioned_overrides_and_reports_conflicts(store):
    accepted = pd.DataFrame({"patient_id": ["P1", "P2"], "disease": ["Normal", "Dilated cardiomyopathy"],
                             "icd10_code": [None, "I42.0"], "confidence": [0.91, 0.8], "base_version": [None, None]})
    # Bob overrides P2 after Ann looked at the proposals: Ann's accept must not overwrite it.
    store.set_patient_override("ds", "P2", "Myocardial infarction", "I21.9", user=BOB, base_version=None)
    outcome = accept_proposals(store, "ds", accepted, user=ANN, run_key="label-propagation-0123456789abcdef0123")
    assert outcome.set_index("patient_id")["status"].to_dict() == {"P1": "saved", "P2": "conflict"}
    history = store.override_history("ds", "P1")
    assert history["author"].tolist() == ["ann@example.org"]
    assert history["note"].iloc[0] == "accepted label propagation label-propagation-0123456789abcdef0123 (confidence 0.91)"
    assert store.patient_overrides("ds").set_index("patient_id").loc["P2", "disease"] == "Myocardial infarction"
    with pytest.raises(PermissionError):
        accept_proposals(store, "ds", accepted, user=VIEWER)
    bad = accepted.assign(icd10_code=["NOT-A-CODE", None], base_version=[1, 1])
    assert accept_proposals(store, "ds", bad.iloc[:1], user=ANN)["status"].tolist() == ["error"]


def test_rejections_are_audited_and_read_back_per_run(tmp_path):
    access = AccessStore(f"sqlite:///{tmp_path / 'labels.db'}")
    rejected = pd.DataFrame({"patient_id": ["P1", "P7"], "disease": ["Normal", "Normal"]})
    run_a, run_b = "label-propagation-aaaaaaaaaaaaaaaaaaaa", "label-propagation-bbbbbbbbbbbbbbbbbbbb"
    assert reject_proposals(access, "ds", rejected, user=ANN, run_key=run_a) == 2
    assert rejected_patients(access, "ds", run_a) == {"P1", "P7"}
    assert rejected_patients(access, "ds", run_b) == set()
    assert rejected_patients(access, "other", run_a) == set()
    events = access.events(action="proposal.reject")
    assert set(events["email"]) == {"ann@example.org"}
    with pytest.raises(PermissionError):
        reject_proposals(access, "ds", rejected, user=VIEWER, run_key=run_a)
    access.close()


def test_curve_on_the_demo_cohort_rises_and_beats_the_majority_baseline(demo40):
    """The demo cohort's four planted groups, real efficientnet-lite0 vectors (patient level)."""
    from core.cohort import build_cohort
    from core.embed import embed_dataset

    cohort = build_cohort(demo40, embed_dataset(demo40, "efficientnet-lite0"), level="patient")
    curve = propagation_curve(cohort.masked(), cohort.table["label"], fractions=(0.1, 0.3, 0.6), repeats=5)
    mean = curve.groupby("fraction")[["accuracy", "majority_accuracy"]].mean()
    assert mean.loc[0.6, "accuracy"] > mean.loc[0.1, "accuracy"]
    assert (mean["accuracy"] > mean["majority_accuracy"] + 0.2).all(), mean
    assert mean.loc[0.6, "accuracy"] >= 0.7, mean
    assert (curve["n_scored"] + curve["n_labelled"] == 40).all()


def test_curve_validates_its_inputs():
    vectors, truth = blobs(n_per=5)
    with pytest.raises(ValueError, match="fraction=1.5"):
        propagation_curve(vectors, truth, fractions=(1.5,))
    with pytest.raises(ValueError, match="at least two classes"):
        propagation_curve(vectors, np.zeros(len(truth)))
    with pytest.raises(ValueError, match="repeats=0"):
        propagation_curve(vectors, truth, repeats=0)


def test_curve_run_is_stored_and_proposals_are_scored_by_confidence(tmp_path):
    from core.labels.propagate import propagation_curve_run, score_proposals

    vectors, truth = blobs(n_per=10)
    runs = RunStore(tmp_path / "runs")
    names = np.array(["A", "B", "C"])[truth]
    assert propagation_curve_run(vectors, names, cohort_key="c1", store=runs, compute=False)[0] is None
    curve, key, from_store = propagation_curve_run(vectors, names, cohort_key="c1", fractions=(0.2,), repeats=2, store=runs)
    assert not from_store and key.startswith("propagation-curve-") and len(curve) == 2
    again, _, from_store = propagation_curve_run(vectors, names, cohort_key="c1", fractions=(0.2,), repeats=2, store=runs)
    assert from_store and again.equals(curve)
    proposals = pd.DataFrame({"patient_id": ["p1", "p2", "p3", "p4"], "disease": ["A", "b ", "C", "A"],
                              "confidence": [0.95, 0.92, 0.6, 0.3]})
    truth_by_patient = pd.Series(["A", "B", "A", None], index=["p1", "p2", "p3", "p4"])
    scored = score_proposals(proposals, truth_by_patient).set_index("band")
    assert scored.loc["0.9-1", ["proposals", "with_truth", "correct"]].tolist() == [2, 2, 2]
    assert scored.loc["0.5-0.7", "accuracy"] == 0.0
    assert scored.loc["all", ["proposals", "with_truth", "correct"]].tolist() == [4, 3, 2]
