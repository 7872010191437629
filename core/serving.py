"""Serve a saved classifier study: scan files in, class probabilities and similar cases out.

:func:`load_served_model` turns a ``classifier-study`` run of the run store into a
:class:`ServedModel` that predicts for new files exactly as the study's final model would have
for its own rows:

* **Same pixels and encoder.** Files are decoded by :func:`core.pixels.load_pixels` (the same
  pixel budget, DICOM LUTs, JPEG reduced-scale decode as the embedding run) and embedded by the
  encoder the study names. The encoder's cache namespace (name, version, preprocessing, weights
  fingerprint) must equal the one the study's embedding set was made under, or loading is
  refused: a model never sees vectors from another encoder version.
* **Same features.** The image block is standardised with the mean and standard deviation of
  the study's own training vectors and scaled as :func:`core.features.build_features` did; on
  load this is checked against the feature matrix the study saved (the check fails loudly
  rather than serving a model fed differently). Blocks a request cannot carry (metadata such as
  age and sex, report text) are set to their training mean, the same value training gave rows
  without them; :meth:`ServedModel.describe` says which.
* **Similar cases** are the 5 nearest training rows by cosine distance between raw encoder
  vectors, given as de-identified pseudonyms (the same salted HMAC as de-identified exports) and
  labels, never paths, file names or raw ids.

Nothing here knows about HTTP: :mod:`api.app` is the web front end.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.cache import namespace_key
from core.classify.runs import KIND, STUDY_VERSION, study_from_run
from core.dicom import FrameRangeError, PixelError
from core.ingest.budget import DEFAULT_DECODE_BUDGET_BYTES, DecodeGate
from core.pixels import DEFAULT_MAX_PIXELS, load_pixels, probe_image
from core.runs import RunStore, check_key

N_SIMILAR = 5
# Files in one request, and bytes in one request body: generous for a few studies, small enough
# that one client cannot fill the disk or the memory of the server.
DEFAULT_MAX_FILES = 16
DEFAULT_MAX_REQUEST_BYTES = 64 * 1024**2
# How far the rebuilt image block may stray from the saved feature matrix (float32 rounding).
_FEATURE_TOLERANCE = 1e-3

# PixelError statuses -> what they mean for a client: the file is not an image we read (415),
# it is too big to decode (413), or it is an image we could not decode (422).
UNSUPPORTED = frozenset({"not_an_image", "empty_file", "unsupported_transfer_syntax"})
TOO_LARGE = frozenset({"too_large", "over_pixel_budget", "too_many_frames"})


class UnusableFileError(ValueError):
    """An uploaded file that cannot be predicted on: ``file`` (the name the client gave),
    ``status`` (a :data:`core.dicom.PIXEL_STATUSES` code) and ``reason`` (no server paths)."""

    def __init__(self, file: str, status: str, reason: str) -> None:
        self.file, self.status, self.reason = file, status, reason
        super().__init__(f"{file}: {reason}")

    @property
    def http_status(self) -> int:
        if self.status in UNSUPPORTED:
            return 415
        if self.status in TOO_LARGE:
            return 413
        return 422


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass
class ImageBlock:
    """How the study scaled raw encoder vectors into the image block of its feature matrix.

    mean, std : ndarray (dim,) over the training rows that had a vector; scale : sqrt(weight /
    n_varying); varying : columns with std > 0 (the others are 0 in the block).
    """

    mean: np.ndarray
    std: np.ndarray
    varying: np.ndarray
    scale: float

    @classmethod
    def from_training(cls, vectors: np.ndarray, weight: float = 1.0) -> ImageBlock:
        """As ``core.features._weighted_block`` computes it for ``vectors`` (n_rows, dim)."""
        values = np.asarray(vectors, dtype=np.float64)
        present = values[np.isfinite(values).all(axis=1)]
        if not len(present):
            raise ValueError("the study has no training row with an image vector")
        mean, std = present.mean(axis=0), present.std(axis=0)
        varying = std > 0
        n_varying = int(varying.sum())
        if not n_varying:
            raise ValueError("every image feature of the study is constant")
        return cls(mean=mean, std=std, varying=varying, scale=float(np.sqrt(weight / n_varying)))

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """vectors : (n, dim) raw encoder vectors -> (n, dim) image-block features."""
        values = np.asarray(vectors, dtype=np.float64)
        out = np.zeros_like(values)
        out[:, self.varying] = (values[:, self.varying] - self.mean[self.varying]) / self.std[self.varying] * self.scale
        return out


@dataclass
class Prediction:
    """One file's answer: probabilities per class, the decision at the saved threshold(s) and
    the most similar training cases."""

    file: str
    probabilities: dict[str, float]
    decision: Any  # class name (binary / multi-class) or {label: 0/1} (multi-label)
    similar: list[dict[str, Any]]
    rows: int
    columns: int
    n_frames: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "probabilities": self.probabilities, "decision": self.decision,
                "similar_cases": self.similar,
                "image": {"rows": self.rows, "columns": self.columns, "n_frames": self.n_frames},
                "notes": self.notes}


class ServedModel:
    """A saved classifier study, loaded for prediction. Thread-safe: the forward pass is
    serialised (one model, one device); decoding runs in parallel within a shared byte budget
    (``decode_budget_bytes``, as ingest's), so many large images at once cannot exhaust memory."""

    def __init__(self, *, run: Any, study: Any, encoder: Any, image_block: ImageBlock, n_image: int,
                 filled_blocks: list[str], similar: Any, neighbour_table: pd.DataFrame,
                 max_pixels: int = DEFAULT_MAX_PIXELS,
                 decode_budget_bytes: int = DEFAULT_DECODE_BUDGET_BYTES) -> None:
        self.run = run
        self.study = study
        self.encoder = encoder
        self.image_block = image_block
        self.n_image = n_image
        self.filled_blocks = filled_blocks
        self.similar = similar
        self.neighbour_table = neighbour_table
        self.max_pixels = max_pixels
        self._gate = DecodeGate(decode_budget_bytes)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ describing
    @property
    def key(self) -> str:
        return self.run.key

    @property
    def classes(self) -> list[str]:
        return list(self.study.final_model.classes)

    def thresholds(self) -> dict[str, float | None]:
        """The saved decision threshold per class (None: the class of highest probability)."""
        return {name: _finite(value) for name, value in zip(self.classes, self.study.final_model.thresholds, strict=True)}

    def describe(self) -> dict[str, Any]:
        """What ``GET /models`` shows: the run, encoder, target, classes, training data and
        cross-validated metrics with their 95% intervals. No paths, no patient ids."""
        study, config = self.study, self.study.config
        report = study.report
        target = report.target
        usable = target.mask if target.mask.ndim == 1 else target.mask.all(axis=1)
        table = study.table
        n_patients = int(table.loc[np.asarray(usable), "patient_id"].nunique()) if "patient_id" in table else None
        counts = target.counts() if hasattr(target, "counts") else None
        metrics = []
        for row in report.per_class.to_dict("records"):
            entry = {"class": str(row["class"]), "n_rows": int(row["n_rows"]) if _finite(row.get("n_rows")) is not None else None,
                     "support": _finite(row.get("support"))}
            for metric in ("auc", "accuracy", "precision", "recall", "f1"):
                entry[metric] = {"value": _finite(row.get(metric)), "ci_low": _finite(row.get(f"{metric}_lo")),
                                 "ci_high": _finite(row.get(f"{metric}_hi"))}
            metrics.append(entry)
        from core.classify.runs import describe_run

        return {
            "key": self.key,
            "name": describe_run(self.run),
            "created": self.run.created,
            "model": report.model,
            "kind": report.kind,
            "encoder": {"name": self.encoder.spec.name, "version": self.encoder.spec.version,
                        "dim": int(self.encoder.spec.dim), "device": str(self.encoder.device)},
            "target": {"column": config.get("target_column"), "positive": config.get("positive"),
                       "level": config.get("level")},
            "classes": self.classes,
            "thresholds": self.thresholds(),
            "inputs": {"image": True, "filled_with_training_mean": list(self.filled_blocks)},
            "training_data": {
                "dataset": str(config.get("dataset") or ""),
                "n_rows": int(np.asarray(usable).sum()),
                "n_patients": n_patients,
                "class_counts": {str(k): int(v) for k, v in (counts.items() if counts is not None else [])},
            },
            "cross_validation": {"n_splits": config.get("n_splits"), "n_bootstrap": config.get("n_bootstrap"),
                                 "interval": "95% patient bootstrap", "metrics": metrics},
        }

    # ------------------------------------------------------------------ predicting
    def prepare(self, path: str | os.PathLike[str], file: str) -> tuple[Any, Any]:
        """Decode frame 0 of ``path`` as training did and preprocess it for the encoder.

        Returns (tensor (C, S, S), ImageInfo). The size is checked against the pixel budget
        from the header before any decode, and decodes of all requests together hold at most
        ``decode_budget_bytes`` at once; only the small model input is kept. Raises
        :class:`UnusableFileError` naming ``file`` (never ``path``).
        """
        try:
            info = probe_image(path, max_pixels=self.max_pixels)
            # float32 output plus the decoder's and the scaler's working copies
            need = int(info.rows) * int(info.columns) * max(int(info.channels), 1) * 4 * 3
            with self._gate.hold(need):
                pixels = load_pixels(path, 0, max_pixels=self.max_pixels,
                                     min_size=self.encoder.spec.preprocessing.input_size)
                return self.encoder.preprocess(pixels), info
        except PixelError as error:
            raise UnusableFileError(file, error.status, _without_path(error.reason, path)) from None
        except FrameRangeError as error:
            raise UnusableFileError(file, "unreadable", _without_path(str(error), path)) from None
        except (OSError, RecursionError) as error:
            raise UnusableFileError(file, "unreadable", f"cannot read the file ({type(error).__name__})") from None

    def embed(self, tensors: Sequence[Any]) -> np.ndarray:
        """tensors : preprocessed model inputs from :meth:`prepare` -> (n, dim) raw vectors."""
        import torch

        with self._lock:
            return self.encoder.embed_batch(torch.stack(list(tensors)))

    def features(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) raw vectors -> (n, n_features) as the final model saw its training rows."""
        n_features = self.study.final_model.n_features
        out = np.zeros((len(vectors), n_features), dtype=np.float64)
        out[:, : self.n_image] = self.image_block.transform(vectors)
        return out

    def predict_vectors(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (n, n_classes), decisions (n,) or (n, n_labels))."""
        model = self.study.final_model
        X = self.features(vectors)
        return model.predict_proba(X), model.predict(X)

    def similar_cases(self, vector: np.ndarray, k: int = N_SIMILAR) -> list[dict[str, Any]]:
        found = self.similar.query(np.asarray(vector, dtype=np.float64), k=min(k, self.similar.rows_.size))
        rows = self.neighbour_table.iloc[found["row"].to_numpy()]
        return [{"rank": int(rank), "case": str(case), "patient": str(patient), "label": label,
                 "distance": round(float(distance), 6)}
                for rank, case, patient, label, distance in zip(
                    found["rank"], rows["case"], rows["patient"], rows["label"], found["distance"], strict=True)]

    def predict_files(self, files: Sequence[tuple[str, str | os.PathLike[str]]]) -> list[Prediction]:
        """files : (name the client gave, path of a private copy) pairs, one prediction each.

        Every file is decoded before any is embedded; the first unusable one raises
        :class:`UnusableFileError` (its ``others`` attribute lists the rest), so a request
        either gets an answer for every file or a clear refusal.
        """
        decoded, problems = [], []
        for name, path in files:
            try:
                decoded.append((name, *self.prepare(path, name)))
            except UnusableFileError as error:
                problems.append(error)
        if problems:
            first = problems[0]
            first.others = problems[1:]
            raise first
        vectors = self.embed([tensor for _, tensor, _ in decoded])
        probabilities, decisions = self.predict_vectors(vectors)
        out = []
        for (name, _tensor, info), vector, proba, decision in zip(decoded, vectors, probabilities, decisions, strict=True):
            notes = []
            if info.n_frames > 1:
                notes.append(f"the file has {info.n_frames} frames; the first was used")
            if self.filled_blocks:
                notes.append(f"{' and '.join(self.filled_blocks)} not given: set to the training mean")
            if self.study.final_model.kind == "multilabel":
                decision_value: Any = {c: int(d) for c, d in zip(self.classes, decision, strict=True)}
            else:
                decision_value = None if decision is None else str(decision)
            out.append(Prediction(
                file=name, probabilities={c: round(float(p), 6) for c, p in zip(self.classes, proba, strict=True)},
                decision=decision_value, similar=self.similar_cases(vector), rows=int(info.rows),
                columns=int(info.columns), n_frames=int(info.n_frames), notes=notes))
        return out

    def time_model_only(self, paths: Sequence[str | os.PathLike[str]], repeats: int = 1) -> list[float]:
        """Seconds per file for decode + embed + classify + neighbours, in process (no HTTP):
        the baseline the API latency benchmark divides by."""
        times = []
        for _ in range(repeats):
            for path in paths:
                start = time.perf_counter()
                self.predict_files([(Path(path).name, path)])
                times.append(time.perf_counter() - start)
        return times


def _without_path(reason: str, path: str | os.PathLike[str]) -> str:
    """A decoder's reason with the server-side temp path taken out."""
    text = str(reason).replace(os.fspath(path), "the file")
    return text.replace(str(Path(path).parent), "").strip()


def _neighbour_table(study: Any) -> pd.DataFrame:
    """One row per training row: de-identified case and patient pseudonyms and the label."""
    from core.deid import deployment_salt, pseudonym

    salt = deployment_salt()
    table = study.table.reset_index(drop=True)
    target = study.report.target
    level = study.config.get("level", "image")
    case_column = "image_id" if level == "image" and "image_id" in table else "patient_id"
    case_kind = "image_id" if case_column == "image_id" else "patient"
    cases = [pseudonym(str(v), salt, case_kind) for v in table[case_column]]
    patients = [pseudonym(str(v), salt, "patient") for v in table["patient_id"]]
    if target.kind == "multilabel":
        labels = [[name for name, v in zip(target.classes, row, strict=True) if v == 1] for row in target.y]
    else:
        labels = [target.classes[int(code)] if ok and code >= 0 else None for code, ok in zip(target.y, target.mask, strict=True)]
    return pd.DataFrame({"case": cases, "patient": patients, "label": labels})


def load_served_model(key: str, *, store: RunStore | None = None, device: str = "auto",
                      max_pixels: int = DEFAULT_MAX_PIXELS, weights_path: str | os.PathLike[str] | None = None,
                      ) -> ServedModel:
    """The saved study ``key``, ready to predict.

    Raises ``ValueError`` (with the next step) for a malformed key, a key that is not a saved
    classifier study of this code version, a study without a final model, an encoder that is
    not installed here in the version the study was trained with, or an image block that cannot
    be rebuilt exactly; ``core.encoders.WeightsUnavailableError`` when the encoder's weights
    are missing.
    """
    check_key(key)
    store = store if store is not None else RunStore()
    run = store.load(KIND, key, version=STUDY_VERSION) if key.startswith(f"{KIND}-") else None
    if run is None:
        raise ValueError(f"{key} is not a saved classifier study of this version; list them with "
                         f"`scanatlas runs list --kind {KIND}`")
    study = study_from_run(run)
    if study.final_model is None:
        why = "; ".join(n for n in study.notes if n.startswith("no final model")) or "no final model was fitted"
        raise ValueError(f"run {key} cannot predict: {why}")
    from core.encoders import get_encoder

    encoder_name = study.config.get("encoder")
    encoder = get_encoder(encoder_name, device=device, weights_path=weights_path)
    if encoder.kind != "image":
        raise ValueError(f"run {key} uses encoder {encoder_name!r}, which is not an image encoder")
    trained_under = str(study.config.get("image_embedding") or "").rsplit("-", 1)[0]
    here = namespace_key(encoder.spec.name, encoder.spec.version, encoder.preprocess_params())
    if trained_under != here:
        raise ValueError(
            f"run {key} was trained on {encoder_name} vectors of another version or weights "
            f"({trained_under or 'unknown'}); the installed encoder gives {here}. Train the study "
            "again with this encoder, or install the weights it was trained with (--weights).")
    vectors = np.asarray(study.image_vectors, dtype=np.float64)
    n_image = vectors.shape[1]
    block = ImageBlock.from_training(vectors)
    if study.features is not None:
        saved = np.asarray(study.features, dtype=np.float64)
        rows = np.isfinite(saved).all(axis=1) & np.isfinite(vectors).all(axis=1)
        if saved.shape[1] != study.final_model.n_features or not rows.any() or not np.allclose(
                block.transform(vectors[rows]), saved[rows, :n_image], atol=_FEATURE_TOLERANCE):
            raise ValueError(f"run {key}: the image features cannot be rebuilt as the study built them; "
                             "train the study again with this version of ScanAtlas")
    filled = []
    if study.config.get("metadata"):
        filled.append("metadata (" + ", ".join(study.config["metadata"]) + ")")
    if study.config.get("text"):
        filled.append("report text")
    from core.explain.similar import SimilarCases

    similar = SimilarCases(metric="cosine").fit(vectors)
    return ServedModel(run=run, study=study, encoder=encoder, image_block=block, n_image=n_image,
                       filled_blocks=filled, similar=similar, neighbour_table=_neighbour_table(study),
                       max_pixels=max_pixels)


__all__ = [
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_REQUEST_BYTES",
    "N_SIMILAR",
    "ImageBlock",
    "Prediction",
    "ServedModel",
    "UnusableFileError",
    "load_served_model",
]
