"""Cross-validated evaluation of a classifier on a feature matrix, with patient-level bootstrap
confidence intervals.

Decision thresholds. Binary and multi-label targets turn probabilities into yes/no with a
threshold per class chosen on *validation* data only: inside each outer training fold an inner
patient-grouped CV (``threshold_splits`` folds) gives out-of-fold probabilities for the
training rows, and the threshold maximising Youden's J (TPR - FPR, default) or F1 on them is
applied to the outer test fold. Youden's J is the default because it does not depend on
prevalence, matching the balanced class weights of the models, whereas F1 rewards predicting
the positive class and swings with a handful of positives. Multi-class targets predict the
class of highest probability (one label per row) and tune no thresholds.

Confidence intervals resample *patients* (``groups``) with replacement, keeping each patient's
images together, and re-score the fixed out-of-fold predictions: they describe the uncertainty
from the test sample, not from re-training.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.metrics import precision_recall_curve, roc_curve

from core.classify.cv import cross_val_proba, grouped_folds
from core.classify.metrics import (
    THRESHOLD_METRICS,
    binary_rates,
    bootstrap_weights,
    choose_threshold,
    percentile_interval,
    weighted_auc,
    weighted_confusion,
)
from core.classify.models import DEFAULT_MODEL, MODELS, make_model
from core.classify.target import Target, merge_rare_classes

RARE_CLASS_OPTIONS = ("error", "merge")
METRICS = ("auc", "accuracy", "precision", "recall", "f1")
DEFAULT_THRESHOLD = 0.5


@dataclass
class FinalModel:
    """A model trained on all usable rows (from :meth:`ClassifierReport.fit_final`).

    estimators : one fitted pipeline (binary/multi-class) or one per label (multi-label).
    thresholds : ndarray of shape (n_classes,), the cross-validated thresholds (NaN: argmax).
    """

    model: str
    kind: str
    classes: list[str]
    estimators: list[BaseEstimator]
    thresholds: np.ndarray
    n_features: int

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """X : ndarray of shape (n_samples, n_features). Returns ndarray of shape
        (n_samples, n_classes): class probabilities, or for multi-label the probability of each
        label being positive. Rows of X with NaN/inf get NaN."""
        X = as_matrix(X, None, self.n_features)
        finite = np.isfinite(X).all(axis=1)
        out = np.full((len(X), len(self.classes)), np.nan)
        if not finite.any():
            return out
        if self.kind == "multilabel":
            for j, estimator in enumerate(self.estimators):
                proba = estimator.predict_proba(X[finite])
                out[finite, j] = proba[:, list(estimator.classes_).index(1)]
            return out
        estimator = self.estimators[0]
        full = np.zeros((int(finite.sum()), len(self.classes)))
        full[:, np.asarray(estimator.classes_, dtype=np.int64)] = estimator.predict_proba(X[finite])
        out[finite] = full
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Binary/multi-class: ndarray (n_samples,) of class names (None for NaN rows).
        Multi-label: ndarray (n_samples, n_labels) of 1/0 (-1 for NaN rows)."""
        proba = self.predict_proba(X)
        finite = np.isfinite(proba).all(axis=1)
        if self.kind == "multilabel":
            thresholds = np.where(np.isnan(self.thresholds), DEFAULT_THRESHOLD, self.thresholds)
            return np.where(finite[:, None], (proba >= thresholds).astype(np.int64), -1)
        codes = _predict_codes(np.nan_to_num(proba), self.kind, self.thresholds[-1])
        names = np.array(self.classes, dtype=object)[codes]
        return np.where(finite, names, None)


