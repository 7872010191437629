"""Pretrained encoders: a flat registry, loading by name, and batched image embedding.

    ENCODERS / EncoderSpec        what each encoder expects and returns (``specs``)
    get_encoder(name, ...)        a loaded, cached encoder (``registry``)
    encoder_availability()        which encoders can run here (``registry``)
    iter_image_embeddings(...)    decode + embed many images with prefetch (``batching``)
"""

from __future__ import annotations

from core.encoders.batching import EmbeddedChunk, iter_image_embeddings
from core.encoders.device import resolve_device
from core.encoders.image import ImageEncoder, Preprocessing
from core.encoders.registry import (
    Encoder,
    clear_model_cache,
    encoder_availability,
    get_encoder,
)
from core.encoders.specs import (
    DEFAULT_ENCODER,
    ENCODERS,
    EncoderSpec,
    WeightsUnavailableError,
    get_spec,
)
from core.encoders.text import TextEncoder

__all__ = [
    "DEFAULT_ENCODER",
    "ENCODERS",
    "EmbeddedChunk",
    "Encoder",
    "EncoderSpec",
    "ImageEncoder",
    "Preprocessing",
    "TextEncoder",
    "WeightsUnavailableError",
    "clear_model_cache",
    "encoder_availability",
    "get_encoder",
    "get_spec",
    "iter_image_embeddings",
    "resolve_device",
]
