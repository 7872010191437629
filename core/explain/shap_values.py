"""SHAP values for a classifier over metadata columns and embedding principal components.

The classifier sees standardised features; SHAP values do not depend on that choice of units
(each feature's attribution is its own contribution to the output), so ``ShapResult.data``
keeps the original values (years, 0/1 flags, PC scores) for display.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from core.metadata import encode_metadata

EMBEDDING_SOURCE = "embedding"
MODEL_AGNOSTIC_BACKGROUND = 50


@dataclass
class ShapResult:
    """SHAP values for every row, aligned with the input rows.

    values : ndarray of shape (n_rows, n_features) for a binary model (attributions towards
        ``classes[1]``), or (n_rows, n_features, n_classes) for a multi-class model.
        NaN in rows that could not be explained (see ``reasons``).
    base_values : ndarray of shape (n_rows,) or (n_rows, n_classes): the expected output over
        the background sample. ``values.sum(axis=1) + base_values == output_values``.
    output_values : the model output being explained, same shape as ``base_values``.
    output : the units of that output: "log-odds" (logistic regression), "margin" (other
        linear models' decision function) or "probability" (model-agnostic explainer).
    feature_names : n_features names: metadata features, then "PC1".."PCk".
    data : ndarray of shape (n_rows, n_features), the feature values in original units
        (metadata after median imputation; PC scores). NaN where a row has no embedding.
    sources : the metadata column (or "embedding") each feature came from.
    classes : the model's class labels. index : the row ids (the metadata index).
    explained : bool ndarray (n_rows,). reasons : why each unexplained row was not (else None).
    explained_variance_ratio : ndarray (n_components,) for the PCs.
    skipped_columns : {metadata column: reason} for columns that gave no features.
    model : the fitted classifier; it takes ``model_input()`` (standardised features).
    """

    values: np.ndarray
    base_values: np.ndarray
    output_values: np.ndarray
    output: str
    feature_names: list[str]
    data: np.ndarray
    sources: list[str]
    classes: np.ndarray
    index: pd.Index
    explained: np.ndarray
    reasons: list[str | None]
    explained_variance_ratio: np.ndarray
    skipped_columns: dict[str, str] = field(default_factory=dict)
    model: Any = None
    feature_mean: np.ndarray | None = None
    feature_scale: np.ndarray | None = None
    explainer_name: str = ""

    def model_input(self) -> np.ndarray:
        """The standardised features the model was fitted on and explained with:
        ndarray of shape (n_rows, n_features), ``(data - feature_mean) / feature_scale``."""
        assert self.feature_mean is not None and self.feature_scale is not None
        return (self.data - self.feature_mean) / self.feature_scale

    @property
    def is_binary(self) -> bool:
        return self.values.ndim == 2

    def class_values(self, class_label: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values (n, f), base_values (n,), output_values (n,)) towards one class.

        class_label : one of ``classes``; default ``classes[1]`` for a binary model and
        ``classes[0]`` otherwise. For a binary model the other class is the mirror image
        (negated log-odds, or one minus the probability). Raises ValueError for an unknown label.
        """
        if class_label is None:
            position = 1 if self.is_binary else 0
        else:
            matches = np.flatnonzero(self.classes == class_label)
            if matches.size == 0:
                raise ValueError(
                    f"class_label={class_label!r} is not a class; classes are {list(self.classes)}"
                )
            position = int(matches[0])
        if not self.is_binary:
            return (self.values[:, :, position], self.base_values[:, position],
                    self.output_values[:, position])
        if position == 1:
            return self.values, self.base_values, self.output_values
        if self.output == "probability":
            return -self.values, 1.0 - self.base_values, 1.0 - self.output_values
        return -self.values, -self.base_values, -self.output_values

    def mean_abs(self, class_label: Any = None) -> pd.Series:
        """Mean |SHAP| per feature over the explained rows, largest first."""
        values, _, _ = self.class_values(class_label)
        means = np.nanmean(np.abs(values[self.explained]), axis=0)
        return pd.Series(means, index=self.feature_names, name="mean_abs_shap").sort_values(
            ascending=False)


def _labels(y: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    labels = pd.Series(np.asarray(y, dtype=object).ravel() if not isinstance(y, pd.Series)
                       else y.to_numpy(dtype=object))
    if len(labels) != n_rows:
        raise ValueError(f"y has {len(labels)} values but there are {n_rows} rows")
    known = labels.notna().to_numpy()
    return labels.to_numpy(dtype=object), known


def _embedding_matrix(embeddings: Any, n_rows: int, n_components: int) -> np.ndarray | None:
    if embeddings is None:
        if n_components:
            raise ValueError(f"n_components={n_components} needs embeddings; got None")
        return None
    matrix = np.asarray(embeddings, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != n_rows:
        raise ValueError(
            f"embeddings must have shape (n_rows={n_rows}, dim), got {matrix.shape}"
        )
    return matrix


def _make_model(model: Any, random_state: int) -> BaseEstimator:
    if model is None:
        return LogisticRegression(class_weight="balanced", max_iter=2000, random_state=random_state)
    if isinstance(model, str):
        from core.classify.models import MODELS

        if model not in MODELS:
            raise ValueError(f"model={model!r} is not a known model; valid models: {list(MODELS)}")
        return MODELS[model].build(random_state)
    if not (hasattr(model, "fit") and (hasattr(model, "predict_proba")
                                       or hasattr(model, "decision_function"))):
        raise ValueError(
            f"model must be None, a model name or an unfitted scikit-learn classifier, got "
            f"{type(model).__name__}"
        )
    return clone(model)


def _is_linear(model: Any) -> bool:
    """A fitted model whose decision function is ``X @ coef_.T + intercept_``."""
    return all(hasattr(model, name) for name in ("coef_", "intercept_", "decision_function"))


def _tree_explainer(estimator: Any) -> Any:
    """shap's TreeExplainer for a tree model it supports, else None."""
    import shap

    if not hasattr(estimator, "estimators_") and not hasattr(estimator, "_predictors"):
        return None
    try:
        return shap.TreeExplainer(estimator)
    except Exception:  # shap.utils._exceptions.InvalidModelError and kin: not a tree it reads
        return None


def _explain(
    estimator: Any, background: np.ndarray, rows: np.ndarray, random_state: int
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(values, base_values, output units, explainer name) for ``rows`` of model input."""
    import shap

    if _is_linear(estimator):
        masker = shap.maskers.Independent(background, max_samples=len(background))
        explanation = shap.LinearExplainer(estimator, masker)(rows)
        output = "log-odds" if isinstance(estimator, LogisticRegression) else "margin"
        return (np.asarray(explanation.values, dtype=np.float64),
                np.asarray(explanation.base_values, dtype=np.float64), output, "LinearExplainer")
    tree = _tree_explainer(estimator)
    if tree is not None:
        # Path-dependent TreeSHAP: exact and fast, no background needed. Boosted trees
        # explain their log-odds (decision_function), forests their probabilities.
        explanation = tree(rows, check_additivity=False)
        output = "log-odds" if hasattr(estimator, "decision_function") else "probability"
        return (np.asarray(explanation.values, dtype=np.float64),
                np.asarray(explanation.base_values, dtype=np.float64), output, "TreeExplainer")
    if not hasattr(estimator, "predict_proba"):
        raise ValueError(
            f"{type(estimator).__name__} is neither linear nor a tree model shap can read, and "
            "has no predict_proba for the model-agnostic explainer"
        )
    # Model-agnostic: every row costs ~max_evals x background model evaluations, so the
    # background is kept small.
    small = background[: min(len(background), MODEL_AGNOSTIC_BACKGROUND)]
    masker = shap.maskers.Independent(small, max_samples=len(small))
    explainer = shap.PermutationExplainer(estimator.predict_proba, masker, seed=random_state)
    explanation = explainer(rows, max_evals=max(500, 2 * rows.shape[1] + 1), silent=True)
    return (np.asarray(explanation.values, dtype=np.float64),
            np.asarray(explanation.base_values, dtype=np.float64), "probability",
            "PermutationExplainer")


def shap_explanation(
    X_meta: pd.DataFrame | None,
    embeddings: np.ndarray | None,
    y: Any,
    *,
    n_components: int = 10,
    model: Any = None,
    background: int = 100,
    random_state: int = 0,
) -> ShapResult:
    """Fit a classifier on metadata + embedding PCs and explain every row with SHAP.

    X_meta : DataFrame of shape (n_rows, n_columns) or None. Numeric columns are used as they
        are (median-imputed, plus a "<column> missing" flag where values are missing); text
        columns are one-hot encoded (see ``core.metadata.encode_metadata``).
    embeddings : ndarray of shape (n_rows, dim) or None; rows with NaN (images that failed)
        get no PCs and are reported as unexplained, never dropped.
    y : array-like of shape (n_rows,) class labels; missing labels (None/NaN) are not used
        for fitting but those rows are still explained.
    n_components : leading principal components of the embeddings used as features
        ("PC1".."PCk"); 0 for metadata only.
    model : None (balanced logistic regression), a name from ``core.classify.MODELS``, or an
        unfitted scikit-learn classifier (cloned, then fitted on the standardised features).
    background : rows sampled from the training rows as the SHAP background (reference).

    Linear models are explained exactly with ``shap.LinearExplainer`` in log-odds (margin)
    against the background; tree ensembles shap can read (gradient boosting, random forests)
    with path-dependent ``shap.TreeExplainer`` (log-odds for boosting, probability for
    forests); any other model with shap's permutation explainer over ``predict_proba`` and
    at most 50 background rows, which costs about 500 x 50 model evaluations per row.

    Raises ValueError for mismatched lengths, bad ``n_components`` / ``background``, fewer
    than two classes among the usable labelled rows, or no features at all.
    """
    if X_meta is not None and not isinstance(X_meta, pd.DataFrame):
        raise ValueError(f"X_meta must be a DataFrame or None, got {type(X_meta).__name__}")
    n_rows = len(X_meta) if X_meta is not None else len(np.asarray(y, dtype=object))
    if n_components < 0:
        raise ValueError(f"n_components={n_components} must be >= 0")
    if background < 1:
        raise ValueError(f"background={background} must be >= 1")
    labels, labelled = _labels(y, n_rows)
    vectors = _embedding_matrix(embeddings, n_rows, n_components)

    index = X_meta.index if X_meta is not None else pd.RangeIndex(n_rows)
    meta = encode_metadata(X_meta if X_meta is not None else pd.DataFrame(index=index))
    reasons: list[str | None] = [None] * n_rows
    usable = np.ones(n_rows, dtype=bool)
    pcs = np.zeros((n_rows, 0))
    variance_ratio = np.zeros(0)
    if n_components:
        assert vectors is not None
        has_vector = np.isfinite(vectors).all(axis=1)
        limit = min(int(has_vector.sum()), vectors.shape[1])
        if n_components > limit:
            raise ValueError(
                f"n_components={n_components} must be <= min(rows with embeddings="
                f"{int(has_vector.sum())}, dim={vectors.shape[1]})"
            )
        pca = PCA(n_components=n_components, random_state=random_state).fit(vectors[has_vector])
        pcs = np.full((n_rows, n_components), np.nan)
        pcs[has_vector] = pca.transform(vectors[has_vector])
        variance_ratio = pca.explained_variance_ratio_
        usable &= has_vector
        for row in np.flatnonzero(~has_vector):
            reasons[row] = "no embedding (NaN vector)"
    features = np.hstack([meta.matrix, pcs])
    names = meta.feature_names + [f"PC{i + 1}" for i in range(pcs.shape[1])]
    sources = meta.sources + [EMBEDDING_SOURCE] * pcs.shape[1]
    if not names:
        raise ValueError(
            "no features: X_meta gave none "
            f"(skipped: {meta.skipped or 'no columns'}) and n_components=0"
        )

    train = usable & labelled
    classes_seen = pd.unique(labels[train])
    if len(classes_seen) < 2:
        raise ValueError(
            f"need at least two classes among the {int(train.sum())} labelled rows with "
            f"features, got {list(classes_seen)}"
        )
    mean = features[train].mean(axis=0)
    scale = features[train].std(axis=0)
    scale[scale == 0] = 1.0
    standardised = (features - mean) / scale

    estimator = _make_model(model, random_state)
    # A plain array (int, float or str) rather than object dtype, which scikit-learn cannot
    # classify as a target type.
    estimator.fit(standardised[train], np.asarray(labels[train].tolist()))
    classes = np.asarray(estimator.classes_)

    rng = np.random.default_rng(random_state)
    train_rows = np.flatnonzero(train)
    chosen = rng.choice(train_rows, size=min(background, train_rows.size), replace=False)
    values, base, output, explainer_name = _explain(
        estimator, standardised[chosen], standardised[usable], random_state)
    if values.ndim == 3 and len(classes) == 2:
        # The two outputs of a binary model are mirror images; keep the positive class.
        values, base = values[:, :, 1], base[:, 1]

    full_values = np.full((n_rows, *values.shape[1:]), np.nan)
    full_base = np.full((n_rows, *base.shape[1:]), np.nan)
    full_values[usable] = values
    full_base[usable] = base
    output_values = full_base + full_values.sum(axis=1)
    return ShapResult(
        values=full_values,
        base_values=full_base,
        output_values=output_values,
        output=output,
        feature_names=names,
        data=features.astype(np.float64),
        sources=sources,
        classes=classes,
        index=index,
        explained=usable,
        reasons=reasons,
        explained_variance_ratio=np.asarray(variance_ratio, dtype=np.float64),
        skipped_columns=dict(meta.skipped),
        model=estimator,
        feature_mean=mean,
        feature_scale=scale,
        explainer_name=explainer_name,
    )