@dataclass
class ClassifierReport:
    """Result of :func:`evaluate`.

    per_class : DataFrame, one row per class (multi-label: per label) plus a final "mean" row
        (macro average; its accuracy is the overall accuracy for binary/multi-class). Columns:
        class, n_rows, support, auc, accuracy, precision, recall, f1, each metric's 95%
        bootstrap interval as ``<metric>_lo``/``<metric>_hi``, and threshold.
    oof : ndarray of shape (n_samples, n_classes), out-of-fold probabilities (multi-label: of
        each label being positive); NaN for rows not evaluated.
    folds : ndarray of int, shape (n_samples,) (multi-label: (n_samples, n_labels)); -1 for rows
        not evaluated.
    predictions : class code per row (n_samples,), or 1/0 per label (n_samples, n_labels); -1
        where not evaluated.
    used : bool mask of the same shape as ``folds``.
    roc, pr : per class, DataFrames of curve points (fpr/tpr/threshold,
        recall/precision/threshold) for plotting; empty when a class has no positives.
    confusion : DataFrame, true x predicted counts (multi-label: per label tn, fp, fn, tp).
    thresholds : Series per class: the median of the per-fold thresholds (NaN where the
        prediction is argmax, and for the negative class of a binary target).
    fold_thresholds : DataFrame, fold x class.
    row_reasons : Series (n_samples,): why a row (or some of its labels) was not evaluated.
    """

    kind: str
    classes: list[str]
    model: str
    per_class: pd.DataFrame
    oof: np.ndarray
    folds: np.ndarray
    predictions: np.ndarray
    used: np.ndarray
    roc: dict[str, pd.DataFrame]
    pr: dict[str, pd.DataFrame]
    confusion: pd.DataFrame
    thresholds: pd.Series
    fold_thresholds: pd.DataFrame
    row_reasons: pd.Series
    target: Target
    n_features: int
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def mean_auc(self) -> float:
        return float(self.per_class.set_index("class").loc["mean", "auc"])

    def fit_final(self, X: np.ndarray, y: np.ndarray | Target | None = None) -> FinalModel:
        """Train the report's model (same name, calibration, seed) on all usable rows.

        X : ndarray of shape (n_samples, n_features) with the report's n_features.
        y : class codes (n_samples,) or multi-label 1/0 (n_samples, n_labels), -1 = skip; a
            Target; or None for the target the report was evaluated on.
        Raises ValueError on shape mismatch or when fewer than two classes are usable.
        """
        X = as_matrix(X, None, self.n_features)
        codes = self.target.y if y is None else (y.y if isinstance(y, Target) else np.asarray(y))
        expected = (len(X),) if self.kind != "multilabel" else (len(X), len(self.classes))
        if codes.shape != expected:
            raise ValueError(f"y has shape {codes.shape}; expected {expected} for this {self.kind} report")
        finite = np.isfinite(X).all(axis=1)
        columns = codes[:, None] if codes.ndim == 1 else codes
        estimators = []
        for j in range(columns.shape[1]):
            rows = finite & (columns[:, j] >= 0)
            if np.unique(columns[rows, j]).size < 2:
                name = self.classes[j] if self.kind == "multilabel" else "the target"
                raise ValueError(f"fit_final: {name} has fewer than 2 classes among usable rows")
            estimator = make_model(
                self.model, calibrate=self.params["calibrate"], random_state=self.params["random_state"]
            )
            estimators.append(estimator.fit(X[rows], columns[rows, j]))
        return FinalModel(
            model=self.model, kind=self.kind, classes=list(self.classes), estimators=estimators,
            thresholds=self.thresholds.to_numpy(dtype=float), n_features=self.n_features,
        )


def as_matrix(X: Any, n_rows: int | None, n_features: int | None = None) -> np.ndarray:
    if hasattr(X, "toarray"):
        X = X.toarray()
    try:
        matrix = np.asarray(X, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"X must be a numeric matrix (n_samples, n_features): {error}") from error
    if matrix.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {matrix.shape}")
    if n_rows is not None and matrix.shape[0] != n_rows:
        raise ValueError(f"X has {matrix.shape[0]} rows but the target has {n_rows}")
    if n_features is not None and matrix.shape[1] != n_features:
        raise ValueError(f"X has {matrix.shape[1]} features; the model was trained on {n_features}")
    return matrix


