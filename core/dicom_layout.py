"""DICOM frame geometry and pixel-data framing, vetted from bytes on disk without decoding.

:func:`inspect_dicom` reads the header (:mod:`core.dicom`), then only tags, lengths and the
first bytes of a frame's codestream, and refuses everything that would make a decode fail or
explode: missing or truncated pixel data, a missing decoder, a frame over the pixel budget, a
compressed frame that claims other dimensions than its header, and a frame count the pixel data
cannot hold (each frame becomes a table row, so a 662-byte file claiming a million frames is
refused here). :mod:`core.pixels` then decodes.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydicom is imported where a DICOM is read (core.dicom)
    from pydicom.dataset import Dataset

from core.dicom import (
    ALL_VRS,
    LONG_LENGTH_VRS,
    DicomHeader,
    FrameRangeError,
    PixelError,
    read_header_dataset,
)

# Per-file limits (all frames together). Each frame becomes a table row, so a header that
# claims a million frames must be refused before a row exists; real multi-frame studies
# (cine, tomosynthesis, enhanced CT/MR) stay far below these.
MAX_FRAMES_PER_FILE = 20_000
MAX_FILE_PIXELS = 2_000_000_000

# How much of a compressed frame is read to find its SOF / SIZ marker.
_CODESTREAM_HEAD_BYTES = 1 << 16

_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


@dataclass
class DicomLayout:
    """Frame geometry of a DICOM image, from its header, plus the header it came from."""

    n_frames: int
    rows: int
    columns: int
    channels: int  # 3 for RGB / YBR / PALETTE COLOR, else 1
    photometric: str
    header: DicomHeader


def _int_element(path: str | os.PathLike[str], ds: Dataset, keyword: str, default: int | None):
    value = ds.get(keyword)
    if value is None or value == "":
        if default is None:
            raise PixelError(path, "unreadable", f"DICOM header has no {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise PixelError(path, "unreadable", f"invalid {keyword} {value!r} in DICOM header") from exc


def _no_pixels_reason(ds: Dataset) -> str:
    if "DirectoryRecordSequence" in ds:
        return "DICOM file has no pixel data (a DICOMDIR index)"
    from pydicom.uid import UID

    sop_class = str(ds.get("SOPClassUID", "") or "")
    name = UID(sop_class).name if sop_class else ""
    kind = f" ({name})" if name and name != sop_class else ""
    return f"DICOM file has no pixel data{kind}"


def _pixel_fragments(path, header: DicomHeader, fp) -> int | list[tuple[int, int]]:
    """Locate the pixel data: its length in bytes for native data, else the (offset, length)
    of each fragment.

    Raises ``no_pixel_data`` or ``truncated`` when the element is absent or incomplete: native
    data must hold all its declared bytes, encapsulated data must reach its delimiter. Reads
    only tags and lengths (one seek per fragment).
    """
    ds = header.ds
    implicit, little = ds.original_encoding
    endian = "<" if little in (True, None) else ">"
    fp.seek(header.pixel_offset)
    head = fp.read(12)
    if not head:
        # The header ended cleanly (read_header_dataset checked), so nothing was cut off.
        raise PixelError(path, "no_pixel_data", _no_pixels_reason(ds))
    if len(head) < 12:
        raise PixelError(path, "truncated", "file ends inside the pixel data tag")
    group, element = struct.unpack_from(endian + "HH", head)
    if (group << 16 | element) not in _PIXEL_TAGS:
        raise PixelError(path, "no_pixel_data", _no_pixels_reason(ds))
    # Some writers put an implicit-VR pixel element in an explicit-VR file; pydicom accepts
    # that, so this must too.
    if implicit or head[4:6] not in ALL_VRS:
        (length,), value_start = struct.unpack_from(endian + "I", head, 4), header.pixel_offset + 8
    elif head[4:6] in LONG_LENGTH_VRS:
        (length,), value_start = struct.unpack_from(endian + "I", head, 8), header.pixel_offset + 12
    else:
        (length,), value_start = struct.unpack_from(endian + "H", head, 6), header.pixel_offset + 8
    if length != 0xFFFFFFFF:
        remaining = header.file_size - value_start
        if length > remaining:
            raise PixelError(path, "truncated", f"pixel data declares {length} bytes but only "
                             f"{remaining} remain in the file")
        return length
    fragments: list[tuple[int, int]] = []
    position = value_start
    while True:  # items are always little endian (PS3.5 A.4)
        fp.seek(position)
        item = fp.read(8)
        if len(item) < 8:
            raise PixelError(path, "truncated", "compressed pixel data ends before its sequence "
                             f"delimiter (file is {header.file_size} bytes)")
        item_group, item_element, item_length = struct.unpack("<HHI", item)
        if (item_group, item_element) == (0xFFFE, 0xE0DD):
            return fragments[1:]  # the first item is the Basic Offset Table
        if (item_group, item_element) != (0xFFFE, 0xE000) or item_length == 0xFFFFFFFF:
            raise PixelError(path, "unreadable", "corrupt compressed pixel data: unexpected tag "
                             f"({item_group:04X},{item_element:04X}) at byte {position}")
        fragments.append((position + 8, item_length))
        position += 8 + item_length
        if position > header.file_size:
            raise PixelError(path, "truncated", "compressed pixel data fragment runs past the "
                             f"end of the file ({header.file_size} bytes)")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the SOF marker of a JPEG / JPEG-LS codestream."""
    position = 2
    while position + 9 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        if marker == 0xF7 or (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)):
            return struct.unpack_from(">HH", data, position + 5)
        (length,) = struct.unpack_from(">H", data, position + 2)
        position += 2 + length
    return None


