"""GPU path: JPEGs decoded by nvJPEG on the GPU, everything else decoded on the CPU and sent over
with pinned, non-blocking host-to-device copies.

``gpu_image_embedder()`` is an ``image_embedder`` for ``core.embed.embed_dataset``: it needs an
encoder on CUDA and raises ``GpuDecodeUnavailable`` otherwise, so the CPU path
(``iter_image_embeddings``) is never touched. Its vectors differ slightly from the CPU path's
(nvJPEG's IDCT and a torch resize instead of Pillow's reduced-scale decode and resize), so it
names its own cache namespace through ``PREPROCESS_EXTRA`` rather than mixing the two.

The decode + preprocess code is device-generic (``decode_device``), so its arithmetic is tested
on CPU against the standard path; only the device differs on a GPU machine.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from core.encoders.batching import EmbeddedChunk, Failure, Item, _check_items, _prepare_one
from core.encoders.image import ImageEncoder
from core.encoders.specs import Preprocessing
from core.pixels import DEFAULT_MAX_PIXELS

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})
PREPROCESS_EXTRA = {"jpeg_decoder": "torchvision-decode_jpeg"}
# Channels of an RGB JPEG that agree within this (on [0, 1]) make a grey image, as in pixels.py.
GREY_TOLERANCE = 2 / 255


class GpuDecodeUnavailable(RuntimeError):
    """No CUDA here (or the encoder is not on CUDA): use the CPU path."""


def gpu_decode_available(device: torch.device | str) -> bool:
    """True when ``device`` is a CUDA device that exists here."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.is_available()


def _read_jpeg(path: str, max_pixels: int) -> torch.Tensor:
    """The file's bytes as a pinned uint8 tensor (pinned only when CUDA exists); raises
    ValueError when the header says the image is over ``max_pixels``."""
    from PIL import Image
    from torchvision.io import read_file

    with Image.open(path) as header:  # reads the header only
        width, height = header.size
        if header.format != "JPEG":
            raise ValueError(f"not a JPEG ({header.format})")
    if width * height > max_pixels:
        raise ValueError(f"{width}x{height} is over the {max_pixels}-pixel decode budget")
    data = read_file(path)
    return data.pin_memory() if torch.cuda.is_available() else data


def preprocess_tensor(image: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    """A decoded uint8 image (C, H, W), C in {1, 3}, on any device -> float32 network input
    (channels, size, size) on that device: the same steps as ``preprocess_image`` (grey when the
    colour channels agree, centre square, antialiased bilinear resize, channels, normalisation).
    """
    x = image.to(torch.float32) / 255.0
    if x.shape[0] == 3 and float((x.amax(0) - x.amin(0)).max()) <= GREY_TOLERANCE:
        x = x.mean(0, keepdim=True)
    _, height, width = x.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    x = x[:, top : top + side, left : left + side]
    size = preprocessing.input_size
    if preprocessing.channels == 1 and x.shape[0] == 3:
        x = x.mean(0, keepdim=True)
    x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False)[0]
    if preprocessing.channels == 3 and x.shape[0] == 1:
        x = x.expand(3, size, size)
    x = x.clamp(0.0, 1.0)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=x.device)[:, None, None]
    std = torch.tensor(preprocessing.std, dtype=torch.float32, device=x.device)[:, None, None]
    return ((x - mean) / std).contiguous()


def _decode_batch(
    batch: Sequence[Item], encoder: ImageEncoder, decode_device: torch.device, max_pixels: int
) -> tuple[list[str], list[torch.Tensor], list[Failure]]:
    from torchvision.io import ImageReadMode, decode_jpeg

    ids: list[str] = []
    tensors: list[torch.Tensor] = []
    failures: list[Failure] = []
    jpegs: list[tuple[Item, torch.Tensor]] = []
    others: list[Item] = []
    for item in batch:
        if os.path.splitext(item[1])[1].lower() in JPEG_SUFFIXES:
            try:
                jpegs.append((item, _read_jpeg(item[1], max_pixels)))
                continue
            except Exception:  # not readable as a plain JPEG here: the CPU decoder decides
                pass
        others.append(item)
    if jpegs:
        data = [d for _, d in jpegs]
        try:
            decoded = decode_jpeg(data, mode=ImageReadMode.UNCHANGED, device=decode_device,
                                  apply_exif_orientation=True)
        except RuntimeError:  # one bad file fails the batched call: decode one by one
            decoded = []
            for d in data:
                try:
                    decoded.append(decode_jpeg(d, mode=ImageReadMode.UNCHANGED,
                                               device=decode_device, apply_exif_orientation=True))
                except RuntimeError:
                    decoded.append(None)
        for (item, _), image in zip(jpegs, decoded, strict=True):
            if image is None or image.shape[0] not in (1, 3):
                others.append(item)  # CMYK, 12-bit, corrupt: the CPU decoder decides / reports
                continue
            ids.append(item[0])
            tensors.append(preprocess_tensor(image, encoder.preprocessing))
    for item in others:
        tensor, reason = _prepare_one(item, encoder, max_pixels)
        if tensor is None:
            failures.append((item[0], item[1], reason or "unknown error"))
            continue
        if decode_device.type == "cuda":
            tensor = tensor.pin_memory().to(decode_device, non_blocking=True)
        ids.append(item[0])
        tensors.append(tensor)
    return ids, tensors, failures


def iter_image_embeddings_on(
    items: Sequence[Item],
    encoder: ImageEncoder,
    *,
    decode_device: torch.device | str,
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[EmbeddedChunk]:
    """Like ``iter_image_embeddings``, with JPEGs decoded and preprocessed on ``decode_device``
    (torchvision's ``decode_jpeg``). Chunks come in input order except that, within a batch,
    JPEG rows come before the rest. Every item appears once, as a row or a failure."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    decode_device = torch.device(decode_device)
    items = _check_items(items)
    done = 0
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image decoders (for TorchCodec) with a warning per
            # call; decode_jpeg still works and is what this path is about.
            warnings.filterwarnings("ignore", message=".*TorchVision are deprecated.*")
            ids, tensors, failures = _decode_batch(batch, encoder, decode_device, max_pixels)
        if tensors:
            vectors = encoder.embed_batch(torch.stack(tensors))
        else:
            vectors = np.zeros((0, encoder.spec.dim), dtype=np.float32)
        done += len(batch)
        if progress is not None:
            progress(done, len(items))
        yield EmbeddedChunk(image_ids=ids, vectors=vectors, failures=failures)


def gpu_image_embedder(max_pixels: int = DEFAULT_MAX_PIXELS) -> Callable[..., Iterator[Any]]:
    """An ``image_embedder`` for ``embed_dataset`` that decodes JPEGs on the encoder's GPU.
    Its ``preprocess_extra`` names the decoder in the cache namespace. Calling it with an
    encoder not on CUDA raises GpuDecodeUnavailable."""

    def embed(items: Sequence[Item], encoder: ImageEncoder, *, batch_size: int = 32,
              progress: Callable[[int, int], None] | None = None) -> Iterator[EmbeddedChunk]:
        if not gpu_decode_available(encoder.device):
            raise GpuDecodeUnavailable(
                f"GPU JPEG decoding needs an encoder on CUDA; {encoder.spec.name} is on "
                f"{encoder.device} (CUDA available: {torch.cuda.is_available()})"
            )
        return iter_image_embeddings_on(items, encoder, decode_device=encoder.device,
                                        batch_size=batch_size, max_pixels=max_pixels,
                                        progress=progress)

    embed.preprocess_extra = dict(PREPROCESS_EXTRA)  # type: ignore[attr-defined]
    return embed
