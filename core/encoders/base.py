"""What every loaded encoder, image or text, has in common."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.encoders.specs import EncoderSpec


class Encoder:
    """A loaded encoder: its registry entry, the model, where it runs and which weights.

    spec : the registry entry. device : where the model runs. model : what ``spec.build``
    returned (None for an encoder without a model), exposed for explanations such as Grad-CAM.
    weights_file / weights_sha256 : the weights actually loaded (None without weights).
    """

    kind: str = ""

    def __init__(
        self,
        spec: EncoderSpec,
        *,
        device: torch.device,
        model: Any,
        weights_file: Path | None = None,
        weights_sha256: str | None = None,
    ) -> None:
        if spec.kind != self.kind:
            raise ValueError(
                f"{type(self).__name__} takes encoders of kind {self.kind!r}; "
                f"{spec.name!r} is {spec.kind!r}"
            )
        self.spec = spec
        self.device = device
        self.model = model
        self.weights_file = weights_file
        self.weights_sha256 = weights_sha256

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, device={str(self.device)!r})"

    def preprocess_params(self) -> dict[str, Any]:
        """JSON-able description of everything besides the version that shapes the vectors.

        Part of the embedding-cache key. Includes the weights fingerprint, so vectors from a
        user-supplied weights file never share a cache entry with the standard weights.
        """
        return {**self.spec.preprocessing.as_dict(), "weights_sha256": self.weights_sha256}
