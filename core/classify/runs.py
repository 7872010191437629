"""Classifier studies (:class:`ClassifierStudy`) as named runs (kind ``classifier-study``) in
the run store. :func:`core.classify.study.classifier_study` computes them.

A study is saved field by field as arrays (``.npy``), tables (``.parquet``) and JSON, so that
loading it back needs no unpickling. The fitted final model is saved as plain arrays when it is
an uncalibrated logistic regression (scaler mean/scale, ``coef_``, ``intercept_``,
``classes_``: prediction is a few lines of numpy); any other model is saved with ``skops.io``
and loaded only when every type in the file is on :data:`TRUSTED_MODEL_TYPES`.

The key covers the dataset (``Dataset.token``), the embedding sets, a hash of the label,
patient and metadata columns, the full config and :data:`STUDY_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.classify.evaluate import ClassifierReport, FinalModel
from core.classify.leakage import LeakageReport
from core.classify.target import Target
from core.runs import Run, RunStore, run_key

if TYPE_CHECKING:
    from core.ingest import Dataset

KIND = "classifier-study"
# Bump when what a study computes or how it is saved changes: older runs are then misses.
STUDY_VERSION = 1
LINEAR_FORMAT = "linear-arrays"
SKOPS_FORMAT = "skops"
# Types a saved model file may contain beyond those skops trusts by default. Anything else in a
# file (a file from elsewhere, or a new model kind) is refused rather than loaded.
TRUSTED_MODEL_TYPES = (
    "core.classify.models.AdaptiveCalibratedClassifier",
    "core.classify.models.BalancedMLPClassifier",
    "core.classify.models.SmallDataHistGradientBoosting",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
)


@dataclass
class ClassifierStudy:
    """report : the main (fused or image) model's ClassifierReport; comparison : one row per
    modality; fairness : per-subgroup table for the positive class (binary targets);
    leakage : text leakage report (None without text); final_model : the main model refitted
    on every usable row (None when it could not be fitted, with a note); key, created : the run
    that holds the study (empty when it was not stored); from_store : loaded, not computed."""

    report: ClassifierReport
    comparison: pd.DataFrame
    fairness: pd.DataFrame | None
    leakage: LeakageReport | None
    config: dict
    table: pd.DataFrame
    image_vectors: np.ndarray  # (n_rows, dim) raw encoder vectors (patient level: pooled)
    notes: list[str] = field(default_factory=list)
    final_model: FinalModel | None = None
    features: np.ndarray | None = None  # (n_rows, n_features) the fused matrix the models saw
    key: str = ""
    created: str = ""
    from_store: bool = False


def default_store(store: RunStore | None) -> RunStore:
    return store if store is not None else RunStore()


def _columns_hash(table: pd.DataFrame, config: Mapping[str, Any]) -> str:
    """A hash of the columns the study reads besides the vectors: target, patient, metadata."""
    target = config["target_column"]
    wanted = ([target] if isinstance(target, str) else list(target)) + ["patient_id", *config["metadata"]]
    if config["use_text"] and "text" in table:
        wanted.append("text")
    present = [c for c in dict.fromkeys(wanted) if c in table.columns]
    values = pd.util.hash_pandas_object(table[present].astype(str), index=False).to_numpy()
    return hashlib.sha256(values.tobytes() + repr(present).encode()).hexdigest()[:20]


def classifier_study_key(dataset: Dataset, table: pd.DataFrame, config: Mapping[str, Any], *,
                         embedding_keys: Mapping[str, str | None]) -> str:
    """The run key of a study: dataset token, embedding keys, a hash of the columns it reads,
    the config (:func:`core.classify.study.study_config`) and :data:`STUDY_VERSION`."""
    inputs = {"dataset": dataset.token, "embeddings": dict(embedding_keys),
              "columns": _columns_hash(table, config)}
    return run_key(KIND, inputs=inputs, config=config, version=STUDY_VERSION)


# ------------------------------------------------------------------------------- tables


def _frame_out(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A parquet-ready copy of ``frame`` plus what parquet alone would lose (object columns,
    column names that are not strings, the index)."""
    index = frame.index
    meta: dict[str, Any] = {
        "columns": [str(c) for c in frame.columns],
        "object": [str(c) for c in frame.columns if frame[c].dtype == object],
        "range_index": isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1,
        "index_name": index.name,
    }
    out = frame.copy()
    out.columns = meta["columns"]
    if not meta["range_index"]:
        out.insert(0, "__index__", index.to_numpy())
    return out.reset_index(drop=True), meta


