"""Leakage through duplicates: near-copies of one picture on both sides of a CV split.

Patient-grouped CV keeps each patient's rows in one fold. A picture filed under two patient ids
(or a crop or rescan of it) still lands in two folds, so the model is tested on what it trained
on. Given the duplicate pairs of an audit (:mod:`core.audit`; any table with ``image_id_a``,
``patient_id_a``, ``image_id_b``, ``patient_id_b``), :func:`duplicate_leakage` counts the pairs
that cross a fold boundary of a study, :func:`merge_duplicate_groups` joins the patient ids that
share a duplicate into one CV group (union-find), and :func:`auc_with_merged_groups` evaluates
the study's model again with those groups: the AUC with and without merging says how much the
duplicates inflated it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.classify.evaluate import evaluate

PAIR_ID_COLUMNS = ("image_id_a", "patient_id_a", "image_id_b", "patient_id_b")


@dataclass
class DuplicateLeakage:
    """n_pairs : duplicate pairs whose both sides are rows of the study; crossing : those whose
    sides sit in different folds (table); n_crossing == len(crossing)."""

    n_pairs: int
    n_crossing: int
    crossing: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _check_pairs(pairs: pd.DataFrame) -> None:
    missing = [c for c in PAIR_ID_COLUMNS if c not in pairs]
    if missing:
        raise ValueError(f"duplicate pairs lack column(s) {missing}; they have {list(pairs.columns)}")


def _row_index(table: pd.DataFrame) -> tuple[str, dict[str, int]]:
    """How pairs map to study rows: by image id (image-level study) or by patient id."""
    if "image_id" in table and table["image_id"].is_unique:
        return "image", {str(v): i for i, v in enumerate(table["image_id"])}
    return "patient", {str(v): i for i, v in enumerate(table["patient_id"])}


def duplicate_leakage(table: pd.DataFrame, folds: np.ndarray, pairs: pd.DataFrame) -> DuplicateLeakage:
    """Which duplicate pairs cross a fold boundary.

    table : the study's row table (``image_id`` and/or ``patient_id``), aligned with ``folds``
    (ndarray (n_rows,), -1 for rows not evaluated). pairs : duplicate pairs.
    """
    _check_pairs(pairs)
    folds = np.asarray(folds)
    if folds.ndim != 1 or len(folds) != len(table):
        raise ValueError(f"folds has shape {folds.shape}; expected ({len(table)},) (multi-label studies are not checked)")
    level, index = _row_index(table)
    side_a, side_b = ("image_id_a", "image_id_b") if level == "image" else ("patient_id_a", "patient_id_b")
    rows_a = pairs[side_a].astype(str).map(index)
    rows_b = pairs[side_b].astype(str).map(index)
    present = rows_a.notna() & rows_b.notna()
    within = pairs[present].copy()
    fold_a = folds[rows_a[present].astype(int).to_numpy()]
    fold_b = folds[rows_b[present].astype(int).to_numpy()]
    within["fold_a"], within["fold_b"] = fold_a, fold_b
    evaluated = (fold_a >= 0) & (fold_b >= 0)
    crossing = within[evaluated & (fold_a != fold_b)].reset_index(drop=True)
    notes = []
    if (~present).any():
        notes.append(f"{int((~present).sum())} pair(s) involve rows outside this study")
    return DuplicateLeakage(n_pairs=int(evaluated.sum()), n_crossing=len(crossing), crossing=crossing, notes=notes)


def merge_duplicate_groups(groups: np.ndarray, pairs: pd.DataFrame) -> np.ndarray:
    """``groups`` (patient ids, (n_samples,)) with every patient id that shares a duplicate
    pair joined into one group, named by its smallest member. Pairs naming patients absent from
    ``groups`` still link the patients present through them."""
    _check_pairs(pairs)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pairs["patient_id_a"].astype(str), pairs["patient_id_b"].astype(str), strict=True):
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    return np.array([find(str(g)) for g in np.asarray(groups, dtype=object)], dtype=object)


def auc_with_merged_groups(study: Any, pairs: pd.DataFrame, *, n_bootstrap: int = 200) -> dict[str, Any]:
    """The study's mean AUC with its own patient groups and with duplicate-sharing patients
    merged into one group (same features, target, model, folds count and seed).

    study : a :class:`core.classify.runs.ClassifierStudy` with its feature matrix. Returns
    ``{"auc_patient_groups", "auc_merged_groups", "auc_change", "n_groups", "n_merged_groups",
    "merged_patients"}``. Raises ValueError when the study kept no features.
    """
    if study.features is None:
        raise ValueError("this study kept no feature matrix; compute it again to check merged groups")
    groups = study.table["patient_id"].astype(str).to_numpy()
    merged = merge_duplicate_groups(groups, pairs)
    config = study.config
    report = evaluate(study.features, study.report.target, merged, model=config.get("model", "logreg"),
                      n_splits=int(config.get("n_splits", 5)), random_state=int(config.get("random_state", 0)),
                      n_bootstrap=n_bootstrap, calibrate=bool(config.get("calibrate", False)))
    before = float(study.report.mean_auc)
    after = float(report.mean_auc)
    n_groups = len(set(groups.tolist()))
    n_merged = len(set(merged.tolist()))
    return {"auc_patient_groups": before, "auc_merged_groups": after, "auc_change": after - before,
            "n_groups": n_groups, "n_merged_groups": n_merged, "merged_patients": n_groups - n_merged}


MERGE_KIND = "duplicate-merge"
MERGE_VERSION = 1


def merged_groups_run(study: Any, pairs: pd.DataFrame, *, audit_key: str, thresholds: dict[str, Any],
                      store: Any = None) -> dict[str, Any]:
    """:func:`auc_with_merged_groups` as a named run (kind ``duplicate-merge``), keyed by the
    study, the audit and its thresholds: computed once, then read by the page and the CLI."""
    from core.runs import RunStore, run_key

    store = store if store is not None else RunStore()
    key = run_key(MERGE_KIND, inputs={"study": study.key, "audit": audit_key}, config=dict(thresholds),
                  version=MERGE_VERSION)

    def compute() -> tuple[dict[str, Any], dict[str, Any]]:
        result = auc_with_merged_groups(study, pairs)
        return {"result": result}, {k: result[k] for k in ("auc_patient_groups", "auc_merged_groups")}

    run, _ = store.compute_or_load(MERGE_KIND, key, version=MERGE_VERSION, compute=compute,
                                   config=dict(thresholds), inputs={"study": study.key, "audit": audit_key},
                                   dataset=study.config.get("dataset"))
    return dict(run.load("result"))
