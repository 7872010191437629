"""The classifier registry: small, well-understood scikit-learn models for embeddings.

Every model weighs classes by inverse frequency ("balanced"), because medical cohorts are
rarely balanced and an unweighted model would learn to predict the majority label. Every
model gives probabilities (``predict_proba``): the linear SVM through calibration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

DEFAULT_MODEL = "logreg"
CALIBRATION_METHODS = ("sigmoid", "isotonic")


class BalancedMLPClassifier(MLPClassifier):
    """MLPClassifier that weighs samples by inverse class frequency when given no weights
    (MLPClassifier has no ``class_weight``)."""

    def fit(self, X, y, sample_weight=None):  # noqa: D102 - sklearn signature
        if sample_weight is None:
            sample_weight = compute_sample_weight("balanced", y)
        return super().fit(X, y, sample_weight=sample_weight)


class SmallDataHistGradientBoosting(HistGradientBoostingClassifier):
    """HistGradientBoostingClassifier that runs single-threaded on small data.

    On a few hundred rows OpenMP's thread start-up and spin-waiting cost more than the trees:
    measured on this project's 2-core machine under load, a 40-row fit took 2-9 s with
    threads and 0.15 s with one. Above ``SINGLE_THREAD_MAX_ROWS`` rows threads pay off again.
    """

    SINGLE_THREAD_MAX_ROWS = 20_000

    def _limits(self, n_rows: int):
        if n_rows > self.SINGLE_THREAD_MAX_ROWS:
            return contextlib.nullcontext()
        return threadpool_limits(limits=1, user_api="openmp")

    def fit(self, X, y, sample_weight=None):  # noqa: D102 - sklearn signature
        with self._limits(len(X)):
            return super().fit(X, y, sample_weight=sample_weight)

    def predict_proba(self, X):  # noqa: D102 - sklearn signature
        with self._limits(len(X)):
            return super().predict_proba(X)

    def predict(self, X):  # noqa: D102 - sklearn signature
        with self._limits(len(X)):
            return super().predict(X)

    def decision_function(self, X):  # noqa: D102 - sklearn signature
        with self._limits(len(X)):
            return super().decision_function(X)


class AdaptiveCalibratedClassifier(ClassifierMixin, BaseEstimator):
    """``CalibratedClassifierCV`` whose inner fold count shrinks to the rarest class.

    Inside grouped cross-validation a rare class may have only two or three training rows;
    a fixed ``cv=3`` would then fail. With fewer than two rows of some class no calibration is
    possible: the estimator is fitted as is and its own probabilities are used (for an estimator
    without ``predict_proba``, a logistic/softmax of its decision function); ``calibrated_``
    records which happened.
    """

    def __init__(self, estimator, *, method: str = "sigmoid", max_folds: int = 3, random_state: int = 0):
        self.estimator = estimator
        self.method = method
        self.max_folds = max_folds
        self.random_state = random_state

    def fit(self, X, y):
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration method={self.method!r} is not valid; use one of {list(CALIBRATION_METHODS)}"
            )
        self.classes_, counts = np.unique(y, return_counts=True)
        folds = int(min(self.max_folds, counts.min()))
        if folds >= 2:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
            self.fitted_ = CalibratedClassifierCV(clone(self.estimator), method=self.method, cv=splitter)
            self.calibrated_ = True
        else:
            self.fitted_ = clone(self.estimator)
            self.calibrated_ = False
        self.fitted_.fit(X, y)
        return self

    def predict_proba(self, X) -> np.ndarray:
        if hasattr(self.fitted_, "predict_proba"):
            return self.fitted_.predict_proba(X)
        decision = np.asarray(self.fitted_.decision_function(X), float)
        if decision.ndim == 1:
            positive = 1.0 / (1.0 + np.exp(-decision))
            return np.column_stack([1.0 - positive, positive])
        decision = decision - decision.max(axis=1, keepdims=True)
        exp = np.exp(decision)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry: ``build(random_state)`` returns an unfitted estimator with
    ``predict_proba``; ``scaled`` says whether features are standardised first."""

    name: str
    description: str
    scaled: bool
    build: Callable[[int], BaseEstimator]


def _logreg(random_state: int) -> BaseEstimator:
    return LogisticRegression(class_weight="balanced", max_iter=2000, random_state=random_state)


def _linear_svm(random_state: int) -> BaseEstimator:
    svm = LinearSVC(class_weight="balanced", C=0.1, max_iter=5000, random_state=random_state)
    return AdaptiveCalibratedClassifier(svm, random_state=random_state)


def _mlp(random_state: int) -> BaseEstimator:
    return BalancedMLPClassifier(
        hidden_layer_sizes=(64,), alpha=1e-3, max_iter=1000, random_state=random_state
    )


def _gbm(random_state: int) -> BaseEstimator:
    return SmallDataHistGradientBoosting(
        class_weight="balanced", max_iter=100, learning_rate=0.1, random_state=random_state
    )


MODELS: dict[str, ModelSpec] = {
    "logreg": ModelSpec(
        "logreg", "Logistic regression (L2, balanced class weights) on standardised features",
        True, _logreg,
    ),
    "linear-svm": ModelSpec(
        "linear-svm", "Linear SVM (balanced, C=0.1) with sigmoid calibration for probabilities",
        True, _linear_svm,
    ),
    "mlp": ModelSpec(
        "mlp", "One hidden layer of 64 units (L2 1e-3), samples weighted by inverse class frequency",
        True, _mlp,
    ),
    "gbm": ModelSpec(
        "gbm", "Histogram gradient boosting (100 trees, balanced class weights); no scaling needed",
        False, _gbm,
    ),
}


def make_model(
    name: str = DEFAULT_MODEL,
    *,
    calibrate: bool = False,
    calibration_method: str = "sigmoid",
    random_state: int = 0,
) -> Pipeline:
    """An unfitted pipeline for registry model ``name``: StandardScaler (where the model needs
    it) then the classifier, optionally wrapped in probability calibration.

    Raises ValueError for an unknown ``name`` (listing the valid names) or calibration method.
    The linear SVM is always calibrated; ``calibrate=True`` does not wrap it twice.
    """
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not a known model; valid models: {list(MODELS)}")
    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(
            f"calibration_method={calibration_method!r} is not valid; use one of {list(CALIBRATION_METHODS)}"
        )
    spec = MODELS[name]
    classifier = spec.build(random_state)
    if isinstance(classifier, AdaptiveCalibratedClassifier):
        classifier.set_params(method=calibration_method)
    elif calibrate:
        classifier = AdaptiveCalibratedClassifier(
            classifier, method=calibration_method, random_state=random_state
        )
    steps = [("scale", StandardScaler())] if spec.scaled else []
    return Pipeline([*steps, ("model", classifier)])