def _frame_in(frame: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    if "__index__" in frame.columns:
        frame = frame.set_index("__index__")
        frame.index.name = meta.get("index_name")
    for column in meta.get("object", []):
        if column in frame:
            values = frame[column].astype(object)
            frame[column] = values.where(values.notna(), None)
    return frame


def _optional_float(value: Any) -> float:
    return math.nan if value is None else float(value)


# ------------------------------------------------------------------------------- model


class LinearProbabilityModel:
    """A fitted logistic regression (after standardisation) rebuilt from plain arrays.

    mean, scale : ndarray (n_features,); coef : (1, n_features) binary or (n_classes,
    n_features); intercept : (1,) or (n_classes,); classes_ : the class codes. predict_proba
    computes what scikit-learn's pipeline did: the sigmoid of the decision value for a binary
    model, the softmax of the decision values otherwise.
    """

    def __init__(self, *, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray,
                 classes: np.ndarray) -> None:
        self.mean, self.scale = np.asarray(mean, float), np.asarray(scale, float)
        self.coef_, self.intercept_ = np.asarray(coef, float), np.asarray(intercept, float)
        self.classes_ = np.asarray(classes)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        scores = ((np.asarray(X, float) - self.mean) / self.scale) @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = 1.0 / (1.0 + np.exp(-scores))
            return np.column_stack([1.0 - positive, positive])
        scores = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)


def _linear_parts(estimator: Any) -> dict[str, np.ndarray] | None:
    """The arrays of a scaler + plain LogisticRegression pipeline, else None."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    steps = getattr(estimator, "named_steps", {})
    scaler, model = steps.get("scale"), steps.get("model")
    if not (isinstance(scaler, StandardScaler) and type(model) is LogisticRegression):
        return None
    scale = scaler.scale_ if scaler.scale_ is not None else np.ones_like(scaler.mean_)
    return {"mean": scaler.mean_, "scale": scale, "coef": model.coef_, "intercept": model.intercept_,
            "classes": np.asarray(model.classes_, dtype=np.int64)}


def _model_payload(final: FinalModel) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload entries, JSON description) of a FinalModel."""
    payload: dict[str, Any] = {"model_thresholds": np.asarray(final.thresholds, float)}
    formats = []
    for j, estimator in enumerate(final.estimators):
        parts = _linear_parts(estimator)
        if parts is not None:
            formats.append(LINEAR_FORMAT)
            payload.update({f"model{j}_{name}": np.asarray(value) for name, value in parts.items()})
        else:
            import skops.io

            formats.append(SKOPS_FORMAT)
            payload[f"model{j}"] = skops.io.dumps(estimator)
    description = {"model": final.model, "kind": final.kind, "classes": list(final.classes),
                   "n_features": final.n_features, "formats": formats}
    return payload, description


