"""Text encoders: report / notes text -> one vector per text, missing text -> a NaN row."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.encoders.base import Encoder
from core.encoders.specs import TextPreprocessing


def is_missing_text(text: Any) -> bool:
    """None, NaN (pandas' missing value) and blank strings count as no text."""
    if text is None:
        return True
    if isinstance(text, float) and math.isnan(text):
        return True
    return isinstance(text, str) and not text.strip()


class TextEncoder(Encoder):
    """A loaded text encoder: ``embed_texts`` turns texts into (normalised) vectors.

    Built by ``core.encoders.get_encoder`` from a registry entry; ``spec.forward(model, texts)``
    embeds a list of strings and ``spec.preprocessing`` says how long a text may be and
    whether vectors are L2-normalised.
    """

    kind = "text"

    @property
    def preprocessing(self) -> TextPreprocessing:
        return self.spec.preprocessing  # type: ignore[return-value]

    def embed_texts(self, texts: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Embed texts.

        texts : sequence of n str; None, NaN and blank strings are allowed and give a NaN
            row, because a zero vector would look like a real (and oddly central) text.
        Returns ndarray of shape (n, dim) float32, rows aligned with ``texts``; unit vectors
        when the entry's preprocessing says ``normalize``.
        Raises ValueError for an entry that is neither text nor missing, or batch_size < 1.
        Text longer than the entry's ``max_tokens`` is truncated.
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
        for start in range(0, len(present), batch_size):
            rows = present[start : start + batch_size]
            with torch.inference_mode():
                encoded = torch.as_tensor(self.spec.forward(self.model, [texts[i] for i in rows]))
                encoded = encoded.float().cpu()
                if self.preprocessing.normalize:
                    encoded = torch.nn.functional.normalize(encoded, p=2, dim=1)
            if tuple(encoded.shape) != (len(rows), self.spec.dim):
                raise ValueError(
                    f"{self.spec.name}: forward returned shape {tuple(encoded.shape)}, "
                    f"expected ({len(rows)}, {self.spec.dim})"
                )
            vectors[rows] = encoded.numpy()
        return vectors