def _codestream_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) a compressed frame declares, or None when it cannot be read."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data.startswith(b"\x00\x00\x00\x0cjP  "):  # JP2 wrapper: the codestream is in 'jp2c'
        box = data.find(b"jp2c")
        data = data[box + 4 :] if box >= 0 else b""
    if not data.startswith(b"\xff\x4f\xff\x51") or len(data) < 28:  # J2K / HTJ2K SOC + SIZ
        return None
    x_size, y_size, x_offset, y_offset = struct.unpack_from(">IIII", data, 8)
    return y_size - y_offset, x_size - x_offset


def _frame_fragment(fp, fragments: list[tuple[int, int]], frame: int, n_frames: int):
    if len(fragments) == n_frames:
        return fragments[frame]
    if n_frames == 1:
        return fragments[0] if fragments else None
    starts = []  # several fragments per frame: a frame starts where a codestream starts
    for offset, length in fragments:
        fp.seek(offset)
        if fp.read(4)[:2] in (b"\xff\xd8", b"\xff\x4f", b"\x00\x00"):
            starts.append((offset, length))
    return starts[frame] if len(starts) == n_frames else None


def _check_codestream(path, fp, fragment, rows: int, columns: int, max_pixels: int) -> None:
    """Refuse a compressed frame whose own header claims other (or larger) dimensions.

    Decoders size their buffers from the codestream, not the DICOM header, so a frame that
    claims 70000 x 70000 would be allocated in full before failing.
    """
    offset, length = fragment
    fp.seek(offset)
    size = _codestream_size(fp.read(min(length, _CODESTREAM_HEAD_BYTES)))
    if size is None or 0 in size:
        return
    height, width = size
    if height * width > max_pixels:
        raise PixelError(path, "too_large", f"compressed frame declares {height}x{width} = "
                         f"{height * width} pixels, over the budget max_pixels={max_pixels}")
    if (height, width) != (rows, columns):
        raise PixelError(path, "unreadable", f"compressed frame declares {height}x{width} but "
                         f"the DICOM header says {rows}x{columns}")


def _check_decoder(path: str | os.PathLike[str], syntax: str | None) -> None:
    if syntax is None:
        return  # preamble-less: native data in the dataset's own encoding
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    name = UID(syntax).name
    label = f"{name} ({syntax})" if name and name != syntax else syntax
    try:
        decoder = get_decoder(syntax)
    except Exception as exc:
        raise PixelError(path, "unsupported_transfer_syntax",
                         f"no decoder for transfer syntax {label}") from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        raise PixelError(path, "unsupported_transfer_syntax", f"transfer syntax {label} needs a "
                         f"decoder that is not installed ({missing})")


def _check_file_budget(path, n_frames: int, rows: int, columns: int, samples: int,
                       max_file_pixels: int) -> None:
    if n_frames > MAX_FRAMES_PER_FILE:
        raise PixelError(path, "too_many_frames", f"NumberOfFrames={n_frames} exceeds the limit "
                         f"of {MAX_FRAMES_PER_FILE} frames per file")
    total = n_frames * rows * columns * samples
    if total > max_file_pixels:
        raise PixelError(path, "over_pixel_budget", f"{n_frames} frames x {rows}x{columns} x "
                         f"{samples} samples = {total} pixel values exceeds the per-file budget "
                         f"of {max_file_pixels}")


