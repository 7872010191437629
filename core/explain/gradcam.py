"""Grad-CAM heatmaps: which parts of a scan pushed a linear head on encoder features.

The network explained is exactly what produced the embedding: the encoder's convolutional
trunk, the global average pool that gives its vector, then the user's linear head (for
example a logistic regression fitted on those vectors). Grad-CAM weighs the last feature map
by the gradient of the chosen class score and keeps the positive part.

The encoders see only the centred square of an image (their preprocessing crops it, then
resizes it); the heatmap is mapped back onto that square at full resolution and is 0 in the
strips outside it, which the model never saw.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from core.encoders.registry import ENCODERS, cam_encoders, get_spec
from core.encoders.specs import EncoderSpec


def __getattr__(name: str) -> Any:
    # Read from the registry on access, so an encoder registered later is included.
    # SUPPORTED_CAM_ENCODERS : names Grad-CAM can explain (as ``cam_encoders()``).
    # CAM_LAYERS : name -> the layer the CAM is read from, in words: the last convolutional
    #     feature map after its normalisation and activation, i.e. exactly the map the encoder
    #     averages into its vector.
    if name == "SUPPORTED_CAM_ENCODERS":
        return cam_encoders()
    if name == "CAM_LAYERS":
        return {encoder: ENCODERS[encoder].cam_layer for encoder in cam_encoders()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class CamNetwork(torch.nn.Module):
    """Encoder trunk -> ``feature_map`` (an identity the CAM hooks) -> mean pool -> linear head.

    spec : the encoder's registry entry; its ``feature_map(model, x)`` gives the map.
    ``pooled(x)`` equals the encoder's embedding of ``x``; ``forward(x)`` gives class scores.
    The encoder's own weights are shared, not copied, and stay frozen.
    """

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module, weights: torch.Tensor,
                 bias: torch.Tensor) -> None:
        super().__init__()
        _check_encoder(spec)
        self.trunk = model
        self.feature_fn = spec.feature_map
        self.feature_map = torch.nn.Identity()
        self.head = torch.nn.Linear(weights.shape[1], weights.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weights)
            self.head.bias.copy_(bias)
        self.head.requires_grad_(False)

    def pooled(self, batch: torch.Tensor) -> torch.Tensor:
        return self.feature_map(self.feature_fn(self.trunk, batch)).mean(dim=(2, 3))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(batch))


def _check_encoder(spec: EncoderSpec) -> None:
    if not spec.supports_cam:
        raise ValueError(
            f"Grad-CAM needs a convolutional image encoder; {spec.name!r} has no conv "
            f"layers. Supported encoders: {', '.join(cam_encoders())}"
        )


def _head_tensors(head_weights: Any, head_bias: Any, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    weights = np.asarray(head_weights, dtype=np.float32)
    if weights.ndim == 1:
        weights = weights[None, :]
    if weights.ndim != 2 or weights.shape[1] != dim or weights.shape[0] < 1:
        raise ValueError(f"head_weights must have shape (n_classes, {dim}), got {weights.shape}")
    if head_bias is None:
        bias = np.zeros(weights.shape[0], dtype=np.float32)
    else:
        bias = np.asarray(head_bias, dtype=np.float32).reshape(-1)
        if bias.shape != (weights.shape[0],):
            raise ValueError(
                f"head_bias must have shape ({weights.shape[0]},), got {np.shape(head_bias)}"
            )
    if not (np.isfinite(weights).all() and np.isfinite(bias).all()):
        raise ValueError("head_weights and head_bias must be finite")
    if weights.shape[0] == 1:
        # A binary scikit-learn model has one row scoring classes_[1]; the score of
        # classes_[0] is its negation, so target_class indexes classes_ as usual.
        weights, bias = np.vstack([-weights, weights]), np.concatenate([-bias, bias])
    return torch.from_numpy(weights), torch.from_numpy(bias)


def build_cam_network(encoder: Any, head_weights: Any, head_bias: Any) -> CamNetwork:
    """The CamNetwork for a loaded image encoder (``core.encoders.get_encoder``) and a head.

    head_weights : ndarray of shape (n_classes, dim) (or (dim,) / (1, dim) for a binary model).
    Raises ValueError for an unsupported encoder or a head of the wrong shape.
    """
    _check_encoder(encoder.spec)
    weights, bias = _head_tensors(head_weights, head_bias, encoder.spec.dim)
    network = CamNetwork(encoder.spec, encoder.model, weights, bias)
    return network.to(encoder.device).eval()


def _to_image_frame(cam: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Place a (S, S) CAM over the centred square of an (H, W) image; 0 outside it."""
    height, width = shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32)).resize(
        (side, side), Image.Resampling.BILINEAR)
    heatmap = np.zeros((height, width), dtype=np.float32)
    heatmap[top : top + side, left : left + side] = np.asarray(square, dtype=np.float32)
    return np.clip(heatmap, 0.0, 1.0)


