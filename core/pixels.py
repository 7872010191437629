"""Turn any supported scan file into a float32 array in ``[0, 1]``, or a reasoned failure.

One entry point for pixels: :func:`load_pixels` (decode one frame) and :func:`probe_image`
(geometry from the header, no decode). DICOM is vetted by :mod:`core.dicom_layout` and decoded here
with pydicom; PNG, JPEG, TIFF, BMP, GIF and WebP go through Pillow. Every failure is a :class:`PixelError` with a status code
and a reason, so that ingest and embedding can report bad files row by row instead of
crashing. Sizes are checked against a per-frame pixel budget before anything is decoded, so a
decompression bomb costs a header read, not the machine's memory.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from core.dicom import (
    DEFLATED_SYNTAX,
    BoundedFile,
    FrameRangeError,
    PixelError,
    checked_file_size,
    is_dicom,
)
from core.dicom_layout import MAX_FRAMES_PER_FILE, DicomLayout, inspect_dicom

if TYPE_CHECKING:  # pydicom is imported where a DICOM is decoded: a raster never needs it
    from pydicom.dataset import Dataset

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FrameRangeError",
    "ImageInfo",
    "PixelError",
    "load_pixels",
    "probe_image",
    "to_unit_range",
    "verify_bytes",
    "verify_pixels",
]

DEFAULT_MAX_PIXELS = 64_000_000  # per frame; an 8000 x 8000 image, larger than any real scan
# Colour images whose channels never differ by more than this are grey: radiographs saved as
# RGB JPEG carry a level or two of chroma noise that is not colour.
GREY_TOLERANCE = 2 / 255
_GREY_TOLERANCE_LEVELS = 2  # the same tolerance in 8-bit levels, checked before any float copy

# Formats a scan export plausibly arrives in. Naming them stops Pillow from guessing among its
# ~40 readers, some of which accept almost any bytes (TGA, for one).
# (Camera MPO files open through the JPEG reader.)
RASTER_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP", "JPEG2000", "PPM")

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ROTATING_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width/height


@dataclass
class ImageInfo:
    """Geometry of one image file, read from its header.

    ``channels`` is what the file stores (1 grey, 3 colour); :func:`load_pixels` still returns
    a colour image whose channels agree within ``GREY_TOLERANCE`` as grey (H, W).
    """

    kind: str  # "dicom" | "raster"
    n_frames: int
    rows: int
    columns: int
    channels: int


def _check_budget(max_pixels: int) -> None:
    if not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(f"max_pixels={max_pixels!r} must be a positive integer")


def _check_frame(frame: int) -> None:
    if not isinstance(frame, (int, np.integer)) or isinstance(frame, bool):
        raise ValueError(f"frame={frame!r} must be an integer frame index")


# ---------------------------------------------------------------------------------------------
# DICOM (pydicom 3 with the pylibjpeg / openjpeg / libjpeg / rle plugins)
# ---------------------------------------------------------------------------------------------


def _read_dicom_frame(path: str | os.PathLike[str], layout: DicomLayout, frame: int) -> np.ndarray:
    import pydicom
    from pydicom.pixels import pixel_array

    syntax = layout.header.transfer_syntax
    if syntax is not None and syntax != DEFLATED_SYNTAX:
        try:
            # Reading from the file seeks to the one frame rather than loading every frame.
            with BoundedFile(path) as fp:
                return pixel_array(fp, index=frame)
        except (MemoryError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # Rust plugins panic with a BaseException
            # The file reader is stricter than dcmread (e.g. an implicit-VR pixel element in an
            # explicit-VR file); the whole-dataset route below decides.
            pass
    with BoundedFile(path) as fp:
        ds = pydicom.dcmread(fp, force=True)
    if syntax is None:  # preamble-less: say how it was encoded, as pixel_array needs to know
        implicit, little = ds.original_encoding
        ds.file_meta = getattr(ds, "file_meta", None) or pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian
            if implicit
            else (pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
        )
    return pixel_array(ds, index=frame)


def _decoded_frame(path: str | os.PathLike[str], layout: DicomLayout, frame: int) -> np.ndarray:
    """One frame decoded and checked against the header's shape; any decoder failure becomes a
    PixelError naming the file."""
    try:
        array = _read_dicom_frame(path, layout, frame)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # decoders raise anything, Rust ones panic
        raise _decode_error(path, exc) from exc
    if array.shape[:2] != (layout.rows, layout.columns):
        raise PixelError(path, "unreadable", f"decoded frame has shape {array.shape}, expected "
                         f"{(layout.rows, layout.columns)}")
    return array


def _lut_view(ds: Dataset, frame: int) -> Dataset:
    """The dataset with enhanced multi-frame rescale/window values for ``frame`` lifted up.

    Enhanced CT/MR keep Rescale and Window values inside functional group sequences, where
    pydicom's LUT helpers do not look.
    """
    if "SharedFunctionalGroupsSequence" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
        return ds
    from pydicom.dataset import Dataset

    view = Dataset()
    for element in ds:
        if element.VR != "SQ" or element.keyword in ("ModalityLUTSequence", "VOILUTSequence"):
            view.add(element)
    view.file_meta = getattr(ds, "file_meta", Dataset())
    for keyword, index in (("SharedFunctionalGroupsSequence", 0),
                           ("PerFrameFunctionalGroupsSequence", frame)):
        groups = ds.get(keyword)
        if groups is None or len(groups) <= index:
            continue
        for sequence_keyword in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            sequence = groups[index].get(sequence_keyword)
            if sequence:
                for element in sequence[0]:
                    if element.VR != "SQ":
                        view.add(element)
    return view


def _decode_error(path: str | os.PathLike[str], exc: BaseException) -> PixelError:
    message = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    lowered = message.lower()
    if isinstance(exc, MemoryError):
        return PixelError(path, "too_large", f"ran out of memory decoding pixel data ({message})")
    if any(word in lowered for word in ("truncat", "end of the data", "too short", "less than",
                                        "cannot reshape", "buffer size must be", "insufficient",
                                        "end of file")):
        return PixelError(path, "truncated", f"pixel data is incomplete ({message})")
    return PixelError(path, "unreadable", f"cannot decode pixel data ({message})")


def _linear_window(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """pydicom's ``apply_voi_lut(values, ds, index=0)`` for the common case, a LINEAR or
    LINEAR_EXACT window without a VOI LUT sequence, with the same float64 operations in the
    same order (so the same numbers) but without boolean-mask indexing, which costs several
    times the arithmetic on a full-size radiograph. None when the case is another one (pydicom
    then decides); raises what pydicom raises for a malformed window."""
    if ds.get("VOILUTSequence") or "WindowWidth" not in ds or "WindowCenter" not in ds:
        return None
    if ds.PhotometricInterpretation not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if function not in ("LINEAR", "LINEAR_EXACT"):
        return None
    centre_element, width_element = ds["WindowCenter"], ds["WindowWidth"]
    centre = float(centre_element.value[0] if centre_element.VM > 1 else centre_element.value)
    width = float(width_element.value[0] if width_element.VM > 1 else width_element.value)
    if ds.get("ModalityLUTSequence"):
        y_min, y_max = 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    elif ds.PixelRepresentation == 0:
        y_min, y_max = 0, 2 ** int(ds.BitsStored) - 1
    else:
        y_min, y_max = -(2 ** (int(ds.BitsStored) - 1)), 2 ** (int(ds.BitsStored) - 1) - 1
    slope, intercept = ds.get("RescaleSlope", None), ds.get("RescaleIntercept", None)
    if slope is not None and intercept is not None:
        y_min = y_min * float(slope) + float(intercept)
        y_max = y_max * float(slope) + float(intercept)
    y_range = y_max - y_min
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"window width {width} must be >= 1 for LINEAR windowing")
        centre -= 0.5
        width -= 1
    elif width <= 0:
        raise ValueError(f"window width {width} must be > 0 for LINEAR_EXACT windowing")
    values = np.asarray(values)
    below = values <= (centre - width / 2)
    above = values > (centre + width / 2)
    out = values.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # width 0: every pixel is below/above
        out -= centre
        out /= width
        out += 0.5
        out *= y_range
        out += y_min
    np.copyto(out, y_min, where=below)
    np.copyto(out, y_max, where=above)
    return out


def _dicom_display_values(
    path: str | os.PathLike[str], frame: int, max_pixels: int
) -> np.ndarray:
    """One DICOM frame as display values: brighter is higher, not yet scaled.

    Order: decode (YBR -> RGB is done by pydicom), palette -> RGB, modality LUT (rescale),
    VOI LUT or first window, then inversion for MONOCHROME1 / Presentation LUT Shape INVERSE.
    Returns ndarray of shape (rows, columns) or (rows, columns, 3).
    """
    layout = inspect_dicom(path, frame, max_pixels=max_pixels)
    array = _decoded_frame(path, layout, frame)
    ds = layout.header.ds
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    try:
        if layout.photometric == "PALETTE COLOR":
            return np.asarray(apply_color_lut(array, ds), dtype=np.float64)
        if array.ndim == 3:
            return array.astype(np.float64)
        view = _lut_view(ds, frame)
        values = apply_modality_lut(array, view)
        # A malformed window (width 0, garbage strings) only costs the window: the frame is
        # still min-max scaled.
        with contextlib.suppress(Exception):
            windowed = _linear_window(values, view)
            values = windowed if windowed is not None else apply_voi_lut(values, view, index=0)
        inverse = str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"
    except Exception as exc:
        raise PixelError(path, "unreadable", f"cannot apply the image's LUTs ({exc})") from exc
    values = np.asarray(values, dtype=np.float64)
    return -values if layout.photometric == "MONOCHROME1" or inverse else values


# ---------------------------------------------------------------------------------------------
# Raster images (Pillow)
# ---------------------------------------------------------------------------------------------


# The Pillow modules that read RASTER_FORMATS (Image.init() imports all ~40 readers: ~50 ms).
_RASTER_PLUGINS = ("PngImagePlugin", "JpegImagePlugin", "TiffImagePlugin", "BmpImagePlugin",
                   "GifImagePlugin", "WebPImagePlugin", "Jpeg2KImagePlugin", "PpmImagePlugin")


def _register_raster_plugins() -> None:
    """Register the readers of ``RASTER_FORMATS`` (Image.open(formats=...) only sees plugins
    that are already registered); every reader when this Pillow lacks one of them."""
    if all(name in Image.OPEN for name in RASTER_FORMATS):
        return
    for module in _RASTER_PLUGINS:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"PIL.{module}")
    if not all(name in Image.OPEN for name in RASTER_FORMATS):
        Image.init()


def _open_raster(path: str | os.PathLike[str]) -> Image.Image:
    _register_raster_plugins()
    try:
        return Image.open(path, formats=RASTER_FORMATS)
    except UnidentifiedImageError as exc:
        raise PixelError(
            path,
            "not_an_image",
            f"not a DICOM or a supported image ({', '.join(RASTER_FORMATS)})",
        ) from exc
    except Image.DecompressionBombError as exc:
        raise PixelError(path, "too_large", f"refused as a decompression bomb ({exc})") from exc
    except Exception as exc:
        raise _raster_error(path, exc) from exc


def _raster_error(path: str | os.PathLike[str], exc: Exception) -> PixelError:
    if isinstance(exc, Image.DecompressionBombError):
        return PixelError(path, "too_large", f"refused as a decompression bomb ({exc})")
    if isinstance(exc, MemoryError):
        return PixelError(path, "too_large", f"ran out of memory decoding the image ({exc})")
    message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    lowered = message.lower()
    if any(word in lowered for word in ("truncated", "premature end", "unexpected end")):
        return PixelError(path, "truncated", f"image data is incomplete ({message})")
    return PixelError(path, "unreadable", f"cannot decode image ({message})")


def _raster_frames(image: Image.Image) -> int:
    # An MPO is a JPEG plus previews/depth maps from a camera, not a stack of slices.
    if image.format == "MPO":
        return 1
    return max(1, int(getattr(image, "n_frames", 1) or 1))


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # broken EXIF blocks are common and harmless to ignore
        return 1


def _raster_channels(mode: str) -> int:
    return 1 if mode in {"1", "L", "I", "F"} | _SIXTEEN_BIT_MODES else 3


def _raster_check_size(path: str | os.PathLike[str], image: Image.Image, max_pixels: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise PixelError(
            path,
            "too_large",
            f"{height}x{width} = {width * height} pixels exceeds the budget max_pixels={max_pixels}",
        )
    if width < 1 or height < 1:
        raise PixelError(path, "unreadable", f"image has empty size {width}x{height}")


def _raster_to_array(image: Image.Image) -> tuple[np.ndarray, bool]:
    """Pillow image -> float32 (H, W) or (H, W, 3) in [0, 1], scaled by the mode's bit depth.

    Also returns whether the array is final: made from integers by division (finite, in
    [0, 1]) with the grey check already done, so that ``_finish`` has nothing left to do.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        # One pass (uint16 -> float32 is exact, then a float32 division), not a cast and a divide.
        return np.divide(np.asarray(image), np.float32(65535.0), dtype=np.float32), True
    if mode == "I":
        values = np.asarray(image).astype(np.float64)
        # 16-bit PNGs open as "I" in some Pillow versions; wider integer data has no fixed
        # depth, so it falls back to the frame's own range.
        if values.size and values.min() >= 0 and values.max() <= 65535:
            return (values / 65535.0).astype(np.float32), False
        return to_unit_range(values), False
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == values.size and finite.size and finite.min() >= 0 and finite.max() <= 1:
            return values.astype(np.float32), False
        return to_unit_range(values), False
    if mode in ("1", "L"):
        grey = np.asarray(image if mode == "L" else image.convert("L"))
        return np.divide(grey, np.float32(255.0), dtype=np.float32), True
    has_alpha = mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba_image = image if mode == "RGBA" else image.convert("RGBA")
        if rgba_image.getchannel("A").getextrema()[0] == 255:
            # Opaque: an RGB image with a spare channel (Pillow drops it in one C pass).
            return _rgb_image_to_unit(rgba_image.convert("RGB")), True
        rgba = np.asarray(rgba_image).astype(np.float32) / 255.0
        # Transparent regions become black, the "no signal" value of a radiograph.
        return rgba[..., :3] * rgba[..., 3:4], False
    return _rgb_image_to_unit(image if mode == "RGB" else image.convert("RGB")), True


