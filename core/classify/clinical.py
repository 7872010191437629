"""What a clinician asks of a classifier: how many of the sick did it find, how many false
alarms, and how sure can we be?

:func:`clinical_metrics` gives sensitivity, specificity, PPV and NPV per class (one-vs-rest)
from a :class:`~core.classify.evaluate.ClassifierReport`'s out-of-fold predictions, with 95%
intervals from the same patient bootstrap as the report's own metrics (patients resampled with
replacement, their images kept together, the fixed predictions re-scored). It reads only what a
saved report already holds, so older saved runs get these numbers too.

:func:`headline` turns one class's row into the sentence that comes first on the page.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.classify.evaluate import ClassifierReport
from core.weighted_metrics import bootstrap_weights, percentile_interval, weighted_confusion

CLINICAL_METRICS = ("sensitivity", "specificity", "ppv", "npv")
CLINICAL_LABELS = {"sensitivity": "sensitivity", "specificity": "specificity",
                   "ppv": "PPV (positive predictive value)", "npv": "NPV (negative predictive value)"}
# An interval wider than this (30 percentage points) is called "wide uncertainty" in the headline.
WIDE_INTERVAL = 0.30


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def rates_from_counts(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, np.ndarray]:
    """sensitivity = tp/(tp+fn), specificity = tn/(tn+fp), ppv = tp/(tp+fp), npv = tn/(tn+fn);
    NaN where the denominator is 0. Inputs are counts (scalars or arrays of replicates)."""
    tp, fp, fn, tn = (np.asarray(v, dtype=float) for v in (tp, fp, fn, tn))
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn)}


def _truth_and_prediction(report: ClassifierReport, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if report.kind == "multilabel":
        rows = report.used[:, j]
        return rows, report.target.y[rows, j] == 1, report.predictions[rows, j] == 1
    rows = report.used
    return rows, report.target.y[rows] == j, report.predictions[rows] == j


def clinical_metrics(report: ClassifierReport, groups: Any, *, n_bootstrap: int | None = None,
                     random_state: int | None = None, ci_level: float | None = None) -> pd.DataFrame:
    """Sensitivity, specificity, PPV and NPV per class with patient-bootstrap intervals.

    report : a ClassifierReport (binary, multi-class or multi-label).
    groups : array-like of shape (n_samples,), the patient id of each of the report's rows.
    n_bootstrap, random_state, ci_level : default to the report's own settings, so the
        intervals match the report's other metrics.

    Returns one row per class: class, tp, fp, fn, tn, n_patients (distinct patients among the
    evaluated rows), and for each of sensitivity, specificity, ppv, npv the value and
    ``<metric>_lo``/``<metric>_hi``. Raises ValueError when ``groups`` has the wrong length.
    """
    groups = np.asarray(groups, dtype=object)
    n = len(report.target)
    if groups.shape != (n,):
        raise ValueError(f"groups has {groups.shape[0] if groups.ndim else 0} entries; the report has {n} rows")
    params = report.params
    n_bootstrap = int(params.get("n_bootstrap", 1000) if n_bootstrap is None else n_bootstrap)
    random_state = int(params.get("random_state", 0) if random_state is None else random_state)
    ci_level = float(params.get("ci_level", 0.95) if ci_level is None else ci_level)
    weights = np.vstack([np.ones(n), bootstrap_weights(groups, n_bootstrap, random_state)])
    out = []
    for j, name in enumerate(report.classes):
        rows, truth, predicted = _truth_and_prediction(report, j)
        counts = weighted_confusion(truth, predicted, weights[:, rows])
        rates = rates_from_counts(counts["tp"], counts["fp"], counts["fn"], counts["tn"])
        row: dict[str, Any] = {"class": name, **{c: int(round(counts[c][0])) for c in ("tp", "fp", "fn", "tn")},
                               "n_patients": int(pd.unique(groups[rows]).size)}
        for metric in CLINICAL_METRICS:
            row[metric] = float(rates[metric][0])
            row[f"{metric}_lo"], row[f"{metric}_hi"] = percentile_interval(rates[metric][1:], ci_level)
        out.append(row)
    return pd.DataFrame(out)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def headline(row: pd.Series | dict[str, Any], *, unit: str = "patient") -> str:
    """One sentence a clinician reads first, from a :func:`clinical_metrics` row.

    E.g. tp=11, fn=7, fp=7, tn=13 for class "COVID-19", 38 patients, wide intervals ->
    "Found 11 of 18 COVID-19 patients; 7 false alarms among 20 without it; wide uncertainty:
    only 38 patients."
    unit : what a row is ("patient" or "image"). "Wide uncertainty" is said when the
    sensitivity or specificity interval spans more than :data:`WIDE_INTERVAL`.
    """
    tp, fn, fp, tn = (int(row[c]) for c in ("tp", "fn", "fp", "tn"))
    name = str(row["class"])
    unit_word = unit if unit in ("patient", "image") else "case"
    positives, negatives = tp + fn, fp + tn
    parts = [f"Found {tp} of {positives} {name} {unit_word}{'' if positives == 1 else 's'}",
             f"{_plural(fp, 'false alarm')} among {negatives} without it"]
    widths = [row.get(f"{m}_hi", np.nan) - row.get(f"{m}_lo", np.nan) for m in ("sensitivity", "specificity")]
    widths = [w for w in widths if np.isfinite(w)]
    n_patients = row.get("n_patients")
    if widths and max(widths) > WIDE_INTERVAL:
        size = f": only {_plural(int(n_patients), 'patient')}" if n_patients is not None and np.isfinite(n_patients) else ""
        parts.append(f"wide uncertainty{size}")
    return "; ".join(parts) + "."


__all__ = ["CLINICAL_LABELS", "CLINICAL_METRICS", "WIDE_INTERVAL", "clinical_metrics", "headline",
           "rates_from_counts"]