def as_groups(groups: Any, n_rows: int) -> tuple[np.ndarray, list[str]]:
    """Patient ids as an object array; a missing id becomes a group of its own (noted).
    ``None`` treats every row as its own patient. Raises ValueError on a length mismatch."""
    if groups is None:
        return np.arange(n_rows).astype(object), ["no groups given: every row treated as its own patient"]
    values = pd.Series(np.asarray(groups, dtype=object))
    if len(values) != n_rows:
        raise ValueError(f"groups has {len(values)} entries but the target has {n_rows} rows")
    missing = values.isna() | (values.astype(str).str.strip() == "")
    values[missing] = [f"__row{i}" for i in np.flatnonzero(missing)]
    notes = [f"{int(missing.sum())} row(s) without a patient id treated as their own patient"] if missing.any() else []
    return values.to_numpy(dtype=object), notes


def _predict_codes(proba: np.ndarray, kind: str, threshold: float) -> np.ndarray:
    if kind == "binary":
        t = DEFAULT_THRESHOLD if np.isnan(threshold) else threshold
        return (proba[:, 1] >= t).astype(np.int64)
    return np.argmax(proba, axis=1).astype(np.int64)


def _validate(model: str, n_splits: int, n_bootstrap: int, threshold_metric: str,
              threshold_splits: int, rare_classes: str, ci_level: float) -> None:
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not a known model; valid models: {list(MODELS)}")
    if not isinstance(n_splits, int | np.integer) or n_splits < 2:
        raise ValueError(f"n_splits={n_splits!r} must be an integer >= 2")
    if not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be an integer >= 0")
    if threshold_metric not in THRESHOLD_METRICS:
        raise ValueError(f"threshold_metric={threshold_metric!r} is not valid; use one of {list(THRESHOLD_METRICS)}")
    if not isinstance(threshold_splits, int | np.integer) or threshold_splits == 1 or threshold_splits < 0:
        raise ValueError(f"threshold_splits={threshold_splits!r} must be 0 (fixed 0.5) or an integer >= 2")
    if rare_classes not in RARE_CLASS_OPTIONS:
        raise ValueError(f"rare_classes={rare_classes!r} is not valid; use one of {list(RARE_CLASS_OPTIONS)}")
    if not 0.0 < ci_level < 1.0:
        raise ValueError(f"ci_level={ci_level!r} must be between 0 and 1 (e.g. 0.95)")


def _check_class_sizes(target: Target, used: np.ndarray, n_splits: int, rare_classes: str) -> Target:
    if target.kind == "multilabel":
        for j, label in enumerate(target.classes):
            rows = used[:, j]
            n_pos, n_neg = int((target.y[rows, j] == 1).sum()), int((target.y[rows, j] == 0).sum())
            if min(n_pos, n_neg) < n_splits:
                raise ValueError(
                    f"label {label!r} has {n_pos} positive and {n_neg} negative usable rows; each "
                    f"must be >= n_splits={n_splits} (drop the label or use fewer splits)"
                )
        return target
    counts = pd.Series(np.bincount(target.y[used], minlength=target.n_classes), index=target.classes)
    rare = counts[counts < n_splits]
    if rare.empty:
        return target
    listing = ", ".join(f"{name!r} has {count}" for name, count in rare.items())
    if rare_classes == "merge" and target.positive is None:
        merged = merge_rare_classes(target, n_splits, rows=used)
        merged_counts = np.bincount(merged.y[used], minlength=merged.n_classes)
        if merged_counts.min() < n_splits:
            small = merged.classes[int(np.argmin(merged_counts))]
            raise ValueError(
                f"even after merging {list(rare.index)} into 'other': {small!r} has "
                f"{merged_counts.min()} usable rows, fewer than n_splits={n_splits}; use fewer "
                f"splits or drop those rows"
            )
        return merged
    if target.positive is not None:
        raise ValueError(
            f"class(es) with fewer usable rows than n_splits={n_splits}: {listing}; a target "
            f"defined by positive={target.positive} cannot merge classes: use fewer splits"
        )
    raise ValueError(
        f"class(es) with fewer usable rows than n_splits={n_splits}: {listing}; use fewer splits, "
        f"rare_classes='merge' (merges them into 'other'), or drop those rows"
    )


