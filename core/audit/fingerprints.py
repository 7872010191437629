"""One decoding pass over a dataset's images: what every other audit check needs from pixels.

Each image row is decoded once (``core.pixels.load_pixels``, frame by frame as ingest listed
it) and gives:

* ``pixel_hash``: SHA-256 of the decoded frame (shape + values quantised to 16 bits). Two files
  with the same picture but different bytes (re-saved PNG, another container, a colour copy of
  a grey image) get the same hash; :mod:`core.audit.duplicates` calls those exact duplicates.
* ``phash`` / ``dhash``: 64-bit perceptual hashes (imagehash's DCT hash and difference hash,
  as 16 hex digits) for near duplicates: rescaled and recompressed copies stay within a few
  bits.
* ``height``, ``width``, ``channels`` and the radiograph checks of :mod:`core.audit.xray`.
* a *centre descriptor* (the middle 60% of the frame as a 16 x 16 grey thumbnail, mean removed,
  unit length): an encoder-free vector whose nearest neighbours include cropped copies, which
  move a perceptual hash too far;
* a grey thumbnail (longer side ``MATCH_SIZE`` px, 8 bits) for the crop-aware pixel match of
  :func:`core.audit.duplicates.match_score`; held in memory only.

A row that cannot be decoded keeps its place with ``error`` set to the reason (the path is
never part of the reason shown), and every later check skips it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from core.audit.xray import grey_thumbnail, xray_checks
from core.pixels import DEFAULT_MAX_PIXELS, PixelError, load_pixels

MATCH_SIZE = 64
DESCRIPTOR_SIDE = 16
FINGERPRINT_COLUMNS = ["image_id", "pixel_hash", "phash", "dhash", "height", "width", "channels", "std",
                       "polarity", "corner_polarity", "text_blobs", "border_fraction", "error"]


def pixel_hash(values: np.ndarray) -> str:
    """SHA-256 (hex) of a decoded frame: its shape and its values quantised to 16 bits."""
    quantised = np.round(np.clip(values, 0.0, 1.0) * 65535.0).astype("<u2")
    digest = hashlib.sha256(repr(quantised.shape).encode())
    digest.update(np.ascontiguousarray(quantised).tobytes())
    return digest.hexdigest()


def to_pil_grey(values: np.ndarray) -> Image.Image:
    """A decoded frame (H, W) or (H, W, 3) in [0, 1] as an 8-bit grey PIL image."""
    grey = values.mean(axis=2) if values.ndim == 3 else values
    return Image.fromarray(np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8), mode="L")


def to_pil(values: np.ndarray) -> Image.Image:
    """A decoded frame as an 8-bit PIL image, grey ("L") or colour ("RGB")."""
    data = np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(data, mode="RGB" if data.ndim == 3 else "L")


def perceptual_hashes(values: np.ndarray) -> tuple[str, str]:
    """(pHash, dHash) of a frame, each 64 bits as 16 hex digits."""
    grey = to_pil_grey(values)
    return str(imagehash.phash(grey)), str(imagehash.dhash(grey))


def hashes_as_uint64(hex_hashes: pd.Series | list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(hashes as uint64 array, mask of rows that have one)."""
    values = list(hex_hashes)
    ok = np.array([isinstance(h, str) and len(h) == 16 for h in values], dtype=bool)
    out = np.zeros(len(values), dtype=np.uint64)
    for i in np.flatnonzero(ok):
        out[i] = np.uint64(int(values[i], 16))
    return out, ok


@dataclass
class Fingerprints:
    """table : DataFrame (n_images, ``FINGERPRINT_COLUMNS``), aligned with the images rows.
    descriptors : ndarray of shape (n_images, 256), float32; NaN rows where decoding failed.
    thumbnails : list of n_images uint8 arrays (h, w) with max(h, w) == ``MATCH_SIZE``, or None.
    """

    table: pd.DataFrame
    descriptors: np.ndarray
    thumbnails: list[np.ndarray | None]


def _resize(grey: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    image = Image.fromarray(np.asarray(grey, dtype=np.float32), mode="F")
    return np.asarray(image.resize((shape[1], shape[0]), Image.Resampling.BOX), dtype=np.float32)


def centre_descriptor(grey: np.ndarray) -> np.ndarray:
    """The middle 60% of ``grey`` as a 16 x 16 thumbnail, mean removed, unit length (256,)."""
    h, w = grey.shape
    middle = grey[int(0.2 * h): max(int(0.2 * h) + 1, int(0.8 * h)), int(0.2 * w): max(int(0.2 * w) + 1, int(0.8 * w))]
    vector = _resize(middle, (DESCRIPTOR_SIDE, DESCRIPTOR_SIDE)).ravel().astype(np.float64)
    vector -= vector.mean()
    norm = np.linalg.norm(vector)
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def match_thumbnail(grey: np.ndarray, size: int = MATCH_SIZE) -> np.ndarray:
    """``grey`` with its longer side resized to ``size`` px, as uint8."""
    h, w = grey.shape
    scale = size / max(h, w)
    small = _resize(grey, (max(4, round(h * scale)), max(4, round(w * scale))))
    return np.round(np.clip(small, 0, 1) * 255).astype(np.uint8)


def fingerprint_images(
    images: pd.DataFrame,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> Fingerprints:
    """Decode every row of ``images`` (needs ``image_id``, ``path``, ``frame``) once, in order.
    Rows that fail to decode have ``error`` set and NaN / None elsewhere."""
    missing = [c for c in ("image_id", "path", "frame") if c not in images.columns]
    if missing:
        raise ValueError(f"images table lacks column(s) {missing}; it has {list(images.columns)}")
    records = []
    total = len(images)
    descriptors = np.full((total, DESCRIPTOR_SIDE ** 2), np.nan, dtype=np.float32)
    thumbnails: list[np.ndarray | None] = [None] * total
    for number, (image_id, path, frame) in enumerate(
            zip(images["image_id"].astype(str), images["path"], images["frame"], strict=True)):
        record: dict = {"image_id": image_id, "error": None}
        try:
            if not isinstance(path, str) or not path:
                raise PixelError(str(path), "unreadable", "row has no file path")
            values = load_pixels(path, int(frame), max_pixels=max_pixels)
            checks = xray_checks(values)
            grey = grey_thumbnail(values)
            descriptors[number] = centre_descriptor(grey)
            thumbnails[number] = match_thumbnail(grey)
            phash, dhash = perceptual_hashes(values)
            record.update(
                pixel_hash=pixel_hash(values), phash=phash, dhash=dhash, height=int(values.shape[0]),
                width=int(values.shape[1]), channels=int(values.shape[2]) if values.ndim == 3 else 1,
                std=checks.std, polarity=checks.polarity, corner_polarity=checks.corner_polarity, text_blobs=checks.text_blobs,
                border_fraction=checks.border_fraction,
            )
        except PixelError as error:
            record["error"] = f"{error.status}: {error.reason}"
        except (ValueError, OSError, MemoryError) as error:
            record["error"] = f"cannot decode: {type(error).__name__}: {error}"
        records.append(record)
        if progress is not None and (number % 25 == 0 or number == total - 1):
            progress(number + 1, total)
    frame = pd.DataFrame.from_records(records, columns=FINGERPRINT_COLUMNS)
    for column in ("height", "width", "channels", "text_blobs"):
        frame[column] = frame[column].astype("Int64")
    for column in ("std", "polarity", "corner_polarity", "border_fraction"):
        frame[column] = frame[column].astype("float64")
    return Fingerprints(frame, descriptors, thumbnails)
