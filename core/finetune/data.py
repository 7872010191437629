"""Images for fine-tuning: decoded once into a bounded in-memory bank, and augmented per batch.

Each image is decoded with :func:`core.pixels.load_pixels` and preprocessed to the encoder's
input contract (:func:`core.encoders.image.preprocess_image`) at the fine-tuning image size.
Preprocessed tensors are kept as float16 up to a memory budget; images beyond the budget are
decoded again whenever a batch needs them, so memory stays bounded for any dataset size.

Augmentation (training batches only): a random horizontal flip and a small random rotation
(default +-10 degrees), batched through ``affine_grid`` / ``grid_sample`` with border padding,
driven by a seeded ``torch.Generator`` so that an epoch is the same whether or not the run was
resumed in between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from core.encoders.image import preprocess_image
from core.encoders.specs import Preprocessing
from core.pixels import DEFAULT_MAX_PIXELS, PixelError, load_pixels

DEFAULT_MEMORY_BUDGET = 2 * 1024**3  # bytes of preprocessed float16 images kept in memory


@dataclass(frozen=True)
class Augmentation:
    """flip_probability : chance of a left-right flip. max_rotation : degrees, uniform in
    [-max_rotation, max_rotation]. Both 0 disables augmentation."""

    flip_probability: float = 0.5
    max_rotation: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_probability <= 1.0:
            raise ValueError(f"flip_probability={self.flip_probability} must be in [0, 1]")
        if not 0.0 <= self.max_rotation <= 45.0:
            raise ValueError(f"max_rotation={self.max_rotation} must be in [0, 45] degrees")


def augment(batch: torch.Tensor, augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Randomly flipped and rotated copy of ``batch``.

    batch : tensor of shape (B, C, S, S), float. generator : a CPU generator (the random draws
    are made on the CPU, so a run is reproducible on any device).
    Returns a tensor of the same shape, on the batch's device.
    """
    n = batch.shape[0]
    if n == 0 or (augmentation.flip_probability == 0 and augmentation.max_rotation == 0):
        return batch
    flips = torch.rand(n, generator=generator) < augmentation.flip_probability
    angles = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(augmentation.max_rotation)
    cos, sin = torch.cos(angles), torch.sin(angles)
    sign = torch.where(flips, -1.0, 1.0)
    # Sampling grid: output (x, y) reads input (sign * (cos x - sin y), sin x + cos y).
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = sign * cos, -sign * sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    theta = theta.to(device=batch.device, dtype=torch.float32)
    source = batch.float()
    grid = torch.nn.functional.affine_grid(theta, list(source.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(source, grid, mode="bilinear", padding_mode="border",
                                          align_corners=False)
    return out.to(batch.dtype)


class ImageBank:
    """Preprocessed images by row, decoded once and kept within a memory budget.

    paths, frames : one entry per row of the table being fine-tuned on.
    preprocessing : the encoder's input contract at the fine-tuning size.
    memory_budget : bytes of float16 tensors kept; rows beyond it are decoded on each use.
    """

    def __init__(self, paths: Sequence[str], frames: Sequence[int], preprocessing: Preprocessing, *,
                 max_pixels: int = DEFAULT_MAX_PIXELS, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 num_workers: int = 1) -> None:
        if len(paths) != len(frames):
            raise ValueError(f"paths ({len(paths)}) and frames ({len(frames)}) must have the same length")
        if memory_budget < 0:
            raise ValueError(f"memory_budget={memory_budget} must be >= 0 bytes")
        if num_workers < 1:
            raise ValueError(f"num_workers={num_workers} must be >= 1")
        self.paths = [str(p) for p in paths]
        self.frames = [int(f) for f in frames]
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels
        size = preprocessing.input_size
        self.bytes_per_image = preprocessing.channels * size * size * 2
        self.capacity = memory_budget // self.bytes_per_image
        self.num_workers = num_workers
        self._kept: dict[int, torch.Tensor] = {}
        self.failures: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, row: int) -> torch.Tensor | None:
        try:
            image = load_pixels(self.paths[row], self.frames[row], max_pixels=self.max_pixels,
                                min_size=self.preprocessing.input_size)
            return preprocess_image(image, self.preprocessing).to(torch.float16)
        except PixelError as error:
            self.failures[row] = f"{error.status}: {error.reason}"
        except Exception as error:  # one bad image must not stop the run; its reason is kept
            self.failures[row] = f"{type(error).__name__}: {error}"
        return None

    def preload(self, rows: Sequence[int]) -> list[int]:
        """Decode ``rows`` (up to the budget they are kept); returns the rows that failed."""
        rows = [int(r) for r in rows if int(r) not in self._kept and int(r) not in self.failures]
        with ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="scanatlas-ft-decode") as pool:
            for row, tensor in zip(rows, pool.map(self._decode, rows), strict=True):
                if tensor is not None and len(self._kept) < self.capacity:
                    self._kept[row] = tensor
        return sorted(r for r in rows if r in self.failures)

    def batch(self, rows: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """(tensor of shape (n_ok, C, S, S) float32, the rows it holds in order); rows whose
        image fails to decode are left out (their reasons are in ``failures``)."""
        tensors, kept_rows = [], []
        missing = [int(r) for r in rows if int(r) not in self._kept and int(r) not in self.failures]
        decoded: dict[int, torch.Tensor | None] = {}
        if missing:
            with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
                decoded = dict(zip(missing, pool.map(self._decode, missing), strict=True))
        for row in (int(r) for r in rows):
            tensor = self._kept.get(row, decoded.get(row))
            if tensor is not None:
                tensors.append(tensor)
                kept_rows.append(row)
        size = self.preprocessing.input_size
        if not tensors:
            return torch.zeros(0, self.preprocessing.channels, size, size), []
        return torch.stack(tensors).float(), kept_rows


def batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """``rows`` cut into consecutive batches of at most ``batch_size``."""
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
