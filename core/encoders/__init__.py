"""Pretrained encoders: a flat registry, loading by name, and batched image embedding.

    ENCODERS / EncoderSpec        one entry per encoder: its whole contract (``registry``,
                                  ``specs``)
    get_spec(name), cam_encoders() look-ups in the registry
    get_encoder(name, ...)        a loaded, cached encoder (``loading``)
    encoder_availability()        which encoders can run here (``loading``)
    recommended_encoder(dataset)  the encoder to preselect for a dataset; admin_action(name)
                                  what an administrator must do for a missing one (``recommend``)
    iter_image_embeddings(...)    decode + embed many images with prefetch (``batching``)

Adding an encoder is adding one ``EncoderSpec`` to ``ENCODERS`` (see ``registry``).
"""

from __future__ import annotations

from core.encoders.base import Encoder
from core.encoders.batching import EmbeddedChunk, iter_image_embeddings
from core.encoders.device import resolve_device
from core.encoders.image import ImageEncoder
from core.encoders.loading import clear_model_cache, encoder_availability, get_encoder
from core.encoders.recommend import Recommendation, admin_action, is_chest_xray, recommended_encoder
from core.encoders.registry import (
    DEFAULT_DRIFT_ENCODERS,
    DEFAULT_ENCODER,
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    ENCODERS,
    cam_encoders,
    encoder_names,
    get_spec,
    register_encoder,
)
from core.encoders.specs import (
    DownloadWeights,
    EncoderSpec,
    PackageWeights,
    Preprocessing,
    TextPreprocessing,
    WeightsUnavailableError,
)
from core.encoders.text import TextEncoder

__all__ = [
    "DEFAULT_DRIFT_ENCODERS",
    "DEFAULT_ENCODER",
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "ENCODERS",
    "DownloadWeights",
    "EmbeddedChunk",
    "Encoder",
    "EncoderSpec",
    "ImageEncoder",
    "PackageWeights",
    "Preprocessing",
    "Recommendation",
    "TextEncoder",
    "TextPreprocessing",
    "WeightsUnavailableError",
    "admin_action",
    "cam_encoders",
    "clear_model_cache",
    "encoder_availability",
    "encoder_names",
    "get_encoder",
    "get_spec",
    "is_chest_xray",
    "iter_image_embeddings",
    "recommended_encoder",
    "register_encoder",
    "resolve_device",
]
