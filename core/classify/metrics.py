"""Decision-threshold choice, plus the weighted bootstrap metrics of
:mod:`core.weighted_metrics` (re-exported here, where the classifiers have always found them)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from core.weighted_metrics import (
    binary_rates,
    bootstrap_weights,
    percentile_interval,
    weighted_auc,
    weighted_confusion,
)

THRESHOLD_METRICS = ("youden", "f1")
__all__ = [
    "THRESHOLD_METRICS", "binary_rates", "bootstrap_weights", "choose_threshold",
    "percentile_interval", "weighted_auc", "weighted_confusion",
]


def choose_threshold(y_true: np.ndarray, y_score: np.ndarray, metric: str = "youden") -> float:
    """The score threshold (predict positive when ``score >= threshold``) that maximises
    Youden's J (TPR - FPR) or F1 on the given validation rows.

    y_true : ndarray of shape (n_samples,), bool or 0/1. y_score : same shape.
    Returns NaN when the rows hold only one class (no threshold can be chosen).
    Raises ValueError for an unknown ``metric``.
    """
    if metric not in THRESHOLD_METRICS:
        raise ValueError(f"threshold_metric={metric!r} is not valid; use one of {list(THRESHOLD_METRICS)}")
    y = np.asarray(y_true).astype(bool)
    score = np.asarray(y_score, float)
    if y.all() or not y.any():
        return float("nan")
    if metric == "youden":
        fpr, tpr, thresholds = roc_curve(y, score)
        j = tpr - fpr
        j[~np.isfinite(thresholds)] = -np.inf
        return float(thresholds[int(np.argmax(j))])
    precision, recall, thresholds = precision_recall_curve(y, score)
    precision, recall = precision[:-1], recall[:-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1))])