def _native_bytes_needed(ds: Dataset, n_frames: int, rows: int, columns: int, samples: int,
                         photometric: str) -> tuple[int, str]:
    """Bytes that native pixel data must hold for the header's geometry, and the formula."""
    bits = ds.get("BitsAllocated")
    try:
        bits = int(bits)
    except (TypeError, ValueError):
        bits = 0
    bits = bits if bits > 0 else 1  # absent or garbage: the loosest bound still catches lies
    # YBR_FULL_422 keeps two samples per pixel on disk (chroma shared by pixel pairs).
    stored_samples = 2 if photometric == "YBR_FULL_422" and samples == 3 else samples
    needed = -(-(n_frames * rows * columns * stored_samples * bits) // 8)
    formula = (f"{n_frames} frames x {rows} rows x {columns} columns x {stored_samples} samples "
               f"x {bits} bits / 8 = {needed} bytes")
    return needed, formula


def _check_frames_against_data(path, header: DicomHeader, pixel_data, n_frames: int, rows: int,
                               columns: int, samples: int, photometric: str) -> None:
    """Refuse a header whose frames x geometry the pixel data cannot hold.

    Every frame becomes a row, so a 662-byte file claiming 1,000,000 frames must be refused
    here, from lengths alone, and never reach the table.
    """
    status = "frames_mismatch" if n_frames > 1 else "truncated"
    if isinstance(pixel_data, list):  # encapsulated: each frame needs at least one fragment
        if n_frames > max(1, len(pixel_data)):
            raise PixelError(path, status, f"NumberOfFrames={n_frames} but the compressed "
                             f"pixel data holds only {len(pixel_data)} fragment(s)")
        return
    needed, formula = _native_bytes_needed(header.ds, n_frames, rows, columns, samples,
                                           photometric)
    available = pixel_data if isinstance(pixel_data, int) else header.inflated_size
    if available is not None and needed > available:
        where = "pixel data holds" if isinstance(pixel_data, int) else "inflated dataset holds"
        raise PixelError(path, status, f"{where} {available} bytes but the header needs "
                         f"{formula}")


def _layout(path, header: DicomHeader, frame: int, max_pixels: int,
            max_file_pixels: int = MAX_FILE_PIXELS) -> DicomLayout:
    ds = header.ds
    if "Rows" not in ds and "Columns" not in ds:
        raise PixelError(path, "no_pixel_data", _no_pixels_reason(ds))
    rows = _int_element(path, ds, "Rows", None)
    columns = _int_element(path, ds, "Columns", None)
    if rows * columns > max_pixels:
        raise PixelError(path, "too_large", f"{rows}x{columns} = {rows * columns} pixels per "
                         f"frame exceeds the budget max_pixels={max_pixels}")
    n_frames = _int_element(path, ds, "NumberOfFrames", 1)
    if n_frames < 1 or rows < 1 or columns < 1:
        raise PixelError(path, "unreadable",
                         f"invalid geometry: {n_frames} frames of {rows}x{columns}")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = _int_element(path, ds, "SamplesPerPixel", 1)
    if samples < 1:
        raise PixelError(path, "unreadable", f"invalid SamplesPerPixel {samples}")
    if header.pixel_offset is not None:
        with open(path, "rb") as fp:
            pixel_data = _pixel_fragments(path, header, fp)
            _check_frames_against_data(path, header, pixel_data, n_frames, rows, columns,
                                       samples, photometric)
            # Only JPEG-family and JPEG 2000 codestreams carry their own size; RLE and others
            # are sized by the header alone.
            jpeg_like = (header.transfer_syntax or "").startswith("1.2.840.10008.1.2.4.")
            if isinstance(pixel_data, list) and jpeg_like and 0 <= frame < n_frames:
                fragment = _frame_fragment(fp, pixel_data, frame, n_frames)
                if fragment is not None:
                    _check_codestream(path, fp, fragment, rows, columns, max_pixels)
    else:  # deflated: bounded by what the dataset inflates to
        _check_frames_against_data(path, header, None, n_frames, rows, columns, samples,
                                   photometric)
    _check_file_budget(path, n_frames, rows, columns, samples, max_file_pixels)
    if not 0 <= frame < n_frames:
        raise FrameRangeError(f"frame={frame} is out of range for {path}: valid frames are "
                              f"0..{n_frames - 1}")
    _check_decoder(path, header.transfer_syntax)
    channels = 3 if samples == 3 or photometric == "PALETTE COLOR" else 1
    return DicomLayout(n_frames, rows, columns, channels, photometric, header)


def inspect_dicom(
    path: str | os.PathLike[str], frame: int = 0, *, max_pixels: int,
    max_file_pixels: int = MAX_FILE_PIXELS,
) -> DicomLayout:
    """Check from the header and pixel-data framing alone that ``frame`` can be decoded.

    Reads the header, then only tags, lengths and the first bytes of the frame's codestream;
    nothing is decompressed.

    Raises
    ------
    PixelError
        ``empty_file``, ``not_an_image``, ``truncated``, ``unreadable``, ``no_pixel_data``,
        ``unsupported_transfer_syntax`` (the reason names the syntax), or ``too_large`` when
        ``Rows * Columns`` or the compressed frame's own size exceeds ``max_pixels``;
        ``frames_mismatch`` (or ``truncated`` for one frame) when the pixel data is shorter than
        frames x rows x columns x samples x bits allocated; ``too_many_frames`` past
        ``MAX_FRAMES_PER_FILE``; ``over_pixel_budget`` when all frames together exceed
        ``max_file_pixels``.
    FrameRangeError
        (a ValueError) ``frame`` outside ``0 .. n_frames - 1``.
    """
    header = read_header_dataset(path)
    try:
        return _layout(path, header, frame, max_pixels, max_file_pixels)
    except (PixelError, FrameRangeError):
        raise
    except Exception as exc:  # pydicom converts values lazily, so any access may raise
        raise PixelError(path, "unreadable",
                         f"malformed DICOM header ({type(exc).__name__}: {exc})") from exc