def _rgb_image_to_unit(image: Image.Image) -> np.ndarray:
    """An RGB Pillow image -> float32 in [0, 1]: grey (H, W), the channel mean, when the
    channels agree within ``GREY_TOLERANCE``, else (H, W, 3).

    The grey check runs in Pillow on the 8-bit planes (three C passes, no numpy copy of the
    interleaved pixels): a 2,500 px RGB radiograph is 19 MB as bytes but 75 MB as float32,
    and most "RGB" radiographs are grey, so the float colour copy is never made.
    """
    red, green, blue = image.split()
    for first, second in ((red, green), (red, blue), (green, blue)):
        if ImageChops.difference(first, second).getextrema()[1] > _GREY_TOLERANCE_LEVELS:
            return np.divide(np.asarray(image), np.float32(255.0), dtype=np.float32)
    total = np.asarray(red).astype(np.uint16)
    total += np.asarray(green)
    total += np.asarray(blue)
    return np.divide(total, np.float32(3 * 255), dtype=np.float32)


def _probe_raster(path: str | os.PathLike[str], max_pixels: int) -> ImageInfo:
    with _open_raster(path) as image:
        _raster_check_size(path, image, max_pixels)
        width, height = image.size
        if _exif_orientation(image) in _ROTATING_ORIENTATIONS:
            width, height = height, width
        n_frames = _raster_frames(image)
        if n_frames > MAX_FRAMES_PER_FILE:  # each frame becomes a row
            raise PixelError(path, "too_many_frames", f"{n_frames} frames exceeds the limit of "
                             f"{MAX_FRAMES_PER_FILE} frames per file")
        return ImageInfo("raster", n_frames, height, width, _raster_channels(image.mode))


