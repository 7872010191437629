"""Getting a ready encoder by name (loaded once per process) and what is usable here.

Nothing here knows any particular encoder: every step reads the registry entry.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import pandas as pd
import torch

from core.encoders.base import Encoder
from core.encoders.device import configure_cpu_threads, resolve_device
from core.encoders.image import ImageEncoder, prepare_module
from core.encoders.registry import ENCODERS, get_spec
from core.encoders.specs import EncoderSpec
from core.encoders.text import TextEncoder
from core.encoders.weights import (
    ensure_weights,
    file_fingerprint,
    forget_failed_downloads,
    locate_weights,
    missing_weights_message,
)

# One loaded model per (entry, device, weights file): the app and the CLI share it, and
# Streamlit reruns never reload a model.
_MODELS: dict[tuple[EncoderSpec, str, str | None], Encoder] = {}
_MODELS_LOCK = threading.Lock()

_ENCODER_CLASSES: dict[str, type[Encoder]] = {"image": ImageEncoder, "text": TextEncoder}


def _build(spec: EncoderSpec, device: torch.device, weights: Path | None) -> Encoder:
    if device.type == "cpu":
        configure_cpu_threads()
    model = spec.build(spec, weights, device)
    if spec.kind == "image" and isinstance(model, torch.nn.Module):
        model = prepare_module(model, device)
    return _ENCODER_CLASSES[spec.kind](
        spec,
        device=device,
        model=model,
        weights_file=weights,
        weights_sha256=file_fingerprint(weights) if weights is not None else None,
    )


def get_encoder(
    name: str,
    *,
    device: str | torch.device = "auto",
    weights_path: str | os.PathLike | None = None,
) -> ImageEncoder | TextEncoder:
    """A ready-to-use encoder, loaded once per (entry, device, weights file) per process.

    name : a key of ``ENCODERS``. device : "auto" (CUDA, then MPS, then CPU), "cpu",
    "cuda[:N]", "mps" or a torch.device; an entry with a fixed ``device`` always runs there.
    weights_path : a weights file (or folder, for text models) to use instead of the
    standard one, for encoders that have weights.
    Raises ValueError (unknown name, listing the valid ones; bad device; unreadable weights)
    and WeightsUnavailableError (a FileNotFoundError naming the missing file, its folder and
    URL) after one download attempt per process. Never falls back to random weights.
    """
    spec = get_spec(name)
    resolved = resolve_device(device)
    if spec.device is not None:
        resolved = resolve_device(spec.device)
    weights = ensure_weights(spec, weights_path).path
    key = (spec, str(resolved), str(weights.resolve()) if weights else None)
    with _MODELS_LOCK:
        encoder = _MODELS.get(key)
        if encoder is None:
            encoder = _build(spec, resolved, weights)
            _MODELS[key] = encoder
    return encoder  # type: ignore[return-value]


def clear_model_cache() -> None:
    """Drop every loaded model and forget failed downloads (e.g. after adding a weights file)."""
    with _MODELS_LOCK:
        _MODELS.clear()
    forget_failed_downloads()


def _dependency_missing(spec: EncoderSpec) -> str | None:
    for module in spec.requires:
        if importlib.util.find_spec(module) is None:
            return module
    return None


AVAILABILITY_COLUMNS = ["name", "kind", "dim", "input", "weights_available", "version", "message"]


def encoder_availability() -> pd.DataFrame:
    """One row per registered encoder: can it run here, without loading or downloading.

    Returns a DataFrame with columns name, kind, dim, input, weights_available (bool),
    version, message (where the weights are, or which file goes where).
    """
    rows = []
    for name, spec in ENCODERS.items():
        location = locate_weights(spec)
        missing_module = _dependency_missing(spec)
        if missing_module:
            available, message = False, f"Python package {missing_module!r} is not installed"
        elif location.exists:
            available = True
            message = f"weights: {location.path}" if location.path else "no weights needed"
        else:
            available = False
            message = missing_weights_message(spec, location)
            if location.url:
                message += " (get_encoder tries one download first)"
        rows.append(
            {
                "name": name,
                "kind": spec.kind,
                "dim": spec.dim,
                "input": spec.input_description,
                "weights_available": available,
                "version": spec.version,
                "message": message,
            }
        )
    return pd.DataFrame(rows, columns=AVAILABILITY_COLUMNS)
