"""Getting a ready encoder by name (loaded once per process) and what is usable here."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import pandas as pd
import torch

from core.encoders import image as image_models
from core.encoders.device import configure_cpu_threads, resolve_device
from core.encoders.image import ImageEncoder, Preprocessing
from core.encoders.specs import (
    ENCODERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderSpec,
    WeightsUnavailableError,
    get_spec,
)
from core.encoders.text import TextEncoder, build_minilm
from core.encoders.weights import (
    ensure_weights,
    file_fingerprint,
    forget_failed_downloads,
    locate_weights,
    missing_weights_message,
)

Encoder = ImageEncoder | TextEncoder

# One loaded model per (name, device, weights file): the app and the CLI share it, and
# Streamlit reruns never reload a model.
_MODELS: dict[tuple[str, str, str | None], Encoder] = {}
_MODELS_LOCK = threading.Lock()

_BUILDERS = {
    "efficientnet-lite0": (image_models.build_efficientnet_lite0, image_models.efficientnet_features),
    "resnet18": (image_models.build_resnet18, image_models.resnet18_features),
    "densenet121-xrv": (image_models.build_densenet121_xrv, image_models.densenet_xrv_features),
}


def preprocessing_for(spec: EncoderSpec) -> Preprocessing:
    """The Preprocessing that implements ``spec``'s normalisation."""
    assert spec.input_size is not None and spec.channels is not None
    if spec.name == "efficientnet-lite0":
        mean, std = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3
    elif spec.name == "resnet18":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif spec.name == "densenet121-xrv":
        # (2x - 1) * 1024 == (x - 0.5) / (1 / 2048)
        mean, std = (0.5,), (1.0 / 2048.0,)
    else:  # pixels
        mean, std = (0.0,), (1.0,)
    return Preprocessing(input_size=spec.input_size, channels=spec.channels, mean=mean, std=std)


def _build(spec: EncoderSpec, device: torch.device, weights: Path | None) -> Encoder:
    if device.type == "cpu":
        configure_cpu_threads()
    if spec.name == "pixels":
        return ImageEncoder(
            spec,
            # Thumbnails and histograms are cheaper than a host-to-GPU copy.
            device=torch.device("cpu"),
            model=None,
            features=image_models.pixels_features,
            preprocessing=preprocessing_for(spec),
        )
    assert weights is not None
    fingerprint = file_fingerprint(weights)
    if spec.name == "minilm":
        return TextEncoder(
            spec,
            device=device,
            model=build_minilm(weights, device),
            weights_file=weights,
            weights_sha256=fingerprint,
        )
    build, features = _BUILDERS[spec.name]
    return ImageEncoder(
        spec,
        device=device,
        model=build(weights, device),
        features=features,
        preprocessing=preprocessing_for(spec),
        weights_file=weights,
        weights_sha256=fingerprint,
    )


def get_encoder(
    name: str,
    *,
    device: str | torch.device = "auto",
    weights_path: str | os.PathLike | None = None,
) -> Encoder:
    """A ready-to-use encoder, loaded once per (name, device, weights file) per process.

    name : a key of ``ENCODERS``. device : "auto" (CUDA, then MPS, then CPU), "cpu",
    "cuda[:N]", "mps" or a torch.device. weights_path : a weights file to use instead of the
    standard one (resnet18, densenet121-xrv, efficientnet-lite0: a state dict; minilm: a
    sentence-transformers folder).
    Raises ValueError (unknown name, listing the valid ones; bad device; unreadable weights)
    and WeightsUnavailableError (a FileNotFoundError naming the missing file, its folder and
    URL) after one download attempt per process. Never falls back to random weights.
    """
    spec = get_spec(name)
    resolved = resolve_device(device)
    weights = ensure_weights(name, weights_path).path
    key = (name, str(resolved), str(weights.resolve()) if weights else None)
    with _MODELS_LOCK:
        encoder = _MODELS.get(key)
        if encoder is None:
            encoder = _build(spec, resolved, weights)
            _MODELS[key] = encoder
    return encoder


def clear_model_cache() -> None:
    """Drop every loaded model and forget failed downloads (e.g. after adding a weights file)."""
    with _MODELS_LOCK:
        _MODELS.clear()
    forget_failed_downloads()


def _dependency_missing(name: str) -> str | None:
    needed = {
        "efficientnet-lite0": ["efficientnet_lite_pytorch"],
        "resnet18": ["torchvision"],
        "densenet121-xrv": ["torchxrayvision", "torchvision"],
        "minilm": ["sentence_transformers"],
    }.get(name, [])
    for module in needed:
        if importlib.util.find_spec(module) is None:
            return module
    return None


def encoder_availability() -> pd.DataFrame:
    """One row per registered encoder: can it run here, without loading or downloading.

    Returns a DataFrame with columns name, kind, dim, input, weights_available (bool),
    version, message (where the weights are, or which file goes where).
    """
    rows = []
    for name, spec in ENCODERS.items():
        location = locate_weights(name)
        missing_module = _dependency_missing(name)
        if missing_module:
            available, message = False, f"Python package {missing_module!r} is not installed"
        elif location.exists:
            available = True
            message = f"weights: {location.path}" if location.path else "no weights needed"
        else:
            available = False
            message = missing_weights_message(name, location)
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
    return pd.DataFrame(rows, columns=[
        "name", "kind", "dim", "input", "weights_available", "version", "message"])


__all__ = [
    "Encoder",
    "WeightsUnavailableError",
    "clear_model_cache",
    "encoder_availability",
    "get_encoder",
]