# Bytes per pixel Pillow holds for a mode once decoded (4 for anything unlisted: I, F, RGBA...).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 4, "YCbCr": 4,
               "LAB": 4, "HSV": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def verify_bytes(info: ImageInfo) -> int:
    """An upper bound on the bytes :func:`verify_pixels` holds while decoding this image.

    Raster: the decoded frame in its stored mode, at 4 bytes per pixel at most (a JPEG decoded
    at 1/8 scale holds far less). DICOM: the decoded frame plus the float64 copies the LUT
    steps make.
    """
    pixels = info.rows * info.columns * info.channels
    if info.kind == "dicom":
        return pixels * 8 * 3
    return pixels * 4


def _verify_raster(path: str | os.PathLike[str], max_pixels: int) -> None:
    with _open_raster(path) as image:
        _raster_check_size(path, image, max_pixels)
        try:
            if image.format == "JPEG":
                # libjpeg still reads every coded block at 1/8 scale, so a truncated or corrupt
                # scan is found, for 1/64 of the pixels.
                image.draft(image.mode, (1, 1))
            # Decoded in the file's own mode and dropped: no float copies, no EXIF rotation.
            image.load()
        except PixelError:
            raise
        except Exception as exc:
            raise _raster_error(path, exc) from exc


def verify_pixels(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """Prove that frame 0 of ``path`` decodes, holding as little memory as the format allows.

    Sizes are checked against ``max_pixels`` before decoding (as :func:`load_pixels` does).
    Rasters are decoded in their stored mode (8-bit grey: 1 byte per pixel) and JPEGs at
    1/8 scale; DICOM goes through the same decode and LUT steps as :func:`load_pixels`. At
    most :func:`verify_bytes` bytes are held.

    Raises
    ------
    PixelError
        as :func:`load_pixels`.
    """
    _check_budget(max_pixels)
    checked_file_size(path)
    if is_dicom(path):
        _dicom_display_values(path, 0, max_pixels)
        return
    try:
        _verify_raster(path, max_pixels)
    except PixelError:
        raise
    except Exception as exc:
        raise _raster_error(path, exc) from exc


def _load_raster(path: str | os.PathLike[str], frame: int, max_pixels: int,
                 min_size: int | None = None, on_raster=None) -> tuple[np.ndarray, bool]:
    with _open_raster(path) as image:
        n_frames = _raster_frames(image)
        if not 0 <= frame < n_frames:
            raise FrameRangeError(
                f"frame={frame} is out of range for {path}: valid frames are 0..{n_frames - 1}"
            )
        try:
            if frame:
                image.seek(frame)
            _raster_check_size(path, image, max_pixels)
            if min_size and image.format == "JPEG":
                # libjpeg can decode at 1/2, 1/4 or 1/8 scale for a fraction of the cost; draft
                # keeps both sides >= min_size, so a model input of that size loses nothing.
                image.draft(image.mode, (min_size, min_size))
            image.load()
            if _exif_orientation(image) != 1:
                image = ImageOps.exif_transpose(image)
            converted = _raster_to_array(image)
            if on_raster is not None:  # core.previews.load_with_preview: the same decode's preview
                on_raster(image)
            return converted
        except PixelError:
            raise
        except Exception as exc:  # Pillow's plugins raise OSError, SyntaxError, ValueError...
            raise _raster_error(path, exc) from exc


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def to_unit_range(values: np.ndarray) -> np.ndarray:
    """Min-max scale to float32 ``[0, 1]``; NaN/inf become the minimum; constant -> zeros.

    values : ndarray of shape (H, W) or (H, W, C), any real dtype. Colour channels are scaled
    jointly so hues are kept.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size:
        low, high = values.min(), values.max()
        # NaN propagates through min/max and an infinity is the min or the max: both finite
        # means every value is, and the masked passes below are not needed.
        if np.isfinite(low) and np.isfinite(high):
            if high <= low:
                return np.zeros(values.shape, dtype=np.float32)
            scaled = values - low
            scaled /= high - low
            return scaled.astype(np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    low, high = values[finite].min(), values[finite].max()
    if not finite.all():
        values = np.where(finite, values, low)
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _finish(values: np.ndarray, *, in_range: bool = False, unit: bool = False) -> np.ndarray:
    """Grey out colour images whose channels agree, and guarantee finite [0, 1] float32.

    ``in_range``: the caller made ``values`` from integers by division and already decided
    grey or colour, so the full-size grey, NaN and clip passes are skipped. ``unit``: values
    are float32, finite and in [0, 1] (``to_unit_range``'s output): only the grey check runs.
    """
    if in_range and values.dtype == np.float32:
        return np.ascontiguousarray(values)
    if unit and values.dtype == np.float32 and (values.ndim == 2 or values.shape[2] != 3):
        return np.ascontiguousarray(values if values.ndim == 2 else values[..., 0])
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim == 3 and values.size:
        red, green, blue = values[..., 0], values[..., 1], values[..., 2]
        # (Pairwise differences: a reduction over the short last axis is several times slower.)
        spread = max(float(np.abs(red - green).max()), float(np.abs(red - blue).max()),
                     float(np.abs(green - blue).max()))
        if spread <= GREY_TOLERANCE:
            values = (red + green + blue) / 3
    values = np.nan_to_num(values.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return np.ascontiguousarray(np.clip(values, 0.0, 1.0))


def probe_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageInfo:
    """Geometry of ``path`` from its header only (no pixel decode).

    For DICOM this also confirms the pixel data is present and complete and that a decoder for
    its transfer syntax is installed. Rows/columns are as :func:`load_pixels` will return them
    (after EXIF rotation for photos).

    Raises
    ------
    PixelError
        ``empty_file``, ``not_an_image``, ``unreadable``, ``truncated``, ``no_pixel_data``,
        ``unsupported_transfer_syntax``, or ``too_large`` when a frame has more than
        ``max_pixels`` pixels.
    ValueError
        ``max_pixels`` is not a positive integer.
    """
    _check_budget(max_pixels)
    checked_file_size(path)
    if is_dicom(path):
        layout = inspect_dicom(path, 0, max_pixels=max_pixels)
        return ImageInfo("dicom", layout.n_frames, layout.rows, layout.columns, layout.channels)
    try:
        return _probe_raster(path, max_pixels)
    except PixelError:
        raise
    except Exception as exc:
        raise _raster_error(path, exc) from exc


def load_pixels(
    path: str | os.PathLike[str],
    frame: int = 0,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: int | None = None,
    on_raster=None,
) -> np.ndarray:
    """Decode one frame of a DICOM or raster image.

    DICOM: modality LUT, VOI LUT / window, MONOCHROME1 inversion, YBR/palette -> RGB, then
    min-max scaled per frame. Raster: EXIF orientation applied, scaled by bit depth (8 or 16),
    alpha composited onto black.

    ``min_size``: a hint that the caller only needs both sides >= ``min_size`` (e.g. a model's
    input size); JPEGs are then decoded at a reduced scale where that stays above it.
    ``on_raster``: called with a raster's decoded (EXIF-transposed) Pillow image after the
    pixels are taken from it (``core.previews.load_with_preview`` makes its preview there).

    Returns
    -------
    ndarray of shape (H, W) for grey or (H, W, 3) for colour, float32, finite, in [0, 1]
        A colour image whose three channels agree within ``GREY_TOLERANCE`` comes back grey
        (H, W), as their mean.

    Raises
    ------
    PixelError
        any status in ``core.dicom.PIXEL_STATUSES``; the reason names the cause, including the
        decoder's own message when a decoder fails.
    ValueError
        ``frame`` outside the file's frames (the message names the valid range) or a bad
        ``max_pixels``.
    """
    _check_budget(max_pixels)
    _check_frame(frame)
    checked_file_size(path)
    if is_dicom(path):
        values = _dicom_display_values(path, int(frame), max_pixels)
        try:
            return _finish(to_unit_range(values), unit=True)
        except Exception as exc:
            raise PixelError(path, "unreadable", f"cannot scale decoded pixels ({exc})") from exc
    try:
        values, in_range = _load_raster(path, int(frame), max_pixels, min_size, on_raster)
        return _finish(values, in_range=in_range)
    except (PixelError, FrameRangeError):
        raise
    except Exception as exc:
        raise _raster_error(path, exc) from exc