def _cross_validate_task(
    make: Callable[[], BaseEstimator], X: np.ndarray, y: np.ndarray, used: np.ndarray,
    groups: np.ndarray, n_classes: int, *, n_splits: int, random_state: int, tune: bool,
    threshold_metric: str, threshold_splits: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """One CV run over the rows in ``used``. Returns folds (n,), oof (n, n_classes),
    positive-class threshold per fold (n_splits,), predicted codes (n,), notes."""
    folds = np.full(len(y), -1, dtype=np.int64)
    folds[used] = grouped_folds(y[used], groups[used], n_splits, random_state=random_state)
    oof, notes = cross_val_proba(make, X, y, folds, n_classes)
    fold_thresholds = np.full(n_splits, np.nan)
    predictions = np.full(len(y), -1, dtype=np.int64)
    for fold in range(n_splits):
        test, train = folds == fold, (folds >= 0) & (folds != fold)
        if tune and threshold_splits >= 2:
            fold_thresholds[fold] = _inner_threshold(
                make, X[train], y[train], groups[train], threshold_splits, threshold_metric, random_state
            )
            if np.isnan(fold_thresholds[fold]):
                notes.append(f"fold {fold}: no threshold could be tuned; used {DEFAULT_THRESHOLD}")
        elif tune:
            fold_thresholds[fold] = DEFAULT_THRESHOLD
        kind = "binary" if tune else "multiclass"
        predictions[test] = _predict_codes(oof[test], kind, fold_thresholds[fold])
    return folds, oof, fold_thresholds, predictions, notes


def _inner_threshold(make, X, y, groups, n_inner, metric, random_state) -> float:
    counts = np.bincount(y, minlength=2)
    k = int(min(n_inner, counts.min(), len(set(groups.tolist()))))
    if k < 2:
        return float("nan")
    inner_folds = grouped_folds(y, groups, k, random_state=random_state)
    inner_oof, _ = cross_val_proba(make, X, y, inner_folds, 2)
    return choose_threshold(y, inner_oof[:, 1], metric)


def _class_metrics(truth: np.ndarray, predicted: np.ndarray, score: np.ndarray,
                   weights: np.ndarray) -> dict[str, np.ndarray]:
    """Metric name -> array over [point estimate, replicate 1, ...] for one class (one-vs-rest)."""
    rates = binary_rates(weighted_confusion(truth, predicted, weights))
    return {"auc": weighted_auc(truth, score, weights), **{m: rates[m] for m in METRICS[1:]}}


def _curves(truth: np.ndarray, score: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    if truth.all() or not truth.any():
        return (pd.DataFrame(columns=["fpr", "tpr", "threshold"]),
                pd.DataFrame(columns=["recall", "precision", "threshold"]))
    fpr, tpr, thr = roc_curve(truth, score)
    precision, recall, pr_thr = precision_recall_curve(truth, score)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thr})
    pr = pd.DataFrame({"recall": recall, "precision": precision, "threshold": np.r_[pr_thr, np.nan]})
    return roc, pr


