"""Image encoders: preprocessing to each model's input contract, and the batched forward pass.

Every image encoder takes the same input, a float32 array in ``[0, 1]`` of shape (H, W) or
(H, W, 3) as ``core.pixels.load_pixels`` returns it, and turns it into the tensor its spec
describes: centre square crop (so the aspect ratio is kept and no anatomy is stretched),
antialiased bilinear resize, channel conversion (grey replicated to RGB, or colour averaged to
grey), then the spec's normalisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from core.encoders.base import Encoder
from core.encoders.device import autocast_for
from core.encoders.specs import Preprocessing

# Values may overshoot [0, 1] by rounding in upstream rescaling; beyond this it is a bug.
_RANGE_TOLERANCE = 1e-3


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


class ImageEncoder(Encoder):
    """A loaded image encoder: ``preprocess`` one image, ``embed_batch`` a stack of them.

    Built by ``core.encoders.get_encoder`` from a registry entry; ``spec.forward(model, batch)``
    gives the vectors and ``spec.preprocessing`` the input contract.
    """

    kind = "image"

    @property
    def preprocessing(self) -> Preprocessing:
        return self.spec.preprocessing  # type: ignore[return-value]

    def preprocess_params(self) -> dict[str, Any]:
        # decode_min_size: JPEGs are decoded at reduced scale down to the input size (pixels.py).
        return {**super().preprocess_params(), "decode_min_size": self.preprocessing.input_size}

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """image : ndarray (H, W) or (H, W, 3) float32 in [0, 1] -> tensor (C, S, S).

        Raises ValueError for a wrong shape or out-of-range values. Thread-safe.
        """
        return preprocess_image(image, self.preprocessing)

    def embed_batch(self, batch: torch.Tensor) -> np.ndarray:
        """batch : tensor of shape (B, C, S, S) from ``preprocess`` -> ndarray (B, dim) float32.

        Raises ValueError when the batch shape does not match the spec, or when the entry's
        forward returns the wrong shape.
        """
        size = self.preprocessing.input_size
        expected = (self.preprocessing.channels, size, size)
        if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
            shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
            raise ValueError(f"{self.spec.name}: batch must have shape (B, *{expected}), got {shape}")
        if batch.shape[0] == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        with torch.inference_mode():
            inputs = batch.to(self.device, dtype=torch.float32, non_blocking=True)
            if isinstance(self.model, torch.nn.Module):
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast_for(self.device):
                vectors = self.spec.forward(self.model, inputs)
            vectors = torch.as_tensor(vectors).float().cpu().numpy().astype(np.float32, copy=False)
        if vectors.shape != (batch.shape[0], self.spec.dim):
            raise ValueError(
                f"{self.spec.name}: forward returned shape {vectors.shape}, "
                f"expected ({batch.shape[0]}, {self.spec.dim})"
            )
        return vectors


def prepare_module(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Eval mode, frozen parameters, on ``device``, channels-last (faster convolutions)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.to(device).to(memory_format=torch.channels_last)
