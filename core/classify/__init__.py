"""Classifiers on feature matrices (embeddings, text, metadata) with patient-grouped CV.

- :mod:`core.classify.target`: label column(s) -> :class:`Target` (binary, multi-class,
  CheXpert multi-label with an uncertainty policy).
- :mod:`core.classify.models`: the model registry (:data:`MODELS`, :func:`make_model`).
- :mod:`core.classify.evaluate`: :func:`evaluate` -> :class:`ClassifierReport` (out-of-fold
  probabilities, per-class metrics with patient-bootstrap CIs, curves, thresholds).
- :mod:`core.classify.compare`: :func:`compare_modalities` (what each feature block adds).
- :mod:`core.classify.leakage`: :func:`detect_text_leakage`, :func:`mask_label_words`.
- :mod:`core.classify.study`: :func:`classifier_study` (a whole study on a dataset, computed
  or loaded from the run store).
- :mod:`core.classify.runs`: saving and loading studies as runs of kind ``classifier-study``.
"""

from __future__ import annotations

from core.classify.compare import compare_modalities
from core.classify.evaluate import ClassifierReport, FinalModel, evaluate, restrict_rows
from core.classify.leakage import (
    LABEL_SYNONYMS,
    MASK_TOKEN,
    LeakageReport,
    detect_text_leakage,
    label_terms,
    mask_label_words,
)
from core.classify.metrics import bootstrap_weights, choose_threshold, weighted_auc
from core.classify.models import DEFAULT_MODEL, MODELS, ModelSpec, make_model
from core.classify.target import UNCERTAIN_POLICIES, Target, merge_rare_classes, prepare_target

__all__ = [
    "DEFAULT_MODEL",
    "LABEL_SYNONYMS",
    "MASK_TOKEN",
    "MODELS",
    "UNCERTAIN_POLICIES",
    "ClassifierReport",
    "FinalModel",
    "LeakageReport",
    "ModelSpec",
    "Target",
    "bootstrap_weights",
    "choose_threshold",
    "compare_modalities",
    "detect_text_leakage",
    "evaluate",
    "label_terms",
    "make_model",
    "mask_label_words",
    "merge_rare_classes",
    "prepare_target",
    "restrict_rows",
    "weighted_auc",
]