def evaluate(
    X: np.ndarray,
    target: Target,
    groups: Any,
    *,
    model: str = DEFAULT_MODEL,
    n_splits: int = 5,
    random_state: int = 0,
    n_bootstrap: int = 1000,
    calibrate: bool = False,
    threshold_metric: str = "youden",
    threshold_splits: int = 3,
    rare_classes: str = "error",
    ci_level: float = 0.95,
) -> ClassifierReport:
    """Patient-grouped stratified k-fold evaluation of registry model ``model``.

    X : ndarray of shape (n_samples, n_features); rows with NaN/inf are not evaluated (their
        reason is kept in ``row_reasons``).
    target : from :func:`prepare_target`, n_samples rows aligned with X.
    groups : array-like of shape (n_samples,), patient ids (None: rows are independent).
    threshold_splits : inner folds used to tune thresholds (0: fixed 0.5).
    rare_classes : "error" raises for a class with fewer than ``n_splits`` usable rows, naming
        the class and its count; "merge" merges such classes into "other" (binary targets
        defined by ``positive`` and multi-label targets always raise).

    Raises ValueError for bad parameters (message shows the value and what is valid), shape
    mismatches, too few patients for ``n_splits`` and too-small classes.
    """
    _validate(model, n_splits, n_bootstrap, threshold_metric, threshold_splits, rare_classes, ci_level)
    if not isinstance(target, Target):
        raise ValueError(f"target must be a Target from prepare_target(), got {type(target).__name__}")
    n = len(target)
    X = as_matrix(X, n)
    groups, notes = as_groups(groups, n)
    finite = np.isfinite(X).all(axis=1)
    used = target.mask & (finite[:, None] if target.kind == "multilabel" else finite)
    target = _check_class_sizes(target, used, n_splits, rare_classes)
    notes = [*target.notes, *notes]
    if not finite.all():
        notes.append(f"{int((~finite).sum())} row(s) with NaN/inf features not evaluated")

    def make() -> BaseEstimator:
        return make_model(model, calibrate=calibrate, random_state=random_state)

    settings = {"n_splits": n_splits, "random_state": random_state,
                "threshold_metric": threshold_metric, "threshold_splits": threshold_splits}
    K = target.n_classes
    if target.kind == "multilabel":
        folds = np.full((n, K), -1, dtype=np.int64)
        predictions = np.full((n, K), -1, dtype=np.int64)
        oof = np.full((n, K), np.nan)
        fold_thresholds = np.full((n_splits, K), np.nan)
        for j, label in enumerate(target.classes):
            f, o, t, p, task_notes = _cross_validate_task(
                make, X, target.y[:, j], used[:, j], groups, 2, tune=True, **settings)
            folds[:, j], oof[:, j], fold_thresholds[:, j], predictions[:, j] = f, o[:, 1], t, p
            notes.extend(f"{label}: {m}" for m in task_notes)
    else:
        folds, oof, positive_thresholds, predictions, task_notes = _cross_validate_task(
            make, X, target.y, used, groups, K, tune=target.kind == "binary", **settings)
        notes.extend(task_notes)
        fold_thresholds = np.full((n_splits, K), np.nan)
        if target.kind == "binary":
            fold_thresholds[:, 1] = positive_thresholds

    weights = np.vstack([np.ones(n), bootstrap_weights(groups, n_bootstrap, random_state)])
    per_class_values: list[dict[str, np.ndarray]] = []
    roc, pr = {}, {}
    for j, name in enumerate(target.classes):
        if target.kind == "multilabel":
            rows = used[:, j]
            truth, predicted = target.y[rows, j] == 1, predictions[rows, j] == 1
        else:
            rows = used
            truth, predicted = target.y[rows] == j, predictions[rows] == j
        score = oof[rows, j]
        per_class_values.append(_class_metrics(truth, predicted, score, weights[:, rows]))
        roc[name], pr[name] = _curves(truth, score)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates -> NaN, on purpose
        mean_values = {m: np.nanmean([v[m] for v in per_class_values], axis=0) for m in METRICS}
    if target.kind != "multilabel":
        w = weights[:, used]
        correct = (predictions[used] == target.y[used]).astype(float)
        mean_values["accuracy"] = (w @ correct) / np.maximum(w.sum(axis=1), 1e-12)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of NaN (argmax) stays NaN
        thresholds = pd.Series(np.nanmedian(fold_thresholds, axis=0), index=target.classes, dtype=float)

    rows_out = []
    for j, (name, values) in enumerate(zip(target.classes, per_class_values, strict=True)):
        rows = used[:, j] if target.kind == "multilabel" else used
        truth = target.y[rows, j] == 1 if target.kind == "multilabel" else target.y[rows] == j
        rows_out.append(_summary_row(name, int(rows.sum()), int(truth.sum()), values,
                                     float(thresholds.iloc[j]), ci_level))
    n_used = int(used.any(axis=1).sum()) if target.kind == "multilabel" else int(used.sum())
    rows_out.append(_summary_row("mean", n_used, n_used, mean_values, np.nan, ci_level))
    per_class = pd.DataFrame(rows_out)

    confusion = _confusion(target, used, predictions)
    reasons = target.reasons.copy()
    for i in np.flatnonzero(~finite):
        reasons.iloc[i] = "; ".join(r for r in (reasons.iloc[i], "features contain NaN/inf") if r)
    params = {"model": model, "calibrate": calibrate, "n_bootstrap": n_bootstrap,
              "ci_level": ci_level, "rare_classes": rare_classes, **settings}
    return ClassifierReport(
        kind=target.kind, classes=list(target.classes), model=model, per_class=per_class, oof=oof,
        folds=folds, predictions=predictions, used=used, roc=roc, pr=pr, confusion=confusion,
        thresholds=thresholds,
        fold_thresholds=pd.DataFrame(fold_thresholds, columns=target.classes).rename_axis("fold"),
        row_reasons=reasons, target=target, n_features=X.shape[1], params=params,
        notes=_dedupe(notes),
    )


