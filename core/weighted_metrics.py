"""Weighted binary metrics for fast bootstraps, shared by the classifiers and the fairness
tables (a module of its own so that neither package has to import the other).

A bootstrap replicate is a vector of weights over rows (how often each row, or each row's
patient, was drawn), so all replicates are evaluated at once as a (n_bootstrap, n_rows) weight
matrix instead of re-slicing arrays a thousand times. With unit weights every function equals
its scikit-learn counterpart (``roc_auc_score``, ``precision_score`` ...).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def weighted_auc(y_true: np.ndarray, y_score: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """ROC AUC (Mann-Whitney, ties count one half) under row weights.

    y_true : ndarray of shape (n_samples,), bool or 0/1.
    y_score : ndarray of shape (n_samples,).
    weights : ndarray of shape (n_samples,) or (n_replicates, n_samples); None = all ones.
    Returns ndarray of shape (n_replicates,) (1 without weights); NaN where a replicate holds
    only one class.
    """
    y = np.asarray(y_true).astype(bool)
    score = np.asarray(y_score, dtype=float)
    w = np.ones((1, y.size)) if weights is None else np.atleast_2d(np.asarray(weights, float))
    if y.size == 0:
        return np.full(w.shape[0], np.nan)
    order = np.argsort(score, kind="mergesort")
    score, y, w = score[order], y[order], w[:, order]
    starts = np.r_[0, np.flatnonzero(np.diff(score)) + 1]
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    neg_below = np.cumsum(neg, axis=1) - neg
    numerator = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    denominator = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def weighted_confusion(
    y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Weighted tp, fp, fn, tn of a binary prediction, each of shape (n_replicates,)."""
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    w = np.ones((1, t.size)) if weights is None else np.atleast_2d(np.asarray(weights, float))
    return {
        "tp": w @ (t & p).astype(float),
        "fp": w @ (~t & p).astype(float),
        "fn": w @ (t & ~p).astype(float),
        "tn": w @ (~t & ~p).astype(float),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def binary_rates(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """accuracy, precision, recall (TPR), fpr, f1, selection_rate from :func:`weighted_confusion`;
    NaN where undefined (no positives, no negatives, no predicted positives)."""
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    total = tp + fp + fn + tn
    return {
        "accuracy": _ratio(tp + tn, total),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "selection_rate": _ratio(tp + fp, total),
    }


def bootstrap_weights(
    groups: np.ndarray, n_bootstrap: int, random_state: int | np.random.Generator = 0
) -> np.ndarray:
    """Row weights of a cluster bootstrap: draw groups (patients) with replacement.

    groups : ndarray of shape (n_samples,), any hashable ids.
    Returns ndarray of shape (n_bootstrap, n_samples): how many times each row's group was
    drawn. Every row of a patient carries its patient's count, so a patient's images stay
    together, as they would in a new sample of patients.
    """
    rng = np.random.default_rng(random_state)
    codes, _ = _factorize(groups)
    n_groups = int(codes.max()) + 1 if codes.size else 0
    if n_bootstrap <= 0 or n_groups == 0:
        return np.zeros((0, codes.size))
    draws = rng.integers(0, n_groups, size=(n_bootstrap, n_groups))
    counts = np.zeros((n_bootstrap, n_groups))
    np.add.at(counts, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    return counts[:, codes]


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(pd.Series(np.asarray(values, dtype=object)), use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64), np.asarray(uniques, dtype=object)


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values, ignoring NaN replicates; (NaN, NaN) if none."""
    finite = np.asarray(values, float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)
