"""core.classify.duplicates: duplicate pairs across CV folds, merging the patients that share one,
and the AUC a leak inflates (hand-made cases with known answers)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.classify.duplicates import (
    auc_with_merged_groups,
    duplicate_leakage,
    merge_duplicate_groups,
)
from core.classify.evaluate import evaluate
from core.classify.target import prepare_target


def pairs_of(*pairs: tuple[str, str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["image_id_a", "patient_id_a", "image_id_b", "patient_id_b"])


def test_merge_joins_patients_transitively_and_names_groups_by_their_smallest_member():
    groups = np.array(["p3", "p1", "p2", "p4", "p5", "p1"], dtype=object)
    merged = merge_duplicate_groups(groups, pairs_of(("a", "p2", "b", "p3"), ("c", "p3", "d", "p5"), ("e", "p9", "f", "p4")))
    assert merged.tolist() == ["p2", "p1", "p2", "p4", "p2", "p1"]  # p4 only meets p9, who is absent
    with pytest.raises(ValueError, match="lack column"):
        merge_duplicate_groups(groups, pd.DataFrame({"x": [1]}))


def test_leakage_counts_pairs_whose_sides_sit_in_different_folds():
    table = pd.DataFrame({"image_id": ["a", "b", "c", "d", "e"], "patient_id": ["p1", "p2", "p3", "p4", "p5"]})
    folds = np.array([0, 1, 0, 2, -1])
    found = duplicate_leakage(table, folds, pairs_of(("a", "p1", "b", "p2"), ("a", "p1", "c", "p3"),
                                                     ("d", "p4", "e", "p5"), ("a", "p1", "zz", "p9")))
    assert (found.n_pairs, found.n_crossing) == (2, 1)  # a-b crosses; a-c same fold; d-e unevaluated
    assert found.crossing[["image_id_a", "image_id_b", "fold_a", "fold_b"]].values.tolist() == [["a", "b", 0, 1]]
    assert found.notes == ["1 pair(s) involve rows outside this study"]
    with pytest.raises(ValueError, match="folds has shape"):
        duplicate_leakage(table, folds[:3], pairs_of(("a", "p1", "b", "p2")))


def test_copies_under_new_patient_ids_inflate_the_auc_and_merging_removes_it():
    rng = np.random.default_rng(0)
    n, dim = 80, 300
    features = rng.normal(size=(n, dim))  # pure noise: an honest AUC is about 0.5
    labels = np.array(["yes", "no"] * (n // 2), dtype=object)
    patients = np.array([f"p{i}" for i in range(n)], dtype=object)
    # Every scan again under a new patient id: copies land in other folds than their originals.
    X = np.vstack([features, features])
    table = pd.DataFrame({"patient_id": np.concatenate([patients, [f"copy{i}" for i in range(n)]]),
                          "image_id": [f"i{i}" for i in range(2 * n)], "label": np.concatenate([labels, labels])})
    target = prepare_target(table, "label", positive="yes")
    report = evaluate(X, target, table["patient_id"].to_numpy(), n_splits=5, n_bootstrap=50)
    study = SimpleNamespace(features=X, table=table, report=report,
                            config={"model": "logreg", "n_splits": 5, "random_state": 0, "calibrate": False})
    pairs = pairs_of(*[(f"i{i}", f"p{i}", f"i{n + i}", f"copy{i}") for i in range(n)])
    assert duplicate_leakage(table, report.folds, pairs).n_crossing >= 0.7 * n
    result = auc_with_merged_groups(study, pairs, n_bootstrap=50)
    assert result["auc_patient_groups"] > 0.9  # the leak: tested on its own copies
    assert result["auc_merged_groups"] < 0.65  # merged: back near chance
    assert result["merged_patients"] == n and result["n_merged_groups"] == n
