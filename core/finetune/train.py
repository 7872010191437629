"""Training one binary fine-tuning split: the network, the epoch loop, early stopping, checkpoints.

The network is the registry encoder (built by its own ``build`` from its real weights, never
random) with a linear head on the encoder's vector: ``logit = head(spec.forward(model, x))``.
So the fine-tuned trunk still produces exactly the vector the encoder is defined by, and can be
registered as an encoder afterwards (:mod:`core.finetune.encoder`).

Each epoch: shuffled, augmented training batches (binary cross-entropy, positive class weighted
by the negative/positive ratio like the linear models' balanced class weights), then the
validation rows are scored (AUC, loss). Batch-norm layers keep their pretrained statistics
(see ``_freeze_batchnorm``). The best epoch by validation AUC is kept; training stops
after ``patience`` epochs without improvement. After every epoch a checkpoint (model, optimiser,
grad scaler, best weights, history) is written atomically; it holds only tensors and plain
values, so it loads with ``torch.load(weights_only=True)``, and a killed run continues from the
last completed epoch.

On CUDA the forward pass runs under autocast (bf16 where supported, else fp16 with a gradient
scaler) in channels-last layout; on the CPU in float32.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from core.atomic import atomic_write
from core.encoders.specs import EncoderSpec
from core.finetune.data import Augmentation, ImageBank, augment, batches

CHECKPOINT_FORMAT = 1


class FineTuneCancelled(RuntimeError):
    """The run was cancelled; completed epochs are checkpointed and the same call resumes."""


class FineTuneNet(torch.nn.Module):
    """An encoder's model plus a linear head on its vector: (B, C, S, S) -> logits (B,)."""

    def __init__(self, spec: EncoderSpec, trunk: torch.nn.Module, *, dropout: float = 0.2) -> None:
        super().__init__()
        self.spec = spec
        self.trunk = trunk
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(spec.dim, 1)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        vectors = self.spec.forward(self.trunk, batch)
        return self.head(self.dropout(vectors.float())).squeeze(1)


@dataclass
class EpochResult:
    """What one epoch of one split produced (passed to ``on_epoch``)."""

    split: str
    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_auc: float
    seconds: float
    best: bool
    resumed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"split": self.split, "epoch": self.epoch, "train_loss": self.train_loss,
                "val_loss": self.val_loss, "val_auc": self.val_auc, "seconds": self.seconds,
                "best": self.best}


@dataclass
class TrainSettings:
    """Hyper-parameters of one split (all part of the run key)."""

    epochs: int = 5
    patience: int = 2
    batch_size: int = 16
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    augmentation: Augmentation = field(default_factory=Augmentation)
    seed: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs={self.epochs!r} must be an integer >= 1")
        if not (isinstance(self.patience, int) and self.patience >= 1):
            raise ValueError(f"patience={self.patience!r} must be an integer >= 1")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size={self.batch_size!r} must be an integer >= 1")
        if not (self.lr > 0 and self.head_lr > 0 and self.weight_decay >= 0):
            raise ValueError(f"lr={self.lr}, head_lr={self.head_lr} must be > 0 and "
                             f"weight_decay={self.weight_decay} >= 0")


@dataclass
class SplitResult:
    """A trained split: the best epoch's weights and its probabilities on ``predict_rows``."""

    name: str
    probabilities: np.ndarray  # (len(predict_rows),) P(positive); NaN where the image failed
    val_probabilities: np.ndarray  # (len(val_rows),)
    history: list[dict[str, Any]]
    best_epoch: int
    state: dict[str, torch.Tensor]  # FineTuneNet state dict of the best epoch (CPU)
    resumed_from: int = 0  # completed epochs found in a checkpoint (0: started fresh)


