"""Ingest's cheap verification and the small stored previews that galleries show.

:func:`decode_preview` reads a file's header and decodes its first frame once, at the smallest
scale the format allows that still gives a ``size``-px preview:

* **JPEG**: libjpeg's DCT scaling (Pillow ``draft``) at 1/2, 1/4 or 1/8. Every coded block is
  still entropy-decoded, so a truncated or corrupt scan is refused as before.
* **PNG** (and other rasters): PNG has no reduced decode (interlaced Adam7 passes aside), so
  ``decode_preview`` inflates the frame once in its stored mode, box-reduces it in that mode,
  and only the small copy becomes floats. EXIF is read after that one decode (Pillow otherwise
  decodes a PNG a second time to look for an ``eXIf`` chunk).
* **DICOM**: the header plus the pixel data's framing (``core.dicom_layout.inspect_dicom``:
  declared length, fragments, the codestream's own size). JPEG 2000 frames (grey, unsigned,
  <= 16 bits) are decoded at a reduced resolution level (OpenJPEG through Pillow), which skips
  the code-blocks of the finest levels: a frame damaged only there passes ingest and is refused
  by name when the embedding decodes it in full. Other syntaxes (uncompressed, JPEG-LS, JPEG
  lossless, RLE) are decoded in full, then box-reduced before the LUT steps, which run on the
  small copy.

**Ingest** calls :func:`ingest_probe`: ``decode_preview`` for every format but PNG. A PNG is
verified by its structure without inflating it (``core.png_check``: every chunk's CRC, IDAT
layout, zlib header, EXIF orientation), and its preview is made by its first full decode, the
embedding's: ``core.decode_pool.decode_for_model(..., preview=True)`` calls
:func:`load_with_preview`, which returns the model's pixels and, from the same decoded image,
the preview (the same steps as ``decode_preview``, so a PNG's preview is identical to it).
``core.embed.embed_dataset`` appends those previews to the dataset's store
(:func:`add_previews` / ``PreviewWriter(append=True)``: a new pack, then the index rewritten
atomically; no other pack touched). Until then galleries decode the original, as they do for
any frame without a preview. An embedding served from the vector cache decodes nothing and so
makes no preview.

The preview is windowed as the gallery shows a scan (``core.pixels.load_pixels``: modality LUT,
first VOI window, MONOCHROME1 inversion, min-max), at most ``PREVIEW_SIZE`` px on its longer
side, stored as a JPEG in packs (``DATASET/previews/pack-*.bin``, each written atomically, one
fsync per ~1,000 previews rather than two per preview) named by ``previews/index.parquet``
(image_id -> pack, offset, length; written last, atomically). Only frame 0 of a file has one;
galleries decode other frames, and datasets without an index, as before.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from core.atomic import atomic_write, atomic_write_bytes, is_temp
from core.dicom import PixelError, checked_file_size, header_fields, is_dicom
from core.dicom_layout import (
    MAX_FRAMES_PER_FILE,
    DicomLayout,
    _frame_fragment,
    _pixel_fragments,
    inspect_dicom,
)
from core.pixels import (
    DEFAULT_MAX_PIXELS,
    ImageInfo,
    _check_budget,
    _decoded_frame,
    _exif_orientation,
    _finish,
    _lut_view,
    _open_raster,
    _raster_channels,
    _raster_check_size,
    _raster_error,
    _raster_frames,
    _raster_to_array,
    to_unit_range,
    verify_bytes,
)

__all__ = [
    "PREVIEW_FOLDER",
    "PREVIEW_SIZE",
    "PreviewStore",
    "PreviewWriter",
    "ScanPreview",
    "add_previews",
    "decode_preview",
    "encode_preview",
    "ingest_probe",
    "load_with_preview",
    "preview_pixels",
    "remove_previews",
    "valid_image_id",
]

PREVIEW_SIZE = 256
PREVIEW_FOLDER = "previews"
PREVIEW_QUALITY = 90  # a 256 px grey radiograph is 10-20 KB
# image_id as ingest makes it: sha256 of the file's bytes, "-", frame number.
_IMAGE_ID = re.compile(r"[0-9a-f]{64}-[0-9]{1,6}")
_J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})
_ROTATING_ORIENTATIONS = frozenset({5, 6, 7, 8})


@dataclass
class ScanPreview:
    """What one cheap ingest decode learns about a file.

    info : geometry from the header (as ``core.pixels.probe_image`` returns it)
    header : the allow-listed DICOM fields (``core.dicom.read_header``), None for rasters
    picture : uint8 ndarray of shape (h, w) grey or (h, w, 3) colour, max(h, w) <= size; None
        from :func:`ingest_probe` for a PNG (its preview comes from the embedding's decode)
    decode : how frame 0 was decoded, e.g. "jpeg 1/4", "png full", "j2k 1/4", "dicom full",
        "png structure" (not inflated: ``core.png_check``)
    seconds : {"header": s, "decode": s} spent on this file
    """

    info: ImageInfo
    header: dict | None
    picture: np.ndarray | None
    decode: str
    seconds: dict[str, float] = field(default_factory=dict)


# reserve(n_bytes) -> a context manager held around a decode (``DecodeGate.hold``).
Reserve = Callable[[int], contextlib.AbstractContextManager]


# ---------------------------------------------------------------------------------------------
# Decode at the scale the preview needs
# ---------------------------------------------------------------------------------------------


def _to_picture(values: np.ndarray, size: int) -> np.ndarray:
    """float [0, 1] (H, W) or (H, W, 3) -> uint8 with the longer side <= size (Lanczos)."""
    pixels = np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    if max(image.size) > size:
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image)


def _box_factor(longest: int, size: int) -> int:
    """The integer box-reduction that keeps the longer side >= size (1 when it is small)."""
    return max(1, longest // size)


def _shrink_raster(image: Image.Image, size: int) -> Image.Image:
    """Box-reduce (and Lanczos to ``size`` for 8-bit modes) in the image's own mode, so that
    only a small copy becomes floats."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    factor = _box_factor(max(image.size), size)
    if factor > 1:
        with contextlib.suppress(ValueError, NotImplementedError):  # a mode reduce() does not take
            image = image.reduce(factor)
    if max(image.size) > size and image.mode in ("L", "RGB", "RGBA", "LA"):
        image.thumbnail((size, size), Image.Resampling.LANCZOS)  # 8-bit: cheaper than in floats
    return image


def _raster_preview(path: str | os.PathLike[str], max_pixels: int, size: int,
                    reserve: Reserve) -> ScanPreview:
    started = time.perf_counter()
    with _open_raster(path) as image:
        _raster_check_size(path, image, max_pixels)
        n_frames = _raster_frames(image)
        if n_frames > MAX_FRAMES_PER_FILE:
            raise PixelError(path, "too_many_frames", f"{n_frames} frames exceeds the limit of "
                             f"{MAX_FRAMES_PER_FILE} frames per file")
        width, height = image.size
        channels = _raster_channels(image.mode)
        kind = (image.format or "raster").lower()
        header_done = time.perf_counter()
        try:
            decode = f"{kind} full"
            if image.format == "JPEG":
                # libjpeg scales by 1/2, 1/4 or 1/8 while keeping both sides >= size; every
                # coded block is still entropy-decoded, so damage is still found.
                image.draft(image.mode, (size, size))
                decode = f"jpeg 1/{max(1, round(width / max(1, image.size[0])))}"
            # At most 4 bytes per pixel in the stored mode, at the scale decoded.
            with reserve(image.size[0] * image.size[1] * 4):
                image.load()
                orientation = _exif_orientation(image)  # after the decode: no second PNG decode
                if orientation != 1:
                    image = ImageOps.exif_transpose(image)
                small = _shrink_raster(image, size)
            values, in_range = _raster_to_array(small)
            picture = _to_picture(_finish(values, in_range=in_range), size)
        except PixelError:
            raise
        except Exception as exc:  # Pillow's plugins raise OSError, SyntaxError, ValueError...
            raise _raster_error(path, exc) from exc
    if orientation in _ROTATING_ORIENTATIONS:
        width, height = height, width
    seconds = {"header": header_done - started, "decode": time.perf_counter() - header_done}
    return ScanPreview(ImageInfo("raster", n_frames, height, width, channels), None, picture, decode,
                       seconds)


def _j2k_levels(codestream: bytes) -> tuple[int, int, bool, int] | None:
    """(decomposition levels, precision, signed, components) of a J2K codestream's main
    header, or None when it is not a plain codestream starting at the origin."""
    if not codestream.startswith(b"\xff\x4f\xff\x51") or len(codestream) < 43:
        return None
    x_offset, y_offset = int.from_bytes(codestream[16:20], "big"), int.from_bytes(codestream[20:24], "big")
    components = int.from_bytes(codestream[40:42], "big")
    if x_offset or y_offset or components < 1:
        return None
    precision, signed = (codestream[42] & 0x7F) + 1, bool(codestream[42] & 0x80)
    cod = codestream.find(b"\xff\x52", 4, 4096)  # COD: marker, length, Scod, SGcod(4), levels
    if cod < 0 or cod + 9 >= len(codestream):
        return None
    return codestream[cod + 9], precision, signed, components


def _j2k_reduced(path: str | os.PathLike[str], layout: DicomLayout, size: int) -> tuple[np.ndarray, int] | None:
    """Frame 0 of a JPEG 2000 DICOM at the coarsest resolution level whose longer side is still
    >= size, as raw stored values (rows/2^r, columns/2^r); None when this frame is not one the
    reduced decode handles (the caller decodes it in full)."""
    if layout.channels != 1 or layout.n_frames < 1:
        return None
    with open(path, "rb") as fp:
        fragments = _pixel_fragments(path, layout.header, fp)
        if not isinstance(fragments, list) or not fragments:
            return None
        if layout.n_frames == 1:  # one frame may span several fragments
            parts = fragments
        else:
            fragment = _frame_fragment(fp, fragments, 0, layout.n_frames)
            if fragment is None or len(fragments) != layout.n_frames:
                return None
            parts = [fragment]
        chunks = []
        for offset, length in parts:
            fp.seek(offset)
            chunks.append(fp.read(length))
    codestream = b"".join(chunks)
    parsed = _j2k_levels(codestream)
    if parsed is None:
        return None
    levels, precision, signed, components = parsed
    if signed or components != 1 or precision > 16:
        return None
    longest = max(layout.rows, layout.columns)
    reduce = min(levels, max(0, int(math.floor(math.log2(max(1, longest / size))))))
    while reduce and -(-longest // (1 << reduce)) < size:
        reduce -= 1
    if reduce == 0:
        return None
    image = Image.open(io.BytesIO(codestream), formats=["JPEG2000"])
    power = 1 << reduce
    # Pillow rounds the reduced size to nearest (Pillow 13 Jpeg2KImagePlugin.load); OpenJPEG
    # gives ceil(size / 2^r), so an odd-sized frame fails there. Set the size OpenJPEG returns.
    image._size = (-(-image.size[0] // power), -(-image.size[1] // power))
    tile = image.tile[0]
    image.tile = [ImageFile._Tile(tile[0], (0, 0, *image.size), tile[2],
                                  (tile[3][0], reduce, 0, tile[3][3], tile[3][4]))]
    ImageFile.ImageFile.load(image)
    array = np.asarray(image)
    expected = (-(-layout.rows // power), -(-layout.columns // power))
    if array.shape != expected:
        return None
    # Pillow widens samples to fill 8 or 16 bits; shift back to the stored values.
    shift = (16 if array.dtype == np.uint16 else 8) - precision
    if shift > 0:
        array = array >> shift
    return array, reduce


def _box_reduce(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean of factor x factor blocks (the ragged edge dropped); float64 of the small size."""
    if factor <= 1:
        return array
    height, width = (array.shape[0] // factor) * factor, (array.shape[1] // factor) * factor
    if height == 0 or width == 0:
        return array
    blocks = array[:height, :width].reshape(height // factor, factor, width // factor, factor,
                                            *array.shape[2:])
    return blocks.mean(axis=(1, 3))


def _dicom_values(path: str | os.PathLike[str], layout: DicomLayout, array: np.ndarray) -> np.ndarray:
    """The LUT steps of ``core.pixels._dicom_display_values`` (same order) on a decoded or
    reduced frame 0: palette -> RGB, modality LUT, first VOI window, MONOCHROME1 inversion."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    ds = layout.header.ds
    try:
        if layout.photometric == "PALETTE COLOR":
            return np.asarray(apply_color_lut(array, ds), dtype=np.float64)
        if array.ndim == 3:
            return array.astype(np.float64)
        view = _lut_view(ds, 0)
        values = apply_modality_lut(array, view)
        with contextlib.suppress(Exception):  # a malformed window costs the window only
            values = apply_voi_lut(values, view, index=0)
        inverse = str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"
    except Exception as exc:
        raise PixelError(path, "unreadable", f"cannot apply the image's LUTs ({exc})") from exc
    values = np.asarray(values, dtype=np.float64)
    return -values if layout.photometric == "MONOCHROME1" or inverse else values


def _dicom_preview(path: str | os.PathLike[str], max_pixels: int, size: int,
                   reserve: Reserve) -> ScanPreview:
    started = time.perf_counter()
    layout = inspect_dicom(path, 0, max_pixels=max_pixels)
    try:
        header = header_fields(layout.header.ds)
    except Exception as exc:  # pydicom converts values lazily
        raise PixelError(path, "unreadable", f"malformed DICOM header ({type(exc).__name__}: {exc})") from exc
    info = ImageInfo("dicom", layout.n_frames, layout.rows, layout.columns, layout.channels)
    header_done = time.perf_counter()
    with reserve(verify_bytes(info)):  # the full decode's bound; a reduced one holds far less
        reduced = None
        if layout.header.transfer_syntax in _J2K_SYNTAXES:
            try:
                reduced = _j2k_reduced(path, layout, size)
            except (KeyboardInterrupt, SystemExit, MemoryError):
                raise
            except BaseException:  # the full decode below decides, and names the decoder's error
                reduced = None
        if reduced is not None:
            array, level = reduced
            decode = f"j2k 1/{1 << level}"
        else:
            array = _decoded_frame(path, layout, 0)
            decode = "dicom full"
            if layout.photometric != "PALETTE COLOR":  # palette indices cannot be averaged
                array = _box_reduce(array, _box_factor(max(array.shape[:2]), size))
    values = _dicom_values(path, layout, array)
    try:
        picture = _to_picture(_finish(to_unit_range(values)), size)
    except Exception as exc:
        raise PixelError(path, "unreadable", f"cannot scale decoded pixels ({exc})") from exc
    seconds = {"header": header_done - started, "decode": time.perf_counter() - header_done}
    return ScanPreview(info, header, picture, decode, seconds)


def _no_reserve(_n_bytes: int) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def decode_preview(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                   size: int = PREVIEW_SIZE, reserve: Reserve | None = None) -> ScanPreview:
    """Read ``path``'s header and decode frame 0 once, at reduced scale where the format
    allows: ingest's verification, and the picture its preview is made of.

    Sizes are checked against ``max_pixels`` from the header before anything is decoded.
    ``reserve(n_bytes)``, when given, is entered around the decode with an upper bound on the
    bytes it holds (ingest passes ``DecodeGate.hold``).

    Returns
    -------
    ScanPreview (info, DICOM header fields, uint8 picture with the longer side <= size)

    Raises
    ------
    PixelError
        as ``core.pixels.probe_image`` and ``core.pixels.verify_pixels``; the reason names the
        cause. ``ValueError`` for a bad ``max_pixels`` or ``size``.
    """
    _check_budget(max_pixels)
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size={size!r} must be an integer >= 8")
    checked_file_size(path)
    reserve = reserve or _no_reserve
    if is_dicom(path):
        return _dicom_preview(path, max_pixels, size, reserve)
    try:
        return _raster_preview(path, max_pixels, size, reserve)
    except PixelError:
        raise
    except Exception as exc:
        raise _raster_error(path, exc) from exc


def _png_structure(path: str | os.PathLike[str], max_pixels: int) -> ScanPreview:
    """A PNG checked by its chunks (``core.png_check.check_png``), not inflated: geometry,
    frames and channels as ``core.pixels.probe_image`` gives them, no picture."""
    from core.png_check import check_png

    started = time.perf_counter()
    with _open_raster(path) as image:  # Pillow reads the chunks before the first IDAT
        _raster_check_size(path, image, max_pixels)
        n_frames = _raster_frames(image)
        if n_frames > MAX_FRAMES_PER_FILE:
            raise PixelError(path, "too_many_frames", f"{n_frames} frames exceeds the limit of "
                             f"{MAX_FRAMES_PER_FILE} frames per file")
        channels = _raster_channels(image.mode)
        is_png = image.format == "PNG"
    header_done = time.perf_counter()
    if not is_png:  # the signature said PNG but Pillow disagrees: decode it as before
        return _raster_preview(path, max_pixels, PREVIEW_SIZE, _no_reserve)
    structure = check_png(path, max_pixels=max_pixels)
    width, height = structure.width, structure.height
    if structure.orientation in _ROTATING_ORIENTATIONS:
        width, height = height, width
    seconds = {"header": header_done - started, "decode": time.perf_counter() - header_done}
    return ScanPreview(ImageInfo("raster", n_frames, height, width, channels), None, None,
                       "png structure", seconds)


def ingest_probe(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 size: int = PREVIEW_SIZE, reserve: Reserve | None = None) -> ScanPreview:
    """Ingest's check of one file: :func:`decode_preview` (header + frame 0 at reduced scale,
    and the preview's picture), except for PNG, which is checked by its structure without
    inflating it (``core.png_check``) and has no picture yet (``picture`` None): its preview
    is made by the embedding's full decode (:func:`load_with_preview`).

    Raises PixelError / ValueError as :func:`decode_preview`.
    """
    from core.png_check import is_png

    _check_budget(max_pixels)
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size={size!r} must be an integer >= 8")
    checked_file_size(path)
    if is_png(path):
        try:
            return _png_structure(path, max_pixels)
        except PixelError:
            raise
        except Exception as exc:
            raise _raster_error(path, exc) from exc
    return decode_preview(path, max_pixels=max_pixels, size=size, reserve=reserve)


def _raster_picture(image: Image.Image, size: int) -> np.ndarray:
    """The preview picture of a decoded (and EXIF-transposed) raster: ``_raster_preview``'s
    steps after its decode, so the same decoded image gives the same picture."""
    small = _shrink_raster(image, size)
    values, in_range = _raster_to_array(small)
    return _to_picture(_finish(values, in_range=in_range), size)


def load_with_preview(path: str | os.PathLike[str], frame: int = 0, *,
                      max_pixels: int = DEFAULT_MAX_PIXELS, min_size: int | None = None,
                      size: int = PREVIEW_SIZE) -> tuple[np.ndarray, bytes | None]:
    """``core.pixels.load_pixels(path, frame, max_pixels=, min_size=)`` and, from that same
    decode, the preview of frame 0 as JPEG bytes: the embedding's one decode of a file whose
    preview ingest did not make (a PNG).

    The pixels are exactly ``load_pixels``'s. A raster's preview comes from the decoded image
    through ``decode_preview``'s steps (a PNG's is identical to ``decode_preview``'s; a JPEG
    drafted to ``min_size`` is close to it); a DICOM's from the display values, box-reduced.
    The preview is None for another frame than 0 or when it cannot be made (the pixels are
    still returned). Raises what ``load_pixels`` raises.
    """
    from core.pixels import load_pixels

    made: list[np.ndarray] = []

    def keep(image: Image.Image) -> None:
        # Never fails the decode: a preview that cannot be made is simply not made.
        if frame == 0:
            with contextlib.suppress(Exception):
                made.append(_raster_picture(image, size))

    values = load_pixels(path, frame, max_pixels=max_pixels, min_size=min_size, on_raster=keep)
    if frame != 0:
        return values, None
    try:
        if made:
            picture = made[0]
        else:  # DICOM: the display values in [0, 1]
            picture = _to_picture(_box_reduce(values, _box_factor(max(values.shape[:2]), size)), size)
        return values, encode_preview(picture)
    except (ValueError, OSError, MemoryError):
        return values, None


# ---------------------------------------------------------------------------------------------
# The store: DATASET/previews/pack-<run>-<n>.bin (JPEGs end to end) + previews/index.parquet
# ---------------------------------------------------------------------------------------------

# One pack is written (and fsynced) per this many bytes or previews: a file per preview would
# cost two fsyncs each (about 10 ms here, over half an hour for 200k images).
PACK_BYTES = 8 * 1024**2
PACK_PREVIEWS = 1024
MAX_PREVIEW_BYTES = 1024**2  # a 256 px JPEG is ~15 KB; anything past this is not a preview
INDEX_NAME = "index.parquet"
_PACK_NAME = re.compile(r"pack-[0-9a-f]{12}-[0-9]{5}\.bin")


def valid_image_id(image_id: object) -> bool:
    """True for an id as ingest makes it (64 hex digits, "-", frame)."""
    return isinstance(image_id, str) and _IMAGE_ID.fullmatch(image_id) is not None


def encode_preview(picture: np.ndarray) -> bytes:
    """uint8 (h, w) or (h, w, 3) with the longer side <= ``PREVIEW_SIZE`` -> JPEG bytes.
    Raises ValueError for anything else."""
    if picture.dtype != np.uint8 or picture.ndim not in (2, 3) or max(picture.shape[:2]) > PREVIEW_SIZE:
        raise ValueError(f"a preview must be uint8 with its longer side <= {PREVIEW_SIZE} px, got "
                         f"{picture.dtype} {picture.shape}")
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return buffer.getvalue()


class PreviewWriter:
    """Collects previews during one ingest and writes them in packs, each atomically.

    ``add(image_id, jpeg)`` buffers; a pack is written when the buffer passes ``PACK_BYTES`` or
    ``PACK_PREVIEWS``; ``close()`` writes the last pack and then the index (atomically, so a
    reader sees the old set or the new one), and removes packs the new index does not use. At
    most one pack's bytes are held. Use from one thread.

    ``append=True`` (the embedding adding the previews of PNGs, :func:`add_previews`): each
    pack is followed by the index rewritten as the index on disk now plus this pack's
    previews (atomically); no pack is removed or rewritten, and nothing is written when the
    dataset has no index (ingested without previews, or its previews removed since).
    """

    def __init__(self, dataset_root: str | os.PathLike[str], *, append: bool = False) -> None:
        self.folder = Path(dataset_root) / PREVIEW_FOLDER
        self.append = append
        self.run = uuid.uuid4().hex[:12]
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._packs = 0
        self._entries: dict[str, tuple[str, int, int]] = {}  # image_id -> (pack, offset, length)
        self._pending: list[tuple[str, int, int]] = []  # (image_id, offset, length) in the buffer
        self._seen: set[str] = set()

    def add(self, image_id: str, jpeg: bytes) -> None:
        if not valid_image_id(image_id):
            raise ValueError(f"image_id={str(image_id)[:80]!r} is not an image id (64 hex digits, '-', frame)")
        if not isinstance(jpeg, bytes) or not 0 < len(jpeg) <= MAX_PREVIEW_BYTES:
            raise ValueError(f"{image_id}: a preview must be 1..{MAX_PREVIEW_BYTES} bytes of JPEG")
        if image_id in self._seen:
            return  # the same bytes ingested twice: one preview
        self._seen.add(image_id)
        self._pending.append((image_id, self._buffered, len(jpeg)))
        self._buffer.append(jpeg)
        self._buffered += len(jpeg)
        if self._buffered >= PACK_BYTES or len(self._buffer) >= PACK_PREVIEWS:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self.append and not self.folder.is_symlink() and self.folder.is_dir():
            # Two embeddings of one dataset may append at once: each reads the index and writes
            # it back with its pack under a lock, so neither drops the other's rows.
            with _index_lock(self.folder):
                self._write_pack()
        else:
            self._write_pack()

    def _write_pack(self) -> None:
        name = f"pack-{self.run}-{self._packs:05d}.bin"
        # Appending writes only into a real previews folder that already has an index.
        existing = (_read_index(self.folder) if self.append and not self.folder.is_symlink()
                    else None)
        if self.append and existing is None:  # no index (any more): these previews are dropped
            self._buffer, self._pending, self._buffered = [], [], 0
            return
        if self.append:
            known = set(existing["image_id"].astype(str))
            self._pending = [entry for entry in self._pending if entry[0] not in known]
            if not self._pending:
                self._buffer, self._buffered = [], 0
                return
        atomic_write_bytes(self.folder / name, b"".join(self._buffer))
        for image_id, offset, length in self._pending:
            self._entries[image_id] = (name, offset, length)
        self._packs += 1
        if self.append:
            import pandas as pd

            added = self._index_frame([entry[0] for entry in self._pending])
            self._write_index(pd.concat([existing, added], ignore_index=True))
        self._buffer, self._pending, self._buffered = [], [], 0

    def _index_frame(self, ids: list[str]):
        import pandas as pd

        return pd.DataFrame({
            "image_id": ids,
            "pack": [self._entries[i][0] for i in ids],
            "offset": np.array([self._entries[i][1] for i in ids], dtype=np.int64),
            "length": np.array([self._entries[i][2] for i in ids], dtype=np.int64),
        })

    def _write_index(self, index) -> None:
        atomic_write(self.folder / INDEX_NAME, lambda handle: index.to_parquet(handle, index=False))

    def close(self) -> int:
        """Write what is left and the index; returns how many previews the index names (with
        ``append``: how many this writer added)."""
        self._flush()
        if self.append:
            return len(self._entries)
        ids = sorted(self._entries)
        index = self._index_frame(ids)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_index(index)
        _remove_unused_packs(self.folder, set(index["pack"]))
        return len(index)


def _index_lock(folder: Path):
    """An exclusive lock on the preview index of ``folder`` (a ``.index.lock`` file beside it;
    filelock: fcntl / msvcrt), waited for up to a minute (then ``filelock.Timeout``, an
    OSError)."""
    from filelock import FileLock

    return FileLock(str(folder / ".index.lock"), timeout=60)


def _read_index(folder: Path):
    """The index on disk as a DataFrame (image_id, pack, offset, length), or None when there is
    none or it is not one we wrote."""
    import pandas as pd

    try:
        index = pd.read_parquet(folder / INDEX_NAME, columns=["image_id", "pack", "offset", "length"])
    except (OSError, ValueError, KeyError, ImportError):
        return None
    return index


def add_previews(dataset_root: str | os.PathLike[str], previews: dict[str, bytes]) -> int:
    """Add ``{image_id: JPEG}`` to a dataset's stored previews (``PreviewWriter(append=True)``):
    new packs, then the index rewritten atomically with the old rows kept; ids it already names
    are skipped. Returns how many were added (0 when the dataset has no preview index).
    Raises ValueError for a bad id or preview, OSError when the folder cannot be written."""
    writer = PreviewWriter(dataset_root, append=True)
    for image_id, jpeg in previews.items():
        writer.add(image_id, jpeg)
    return writer.close()


def _remove_unused_packs(folder: Path, used: set[str]) -> None:
    """Delete packs (and temp files of interrupted writes) the index no longer names; only
    files whose names are pack names, directly in the previews folder, are touched."""
    if folder.is_symlink():
        return
    resolved = folder.resolve()
    for entry in folder.iterdir():
        unused = _PACK_NAME.fullmatch(entry.name) is not None and entry.name not in used
        if ((unused or is_temp(entry)) and entry.is_file() and not entry.is_symlink()
                and entry.resolve().parent == resolved):
            entry.unlink(missing_ok=True)


def remove_previews(dataset_root: str | os.PathLike[str]) -> None:
    """Remove a dataset's previews (an ingest that stores none replaces an older one's)."""
    folder = Path(dataset_root) / PREVIEW_FOLDER
    if folder.is_dir() and not folder.is_symlink():
        (folder / INDEX_NAME).unlink(missing_ok=True)
        _remove_unused_packs(folder, set())


class PreviewStore:
    """The stored previews of one dataset folder, for reading (galleries).

    ``PreviewStore.open(root)`` is None for a dataset without previews (ingested before they
    existed, or with ``previews=False``). ``jpeg(image_id)`` is the preview's bytes or None.
    """

    def __init__(self, folder: Path, ids: np.ndarray, packs: list[str], offsets: np.ndarray,
                 lengths: np.ndarray) -> None:
        self.folder, self._ids, self._packs = folder, ids, packs
        self._offsets, self._lengths = offsets, lengths

    @classmethod
    def open(cls, dataset_root: str | os.PathLike[str]) -> PreviewStore | None:
        folder = Path(dataset_root) / PREVIEW_FOLDER
        index = _read_index(folder)
        if index is None:  # none, or not an index we wrote
            return None
        index = index.sort_values("image_id")
        return cls(folder, index["image_id"].to_numpy(dtype="S72"), index["pack"].astype(str).tolist(),
                   index["offset"].to_numpy(dtype=np.int64), index["length"].to_numpy(dtype=np.int64))

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        """Whether the index names ``image_id`` (its pack is not read)."""
        if not valid_image_id(image_id):
            return False
        key = image_id.encode("ascii")
        row = int(np.searchsorted(self._ids, key))
        return row < len(self._ids) and self._ids[row] == key

    def jpeg(self, image_id: object) -> bytes | None:
        """The preview of ``image_id`` as JPEG bytes, or None (no preview for it: another frame
        than 0, a file ingested without one; not an image id; a pack gone or damaged)."""
        if not valid_image_id(image_id):
            return None
        key = image_id.encode("ascii")
        row = int(np.searchsorted(self._ids, key))
        if row >= len(self._ids) or self._ids[row] != key:
            return None
        pack, offset, length = self._packs[row], int(self._offsets[row]), int(self._lengths[row])
        if _PACK_NAME.fullmatch(pack) is None or offset < 0 or not 0 < length <= MAX_PREVIEW_BYTES:
            return None
        try:
            with open(self.folder / pack, "rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
        except OSError:
            return None
        return data if len(data) == length and data[:2] == b"\xff\xd8" else None


def preview_pixels(jpeg: bytes) -> np.ndarray:
    """A stored preview as float32 in [0, 1], (h, w) or (h, w, 3). Raises OSError / ValueError
    when the bytes are not a preview-sized JPEG."""
    with Image.open(io.BytesIO(jpeg), formats=["JPEG"]) as image:
        if max(image.size) > PREVIEW_SIZE:
            raise ValueError(f"{image.size} is larger than a preview")
        image.load()
        pixels = np.asarray(image if image.mode in ("L", "RGB") else image.convert("RGB"))
    return pixels.astype(np.float32) / np.float32(255.0)