def _check_target(target_class: Any, n_outputs: int) -> int:
    if isinstance(target_class, bool) or not isinstance(target_class, (int, np.integer)) or not (
        0 <= target_class < n_outputs
    ):
        raise ValueError(f"target_class={target_class!r} must be an integer in 0..{n_outputs - 1}")
    return int(target_class)


def gradcam_heatmap(
    image: np.ndarray,
    encoder_name: str,
    head_weights: np.ndarray,
    head_bias: np.ndarray | None,
    target_class: int,
    *,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Grad-CAM of ``target_class`` for one image.

    image : ndarray of shape (H, W) or (H, W, 3), float32 in [0, 1] (``core.pixels.load_pixels``).
    encoder_name : one of ``core.encoders.cam_encoders()`` (the layer used is the entry's
        ``cam_layer``).
    head_weights : ndarray of shape (n_classes, dim), head_bias : (n_classes,) or None; e.g.
        a scikit-learn ``LogisticRegression`` fitted on this encoder's embeddings gives
        ``coef_`` and ``intercept_``. A binary model's single row (1, dim) is accepted and
        ``target_class`` 0 / 1 then means ``classes_[0]`` / ``classes_[1]``.
    target_class : the row of the head (class index) to explain.

    Returns ndarray of shape (H, W) float32 in [0, 1]: 1 where the evidence for the class is
    strongest, 0 outside the centred square the encoder sees and where there is none (all
    zeros when no part of the image raises the class score).
    Raises ValueError for an encoder without conv layers (listing the supported ones), a bad
    image, head or target_class, and the encoder's own errors (missing weights) from
    ``core.encoders.get_encoder``.
    """
    from core.encoders import get_encoder

    spec = get_spec(encoder_name)  # an unknown name lists every encoder
    _check_encoder(spec)
    weights, _ = _head_tensors(head_weights, head_bias, spec.dim)
    _check_target(target_class, weights.shape[0])
    encoder = get_encoder(encoder_name, device=device)
    return gradcam_with_encoder(image, encoder, head_weights, head_bias, target_class)


def gradcam_with_encoder(
    image: np.ndarray,
    encoder: Any,
    head_weights: np.ndarray,
    head_bias: np.ndarray | None,
    target_class: int,
) -> np.ndarray:
    """``gradcam_heatmap`` for an already loaded image encoder (``core.encoders.ImageEncoder``);
    same inputs, output and errors."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    network = build_cam_network(encoder, head_weights, head_bias)
    target = _check_target(target_class, network.head.out_features)
    tensor = encoder.preprocess(image)[None].to(encoder.device)
    # The encoder's weights are frozen, so gradients reach the feature map only through an
    # input that asks for them.
    tensor.requires_grad_(True)
    cam = GradCAM(model=network, target_layers=[network.feature_map])
    try:
        with torch.enable_grad():
            maps = cam(input_tensor=tensor, targets=[ClassifierOutputTarget(target)])
    finally:
        cam.activations_and_grads.release()
    return _to_image_frame(np.nan_to_num(maps[0], nan=0.0), np.shape(image))


def _jet(values: np.ndarray) -> np.ndarray:
    """The classic blue-cyan-yellow-red "jet" colour map: (...) in [0, 1] -> (..., 3)."""
    channels = [np.clip(1.5 - np.abs(4.0 * values - offset), 0.0, 1.0) for offset in (3, 2, 1)]
    return np.stack(channels, axis=-1)


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.4) -> np.ndarray:
    """Blend a heatmap (jet colours) over a scan.

    image : ndarray of shape (H, W) or (H, W, 3) in [0, 1]; heatmap : ndarray (H, W) in [0, 1].
    alpha : weight of the heatmap colours, in [0, 1].
    Returns an RGB ndarray of shape (H, W, 3) uint8.
    Raises ValueError for mismatched shapes, values outside [0, 1] or a bad alpha.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    picture = np.asarray(image, dtype=np.float32)
    heat = np.asarray(heatmap, dtype=np.float32)
    if picture.ndim == 3 and picture.shape[2] == 1:
        picture = picture[:, :, 0]
    if not (picture.ndim == 2 or (picture.ndim == 3 and picture.shape[2] == 3)):
        raise ValueError(f"image must have shape (H, W) or (H, W, 3), got {picture.shape}")
    if heat.shape != picture.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} must equal the image's {picture.shape[:2]}")
    for name, array in (("image", picture), ("heatmap", heat)):
        if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise ValueError(f"{name} values must be finite and in [0, 1]")
    rgb = np.repeat(picture[:, :, None], 3, axis=2) if picture.ndim == 2 else picture
    blended = (1.0 - alpha) * rgb + alpha * _jet(heat)
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