def precision_for(device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether a gradient scaler is needed) for ``device``.

    CUDA: bf16 when the GPU supports it (no scaler needed), else fp16 with a scaler. Elsewhere
    float32 (CPU autocast to bf16 is slower than float32 on most CPUs)."""
    if device.type != "cuda":
        return None, False
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, False
    return torch.float16, True


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _epoch_generator(seed: int, split: str, epoch: int) -> torch.Generator:
    """The random stream of one epoch of one split: the same on a resumed run."""
    digest = hashlib.sha256(f"{seed}|{split}|{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    ok = np.isfinite(p)
    if ok.sum() < 2 or np.unique(y[ok]).size < 2:
        return float("nan")
    return float(roc_auc_score(y[ok], p[ok]))


def predict(net: FineTuneNet, bank: ImageBank, rows: np.ndarray, *, device: torch.device,
            batch_size: int, cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """P(positive) for ``rows`` (ndarray of row indices into the bank), shape (len(rows),);
    NaN where the image could not be decoded."""
    dtype, _ = precision_for(device)
    out = np.full(len(rows), np.nan)
    position = {int(r): i for i, r in enumerate(rows)}
    net.eval()
    with torch.inference_mode():
        for chunk in batches(np.asarray(rows), batch_size * 2):
            if cancel is not None and cancel():
                raise FineTuneCancelled("cancelled while predicting")
            batch, kept = bank.batch(chunk)
            if not kept:
                continue
            inputs = _to_device(batch, device)
            with _autocast(device, dtype):
                logits = net(inputs)
            out[[position[r] for r in kept]] = torch.sigmoid(logits.float()).cpu().numpy()
    return out


def _freeze_batchnorm(net: torch.nn.Module) -> None:
    """Batch-norm layers normalise with their pretrained running statistics while fine-tuning
    (their scale and shift still learn). With small batches and a few hundred steps, updating
    the statistics (EfficientNet's momentum is 0.01) leaves them lagging behind the weights, and
    the network scores worse in eval mode than it trained: measured on 24 covid X-rays, the eval
    loss went from 0.96 to 2.41 after 3 epochs with updated statistics. Keras's guide to
    fine-tuning EfficientNet keeps them frozen for the same reason."""
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        batch = batch.pin_memory()
    inputs = batch.to(device, non_blocking=True)
    return inputs.contiguous(memory_format=torch.channels_last) if device.type != "mps" else inputs


def _save_checkpoint(path: Path, record: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(record, handle))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint written by :func:`train_split`, or None when absent or unreadable (a
    damaged file is ignored and training starts over). Loaded with weights_only=True."""
    if not path.is_file():
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated, foreign or damaged: never trusted, never fatal
        return None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        return None
    return record


def train_split(
    name: str,
    net: FineTuneNet,
    bank: ImageBank,
    y: np.ndarray,
    *,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    predict_rows: np.ndarray,
    settings: TrainSettings,
    device: torch.device,
    checkpoint: Path | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SplitResult:
    """Fine-tune ``net`` on ``train_rows`` with early stopping on ``val_rows``; score
    ``predict_rows`` with the best epoch's weights.

    y : ndarray of shape (n_rows,), 1 positive / 0 negative, indexed like the bank.
    checkpoint : file written after every epoch (resumed from when it exists and matches).
    on_epoch : called with an :class:`EpochResult` after each epoch.
    cancel : polled between batches; when it returns True, :class:`FineTuneCancelled` is raised
        (the epochs completed so far are in the checkpoint).
    Raises ValueError when the training rows hold a single class.
    """
    train_rows, val_rows = np.asarray(train_rows), np.asarray(val_rows)
    classes = np.unique(y[train_rows])
    if classes.size < 2:
        raise ValueError(f"{name}: the training rows hold only class {classes.tolist()}; need both")
    dtype, needs_scaler = precision_for(device)
    net.to(device)
    if device.type != "mps":
        net.to(memory_format=torch.channels_last)
    n_pos = float((y[train_rows] == 1).sum())
    pos_weight = torch.tensor([(len(train_rows) - n_pos) / n_pos], device=device)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in net.trunk.parameters() if p.requires_grad], "lr": settings.lr},
         {"params": net.head.parameters(), "lr": settings.head_lr}],
        weight_decay=settings.weight_decay,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
    history: list[dict[str, Any]] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_score, best_epoch, stale, start = -np.inf, 0, 0, 0
    saved = load_checkpoint(checkpoint) if checkpoint is not None else None
    if saved is not None and saved.get("split") == name:
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if needs_scaler and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        history = list(saved["history"])
        best_state = saved["best_state"]
        best_score, best_epoch = float(saved["best_score"]), int(saved["best_epoch"])
        stale, start = int(saved["stale"]), int(saved["epoch"])
    resumed_from = start
    y_val = y[val_rows]
    epoch = start
    while epoch < settings.epochs and stale < settings.patience:
        epoch += 1
        began = time.perf_counter()
        generator = _epoch_generator(settings.seed, name, epoch)
        order = train_rows[torch.randperm(len(train_rows), generator=generator).numpy()]
        net.train()
        _freeze_batchnorm(net)
        total, seen = 0.0, 0
        for chunk in batches(order, settings.batch_size):
            if cancel is not None and cancel():
                raise FineTuneCancelled(f"cancelled in {name}, epoch {epoch}; "
                                        f"{epoch - 1} epoch(s) are saved and the same run resumes there")
            batch, kept = bank.batch(chunk)
            if not kept:
                continue
            inputs = augment(batch, settings.augmentation, generator)
            inputs = _to_device(inputs, device)
            targets = torch.as_tensor(y[kept], dtype=torch.float32, device=device)
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, dtype):
                logits = net(inputs)
            loss = loss_fn(logits.float(), targets)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(kept)
            seen += len(kept)
        val_p = predict(net, bank, val_rows, device=device, batch_size=settings.batch_size, cancel=cancel)
        ok = np.isfinite(val_p)
        val_loss = float(torch.nn.functional.binary_cross_entropy(
            torch.as_tensor(val_p[ok]).clamp(1e-7, 1 - 1e-7), torch.as_tensor(y_val[ok], dtype=torch.float64),
        )) if ok.any() else float("nan")
        val_auc = _auc(y_val, val_p)
        # Validation AUC decides; a single-class validation split falls back to its loss.
        score = val_auc if np.isfinite(val_auc) else (-val_loss if np.isfinite(val_loss) else -np.inf)
        improved = best_state is None or score > best_score
        if improved:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
        else:
            stale += 1
        result = EpochResult(split=name, epoch=epoch, epochs=settings.epochs,
                             train_loss=total / max(seen, 1), val_loss=val_loss, val_auc=val_auc,
                             seconds=time.perf_counter() - began, best=improved)
        history.append(result.as_dict())
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "split": name, "epoch": epoch,
                "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "optimizer": _cpu(optimizer.state_dict()), "scaler": scaler.state_dict() if needs_scaler else {},
                "best_state": best_state, "best_score": float(best_score), "best_epoch": best_epoch,
                "stale": stale, "history": history,
            })
        if on_epoch is not None:
            on_epoch(result)
    assert best_state is not None, "at least one epoch ran or was restored"
    net.load_state_dict(best_state)
    probabilities = predict(net, bank, np.asarray(predict_rows), device=device,
                            batch_size=settings.batch_size, cancel=cancel)
    val_probabilities = predict(net, bank, val_rows, device=device, batch_size=settings.batch_size,
                                cancel=cancel)
    return SplitResult(name=name, probabilities=probabilities, val_probabilities=val_probabilities,
                       history=history, best_epoch=best_epoch, state=copy.deepcopy(best_state),
                       resumed_from=resumed_from)


def _cpu(value: Any) -> Any:
    """Optimiser state with every tensor moved to the CPU (so the checkpoint loads anywhere)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(v) for v in value)
    return value
