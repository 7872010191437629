"""Checks that matter for radiographs, on one decoded frame (float values in [0, 1]).

* **Blank**: almost no signal (standard deviation under ``BLANK_STD``): an empty detector
  readout, a failed export, a black or white placeholder.
* **Inverted polarity**: a chest radiograph shows air dark and bone bright: the lung fields
  (left and right of the middle, mid-height) are darker than the mediastinum and spine between
  them, and the corners (air outside the body) darker than the centre. A frame whose lungs are
  brighter than its mediastinum (by ``INVERTED_MARGIN``) and where both differences together
  exceed ``INVERTED_SUM`` is probably shown inverted (a MONOCHROME1 image read as MONOCHROME2,
  or a negative saved as a photo). Lateral films and pacemakers can make the lungs alone look
  bright, but then the corners stay dark. On the 570 covid-chestxray X-rays the largest sum is
  0.14; inverted copies score 0.28 or more. The check assumes a chest film; it is skipped for
  CT and MR.
* **Burned-in text**: clusters of small, high-contrast, glyph-sized blobs in the outer band of
  the image (labels, dates, "L"/"R" markers); the DICOM header's ``BurnedInAnnotation`` is
  added by :mod:`core.audit.images` where ingest recorded it (on CT and MR only the header
  counts: vessels near the edge of a slice look like glyphs).
* **Black border**: the share of the frame outside the bounding box of rows and columns that
  hold any signal (a scan placed on a black canvas, a screenshot of a film).

All checks work on a grey thumbnail of at most ``THUMBNAIL`` px on the longer side, so their
cost does not grow with the file's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

THUMBNAIL = 256
BLANK_STD = 0.02
INVERTED_MARGIN = 0.04  # lungs brighter than the mediastinum by this much...
INVERTED_SUM = 0.15     # ...and lung + corner polarity above this
BORDER_FLAG = 0.30
TEXT_BLOBS_FLAG = 6
_DARK = 0.06


@dataclass(frozen=True)
class XrayChecks:
    """Scores of one frame (see the module docstring); the ``is_*`` flags use the defaults."""

    std: float
    polarity: float          # median(lung fields) - median(mediastinum); > 0: bone dark
    corner_polarity: float   # median(corners) - median(centre)
    text_blobs: int          # glyph-like blobs in the outer band
    border_fraction: float   # share of the frame outside the signal's bounding box

    @property
    def is_blank(self) -> bool:
        return self.std < BLANK_STD

    @property
    def is_inverted(self) -> bool:
        return is_inverted(self.polarity, self.corner_polarity) and not self.is_blank

    @property
    def has_text(self) -> bool:
        return not self.is_blank and self.text_blobs >= TEXT_BLOBS_FLAG

    @property
    def has_black_border(self) -> bool:
        return not self.is_blank and self.border_fraction >= BORDER_FLAG


def grey_thumbnail(values: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    """``values`` (H, W) or (H, W, 3) in [0, 1] as grey float32 (h, w), longer side <= ``size``
    (block means, so small bright strokes survive as partial values rather than vanishing)."""
    grey = values.mean(axis=2) if values.ndim == 3 else values
    grey = np.asarray(grey, dtype=np.float32)
    step = int(np.ceil(max(grey.shape) / size))
    if step > 1:
        h, w = (grey.shape[0] // step) * step, (grey.shape[1] // step) * step
        if h and w:
            grey = grey[:h, :w].reshape(h // step, step, w // step, step).mean(axis=(1, 3))
    return grey


def is_inverted(polarity: float, corner_polarity: float) -> bool:
    """The inverted-polarity rule on the two scores (see the module docstring)."""
    return polarity > INVERTED_MARGIN and polarity + corner_polarity > INVERTED_SUM


def lung_polarity(grey: np.ndarray) -> float:
    """median of the lung fields (rows 30-70%, columns 15-35% and 65-85%) minus the median of
    the mediastinum (same rows, columns 43-57%)."""
    h, w = grey.shape
    rows = slice(int(0.3 * h), max(int(0.3 * h) + 1, int(0.7 * h)))
    lungs = np.concatenate([grey[rows, int(0.15 * w):max(int(0.15 * w) + 1, int(0.35 * w))].ravel(),
                            grey[rows, int(0.65 * w):max(int(0.65 * w) + 1, int(0.85 * w))].ravel()])
    middle = grey[rows, int(0.43 * w):max(int(0.43 * w) + 1, int(0.57 * w))]
    return float(np.median(lungs) - np.median(middle))


def polarity_score(grey: np.ndarray) -> float:
    """mean of the four corner patches (each 1/8 of a side) minus the mean of the central
    region (the middle third of the width, rows 1/4..3/4)."""
    h, w = grey.shape
    ch, cw = max(1, h // 8), max(1, w // 8)
    corners = np.concatenate([grey[:ch, :cw].ravel(), grey[:ch, -cw:].ravel(),
                              grey[-ch:, :cw].ravel(), grey[-ch:, -cw:].ravel()])
    centre = grey[h // 4: max(h // 4 + 1, 3 * h // 4), w // 3: max(w // 3 + 1, 2 * w // 3)]
    return float(np.median(corners) - np.median(centre))


def border_fraction(grey: np.ndarray) -> float:
    """Share of the frame outside the bounding box of rows/columns whose mean is above a dark
    floor or that vary (a uniform black band around the content)."""
    h, w = grey.shape
    rows = (grey.mean(axis=1) > _DARK) | (grey.std(axis=1) > 0.02)
    cols = (grey.mean(axis=0) > _DARK) | (grey.std(axis=0) > 0.02)
    if not rows.any() or not cols.any():
        return 1.0
    r0, r1 = np.flatnonzero(rows)[[0, -1]]
    c0, c1 = np.flatnonzero(cols)[[0, -1]]
    inner = (r1 - r0 + 1) * (c1 - c0 + 1)
    return float(1.0 - inner / (h * w))


def text_blob_count(grey: np.ndarray) -> int:
    """Glyph-like blobs in the outer band (outer 20% of each side): connected bright strokes
    that stand out from their neighbourhood (top-hat > 0.25), 3..(2% of the side) px tall,
    compact, and with another such blob within two glyph heights on the same line."""
    h, w = grey.shape
    tophat = grey - ndimage.grey_opening(grey, size=(7, 7))
    mask = tophat > 0.25
    band = np.ones_like(mask)
    bh, bw = max(1, h // 5), max(1, w // 5)
    band[bh:h - bh, bw:w - bw] = False
    labels, n = ndimage.label(mask & band)
    if n == 0:
        return 0
    boxes = ndimage.find_objects(labels)
    max_side = max(4, int(0.08 * max(h, w)))
    centres = []
    for box in boxes:
        if box is None:
            continue
        height = box[0].stop - box[0].start
        width = box[1].stop - box[1].start
        if 2 <= height <= max_side and 1 <= width <= max_side:
            centres.append(((box[0].start + box[0].stop) / 2, (box[1].start + box[1].stop) / 2, height))
    if len(centres) < 2:
        return 0
    points = np.array(centres)
    count = 0
    for i, (y, x, height) in enumerate(points):
        near = (np.abs(points[:, 0] - y) <= max(2.0, height)) & (np.abs(points[:, 1] - x) <= 3 * max(height, 3))
        near[i] = False
        count += bool(near.any())
    return int(count)


def xray_checks(values: np.ndarray) -> XrayChecks:
    """All checks of one decoded frame (H, W) or (H, W, 3), values in [0, 1]."""
    grey = grey_thumbnail(values)
    std = float(grey.std())
    if std < BLANK_STD:
        return XrayChecks(std=std, polarity=0.0, corner_polarity=0.0, text_blobs=0, border_fraction=0.0)
    return XrayChecks(std=std, polarity=lung_polarity(grey), corner_polarity=polarity_score(grey),
                      text_blobs=text_blob_count(grey), border_fraction=border_fraction(grey))
