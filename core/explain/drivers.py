"""Which metadata columns drive cluster membership.

A random forest learns to predict each row's cluster from its metadata; TreeSHAP says how
much each column moves the predicted probability of each cluster, and cross-validated
accuracy (next to the majority-cluster baseline) says how much of the clustering the metadata
explains at all. Clusters that the metadata predicts well are often site, scanner or view
effects rather than disease.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import KFold, StratifiedKFold

from core.metadata import encode_metadata, sum_by_source

DRIVER_COLUMNS = ["cluster", "column", "mean_abs_shap", "rank"]


def _cluster_labels(cluster_labels: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    labels = pd.Series(np.asarray(cluster_labels, dtype=object).ravel())
    if len(labels) != n_rows:
        raise ValueError(
            f"cluster_labels has {len(labels)} values but metadata has {n_rows} rows"
        )
    return labels.to_numpy(dtype=object), labels.notna().to_numpy()


def _splitter(labels: np.ndarray, n_splits: int, random_state: int) -> tuple[Any, int, str | None]:
    _, counts = np.unique(labels, return_counts=True)
    stratified = int(min(n_splits, counts.min()))
    if stratified >= 2:
        return StratifiedKFold(stratified, shuffle=True, random_state=random_state), stratified, None
    folds = int(min(n_splits, len(labels)))
    if folds < 2:
        return None, 0, "too few rows to cross-validate"
    note = "a cluster has a single row, so folds are not stratified"
    return KFold(folds, shuffle=True, random_state=random_state), folds, note


# Above these many labelled rows the forest is fitted (and cross-validated) on a sample, and
# its SHAP values are computed for a smaller one, each stratified by cluster: TreeSHAP of a
# 200-tree forest runs at about 100 rows/s on one core here, so 200,000 rows would take over
# half an hour; mean |SHAP| over 2,000 rows ranks the columns as well. Noted in ``attrs``.
FIT_MAX_ROWS = 20_000
SHAP_MAX_ROWS = 2_000
_SHAP_CHUNK = 250


def _stratified_rows(targets: np.ndarray, size: int, random_state: int) -> np.ndarray:
    """Sorted positions of about ``size`` of ``targets``' rows: each cluster in proportion, at
    least one row each (so every cluster stays a class of the forest)."""
    rng = np.random.default_rng(random_state)
    chosen = []
    for code in np.unique(targets):
        members = np.flatnonzero(targets == code)
        take = min(len(members), max(1, round(len(members) * size / len(targets))))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def cluster_drivers(
    metadata: pd.DataFrame,
    cluster_labels: Any,
    *,
    random_state: int = 0,
    n_estimators: int = 200,
    max_depth: int | None = 8,
    n_splits: int = 5,
    max_categories: int = 20,
    fit_max_rows: int | None = FIT_MAX_ROWS,
    shap_max_rows: int | None = SHAP_MAX_ROWS,
    progress: Callable[[float, str], None] | None = None,
) -> pd.DataFrame:
    """Mean |SHAP| of each metadata column for each cluster.

    metadata : DataFrame of shape (n_rows, n_columns); numbers are median-imputed (with a
        missing flag), text one-hot encoded, identifier-like columns skipped (reported).
    cluster_labels : array-like of shape (n_rows,); noise labels such as -1 are a cluster
        like any other; missing labels (None/NaN: rows never clustered) are not used.

    Returns a DataFrame with columns ``cluster, column, mean_abs_shap, rank``: for each
    cluster, how far each metadata column moves the predicted probability of that cluster,
    averaged over all labelled rows (one-hot parts summed back into their column), ranked
    1 = strongest within the cluster. ``.attrs`` holds ``cv_accuracy`` (mean over folds),
    ``cv_accuracy_std``, ``baseline_accuracy`` (share of the largest cluster), ``n_splits``,
    ``n_rows_used``, ``n_rows_unlabelled``, ``skipped_columns`` ({column: reason}) and
    ``notes``; ``cv_accuracy`` is NaN when there are too few rows to cross-validate.

    fit_max_rows, shap_max_rows : above ``fit_max_rows`` labelled rows the forest is fitted
        and cross-validated on a sample of that many, and SHAP values are averaged over a
        sample of ``shap_max_rows`` of those (both stratified by cluster, seeded by
        ``random_state``; None: every row); ``notes`` say so and ``n_rows_used`` /
        ``n_rows_shap`` count the rows.
    progress : optional ``progress(fraction, message)``, called after each cross-validation
        fold, the final fit and each chunk of SHAP values (for a background job's progress bar).

    Raises ValueError for mismatched lengths, fewer than two clusters, bad parameters, or
    metadata that gives no usable column.
    """
    import shap

    if not isinstance(metadata, pd.DataFrame):
        raise ValueError(f"metadata must be a pandas DataFrame, got {type(metadata).__name__}")
    if n_estimators < 1:
        raise ValueError(f"n_estimators={n_estimators} must be >= 1")
    if n_splits < 2:
        raise ValueError(f"n_splits={n_splits} must be >= 2")
    labels, labelled = _cluster_labels(cluster_labels, len(metadata))
    clusters = pd.unique(labels[labelled])
    if len(clusters) < 2:
        raise ValueError(f"need at least two clusters among labelled rows, got {list(clusters)}")
    used = metadata.loc[labelled]
    encoded = encode_metadata(used, max_categories=max_categories)
    if not encoded.feature_names:
        raise ValueError(
            f"no usable metadata columns (skipped: {encoded.skipped or 'no columns'})"
        )
    # Integer codes: cluster labels may mix types (ints and a "noise" string).
    names, all_targets = np.unique([str(label) for label in labels[labelled]], return_inverse=True)
    n_labelled = len(all_targets)
    notes: list[str] = []
    matrix, targets = encoded.matrix, all_targets
    if fit_max_rows is not None and n_labelled > fit_max_rows:
        rows = _stratified_rows(all_targets, fit_max_rows, random_state)
        matrix, targets = matrix[rows], all_targets[rows]
        notes.append(f"the forest learned from a sample of {len(rows):,} of the {n_labelled:,} rows "
                     "(stratified by cluster)")
    shap_rows = np.arange(len(targets))
    if shap_max_rows is not None and len(targets) > shap_max_rows:
        shap_rows = _stratified_rows(targets, shap_max_rows, random_state + 1)
        notes.append(f"mean |SHAP| over a sample of {len(shap_rows):,} rows (stratified by cluster)")
    forest = RandomForestClassifier(
        n_estimators=n_estimators, max_depth=max_depth, min_samples_leaf=2,
        class_weight="balanced", random_state=random_state, n_jobs=1,
    )
    splitter, folds, note = _splitter(targets, n_splits, random_state)
    if note:
        notes.append(note)
    report = progress or (lambda fraction, message: None)
    n_used = len(targets)
    report(0.02, f"{len(encoded.feature_names)} metadata features of {n_used} rows encoded")
    if splitter is not None:
        # Fold by fold (what cross_val_score does: a fresh clone per fold, accuracy on the
        # held-out rows), so that each fold can report its progress.
        scores = []
        for fold, (train, test) in enumerate(splitter.split(matrix, targets), start=1):
            model = clone(forest).fit(matrix[train], targets[train])
            scores.append(model.score(matrix[test], targets[test]))
            report(0.05 + 0.4 * fold / folds, f"cross-validation fold {fold} of {folds} done")
        cv_accuracy, cv_std = float(np.mean(scores)), float(np.std(scores))
    else:
        cv_accuracy, cv_std = float("nan"), float("nan")
    report(0.45, f"fitting the forest on {n_used} rows")
    forest.fit(matrix, targets)
    explainer = shap.TreeExplainer(forest)
    chunks = []
    for start in range(0, len(shap_rows), _SHAP_CHUNK):  # each row's SHAP values are its own
        chunk = shap_rows[start:start + _SHAP_CHUNK]
        report(0.55 + 0.4 * start / len(shap_rows), f"SHAP values of {start} of {len(shap_rows)} rows")
        chunks.append(np.asarray(explainer.shap_values(matrix[chunk]), dtype=np.float64))
    values = np.concatenate(chunks, axis=0)
    report(0.95, "SHAP values done")
    if values.ndim == 2:  # older shap: one output only when two classes
        values = np.stack([-values, values], axis=2)
    per_column, columns = sum_by_source(values, encoded.sources)
    mean_abs = np.abs(per_column).mean(axis=0)  # (n_columns, n_classes)

    try:
        ordered = sorted(clusters)
    except TypeError:
        ordered = sorted(clusters, key=str)
    class_codes = list(forest.classes_)
    name_list = list(names)
    rows = []
    for cluster in ordered:
        class_position = class_codes.index(name_list.index(str(cluster)))
        order = np.argsort(-mean_abs[:, class_position], kind="stable")
        for rank, column_position in enumerate(order, start=1):
            rows.append((cluster, columns[column_position],
                         float(mean_abs[column_position, class_position]), rank))
    table = pd.DataFrame(rows, columns=DRIVER_COLUMNS)
    _, counts = np.unique(all_targets, return_counts=True)
    table.attrs.update(
        cv_accuracy=cv_accuracy,
        cv_accuracy_std=cv_std,
        baseline_accuracy=float(counts.max() / counts.sum()),
        n_splits=folds,
        n_rows_used=n_used,
        n_rows_shap=len(shap_rows),
        n_rows_unlabelled=int((~labelled).sum()),
        skipped_columns=dict(encoded.skipped),
        notes=notes,
    )
    return table
