"""Image encoders: preprocessing to each model's input contract, and the batched forward pass.

Every image encoder takes the same input, a float32 array in ``[0, 1]`` of shape (H, W) or
(H, W, 3) as ``core.pixels.load_pixels`` returns it, and turns it into the tensor its spec
describes: centre square crop (so the aspect ratio is kept and no anatomy is stretched),
antialiased bilinear resize, channel conversion (grey replicated to RGB, or colour averaged to
grey), then the spec's normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.encoders.device import autocast_for
from core.encoders.specs import EncoderSpec
from core.encoders.weights import load_state_dict_file

# Values may overshoot [0, 1] by rounding in upstream rescaling; beyond this it is a bug.
_RANGE_TOLERANCE = 1e-3
PIXEL_THUMBNAIL = 16
PIXEL_BINS = 32


@dataclass(frozen=True)
class Preprocessing:
    """How a ``[0, 1]`` image becomes network input: ``(x - mean[c]) / std[c]``."""

    input_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: str = "centre-square"
    resize: str = "bilinear-antialias"

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "channels": self.channels,
            "mean": [round(m, 8) for m in self.mean],
            "std": [round(s, 8) for s in self.std],
            "crop": self.crop,
            "resize": self.resize,
        }


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty: shape {image.shape}")
    image = np.asarray(image, dtype=np.float32)
    low, high = float(np.min(image)), float(np.max(image))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("image contains NaN or infinite values")
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise ValueError(f"image values must be in [0, 1], got [{low:.4g}, {high:.4g}]")
    return image


def centre_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an (H, W[, C]) array."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side]


def _resize_plane(plane: np.ndarray, size: int) -> np.ndarray:
    # PIL's bilinear filter widens its support when shrinking, i.e. it antialiases, and it
    # releases the GIL, so decode threads resize truly in parallel.
    resized = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def preprocess_image(image: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """Turn one image into network input.

    image : ndarray of shape (H, W) or (H, W, 3), float32 in [0, 1].
    Returns a float32 tensor of shape (channels, input_size, input_size).
    Raises ValueError for a wrong shape, NaN/inf values, or values outside [0, 1].
    """
    image = centre_square(_check_image(image))
    size = preprocessing.input_size
    if preprocessing.channels == 1:
        grey = image.mean(axis=2) if image.ndim == 3 else image
        planes = [_resize_plane(grey, size)]
    elif image.ndim == 2:
        planes = [_resize_plane(image, size)] * 3
    else:
        planes = [_resize_plane(image[:, :, c], size) for c in range(3)]
    stacked = np.stack(planes).clip(0.0, 1.0)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocessing.std, dtype=np.float32)[:, None, None]
    return torch.from_numpy(np.ascontiguousarray((stacked - mean) / std, dtype=np.float32))


def pixel_features(batch: torch.Tensor) -> torch.Tensor:
    """16x16 average-pooled thumbnail + 32-bin histogram (fractions) per grey image.

    batch : tensor of shape (B, 1, S, S) in [0, 1], S a multiple of 16.
    Returns a tensor of shape (B, 256 + 32).
    """
    size = batch.shape[-1]
    thumbnail = torch.nn.functional.avg_pool2d(batch, size // PIXEL_THUMBNAIL).flatten(1)
    values = batch.flatten(1)
    bins = (values * PIXEL_BINS).long().clamp_(0, PIXEL_BINS - 1)
    counts = torch.zeros(batch.shape[0], PIXEL_BINS, dtype=batch.dtype, device=batch.device)
    counts.scatter_add_(1, bins, torch.ones_like(values))
    return torch.cat([thumbnail, counts / values.shape[1]], dim=1)


class ImageEncoder:
    """A loaded image encoder: ``preprocess`` one image, ``embed_batch`` a stack of them.

    spec : the registry entry. device : where the model runs. model : the torch module
    (None for ``pixels``), exposed for explanations such as Grad-CAM.
    weights_file / weights_sha256 : the weights actually loaded (None without weights).
    """

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        device: torch.device,
        model: torch.nn.Module | None,
        features: Callable[[torch.nn.Module | None, torch.Tensor], torch.Tensor],
        preprocessing: Preprocessing,
        weights_file: Path | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        self.spec = spec
        self.device = device
        self.model = model
        self.features = features
        self.preprocessing = preprocessing
        self.weights_file = weights_file
        self.weights_sha256 = weights_sha256

    def __repr__(self) -> str:
        return f"ImageEncoder({self.spec.name!r}, device={str(self.device)!r})"

    def preprocess_params(self) -> dict[str, Any]:
        """JSON-able description of everything besides the version that shapes the vectors.

        Includes the weights fingerprint, so vectors from a user-supplied weights file never
        share a cache entry with the standard weights.
        """
        # decode_min_size: JPEGs are decoded at reduced scale down to the input size (pixels.py).
        return {**self.preprocessing.as_dict(), "weights_sha256": self.weights_sha256,
                "decode_min_size": self.spec.input_size}

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """image : ndarray (H, W) or (H, W, 3) float32 in [0, 1] -> tensor (C, S, S).

        Raises ValueError for a wrong shape or out-of-range values. Thread-safe.
        """
        return preprocess_image(image, self.preprocessing)

    def embed_batch(self, batch: torch.Tensor) -> np.ndarray:
        """batch : tensor of shape (B, C, S, S) from ``preprocess`` -> ndarray (B, dim) float32.

        Raises ValueError when the batch shape does not match the spec.
        """
        expected = (self.preprocessing.channels, self.preprocessing.input_size,
                    self.preprocessing.input_size)
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"{self.spec.name}: batch must have shape (B, *{expected}), got {shape}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        with torch.inference_mode():
            inputs = batch.to(self.device, dtype=torch.float32, non_blocking=True)
            if self.model is not None:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast_for(self.device):
                vectors = self.features(self.model, inputs)
            return vectors.float().cpu().numpy().astype(np.float32, copy=False)


def _load_strict(module: torch.nn.Module, state: dict[str, Any], weights_file: Path, what: str) -> None:
    """load_state_dict(strict=True), with a mismatch reported as a ValueError naming the file."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"{weights_file}: not {what} weights ({first})") from error


