"""Explanations of a classifier study, as the app and ``scanatlas explain`` both ask for them.

- :func:`study_shap`: SHAP over metadata + the first 10 embedding principal components for the
  study's target; a run of kind ``explanation`` keyed by the study's run.
- :func:`gradcam_head`: the linear head (balanced logistic regression on the raw encoder
  vectors) that Grad-CAM explains, trained once per study and kept as a small run of arrays
  (kind ``gradcam-head``).
- :func:`study_gradcam`: the Grad-CAM heatmap of one scan towards one class, over that head.

A study that is not in the run store (``study.key == ""``) is explained without storing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.explain.shap_values import ShapResult, shap_explanation
from core.runs import Run, RunStore, run_key

if TYPE_CHECKING:
    from core.classify.runs import ClassifierStudy

SHAP_KIND = "explanation"
HEAD_KIND = "gradcam-head"
SHAP_VERSION = 1
HEAD_VERSION = 1
SHAP_METADATA = ("age", "sex", "view", "modality")
SHAP_COMPONENTS = 10
MIN_HEAD_ROWS = 4


def _store(store: RunStore | None) -> RunStore:
    return store if store is not None else RunStore()


def _class_names(study: ClassifierStudy) -> pd.Series:
    target = study.report.target
    if target.y.ndim != 1:
        raise ValueError("SHAP and Grad-CAM explain a binary or multi-class target, not a multi-label one")
    return pd.Series([target.classes[v] if v >= 0 else None for v in target.y], dtype=object)


def shap_metadata(study: ClassifierStudy) -> pd.DataFrame:
    """The metadata columns SHAP explains: age, sex, view and modality where they vary."""
    table = study.table.reset_index(drop=True)
    return table[[c for c in SHAP_METADATA if c in table and table[c].nunique() > 1]]


# ------------------------------------------------------------------------------- SHAP


def _shap_payload(result: ShapResult) -> dict[str, Any]:
    model = result.model
    index = result.index
    payload: dict[str, Any] = {
        "values": result.values, "base_values": result.base_values, "output_values": result.output_values,
        "data": result.data, "explained": np.asarray(result.explained, bool),
        "explained_variance_ratio": result.explained_variance_ratio,
        "feature_mean": np.asarray(result.feature_mean, float), "feature_scale": np.asarray(result.feature_scale, float),
        "model_coef": np.asarray(model.coef_, float), "model_intercept": np.asarray(model.intercept_, float),
    }
    payload["shap"] = {
        "output": result.output, "feature_names": list(result.feature_names), "sources": list(result.sources),
        "classes": np.asarray(result.classes).tolist(), "index": index.tolist(), "index_name": index.name,
        "range_index": isinstance(index, pd.RangeIndex) and index.equals(pd.RangeIndex(len(index))),
        "reasons": list(result.reasons), "skipped_columns": dict(result.skipped_columns),
        "explainer_name": result.explainer_name,
    }
    return payload


def _shap_from_run(run: Run) -> ShapResult:
    from core.classify.runs import LinearProbabilityModel

    meta = run.load("shap")
    classes = np.asarray(meta["classes"])
    n = len(meta["index"])
    index = pd.RangeIndex(n, name=meta["index_name"]) if meta["range_index"] else pd.Index(meta["index"], name=meta["index_name"])
    coef = run.load("model_coef")
    model = LinearProbabilityModel(mean=np.zeros(coef.shape[1]), scale=np.ones(coef.shape[1]), coef=coef,
                                   intercept=run.load("model_intercept"), classes=classes)
    return ShapResult(
        values=run.load("values"), base_values=run.load("base_values"), output_values=run.load("output_values"),
        output=meta["output"], feature_names=list(meta["feature_names"]), data=run.load("data"),
        sources=list(meta["sources"]), classes=classes, index=index, explained=run.load("explained"),
        reasons=list(meta["reasons"]), explained_variance_ratio=run.load("explained_variance_ratio"),
        skipped_columns=dict(meta["skipped_columns"]), model=model, feature_mean=run.load("feature_mean"),
        feature_scale=run.load("feature_scale"), explainer_name=meta["explainer_name"],
    )


def study_shap(study: ClassifierStudy, *, store: RunStore | None = None) -> ShapResult:
    """SHAP of a balanced logistic model on :func:`shap_metadata` + the first 10 principal
    components of the study's image vectors, towards the study's target classes; computed once
    per study and then loaded from the run store.

    Returns a :class:`ShapResult` whose rows align with ``study.table``. Its ``model`` is the
    logistic model rebuilt from its arrays (``coef_``, ``intercept_``, ``classes_``).
    Raises ValueError for a multi-label study or too few labelled rows (from
    :func:`core.explain.shap_explanation`).
    """
    y = _class_names(study)
    metadata = shap_metadata(study)
    components = min(SHAP_COMPONENTS, int(np.isfinite(study.image_vectors).all(axis=1).sum()), study.image_vectors.shape[1])
    config = {"method": "shap", "metadata": list(metadata.columns), "n_components": components, "model": "logreg"}

    def compute() -> ShapResult:
        return shap_explanation(metadata, study.image_vectors, y, n_components=components)

    if not study.key:
        return compute()
    store = _store(store)
    key = run_key(SHAP_KIND, inputs={"study": study.key}, config=config, version=SHAP_VERSION)
    run = store.load(SHAP_KIND, key, version=SHAP_VERSION)
    if run is None:
        result = compute()
        run = store.save(SHAP_KIND, key, version=SHAP_VERSION, config=config, payload=_shap_payload(result),
                         inputs={"study": study.key}, dataset=_dataset_of(study, store),
                         summary={"method": "shap", "study": study.key, "explainer": result.explainer_name})
    # Computed or loaded, the caller gets what the store holds (the model rebuilt from arrays).
    return _shap_from_run(run)


def _dataset_of(study: ClassifierStudy, store: RunStore) -> str | None:
    from core.classify.runs import KIND

    run = store.load(KIND, study.key) if study.key else None
    return None if run is None else run.dataset


# ------------------------------------------------------------------------------- Grad-CAM


@dataclass
class GradcamHead:
    """A linear head on raw encoder vectors: weights (n_rows, dim) with n_rows = 1 for a binary
    head (scikit-learn's convention), bias (n_rows,), classes : the target class codes it
    scores, class_names : their names, encoder : the encoder whose vectors it reads."""

    weights: np.ndarray
    bias: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    encoder: str
    key: str = ""


def gradcam_head(study: ClassifierStudy, *, store: RunStore | None = None) -> GradcamHead | None:
    """The Grad-CAM head of ``study``: a balanced logistic regression on ``study.image_vectors``
    (the encoder's own vectors, as Grad-CAM needs) for the study's target classes, trained once
    and kept in the run store. None for a multi-label target or when fewer than 4 labelled rows
    with vectors, or fewer than two classes, are usable."""
    target = study.report.target
    vectors = np.asarray(study.image_vectors, float)
    if target.y.ndim != 1:
        return None
    usable = (target.y >= 0) & np.isfinite(vectors).all(axis=1)
    if usable.sum() < MIN_HEAD_ROWS or len(set(target.y[usable].tolist())) < 2:
        return None
    encoder = study.config["encoder"]
    config = {"model": "logreg", "class_weight": "balanced", "max_iter": 2000}

    def compute() -> dict[str, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        head = LogisticRegression(max_iter=2000, class_weight="balanced").fit(vectors[usable], target.y[usable])
        return {"weights": head.coef_, "bias": head.intercept_, "classes": np.asarray(head.classes_, np.int64)}

    def build(parts: dict[str, np.ndarray], key: str = "") -> GradcamHead:
        classes = np.asarray(parts["classes"], np.int64)
        return GradcamHead(np.asarray(parts["weights"]), np.asarray(parts["bias"]), classes,
                           [target.classes[c] for c in classes], encoder, key)

    if not study.key:
        return build(compute())
    store = _store(store)
    key = run_key(HEAD_KIND, inputs={"study": study.key}, config=config, version=HEAD_VERSION)
    run, _ = store.compute_or_load(
        HEAD_KIND, key, version=HEAD_VERSION, compute=lambda: (compute(), {"study": study.key, "encoder": encoder}),
        config=config, inputs={"study": study.key}, dataset=_dataset_of(study, store),
    )
    return build({name: run.load(name) for name in ("weights", "bias", "classes")}, run.key)


def study_gradcam(study: ClassifierStudy, path: str, frame: int, class_index: int | None = None, *,
                  store: RunStore | None = None, device: str = "auto") -> tuple[np.ndarray, np.ndarray] | None:
    """(scan, overlay) for one scan of the study's dataset: Grad-CAM of the study's encoder +
    :func:`gradcam_head` towards target class ``class_index`` (default: the last class, a
    binary target's positive class).

    scan : ndarray (H, W) or (H, W, 3) float32 in [0, 1]; overlay : (H, W, 3) uint8.
    Returns None when the study has no head (see :func:`gradcam_head`) or the head never saw
    ``class_index``. Raises ValueError for an encoder without conv layers (listing those that
    have them) and :class:`core.pixels.PixelError` for a scan that cannot be read.
    """
    from core.explain.gradcam import gradcam_heatmap, overlay_heatmap
    from core.pixels import load_pixels

    head = gradcam_head(study, store=store)
    if head is None:
        return None
    wanted = len(study.report.target.classes) - 1 if class_index is None else int(class_index)
    if wanted not in head.classes:
        return None
    image = load_pixels(path, int(frame))
    heat = gradcam_heatmap(image, head.encoder, head.weights, head.bias, list(head.classes).index(wanted), device=device)
    return image, overlay_heatmap(image, heat)