def load_skops_model(data: bytes) -> Any:
    """A model saved with ``skops.io``; ValueError naming the types that are not trusted."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=data)
    refused = sorted(set(untrusted) - set(TRUSTED_MODEL_TYPES))
    if refused:
        raise ValueError(f"the saved model contains types that are not trusted: {refused}")
    return skops.io.loads(data, trusted=list(untrusted))


def _model_from_run(run: Run, description: Mapping[str, Any]) -> FinalModel:
    estimators = []
    for j, kind in enumerate(description["formats"]):
        if kind == LINEAR_FORMAT:
            parts = {name: run.load(f"model{j}_{name}") for name in ("mean", "scale", "coef", "intercept", "classes")}
            estimators.append(LinearProbabilityModel(**parts))
        elif kind == SKOPS_FORMAT:
            estimators.append(load_skops_model(run.load(f"model{j}")))
        else:
            raise ValueError(f"run {run.key}: unknown model format {kind!r}")
    return FinalModel(model=description["model"], kind=description["kind"], classes=list(description["classes"]),
                      estimators=estimators, thresholds=run.load("model_thresholds"),
                      n_features=int(description["n_features"]))


# ------------------------------------------------------------------------------- save / load


def _curves(curves: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, Any]]:
    parts = [curve.assign(__class__=name) for name, curve in curves.items() if len(curve)]
    columns = {name: [str(c) for c in curve.columns] for name, curve in curves.items()}
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"__class__": pd.Series([], dtype=str)})
    return frame, {"order": list(curves), "columns": columns}


def _curves_in(frame: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    out = {}
    for name in meta["order"]:
        part = frame[frame["__class__"] == name]
        columns = meta["columns"][name]
        out[name] = (part[columns].reset_index(drop=True) if len(part) else pd.DataFrame(columns=columns))
    return out


def study_payload(study: ClassifierStudy) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload, summary) of a study for :meth:`RunStore.save`."""
    report, target = study.report, study.report.target
    payload: dict[str, Any] = {}
    frames: dict[str, Any] = {}

    def frame(name: str, value: pd.DataFrame) -> None:
        payload[name], frames[name] = _frame_out(value)

    frame("per_class", report.per_class)
    frame("comparison", study.comparison)
    frame("table", study.table)
    if study.fairness is not None:
        frame("fairness", study.fairness)
    payload["roc"], roc_meta = _curves(report.roc)
    payload["pr"], pr_meta = _curves(report.pr)
    payload.update({
        "oof": np.asarray(report.oof, float), "folds": np.asarray(report.folds), "predictions": np.asarray(report.predictions),
        "used": np.asarray(report.used, bool), "confusion": report.confusion.to_numpy(),
        "thresholds": report.thresholds.to_numpy(dtype=float), "fold_thresholds": report.fold_thresholds.to_numpy(dtype=float),
        "target_y": np.asarray(target.y), "target_mask": np.asarray(target.mask, bool),
        "image_vectors": np.asarray(study.image_vectors),
    })
    if study.features is not None:
        payload["features"] = np.asarray(study.features)
    index = target.index
    leakage = None
    if study.leakage is not None:
        leak = study.leakage
        for name in ("terms", "per_label", "top_ngrams"):
            frame(f"leakage_{name}", getattr(leak, name))
        leakage = {"own_label_share": leak.own_label_share, "text_auc": leak.text_auc, "flagged": leak.flagged,
                   "flags": list(leak.flags), "n_rows": leak.n_rows, "n_excluded": leak.n_excluded,
                   "notes": list(leak.notes)}
    model = None
    if study.final_model is not None:
        model_payload, model = _model_payload(study.final_model)
        payload.update(model_payload)
    payload["study"] = {
        "config": study.config, "notes": list(study.notes), "frames": frames, "roc": roc_meta, "pr": pr_meta,
        "leakage": leakage, "model": model,
        "report": {"kind": report.kind, "classes": list(report.classes), "model": report.model,
                   "n_features": report.n_features, "params": report.params, "notes": list(report.notes),
                   "row_reasons": report.row_reasons.tolist(),
                   "confusion": {"index": report.confusion.index.tolist(), "index_name": report.confusion.index.name,
                                 "columns": report.confusion.columns.tolist(),
                                 "columns_name": report.confusion.columns.name},
                   "thresholds_name": report.thresholds.name,
                   "fold_thresholds_index_name": report.fold_thresholds.index.name},
        "target": {"classes": list(target.classes), "kind": target.kind, "columns": list(target.columns),
                   "reasons": target.reasons.tolist(), "positive": target.positive,
                   "uncertain_policy": target.uncertain_policy, "notes": list(target.notes),
                   "index": index.tolist(), "index_name": index.name,
                   "range_index": isinstance(index, pd.RangeIndex) and index.equals(pd.RangeIndex(len(index)))},
    }
    mean = report.per_class.set_index("class").loc["mean"]
    config = study.config
    summary = {
        "target": config.get("target_column"), "positive": config.get("positive"), "kind": report.kind,
        "model": report.model, "encoder": config.get("encoder"), "level": config.get("level"),
        "text": config.get("text"), "metadata": config.get("metadata"), "mean_auc": float(mean["auc"]),
        "n_rows": int(mean["n_rows"]),
    }
    return payload, summary


def save_study(study: ClassifierStudy, key: str, *, dataset: Dataset, store: RunStore | None = None) -> Run:
    """Save ``study`` as run ``key`` (sets ``study.key`` and ``study.created``)."""
    store = default_store(store)
    payload, summary = study_payload(study)
    config = {k: v for k, v in study.config.items() if k not in ("image_embedding", "text_embedding")}
    run = store.save(KIND, key, version=STUDY_VERSION, config=config, payload=payload,
                     inputs={"dataset": dataset.token, "image_embedding": study.config.get("image_embedding"),
                             "text_embedding": study.config.get("text_embedding")},
                     dataset=dataset.token, summary=summary)
    study.key, study.created = run.key, run.created
    return run


