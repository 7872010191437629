"""What each modality adds: the same classifier, folds and rows on each feature block alone
and on all blocks together."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.classify.evaluate import (
    METRICS,
    _class_metrics,
    _predict_codes,
    _summary_row,
    as_groups,
    as_matrix,
    evaluate,
    restrict_rows,
)
from core.classify.metrics import bootstrap_weights
from core.classify.models import DEFAULT_MODEL
from core.classify.target import Target

FUSED = "fused"


def compare_modalities(
    feature_blocks: Mapping[str, np.ndarray],
    target: Target,
    groups: Any,
    *,
    model: str = DEFAULT_MODEL,
    fuse: bool = True,
    n_splits: int = 5,
    random_state: int = 0,
    n_bootstrap: int = 200,
    **evaluate_options: Any,
) -> pd.DataFrame:
    """Evaluate ``model`` on each feature block and (``fuse=True``, more than one block) on all
    blocks side by side, named "fused".

    feature_blocks : name -> ndarray of shape (n_samples, n_features_block), e.g.
        {"image": X_image, "text": X_text, "metadata": X_meta}.
    target, groups : as for :func:`evaluate`; ``evaluate_options`` are passed on to it.

    Every block is scored on the same rows: those whose features are finite in *all* blocks
    (a row missing its image would otherwise be judged only by the blocks that have it), and
    so on the same patient folds.

    Returns a DataFrame sorted by mean AUC (best first), one row per block set: modality,
    n_features, n_rows, mean_auc, auc_lo, auc_hi, mean_f1, f1_lo, f1_hi, accuracy,
    ``auc:<class>`` per class, rank. Raises ValueError for no blocks, a block with the wrong
    number of rows, or a block named "fused" while ``fuse=True``.
    """
    if not feature_blocks:
        raise ValueError("feature_blocks is empty; give at least one name -> feature matrix")
    if not isinstance(target, Target):
        raise ValueError(f"target must be a Target from prepare_target(), got {type(target).__name__}")
    blocks = {str(name): as_matrix(X, len(target)) for name, X in feature_blocks.items()}
    if fuse and len(blocks) > 1:
        if FUSED in blocks:
            raise ValueError(
                f"a block is named {FUSED!r}; rename it or pass fuse=False (names: {list(blocks)})"
            )
        blocks[FUSED] = np.hstack(list(blocks.values()))
    finite = np.logical_and.reduce([np.isfinite(X).all(axis=1) for X in blocks.values()])
    common = restrict_rows(target, finite, "features missing in some modality") if not finite.all() else target

    rows = []
    for name, X in blocks.items():
        report = evaluate(
            X, common, groups, model=model, n_splits=n_splits, random_state=random_state,
            n_bootstrap=n_bootstrap, **evaluate_options,
        )
        rows.append(comparison_row(name, X.shape[1], report.per_class, report.classes))
    result = pd.DataFrame(rows).sort_values("mean_auc", ascending=False, kind="stable")
    result["rank"] = np.arange(1, len(result) + 1)
    return result.reset_index(drop=True)


def comparison_row(name: str, n_features: int, per_class: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """One row of the comparison table from a per-class table (as :func:`evaluate` makes)."""
    table = per_class.set_index("class")
    mean = table.loc["mean"]
    row = {
        "modality": name, "n_features": n_features, "n_rows": int(mean["n_rows"]),
        "mean_auc": mean["auc"], "auc_lo": mean["auc_lo"], "auc_hi": mean["auc_hi"],
        "mean_f1": mean["f1"], "f1_lo": mean["f1_lo"], "f1_hi": mean["f1_hi"],
        "accuracy": mean["accuracy"],
    }
    row.update({f"auc:{c}": table.loc[c, "auc"] for c in classes})
    return row


def score_out_of_fold(
    probability: np.ndarray,
    target: Target,
    groups: Any,
    folds: np.ndarray,
    fold_thresholds: np.ndarray,
    *,
    n_bootstrap: int = 200,
    random_state: int = 0,
    ci_level: float = 0.95,
) -> pd.DataFrame:
    """Per-class table (as :func:`evaluate` makes it) for out-of-fold probabilities that came
    from elsewhere, e.g. a fine-tuned network: a binary target only.

    probability : ndarray of shape (n_samples,), P(positive class) of each row from the model
        that did not see its fold; NaN where not predicted. folds : ndarray (n_samples,) of
        fold indices, -1 for rows not evaluated (use the linear models' ``report.folds`` so the
        rows and folds are the same). fold_thresholds : ndarray (n_folds,), the yes/no
        threshold of each fold, chosen on validation data (NaN: 0.5).
    The bootstrap resamples the same patients as :func:`evaluate` with the same
    ``n_bootstrap`` and ``random_state``, so intervals of the two are directly comparable.
    Raises ValueError for a non-binary target or mismatched shapes.
    """
    if not isinstance(target, Target) or target.kind != "binary":
        raise ValueError("score_out_of_fold needs a binary Target from prepare_target()")
    n = len(target)
    probability = np.asarray(probability, dtype=float)
    folds = np.asarray(folds)
    if probability.shape != (n,) or folds.shape != (n,):
        raise ValueError(f"probability {probability.shape} and folds {folds.shape} must have shape ({n},)")
    groups, _ = as_groups(groups, n)
    used = target.mask & (folds >= 0) & np.isfinite(probability)
    oof = np.column_stack([1.0 - probability, probability])
    predictions = np.full(n, -1, dtype=np.int64)
    for fold in np.unique(folds[used]):
        rows = used & (folds == fold)
        threshold = float(fold_thresholds[fold]) if fold < len(fold_thresholds) else np.nan
        predictions[rows] = _predict_codes(oof[rows], "binary", threshold)
    weights = np.vstack([np.ones(n), bootstrap_weights(groups, n_bootstrap, random_state)])
    values = []
    for j in range(2):
        truth, predicted = target.y[used] == j, predictions[used] == j
        values.append(_class_metrics(truth, predicted, oof[used, j], weights[:, used]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_values = {m: np.nanmean([v[m] for v in values], axis=0) for m in METRICS}
    w = weights[:, used]
    correct = (predictions[used] == target.y[used]).astype(float)
    mean_values["accuracy"] = (w @ correct) / np.maximum(w.sum(axis=1), 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        threshold = float(np.nanmedian(fold_thresholds)) if np.isfinite(fold_thresholds).any() else np.nan
    rows_out = [
        _summary_row(name, int(used.sum()), int((target.y[used] == j).sum()), values[j],
                     threshold if j == 1 else np.nan, ci_level)
        for j, name in enumerate(target.classes)
    ]
    rows_out.append(_summary_row("mean", int(used.sum()), int(used.sum()), mean_values, np.nan, ci_level))
    return pd.DataFrame(rows_out)
