"""The text encoder: sentence embeddings of report / notes text, fully offline."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.encoders.specs import EncoderSpec


def is_missing_text(text: Any) -> bool:
    """None, NaN (pandas' missing value) and blank strings count as no text."""
    if text is None:
        return True
    if isinstance(text, float) and math.isnan(text):
        return True
    return isinstance(text, str) and not text.strip()


class TextEncoder:
    """A loaded sentence-transformers model.

    spec : the registry entry. device : where it runs. model : the SentenceTransformer.
    weights_file / weights_sha256 : the model folder loaded and its fingerprint.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        device: torch.device,
        model: Any,
        weights_file: Path | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        self.spec = spec
        self.device = device
        self.model = model
        self.weights_file = weights_file
        self.weights_sha256 = weights_sha256

    def __repr__(self) -> str:
        return f"TextEncoder({self.spec.name!r}, device={str(self.device)!r})"

    def preprocess_params(self) -> dict[str, Any]:
        """JSON-able settings besides the version that shape the vectors (cache key part)."""
        return {
            "max_seq_length": int(self.model.max_seq_length),
            "normalize_embeddings": True,
            "weights_sha256": self.weights_sha256,
        }

    def embed_texts(self, texts: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Embed texts as unit vectors.

        texts : sequence of n str; None, NaN and blank strings are allowed and give a NaN
            row, because a zero vector would look like a real (and oddly central) text.
        Returns ndarray of shape (n, dim) float32, rows aligned with ``texts``.
        Raises ValueError for an entry that is neither text nor missing, or batch_size < 1.
        Text longer than the model's max_seq_length tokens is truncated.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, got a single str")
        texts = list(texts)
        present: list[int] = []
        for index, text in enumerate(texts):
            if is_missing_text(text):
                continue
            if not isinstance(text, str):
                raise ValueError(
                    f"texts[{index}] must be str or missing (None/NaN), got {type(text).__name__}"
                )
            present.append(index)
        vectors = np.full((len(texts), self.spec.dim), np.nan, dtype=np.float32)
        if present:
            with torch.inference_mode():
                encoded = self.model.encode(
                    [texts[i] for i in present],
                    batch_size=batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            vectors[present] = np.asarray(encoded, dtype=np.float32)
        return vectors


def build_minilm(model_dir: Path, device: torch.device) -> Any:
    """Load all-MiniLM-L6-v2 from its bundled folder without touching the network."""
    # Must be set before huggingface_hub is imported for its offline constant to take effect.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=str(device), local_files_only=True)
    model.eval()
    return model
