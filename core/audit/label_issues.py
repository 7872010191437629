"""Likely label errors: cleanlab's ``find_label_issues`` on out-of-fold probabilities.

The probabilities come from the same patient-grouped cross-validation as the classifier studies
(:func:`core.classify.cv.grouped_folds` + :func:`core.classify.cv.cross_val_proba`, logistic
regression on the image embedding), so a row is judged by a model that never saw that patient.
Classes with fewer rows than folds are merged into "other" first (cleanlab needs every class in
training). The result is ranked by cleanlab's self-confidence (lowest first): the given label,
the label the model suggests, and both probabilities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.classify.cv import cross_val_proba, grouped_folds
from core.classify.models import make_model
from core.classify.target import clean_labels

LABEL_ISSUE_COLUMNS = ["row", "given_label", "suggested_label", "given_probability", "suggested_probability",
                       "self_confidence", "rank"]


def out_of_fold_probabilities(
    vectors: np.ndarray, labels: pd.Series, groups: np.ndarray, *, n_splits: int = 5, random_state: int = 0,
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, list[str]]:
    """(probabilities (n_used, n_classes), classes, used rows, class codes, notes).

    Rows with no label or no vector are left out (``used`` is their mask over all rows).
    """
    labels = clean_labels(pd.Series(list(labels), dtype=object))
    vectors = np.asarray(vectors, dtype=np.float64)
    used = labels.notna().to_numpy() & np.isfinite(vectors).all(axis=1)
    notes: list[str] = []
    values = labels[used].astype(str)
    counts = values.value_counts()
    rare = counts[counts < n_splits].index
    if len(rare):
        values = values.where(~values.isin(rare), "other")
        notes.append(f"{len(rare)} label(s) with fewer than {n_splits} rows merged into 'other'")
    classes = sorted(values.unique())
    if len(classes) < 2:
        raise ValueError(f"label issues need at least 2 labels with >= {n_splits} rows; found {list(counts.index)}")
    codes = values.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    group_values = np.asarray(groups, dtype=object)[used]
    k = int(min(n_splits, np.bincount(codes).min(), len(set(group_values.tolist()))))
    if k < 2:
        raise ValueError("too few rows or patients per label for cross-validation")
    folds = grouped_folds(codes, group_values, k, random_state=random_state)
    probabilities, cv_notes = cross_val_proba(lambda: make_model("logreg", random_state=random_state),
                                              vectors[used], codes, folds, len(classes))
    return probabilities, classes, used, codes, notes + cv_notes


def find_label_problems(
    vectors: np.ndarray, labels: pd.Series, groups: np.ndarray, *, n_splits: int = 5, random_state: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    """Likely label errors, most likely first (``LABEL_ISSUE_COLUMNS``; ``row`` indexes the
    input rows), and notes. vectors : (n_samples, dim); labels, groups : n_samples each."""
    probabilities, classes, used, codes, notes = out_of_fold_probabilities(
        vectors, labels, groups, n_splits=n_splits, random_state=random_state)
    rows = np.flatnonzero(used)
    finite = np.isfinite(probabilities).all(axis=1)
    probabilities = np.where(finite[:, None], probabilities, 1.0 / len(classes))
    # Rows of folds that could not be fitted are uniform; cleanlab needs rows that sum to 1.
    probabilities = np.clip(probabilities, 1e-6, None)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    from cleanlab.filter import find_label_issues  # imported here: cleanlab is slow to import

    ranked = find_label_issues(labels=codes, pred_probs=probabilities, return_indices_ranked_by="self_confidence")
    records = []
    for rank, position in enumerate(ranked, start=1):
        suggested = int(np.argmax(probabilities[position]))
        records.append({
            "row": int(rows[position]), "given_label": classes[codes[position]], "suggested_label": classes[suggested],
            "given_probability": float(probabilities[position, codes[position]]),
            "suggested_probability": float(probabilities[position, suggested]),
            "self_confidence": float(probabilities[position, codes[position]]), "rank": rank,
        })
    return pd.DataFrame.from_records(records, columns=LABEL_ISSUE_COLUMNS), notes