def study_from_run(run: Run) -> ClassifierStudy:
    """The :class:`ClassifierStudy` saved in ``run``. Raises ValueError for a run of another
    kind or a model file with untrusted types."""
    if run.kind != KIND:
        raise ValueError(f"run {run.key} is a {run.kind!r} run, not a {KIND!r} run")
    meta = run.load("study")
    frames = meta["frames"]

    def frame(name: str) -> pd.DataFrame:
        return _frame_in(run.load(name), frames[name])

    t = meta["target"]
    index = pd.RangeIndex(len(t["index"]), name=t["index_name"]) if t["range_index"] else pd.Index(t["index"], name=t["index_name"])
    target = Target(
        y=run.load("target_y"), classes=list(t["classes"]), mask=run.load("target_mask"), kind=t["kind"],
        columns=list(t["columns"]), reasons=pd.Series(t["reasons"], index=index, dtype=object), index=index,
        positive=t["positive"], uncertain_policy=t["uncertain_policy"], notes=list(t["notes"]),
    )
    r = meta["report"]
    classes = list(r["classes"])
    confusion_meta = r["confusion"]
    confusion = pd.DataFrame(
        run.load("confusion"), index=pd.Index(confusion_meta["index"], name=confusion_meta["index_name"]),
        columns=pd.Index(confusion_meta["columns"], name=confusion_meta["columns_name"]),
    )
    report = ClassifierReport(
        kind=r["kind"], classes=classes, model=r["model"], per_class=frame("per_class"), oof=run.load("oof"),
        folds=run.load("folds"), predictions=run.load("predictions"), used=run.load("used"),
        roc=_curves_in(run.load("roc"), meta["roc"]), pr=_curves_in(run.load("pr"), meta["pr"]),
        confusion=confusion,
        thresholds=pd.Series(run.load("thresholds"), index=classes, dtype=float, name=r["thresholds_name"]),
        fold_thresholds=pd.DataFrame(run.load("fold_thresholds"), columns=classes).rename_axis(r["fold_thresholds_index_name"]),
        row_reasons=pd.Series(r["row_reasons"], index=index, dtype=object), target=target,
        n_features=int(r["n_features"]), params=dict(r["params"]), notes=list(r["notes"]),
    )
    leakage = None
    if meta["leakage"] is not None:
        leak = meta["leakage"]
        leakage = LeakageReport(
            terms=frame("leakage_terms"), per_label=frame("leakage_per_label"),
            own_label_share=_optional_float(leak["own_label_share"]), text_auc=_optional_float(leak["text_auc"]),
            top_ngrams=frame("leakage_top_ngrams"), flagged=bool(leak["flagged"]), flags=list(leak["flags"]),
            n_rows=int(leak["n_rows"]), n_excluded=int(leak["n_excluded"]), notes=list(leak["notes"]),
        )
    final_model = _model_from_run(run, meta["model"]) if meta["model"] is not None else None
    return ClassifierStudy(
        report=report, comparison=frame("comparison"), fairness=frame("fairness") if run.has("fairness") else None,
        leakage=leakage, config=dict(meta["config"]), table=frame("table"), image_vectors=run.load("image_vectors"),
        notes=list(meta["notes"]), final_model=final_model, features=run.get("features"),
        key=run.key, created=run.created, from_store=True,
    )


def load_study(key: str, *, store: RunStore | None = None) -> ClassifierStudy | None:
    """The saved study ``key`` (None when absent or written by another study version)."""
    run = default_store(store).load(KIND, key, version=STUDY_VERSION)
    return None if run is None else study_from_run(run)


def study_runs(dataset: Dataset | None = None, *, store: RunStore | None = None, binary_only: bool = False) -> list[Run]:
    """Saved studies of this code version, newest first: of ``dataset`` (every dataset when
    None), binary ones only when ``binary_only``. Cheap: reads only each run's record."""
    token = None if dataset is None else dataset.token
    found = [run for run in default_store(store).runs(kind=KIND, dataset=token) if run.version == str(STUDY_VERSION)]
    if binary_only:
        found = [run for run in found if run.summary.get("kind") == "binary"]
    return found


def find_run(dataset: Dataset, config: Mapping[str, Any], *, store: RunStore | None = None) -> Run | None:
    """The newest saved study of ``dataset`` whose config equals ``config`` (from
    :func:`core.classify.study.study_config`), without embedding anything: what the app offers
    to reuse."""
    wanted = json.loads(json.dumps(dict(config)))  # as the run record holds it: lists, not tuples
    for run in study_runs(dataset, store=store):
        if {k: run.config.get(k) for k in wanted} == wanted:
            return run
    return None


def describe_run(run: Run) -> str:
    """"10:42 · label = 'COVID-19' · logreg on ENCODER + text + age, sex · AUC 0.81"."""
    s = run.summary
    when = run.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
    target = s.get("target")
    target_text = ", ".join(target) if isinstance(target, list) else str(target)
    if s.get("positive") is not None:
        positive = s["positive"]
        target_text += f" = '{', '.join(positive) if isinstance(positive, list) else positive}'"
    inputs = " + ".join([str(s.get("encoder")), *(["text"] if s.get("text") else []), *(s.get("metadata") or [])])
    auc = s.get("mean_auc")
    auc_text = f" · AUC {auc:.3f}" if isinstance(auc, int | float) else ""
    return f"{when} · {target_text} · {s.get('model')} on {inputs} ({s.get('level')}){auc_text}"


def run_time(run: Run) -> str:
    """The run's creation time, local, as "HH:MM" (with the date when not today)."""
    from datetime import datetime

    created = run.created_at.astimezone()
    return created.strftime("%H:%M") if created.date() == datetime.now().astimezone().date() else created.strftime("%Y-%m-%d %H:%M")

