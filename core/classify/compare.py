"""What each modality adds: the same classifier, folds and rows on each feature block alone
and on all blocks together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.classify.evaluate import as_matrix, evaluate, restrict_rows
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
        table = report.per_class.set_index("class")
        mean = table.loc["mean"]
        row = {
            "modality": name, "n_features": X.shape[1], "n_rows": int(mean["n_rows"]),
            "mean_auc": mean["auc"], "auc_lo": mean["auc_lo"], "auc_hi": mean["auc_hi"],
            "mean_f1": mean["f1"], "f1_lo": mean["f1_lo"], "f1_hi": mean["f1_hi"],
            "accuracy": mean["accuracy"],
        }
        row.update({f"auc:{c}": table.loc[c, "auc"] for c in report.classes})
        rows.append(row)
    result = pd.DataFrame(rows).sort_values("mean_auc", ascending=False, kind="stable")
    result["rank"] = np.arange(1, len(result) + 1)
    return result.reset_index(drop=True)
