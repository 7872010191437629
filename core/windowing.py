"""Window / level in the scan's own units: Hounsfield units for CT, the stored (rescaled) value
for other DICOMs, the grey level for PNG/JPEG.

:func:`load_scan_values` gives one frame *before* any display window (modality LUT applied, so
CT values are HU) with the windows the file itself carries; :func:`apply_window` maps values to
display brightness with DICOM's linear VOI function (PS3.3 C.11.2.1.2.1), so a viewer's preset
"lung -600/1500" means exactly what a PACS means by it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from pydicom.pixels import apply_color_lut, apply_modality_lut

from core.dicom import checked_file_size, is_dicom
from core.dicom_layout import inspect_dicom
from core.pixels import (
    DEFAULT_MAX_PIXELS,
    PixelError,
    _decoded_frame,
    _lut_view,
    load_pixels,
)

# Named windows (centre, width) in Hounsfield units; they only make sense on CT.
CT_WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum / soft tissue": (40.0, 400.0),
    "bone": (480.0, 2500.0),
}


@dataclass(frozen=True)
class ScanValues:
    """One frame in its own units, ready for windowing.

    values : ndarray of shape (H, W) or (H, W, 3), float32, finite.
    units : "HU" (CT), the DICOM's RescaleType, "stored value", or "grey level (0-255)".
    own_windows : the (centre, width) pairs the file carries (DICOM WindowCenter/WindowWidth).
    inverted : MONOCHROME1 or Presentation LUT Shape INVERSE: high values are drawn dark.
    """

    values: np.ndarray
    units: str
    own_windows: list[tuple[float, float]] = field(default_factory=list)
    inverted: bool = False

    @property
    def is_ct(self) -> bool:
        return self.units == "HU"

    def full_range(self) -> tuple[float, float]:
        """(centre, width) showing every value from the lowest to the highest."""
        low, high = float(self.values.min()), float(self.values.max())
        return (low + high) / 2, max(high - low, 1.0)

    def default_window(self) -> tuple[float, float]:
        """The file's own first window, else the full range."""
        return self.own_windows[0] if self.own_windows else self.full_range()


def apply_window(values: np.ndarray, center: float, width: float, *, inverted: bool = False) -> np.ndarray:
    """Display brightness in [0, 1] of ``values`` under the window ``center`` / ``width``.

    DICOM's linear function: below ``center - 0.5 - (width - 1) / 2`` is black, above
    ``center - 0.5 + (width - 1) / 2`` is white, linear in between; ``inverted`` flips it.
    values : ndarray of any shape; returns float32 of the same shape.
    Raises ValueError when ``width`` < 1 or either number is not finite.
    """
    if not (np.isfinite(center) and np.isfinite(width)):
        raise ValueError(f"center={center}, width={width} must be finite numbers")
    if width < 1:
        raise ValueError(f"width={width} must be >= 1")
    array = np.asarray(values, dtype=np.float64)
    shown = (array - (center - 0.5)) / (width - 1) + 0.5 if width > 1 else (array > center - 0.5).astype(np.float64)
    shown = np.clip(shown, 0.0, 1.0)
    return (1.0 - shown if inverted else shown).astype(np.float32)


def _numbers(value) -> list[float]:
    if value is None or value == "":
        return []
    multiple = hasattr(value, "__iter__") and not isinstance(value, str)
    items = value if multiple else [value]
    out = []
    for item in items:
        try:
            number = float(item)
        except (TypeError, ValueError):
            return []
        out.append(number)
    return out


def _own_windows(view) -> list[tuple[float, float]]:
    """Every valid (centre, width) in the header; a malformed window is left out, not fatal."""
    try:  # pydicom converts DS values lazily, so a garbage string raises here
        centers, widths = _numbers(view.get("WindowCenter")), _numbers(view.get("WindowWidth"))
    except (TypeError, ValueError, OverflowError):
        return []
    return [(c, w) for c, w in zip(centers, widths, strict=False) if np.isfinite(c) and np.isfinite(w) and w >= 1]


def load_scan_values(path: str | os.PathLike[str], frame: int = 0, *,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> ScanValues:
    """One frame of ``path`` in its own units (see :class:`ScanValues`).

    Raises PixelError (with the file and the reason) for anything that cannot be decoded, and
    ValueError for a frame outside the file, as :func:`core.pixels.load_pixels` does.
    """
    checked_file_size(path)
    if not is_dicom(path):
        return ScanValues(load_pixels(path, frame, max_pixels=max_pixels) * np.float32(255), "grey level (0-255)")
    if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or frame < 0:
        raise ValueError(f"frame={frame!r} must be an integer >= 0")
    layout = inspect_dicom(path, int(frame), max_pixels=max_pixels)
    array = _decoded_frame(path, layout, int(frame))
    ds = layout.header.ds
    try:
        if layout.photometric == "PALETTE COLOR":
            values = np.asarray(apply_color_lut(array, ds), dtype=np.float64)
            return ScanValues(_finite(values), "stored value")
        if array.ndim == 3:
            return ScanValues(_finite(array.astype(np.float64)), "stored value")
        view = _lut_view(ds, int(frame))
        values = np.asarray(apply_modality_lut(array, view), dtype=np.float64)
    except Exception as exc:
        raise PixelError(path, "unreadable", f"cannot apply the image's LUTs ({exc})") from exc
    modality = str(ds.get("Modality", "") or "").strip().upper()
    rescale_type = str(view.get("RescaleType", "") or "").strip()
    units = "HU" if modality == "CT" or rescale_type.upper() == "HU" else (rescale_type or "stored value")
    inverse = str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"
    return ScanValues(_finite(values), units, _own_windows(view), layout.photometric == "MONOCHROME1" or inverse)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    if finite.all():
        return values
    fill = float(values[finite].min()) if finite.any() else 0.0
    return np.where(finite, values, np.float32(fill)).astype(np.float32)
