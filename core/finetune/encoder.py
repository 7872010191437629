"""Fine-tuned weights as an encoder: a registry entry derived from the base encoder's entry.

A finished fine-tuning run (kind ``finetune``) holds the trunk's weights (``encoder_weights``,
a plain state dict read with ``torch.load(weights_only=True)``). It becomes the encoder
``<base>-ft-<8 hex of the run key>``: the base entry's forward pass, Grad-CAM layer and
normalisation, the fine-tuning image size as its input size, and a version that names the run
and the base version, so the embedding cache (keyed by name, version and the weights' sha256)
never mixes its vectors with the base encoder's. Embeddings, Map and every other page use it
like any registry entry once :func:`register_finetuned_encoders` has run in the process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.encoders.registry import ENCODERS, get_spec, register_encoder
from core.encoders.specs import EncoderSpec, PackageWeights, Preprocessing
from core.encoders.weights import ensure_weights, load_state_dict_file, load_strict

if TYPE_CHECKING:
    from core.runs import Run, RunStore

KIND = "finetune"
WEIGHTS_PAYLOAD = "encoder_weights"
_LOCK = threading.Lock()


def derived_name(base: str, run_key: str) -> str:
    """``efficientnet-lite0-ft-3f2a9c1b`` for base ``efficientnet-lite0`` and run
    ``finetune-3f2a9c1b...``."""
    return f"{base}-ft-{run_key.rsplit('-', 1)[-1][:8]}"


@dataclass(frozen=True)
class _RunFile:
    """``locate`` for the weights inside a run folder: equal for the same file, so registering
    the same run twice yields an equal entry (and the loaded model is reused)."""

    path: str

    def __call__(self) -> Path | None:
        path = Path(self.path)
        return path if path.is_file() else None


@dataclass(frozen=True)
class RunWeights(PackageWeights):
    """Weights saved by a fine-tuning run in the run store."""

    run_key: str = ""

    @property
    def description(self) -> str:
        return f"fine-tuning run {self.run_key} (scanatlas runs show {self.run_key})"


def _build_finetuned(spec: EncoderSpec, weights: Path | None, device: torch.device) -> Any:
    """The base encoder built from its own weights, then the fine-tuned trunk loaded strictly."""
    base = get_spec(spec.name.rsplit("-ft-", 1)[0])
    base_model = base.build(base, ensure_weights(base).path, device)
    assert weights is not None
    load_strict(base_model, load_state_dict_file(weights), weights, f"fine-tuned {base.name}")
    return base_model


def finetuned_spec(run: Run) -> EncoderSpec:
    """The registry entry for the fine-tuned trunk of finetune ``run``.

    Raises ValueError when the run holds no encoder weights or its base encoder is unknown.
    """
    if not run.has(WEIGHTS_PAYLOAD):
        raise ValueError(f"run {run.key} holds no encoder weights (it was run without a final model)")
    base = get_spec(run.config["encoder"])
    size = int(run.config["image_size"])
    preprocessing = base.preprocessing
    assert isinstance(preprocessing, Preprocessing)
    return replace(
        base,
        name=derived_name(base.name, run.key),
        version=f"ft-{run.key.rsplit('-', 1)[-1][:12]}-{size}px/{base.version}",
        description=f"{base.name} fine-tuned on {run.dataset or 'a dataset'} "
        f"({run.summary.get('target', '')}) by run {run.key} on {run.created}.",
        preprocessing=replace(preprocessing, input_size=size),
        weights=RunWeights(package=f"run {run.key}", locate=_RunFile(str(run.path(WEIGHTS_PAYLOAD))),
                           run_key=run.key),
        build=_build_finetuned,
    )


def register_run_encoder(run: Run) -> str:
    """Register (or refresh) the encoder of finetune ``run``; returns its name."""
    spec = finetuned_spec(run)
    with _LOCK:
        if ENCODERS.get(spec.name) != spec:
            register_encoder(spec, replace=True)
    return spec.name


def register_finetuned_encoders(store: RunStore | None = None) -> list[str]:
    """Register the encoder of every finished fine-tuning run in ``store`` (default the run
    store under ``SCANATLAS_CACHE``); returns their names. Entries of runs that were deleted
    are removed. Cheap: reads each run's ``run.json`` only."""
    from core.runs import RunStore

    store = store if store is not None else RunStore()
    names = []
    for run in store.runs(kind=KIND):
        if run.has(WEIGHTS_PAYLOAD) and run.config.get("encoder") in ENCODERS:
            names.append(register_run_encoder(run))
    with _LOCK:
        for name, spec in list(ENCODERS.items()):
            if isinstance(spec.weights, RunWeights) and name not in names and spec.weights.locate() is None:
                del ENCODERS[name]
    return names
