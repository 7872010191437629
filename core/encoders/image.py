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

from core.decode_pool import centre_square, model_planes
from core.encoders.base import Encoder
from core.encoders.device import autocast_for
from core.encoders.specs import Preprocessing

__all__ = ["ImageEncoder", "centre_square", "planes_to_input", "preprocess_image", "prepare_module"]


def planes_to_input(planes: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """Resized planes from ``core.decode_pool.model_planes`` -> the network input: grey
    replicated to the model's channels, clipped to [0, 1], then ``(x - mean[c]) / std[c]``.

    planes : float32 of shape (1, S, S) or (channels, S, S).
    Returns a float32 tensor of shape (channels, S, S).
    """
    if planes.shape[0] != preprocessing.channels:
        planes = np.broadcast_to(planes, (preprocessing.channels, *planes.shape[1:]))
    stacked = planes.clip(0.0, 1.0)
    mean = np.asarray(preprocessing.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocessing.std, dtype=np.float32)[:, None, None]
    return torch.from_numpy(np.ascontiguousarray((stacked - mean) / std, dtype=np.float32))


def preprocess_image(image: np.ndarray, preprocessing: Preprocessing) -> torch.Tensor:
    """Turn one image into network input.

    image : ndarray of shape (H, W) or (H, W, 3), float32 in [0, 1].
    Returns a float32 tensor of shape (channels, input_size, input_size).
    Raises ValueError for a wrong shape, NaN/inf values, or values outside [0, 1].
    """
    planes = model_planes(image, input_size=preprocessing.input_size,
                          channels=preprocessing.channels)
    return planes_to_input(planes, preprocessing)


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
