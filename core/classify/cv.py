"""Patient-grouped cross-validation: fold assignment and out-of-fold probabilities.

A patient's images are near-duplicates of each other; if one lands in training and another in
testing, the score measures recognition of the patient, not of the disease. So folds are drawn
over patients (``StratifiedGroupKFold``), keeping class proportions as close as the grouping
allows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold


def grouped_folds(
    y: np.ndarray, groups: np.ndarray, n_splits: int, *, random_state: int = 0
) -> np.ndarray:
    """Fold index (0..n_splits-1) of every row; all rows of a group share one fold.

    y : ndarray of shape (n_samples,), class codes. groups : same shape, patient ids.
    Raises ValueError when there are fewer groups than folds.
    """
    n_groups = len(set(np.asarray(groups, dtype=object).tolist()))
    if n_splits < 2:
        raise ValueError(f"n_splits={n_splits} must be >= 2")
    if n_groups < n_splits:
        raise ValueError(
            f"n_splits={n_splits} must be <= the number of patients (groups) = {n_groups}"
        )
    folds = np.full(len(y), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        # Callers check class sizes themselves and report them in their own words.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, test) in enumerate(splitter.split(np.zeros(len(y)), y, groups)):
            folds[test] = fold
    return folds


def fit_predict_proba(
    make_estimator: Callable[[], BaseEstimator],
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    n_classes: int,
) -> tuple[np.ndarray, list[str]]:
    """Fit on the training rows and return test probabilities over all ``n_classes`` codes.

    Returns (proba of shape (n_test, n_classes), notes). A class absent from the training rows
    gets probability 0; a training set with a single class predicts that class with
    probability 1 (both are noted), so a rare class cannot crash a fold.
    """
    notes: list[str] = []
    present = np.unique(y_train)
    proba = np.zeros((len(X_test), n_classes))
    if present.size == 1:
        proba[:, int(present[0])] = 1.0
        return proba, [f"training rows hold only class code {int(present[0])}; predicted it for all"]
    if present.size < n_classes:
        notes.append(f"{n_classes - present.size} class(es) absent from the training rows")
    estimator = make_estimator()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(X_train, y_train)
        raw = estimator.predict_proba(X_test)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append("the model did not fully converge")
    proba[:, np.asarray(estimator.classes_, dtype=np.int64)] = raw
    return proba, notes


def cross_val_proba(
    make_estimator: Callable[[], BaseEstimator],
    X: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    n_classes: int,
) -> tuple[np.ndarray, list[str]]:
    """Out-of-fold probabilities, shape (n_samples, n_classes): row i is predicted by the model
    trained on the folds that do not hold row i. Notes say which folds were degenerate."""
    oof = np.full((len(y), n_classes), np.nan)
    folds_by_note: dict[str, list[str]] = {}
    for fold in np.unique(folds[folds >= 0]):
        test = folds == fold
        train = (folds >= 0) & ~test
        proba, fold_notes = fit_predict_proba(make_estimator, X[train], y[train], X[test], n_classes)
        oof[test] = proba
        for note in fold_notes:
            folds_by_note.setdefault(note, []).append(str(fold))
    notes = [f"{note} (fold {', '.join(f)})" for note, f in folds_by_note.items()]
    return oof, notes