def _prepare(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(device).to(memory_format=torch.channels_last)


def build_efficientnet_lite0(weights_file: Path, device: torch.device) -> torch.nn.Module:
    """EfficientNet-Lite0 with the packaged ImageNet weights, loaded strictly (no missing keys).

    The classifier stays on the module (ImageNet logits are handy for sanity checks); the
    encoder's features are the pooled head activations before it.
    """
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    _load_strict(model, load_state_dict_file(weights_file), weights_file, "EfficientNet-Lite0")
    return _prepare(model, device)


def efficientnet_features(model: Any, batch: torch.Tensor) -> torch.Tensor:
    return model.extract_features(batch).mean(dim=(2, 3))


def build_resnet18(weights_file: Path, device: torch.device) -> torch.nn.Module:
    """torchvision ResNet-18 with ImageNet weights, loaded strictly; fc replaced by Identity."""
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    _load_strict(model, load_state_dict_file(weights_file), weights_file, "torchvision ResNet-18")
    model.fc = torch.nn.Identity()
    return _prepare(model, device)


def resnet18_features(model: Any, batch: torch.Tensor) -> torch.Tensor:
    return model(batch)


def build_densenet121_xrv(weights_file: Path, device: torch.device) -> torch.nn.Module:
    """torchxrayvision DenseNet-121 (res224-all); every ``features.*`` weight must load.

    The classifier and its operating thresholds are not used for embeddings, so only the
    convolutional trunk is required to match.
    """
    import torchvision.models.densenet as tv_densenet
    import torchxrayvision as xrv

    state = load_state_dict_file(weights_file, allow_modules=(xrv.models, tv_densenet))
    trunk = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    if not trunk:
        raise ValueError(
            f"{weights_file}: no 'features.*' weights; not a torchxrayvision DenseNet-121 file"
        )
    model = xrv.models.DenseNet(weights=None)
    _load_strict(model.features, trunk, weights_file, "torchxrayvision DenseNet-121")
    return _prepare(model, device)


def densenet_xrv_features(model: Any, batch: torch.Tensor) -> torch.Tensor:
    return model.features2(batch)


def pixels_features(_model: Any, batch: torch.Tensor) -> torch.Tensor:
    return pixel_features(batch)