def _summary_row(name: str, n_rows: int, support: int, values: dict[str, np.ndarray],
                 threshold: float, ci_level: float) -> dict[str, Any]:
    row: dict[str, Any] = {"class": name, "n_rows": n_rows, "support": support}
    for metric in METRICS:
        row[metric] = float(values[metric][0])
        row[f"{metric}_lo"], row[f"{metric}_hi"] = percentile_interval(values[metric][1:], ci_level)
    row["threshold"] = threshold
    return row


def _confusion(target: Target, used: np.ndarray, predictions: np.ndarray) -> pd.DataFrame:
    if target.kind == "multilabel":
        rows = []
        for j in range(target.n_classes):
            t = target.y[used[:, j], j] == 1
            p = predictions[used[:, j], j] == 1
            rows.append({"tn": int((~t & ~p).sum()), "fp": int((~t & p).sum()),
                         "fn": int((t & ~p).sum()), "tp": int((t & p).sum())})
        return pd.DataFrame(rows, index=pd.Index(target.classes, name="label"))
    K = target.n_classes
    matrix = np.zeros((K, K), dtype=np.int64)
    np.add.at(matrix, (target.y[used], predictions[used]), 1)
    return pd.DataFrame(matrix, index=pd.Index(target.classes, name="true"),
                        columns=pd.Index(target.classes, name="predicted"))


def _dedupe(notes: list[str]) -> list[str]:
    return list(dict.fromkeys(notes))


def restrict_rows(target: Target, keep: np.ndarray, reason: str) -> Target:
    """A copy of ``target`` in which rows outside ``keep`` (bool, shape (n_samples,)) are not
    usable, with ``reason`` added to their reasons."""
    keep = np.asarray(keep, dtype=bool)
    mask = target.mask & (keep[:, None] if target.kind == "multilabel" else keep)
    reasons = target.reasons.copy()
    for i in np.flatnonzero(~keep):
        reasons.iloc[i] = "; ".join(r for r in (reasons.iloc[i], reason) if r)
    return replace(target, y=np.where(mask, target.y, -1), mask=mask, reasons=reasons)


__all__ = ["ClassifierReport", "FinalModel", "as_groups", "evaluate", "restrict_rows"]
