"""Fine-tuning a registry CNN on a binary label, scored on the linear models' patient folds.

:func:`finetune_study` on a dataset:

1. embeds the images with the frozen encoder and cross-validates the linear probe (logistic
   regression, :func:`core.classify.evaluate`); its patient-grouped folds are *the* folds;
2. for each fold, fine-tunes the whole network (:mod:`core.finetune.train`) on the other folds,
   holding out a fifth of their patients for early stopping and for the yes/no threshold
   (Youden's J), and predicts the fold;
3. scores those out-of-fold probabilities with the same patient bootstrap as the linear probe
   (:func:`core.classify.compare.score_out_of_fold`), giving one more row of the comparison
   table;
4. trains a final network on every usable row (again with a validation split for early
   stopping) and saves its trunk as an encoder (:mod:`core.finetune.encoder`).

The result is a named run of kind ``finetune``; every split is checkpointed under
``SCANATLAS_CACHE/finetune/<run key>/`` after each epoch, so a killed or cancelled run called
again with the same arguments continues where it stopped.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from core.atomic import atomic_write
from core.auth import User, require
from core.classify.compare import comparison_row, score_out_of_fold
from core.classify.cv import grouped_folds
from core.classify.evaluate import as_groups, evaluate
from core.classify.metrics import choose_threshold
from core.classify.target import prepare_target
from core.embed import embed_dataset
from core.encoders import get_spec, resolve_device
from core.encoders.batching import default_num_workers
from core.encoders.device import configure_cpu_threads
from core.encoders.specs import Preprocessing
from core.encoders.weights import ensure_weights
from core.finetune.data import DEFAULT_MEMORY_BUDGET, Augmentation, ImageBank
from core.finetune.encoder import KIND, WEIGHTS_PAYLOAD, derived_name, register_run_encoder
from core.finetune.train import (
    EpochResult,
    FineTuneCancelled,
    FineTuneNet,
    TrainSettings,
    load_checkpoint,
    train_split,
)
from core.runs import Run, RunStore, run_key
from core.settings import cache_root

if TYPE_CHECKING:
    from core.ingest import Dataset

# Bump when what a run computes or how it is saved changes: older runs are then misses.
FINETUNE_VERSION = 1
FINAL = "final"
ProgressFn = Callable[[float, str], None]

__all__ = ["FINETUNE_VERSION", "FineTuneCancelled", "FineTuneResult", "finetune_config",
           "finetune_runs", "finetune_study", "load_finetune"]


@dataclass
class FineTuneResult:
    """A fine-tuning run.

    comparison : one row per model on the same rows and folds (frozen linear probe, fine-tuned),
        columns as :func:`core.classify.compare_modalities` (mean_auc, auc_lo, auc_hi, ...).
    per_class / frozen_per_class : per-class tables with 95% patient-bootstrap intervals.
    history : one row per epoch of every split (split, epoch, train_loss, val_loss, val_auc,
        seconds, best).
    probability : ndarray (n_rows,), out-of-fold P(positive); NaN where not evaluated.
    folds : ndarray (n_rows,), the linear probe's folds (-1: not evaluated).
    fold_thresholds : ndarray (n_splits,), yes/no threshold per fold (from validation rows).
    rows : image_id, patient_id and the target column of every row.
    encoder_name : the derived encoder (None without a final model).
    """

    key: str
    created: str
    config: dict[str, Any]
    comparison: pd.DataFrame
    per_class: pd.DataFrame
    frozen_per_class: pd.DataFrame
    history: pd.DataFrame
    probability: np.ndarray
    folds: np.ndarray
    fold_thresholds: np.ndarray
    rows: pd.DataFrame
    encoder_name: str | None
    timing: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    from_store: bool = False

    @property
    def finetuned_auc(self) -> float:
        return float(self.per_class.set_index("class").loc["mean", "auc"])

    @property
    def frozen_auc(self) -> float:
        return float(self.frozen_per_class.set_index("class").loc["mean", "auc"])


def finetune_config(
    *,
    encoder: str,
    positive: str | None,
    target_column: str = "label",
    epochs: int = 5,
    patience: int = 2,
    image_size: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-4,
    head_lr: float = 1e-3,
    weight_decay: float = 1e-4,
    flip_probability: float = 0.5,
    max_rotation: float = 10.0,
    val_fraction: float = 0.2,
    n_splits: int = 5,
    n_bootstrap: int = 500,
    final_model: bool = True,
    random_state: int = 0,
) -> dict[str, Any]:
    """The full parameter set of :func:`finetune_study`, defaults filled in (``image_size``
    None becomes the encoder's input size), so that spelling a default out gives the same key.
    Raises ValueError for an unknown encoder or a bad value (naming it and what is valid)."""
    spec = get_spec(encoder)
    if spec.kind != "image" or spec.weights is None:
        raise ValueError(f"encoder {encoder!r} has no trainable network; fine-tune one of "
                         f"{[n for n, s in _trainable().items()]}")
    size = spec.input_size if image_size is None else image_size
    if not (isinstance(size, int) and 32 <= size <= 1024):
        raise ValueError(f"image_size={image_size!r} must be an integer in [32, 1024] pixels")
    if not 0.05 <= val_fraction <= 0.5:
        raise ValueError(f"val_fraction={val_fraction!r} must be in [0.05, 0.5]")
    if not (isinstance(n_splits, int) and n_splits >= 2):
        raise ValueError(f"n_splits={n_splits!r} must be an integer >= 2")
    if not (isinstance(n_bootstrap, int) and n_bootstrap >= 0):
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be an integer >= 0")
    Augmentation(flip_probability, max_rotation)  # validates
    TrainSettings(epochs=epochs, patience=patience, batch_size=batch_size, lr=lr, head_lr=head_lr,
                  weight_decay=weight_decay)  # validates
    return {
        "encoder": encoder, "target_column": target_column, "positive": positive,
        "epochs": int(epochs), "patience": int(patience), "image_size": int(size),
        "batch_size": int(batch_size), "lr": float(lr), "head_lr": float(head_lr),
        "weight_decay": float(weight_decay), "flip_probability": float(flip_probability),
        "max_rotation": float(max_rotation), "val_fraction": float(val_fraction),
        "n_splits": int(n_splits), "n_bootstrap": int(n_bootstrap), "final_model": bool(final_model),
        "random_state": int(random_state),
    }


def _trainable() -> dict[str, Any]:
    from core.encoders import ENCODERS

    return {n: s for n, s in ENCODERS.items() if s.kind == "image" and s.weights is not None}


def _rows_hash(images: pd.DataFrame, target_column: str) -> str:
    present = [c for c in ("image_id", "patient_id", target_column) if c in images.columns]
    values = pd.util.hash_pandas_object(images[present].astype(str), index=False).to_numpy()
    return hashlib.sha256(values.tobytes() + repr(present).encode()).hexdigest()[:20]


def checkpoint_folder(key: str) -> Path:
    """Where the per-epoch checkpoints of run ``key`` live while it is unfinished."""
    from core.runs import check_key

    return cache_root() / "finetune" / check_key(key)


def _remove_checkpoints(key: str) -> None:
    folder = checkpoint_folder(key).resolve()
    if folder.parent == (cache_root() / "finetune").resolve() and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def _cancel_fn(cancel: Callable[[], bool] | threading.Event | None) -> Callable[[], bool] | None:
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _new_net(spec: Any, weights: Path | None, seed: int) -> FineTuneNet:
    trunk = spec.build(spec, weights, torch.device("cpu"))
    if not isinstance(trunk, torch.nn.Module):
        raise ValueError(f"encoder {spec.name!r} has no trainable network")
    trunk.requires_grad_(True)
    torch.manual_seed(seed)  # the head's initial weights
    return FineTuneNet(spec, trunk)


def finetune_study(
    dataset: Dataset,
    *,
    user: User | None,
    device: str | torch.device = "auto",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    store: RunStore | None = None,
    force: bool = False,
    **params: Any,
) -> FineTuneResult:
    """Fine-tune ``encoder`` on ``target_column == positive`` vs the rest, image level, with
    the linear probe's patient-grouped folds; or load the run when it is stored.

    params : the run's parameters, exactly those :func:`finetune_config` takes (``encoder`` and
        ``positive`` required; epochs, image size, learning rates, augmentation, folds...); they
        and the rows make the run's key.
    user : who starts it (``core.auth.require(user, "finetune")``: labeler or admin).
    device : "auto" (CUDA with mixed precision, then MPS, then CPU), "cpu", "cuda[:N]", "mps".
    progress : callable(fraction, message), e.g. a background job's ``report``; the message
        names the split, epoch, training loss and validation AUC.
    on_epoch : callable(EpochResult) after every epoch of every split.
    cancel : a callable returning True (or a threading.Event) to stop between batches:
        :class:`FineTuneCancelled` is raised and the same call later resumes.
    force : train again even when the run store holds this run.

    Raises PermissionError (role), ValueError (unknown encoder or column, a target that is not
    binary, too few patients for ``n_splits``, a bad parameter) and
    ``core.encoders.WeightsUnavailableError`` (the encoder's weights are not on this machine;
    the message says which file goes where) before any training starts.
    """
    require(user, "finetune")
    report = progress or (lambda fraction, message: None)
    config = finetune_config(**params)
    encoder, target_column, positive = config["encoder"], config["target_column"], config["positive"]
    n_splits, n_bootstrap, random_state = config["n_splits"], config["n_bootstrap"], config["random_state"]
    final_model = config["final_model"]
    spec = get_spec(encoder)
    weights = ensure_weights(spec).path  # a missing file fails here, with which file goes where
    resolved = resolve_device(device)
    images = dataset.images.reset_index(drop=True)
    if target_column not in images.columns:
        raise ValueError(f"target column {target_column!r} not found; columns: {list(images.columns)}")
    target = prepare_target(images, target_column, positive=positive)
    if target.kind != "binary":
        raise ValueError(f"fine-tuning needs a binary target; {target_column!r} has classes "
                         f"{target.classes}: pass positive=<one of them>")

    report(0.01, f"embedding with the frozen {encoder} for the linear probe")
    image_set = embed_dataset(dataset, encoder, device=str(resolved))
    store = store if store is not None else RunStore()
    inputs = {"dataset": dataset.token, "rows": _rows_hash(images, target_column),
              "embedding": image_set.key}
    key = run_key(KIND, inputs=inputs, config=config, version=FINETUNE_VERSION)
    if not force:
        stored = store.load(KIND, key, version=FINETUNE_VERSION)
        if stored is not None:
            report(1.0, "loaded the saved run")
            return load_finetune(stored)
    else:
        _remove_checkpoints(key)

    began = time.perf_counter()
    groups, notes = as_groups(images["patient_id"].astype(str).to_numpy() if "patient_id" in images
                              else None, len(images))
    report(0.05, "cross-validating the frozen linear probe")
    frozen = evaluate(np.asarray(image_set.vectors, dtype=float), target, groups, model="logreg",
                      n_splits=n_splits, random_state=random_state, n_bootstrap=n_bootstrap)
    folds, used = frozen.folds.copy(), frozen.used.copy()
    y = np.where(target.mask, target.y, -1)
    notes = [*notes, *frozen.notes]

    size = config["image_size"]
    preprocessing = spec.preprocessing
    assert isinstance(preprocessing, Preprocessing)
    bank = ImageBank(images["path"].astype(str).tolist(), images["frame"].fillna(0).astype(int).tolist(),
                     replace(preprocessing, input_size=size), memory_budget=memory_budget,
                     num_workers=default_num_workers(resolved))
    report(0.07, f"decoding {int(used.sum())} images at {size} px")
    failed = bank.preload(np.flatnonzero(used))
    if failed:
        notes.append(f"{len(failed)} image(s) could not be decoded for fine-tuning and have no prediction")
    if resolved.type == "cpu":
        configure_cpu_threads()

    settings = TrainSettings(
        epochs=config["epochs"], patience=config["patience"], batch_size=config["batch_size"],
        lr=config["lr"], head_lr=config["head_lr"], weight_decay=config["weight_decay"],
        augmentation=Augmentation(config["flip_probability"], config["max_rotation"]),
        seed=random_state,
    )
    split_names = [f"fold{k}" for k in range(n_splits)] + ([FINAL] if final_model else [])
    total_epochs = len(split_names) * settings.epochs
    folder = checkpoint_folder(key)
    epochs_done = 0
    cancel_fn = _cancel_fn(cancel)
    inner_splits = max(2, round(1 / config["val_fraction"]))

    def validation_split(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inner = grouped_folds(y[rows], groups[rows], inner_splits, random_state=random_state)
        return rows[inner != 0], rows[inner == 0]

    probability = np.full(len(images), np.nan)
    fold_thresholds = np.full(n_splits, np.nan)
    history: list[dict[str, Any]] = []
    final_state: dict[str, torch.Tensor] | None = None
    for index, name in enumerate(split_names):
        is_final = name == FINAL
        test_rows = np.array([], dtype=np.int64) if is_final else np.flatnonzero(used & (folds == index))
        pool = np.flatnonzero(used) if is_final else np.flatnonzero(used & (folds >= 0) & (folds != index))
        train_rows, val_rows = validation_split(pool)
        done_file = folder / f"{name}.done.pt"
        done = load_checkpoint(done_file)
        epochs_done = index * settings.epochs
        if done is None:
            split_label = "final model (all rows)" if is_final else f"fold {index + 1}/{n_splits}"

            def epoch_done(result: EpochResult, label: str = split_label) -> None:
                nonlocal epochs_done
                epochs_done += 1
                fraction = 0.1 + 0.88 * min(epochs_done / total_epochs, 1.0)
                report(fraction, f"{label} · epoch {result.epoch}/{result.epochs} · loss "
                       f"{result.train_loss:.3f} · validation AUC {result.val_auc:.3f}")
                if on_epoch is not None:
                    on_epoch(result)

            net = _new_net(spec, weights, random_state + index)
            result = train_split(
                name, net, bank, y, train_rows=train_rows, val_rows=val_rows, predict_rows=test_rows,
                settings=settings, device=resolved, checkpoint=folder / f"{name}.pt",
                on_epoch=epoch_done, cancel=cancel_fn,
            )
            threshold = choose_threshold(y[val_rows] == 1, np.nan_to_num(result.val_probabilities, nan=0.5))
            trunk = {k.removeprefix("trunk."): v for k, v in result.state.items() if k.startswith("trunk.")}
            done = {"format": 1, "split": name, "probabilities": torch.as_tensor(result.probabilities),
                    "threshold": float(threshold), "history": result.history,
                    "best_epoch": result.best_epoch, "trunk": trunk if is_final else {}}
            atomic_write(done_file, lambda handle, record=done: torch.save(record, handle))
            (folder / f"{name}.pt").unlink(missing_ok=True)
            del net, result
        history.extend(done["history"])
        if is_final:
            final_state = done["trunk"]
        else:
            probability[test_rows] = done["probabilities"].numpy()
            fold_thresholds[index] = done["threshold"]

    report(0.985, "scoring with patient-bootstrap intervals")
    per_class = score_out_of_fold(probability, target, groups, folds, fold_thresholds,
                                  n_bootstrap=n_bootstrap, random_state=random_state)
    classes = list(target.classes)
    comparison = pd.DataFrame([
        comparison_row(f"frozen {encoder} + logistic regression", spec.dim, frozen.per_class, classes),
        comparison_row(f"fine-tuned {encoder} ({size} px)", spec.dim, per_class, classes),
    ]).sort_values("mean_auc", ascending=False, kind="stable").reset_index(drop=True)
    comparison["rank"] = np.arange(1, len(comparison) + 1)
    history_table = pd.DataFrame(history, columns=["split", "epoch", "train_loss", "val_loss",
                                                   "val_auc", "seconds", "best"])
    seconds = time.perf_counter() - began
    timing = {"seconds": seconds, "train_seconds": float(history_table["seconds"].sum()),
              "epochs_run": len(history_table), "device": str(resolved)}
    rows = images[[c for c in ("image_id", "patient_id", target_column) if c in images.columns]].copy()
    payload: dict[str, Any] = {
        "comparison": comparison, "per_class": per_class, "frozen_per_class": frozen.per_class,
        "history": history_table, "probability": probability, "folds": folds,
        "fold_thresholds": fold_thresholds, "rows": rows.astype(str), "notes": notes,
        "timing": timing, "classes": classes,
    }
    if final_state:
        payload[WEIGHTS_PAYLOAD] = _state_bytes(final_state)
    summary = {"encoder": encoder, "target": f"{target_column}={positive}", "epochs": config["epochs"],
               "image_size": size, "auc_finetuned": round(float(per_class.iloc[-1]["auc"]), 4),
               "auc_frozen": round(float(frozen.per_class.iloc[-1]["auc"]), 4),
               "derived_encoder": derived_name(encoder, key) if final_state else None}
    run = store.save(KIND, key, version=FINETUNE_VERSION, config=config, payload=payload,
                     inputs=inputs, dataset=dataset.name, summary=summary)
    _remove_checkpoints(key)
    result = load_finetune(run)
    result.from_store = False
    report(1.0, f"done: fine-tuned AUC {result.finetuned_auc:.3f} vs frozen {result.frozen_auc:.3f}")
    return result


def load_finetune(run: Run | str, *, store: RunStore | None = None) -> FineTuneResult:
    """A stored fine-tuning run (a ``Run`` or its key) as a :class:`FineTuneResult`; its
    derived encoder is registered. Raises ValueError for a key that is not a finetune run."""
    if isinstance(run, str):
        found = (store or RunStore()).load(KIND, run)
        if found is None:
            raise ValueError(f"no fine-tuning run {run!r} in the run store")
        run = found
    encoder_name = register_run_encoder(run) if run.has(WEIGHTS_PAYLOAD) else None
    return FineTuneResult(
        key=run.key, created=run.created, config=dict(run.config), comparison=run.load("comparison"),
        per_class=run.load("per_class"), frozen_per_class=run.load("frozen_per_class"),
        history=run.load("history"), probability=run.load("probability"), folds=run.load("folds"),
        fold_thresholds=run.load("fold_thresholds"), rows=run.load("rows"), encoder_name=encoder_name,
        timing=dict(run.load("timing")), notes=list(run.load("notes")), from_store=True,
    )


def finetune_runs(dataset: Dataset | None = None, *, store: RunStore | None = None) -> list[Run]:
    """Stored fine-tuning runs (of ``dataset`` when given), newest first."""
    return (store or RunStore()).runs(kind=KIND, dataset=dataset.name if dataset is not None else None)
