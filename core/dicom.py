"""DICOM specifics: recognise a file, read an allow-listed header, vet the pixel data cheaply.

Headers are read with ``stop_before_pixels`` so that looking at a file never costs a decode,
and only the fields named in :data:`ALLOWED_FIELDS` ever leave this module: names, birth
dates, addresses, institutions, free text and private tags cannot leak because nothing outside
the allow-list is read. :func:`inspect_dicom` checks, from bytes on disk and without decoding,
everything that would make a decode fail or explode (missing or truncated pixel data, a
missing decoder, sizes over budget, a compressed frame that claims other dimensions than its
header); :mod:`core.pixels` then decodes.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder
from pydicom.uid import UID

PIXEL_STATUSES = frozenset({"empty_file", "not_an_image", "unreadable", "truncated",
                            "no_pixel_data", "unsupported_transfer_syntax", "too_large",
                            "frames_mismatch", "over_pixel_budget", "too_many_frames"})

# Per-file limits (all frames together). Each frame becomes a table row, so a header that
# claims a million frames must be refused before a row exists; real multi-frame studies
# (cine, tomosynthesis, enhanced CT/MR) stay far below these.
MAX_FRAMES_PER_FILE = 20_000
MAX_FILE_PIXELS = 2_000_000_000


class PixelError(Exception):
    """A file whose pixels cannot be had, with a machine-readable ``status`` and a human reason.

    Public as ``core.pixels.PixelError``; defined here so that ``core.dicom`` need not import
    ``core.pixels`` (dependencies point one way: pixels -> dicom).
    """

    def __init__(self, path: str | os.PathLike[str], status: str, reason: str) -> None:
        if status not in PIXEL_STATUSES:
            raise ValueError(f"status={status!r} is not one of {sorted(PIXEL_STATUSES)}")
        self.path = str(path)
        self.status = status
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across worker processes
        return (type(self), (self.path, self.status, self.reason))


class FrameRangeError(ValueError):
    """A frame index outside ``0 .. n_frames - 1``; the message names the valid range."""


# DICOM keyword -> output column. Non-identifying acquisition fields only, plus the few
# patient fields the cohort needs (ID, raw age string, raw sex). Deliberately absent: names,
# birth dates, addresses, accession numbers, institution/station/physician/operator fields,
# device serial numbers, free-text descriptions and comments, and every private tag.
ALLOWED_FIELDS: dict[str, str] = {
    "PatientID": "patient_id",
    "PatientAge": "age",
    "PatientSex": "sex",
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "ViewPosition": "view",
    "Laterality": "laterality",
    "ImageLaterality": "image_laterality",
    "PatientPosition": "patient_position",
    "StudyDate": "study_date",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model",
    "StudyInstanceUID": "study_uid",
    "SeriesInstanceUID": "series_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
    "SeriesNumber": "series_number",
    "InstanceNumber": "instance_number",
    "AcquisitionNumber": "acquisition_number",
    "ImageType": "image_type",
    "Rows": "dicom_rows",
    "Columns": "dicom_columns",
    "NumberOfFrames": "number_of_frames",
    "SamplesPerPixel": "samples_per_pixel",
    "PhotometricInterpretation": "photometric_interpretation",
    "BitsAllocated": "bits_allocated",
    "BitsStored": "bits_stored",
    "PixelRepresentation": "pixel_representation",
    "PixelSpacing": "pixel_spacing",
    "ImagerPixelSpacing": "imager_pixel_spacing",
    "SliceThickness": "slice_thickness",
    "SpacingBetweenSlices": "spacing_between_slices",
    "SliceLocation": "slice_location",
    "RescaleSlope": "rescale_slope",
    "RescaleIntercept": "rescale_intercept",
    "RescaleType": "rescale_type",
    "WindowCenter": "window_center",
    "WindowWidth": "window_width",
    "PresentationIntentType": "presentation_intent",
    "BurnedInAnnotation": "burned_in_annotation",
    "MagneticFieldStrength": "magnetic_field_strength",
    "ScanningSequence": "scanning_sequence",
    "SequenceVariant": "sequence_variant",
    "MRAcquisitionType": "mr_acquisition_type",
    "EchoTime": "echo_time",
    "RepetitionTime": "repetition_time",
    "InversionTime": "inversion_time",
    "FlipAngle": "flip_angle",
    "EchoTrainLength": "echo_train_length",
    "KVP": "kvp",
    "XRayTubeCurrent": "xray_tube_current",
    "Exposure": "exposure",
    "ExposureTime": "exposure_time",
    "ConvolutionKernel": "convolution_kernel",
    "TransferSyntaxUID": "transfer_syntax_uid",  # from the file meta group
}

# Each column has one type in every row, so a list of header dicts drops straight into a
# parquet table: these are int or float (first value if multi-valued); all others are str,
# with multiple values "\\"-joined as DICOM writes them.
INT_COLUMNS = frozenset({"series_number", "instance_number", "acquisition_number", "dicom_rows",
                         "dicom_columns", "number_of_frames", "samples_per_pixel",
                         "bits_allocated", "bits_stored", "pixel_representation",
                         "echo_train_length"})
FLOAT_COLUMNS = frozenset({"slice_thickness", "spacing_between_slices", "slice_location",
                           "rescale_slope", "rescale_intercept", "window_center", "window_width",
                           "magnetic_field_strength", "echo_time", "repetition_time",
                           "inversion_time", "flip_angle", "kvp", "xray_tube_current",
                           "exposure", "exposure_time"})
# Canonical booleans: True only for the DICOM "YES", False for anything else or absent.
BOOL_COLUMNS = frozenset({"burned_in_annotation"})

DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
# Deflated datasets are inflated whole by pydicom; refuse any that would inflate past this.
MAX_INFLATED_BYTES = 1 << 30
# How much of a compressed frame is read to find its SOF / SIZ marker.
_CODESTREAM_HEAD_BYTES = 1 << 16

_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
_LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                    b"UR", b"UT", b"UV"}
_ALL_VRS = _LONG_LENGTH_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL",
                               b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM",
                               b"UI", b"UL", b"US"}


class BoundedFile(io.BufferedReader):
    """A binary file whose ``read(n)`` never asks for more than the file holds.

    pydicom reads an element by asking for its declared length; a corrupt length of ~4 GiB
    would otherwise make Python allocate that much before finding the file is short. Use it
    wherever a hostile file is handed to pydicom.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(io.FileIO(os.fspath(path), "rb"))
        self.size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > self.size:
            size = self.size
        return super().read(size)


# ---------------------------------------------------------------------------------------------
# Recognition
# ---------------------------------------------------------------------------------------------


def _walks_like_dataset(head: bytes, endian: str, explicit: bool) -> bool:
    """True when the first two data elements of ``head`` parse as a plausible DICOM dataset."""
    offset, previous_tag, n_elements = 0, -1, 0
    while n_elements < 2:
        if offset + 12 > len(head):
            return n_elements >= 1  # a long first value may run past what was read
        group, element = struct.unpack_from(endian + "HH", head, offset)
        tag = (group << 16) | element
        if n_elements == 0 and group not in (0x0002, 0x0008):
            return False
        if tag <= previous_tag or group > 0x7FE0 or group % 2:  # sorted, public tags only
            return False
        if explicit:
            vr = head[offset + 4 : offset + 6]
            if vr not in _ALL_VRS:
                return False
            long_vr = vr in _LONG_LENGTH_VRS
            (length,) = struct.unpack_from(endian + ("I" if long_vr else "H"), head,
                                           offset + (8 if long_vr else 6))
            offset += 12 if long_vr else 8
        else:
            (length,) = struct.unpack_from(endian + "I", head, offset + 4)
            offset += 8
        if length == 0xFFFFFFFF:
            return n_elements >= 1
        if length > 1 << 24:
            return False
        offset += length
        previous_tag = tag
        n_elements += 1
    return True


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a DICOM file.

    True for the usual Part 10 layout (``DICM`` at byte 128) and for preamble-less datasets whose
    first two elements parse as a sorted, public DICOM dataset (little/big endian, explicit or
    implicit VR). Reads at most 4 KiB and never raises: missing paths, folders, PNGs, text and
    other non-DICOM files give False.
    """
    try:
        with open(path, "rb") as fp:
            head = fp.read(4096)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return any(_walks_like_dataset(head, endian, explicit)
               for endian, explicit in (("<", True), ("<", False), (">", True)))


def _meta_transfer_syntax(head: bytes) -> tuple[str | None, int]:
    """(Transfer Syntax UID, offset just past the meta group) parsed from a Part 10 file head."""
    offset, syntax = 132, None
    while offset + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            break
        vr = head[offset + 4 : offset + 6]
        if vr in _LONG_LENGTH_VRS:
            (length,) = struct.unpack_from("<I", head, offset + 8)
            value_at = offset + 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            value_at = offset + 8
        if element == 0x0010:
            syntax = head[value_at : value_at + length].decode("ascii", "replace").strip("\x00 ")
        offset = value_at + length
    return syntax, offset


def _check_inflated_size(path: str | os.PathLike[str], start: int) -> int:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as fp:
        fp.seek(start)
        while chunk := fp.read(1 << 20):
            data = chunk
            while data:
                # max_length bounds each step, so a bomb is counted, never held in memory.
                try:
                    total += len(inflater.decompress(data, 1 << 24))
                except zlib.error as exc:
                    raise PixelError(path, "unreadable", f"corrupt deflated dataset ({exc})") from exc
                data = inflater.unconsumed_tail
                if total > MAX_INFLATED_BYTES:
                    raise PixelError(path, "too_large", f"deflated dataset inflates past "
                                     f"{MAX_INFLATED_BYTES} bytes (possible zip bomb, refused)")
    return total


# ---------------------------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------------------------


def checked_file_size(path: str | os.PathLike[str]) -> int:
    """Size in bytes of a readable, non-empty file.

    Raises
    ------
    PixelError
        ``unreadable`` for a missing path or a folder, ``empty_file`` for 0 bytes.
    """
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise PixelError(path, "unreadable", f"cannot read file: {exc.strerror or exc}") from exc
    if os.path.isdir(path):
        raise PixelError(path, "unreadable", "is a directory, not a file")
    if size == 0:
        raise PixelError(path, "empty_file", "file is empty (0 bytes)")
    return size


def _header_error(path: str | os.PathLike[str], exc: Exception) -> PixelError:
    message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    lowered = message.lower()
    if isinstance(exc, (EOFError, struct.error)) or any(
        word in lowered for word in ("end of file", "unpack requires", "truncat", "eof")
    ):
        return PixelError(path, "truncated", f"DICOM header is truncated ({message})")
    return PixelError(path, "unreadable", f"cannot parse DICOM header ({message})")


def _ends_mid_element(ds: Dataset, size: int) -> bool:
    """Whether a header that ran to the end of the file stopped inside an element.

    pydicom stops quietly at end of file, keeping a short last value or dropping a partial tag,
    so completeness is judged from where the last element should have ended.
    """
    if not len(ds):
        return True  # a file meta group and nothing after it
    last = ds.get_item(max(ds.keys()))
    value_tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if value_tell is None or length is None or length == 0xFFFFFFFF:
        return False
    return value_tell + length != size


@dataclass
class DicomHeader:
    """A header read with ``stop_before_pixels``, and where its pixel data element starts."""

    ds: Dataset
    transfer_syntax: str | None  # None for preamble-less files without a meta group
    pixel_offset: int | None  # file offset of the pixel data tag; None when deflated
    file_size: int
    inflated_size: int | None = None  # bytes of a deflated dataset once inflated


def read_header_dataset(path: str | os.PathLike[str]) -> DicomHeader:
    """Read the whole header of a DICOM file, pixel data excluded (internal to core).

    The dataset holds every element, so it must not leave core unfiltered; use
    :func:`read_header` for anything shown or stored.

    Raises
    ------
    PixelError
        ``empty_file``, ``not_an_image``, ``truncated``, ``unreadable``, or ``too_large`` for a
        deflated dataset that would inflate past ``MAX_INFLATED_BYTES``.
    """
    size = checked_file_size(path)
    if not is_dicom(path):
        raise PixelError(path, "not_an_image", "not a DICOM file (no DICM marker, no DICOM tags)")
    with open(path, "rb") as fp:
        head = fp.read(1 << 16)
    inflated_size = None
    if head[128:132] == b"DICM":
        syntax, meta_end = _meta_transfer_syntax(head)
        if syntax == DEFLATED_SYNTAX:
            inflated_size = _check_inflated_size(path, meta_end)
    try:
        with BoundedFile(path) as fp:
            # force=True only matters for the preamble-less files that is_dicom accepted.
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True)
            position = fp.tell()
    except Exception as exc:  # pydicom raises many types on hostile headers
        raise _header_error(path, exc) from exc
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    syntax = str(syntax) if syntax else None
    # (Offsets in a deflated dataset are offsets in the inflated stream, not in the file.)
    try:
        cut_short = position >= size and syntax != DEFLATED_SYNTAX and _ends_mid_element(ds, size)
    except Exception as exc:  # the last element is parsed here, and may be garbage
        raise _header_error(path, exc) from exc
    if cut_short:
        raise PixelError(path, "truncated", f"DICOM header is cut short (file ends at byte {size} "
                         "inside a data element)")
    return DicomHeader(ds, syntax, None if syntax == DEFLATED_SYNTAX else position, size,
                       inflated_size)


def _to_column_value(column: str, value: Any) -> str | int | float | bool | None:
    if column in BOOL_COLUMNS:
        return isinstance(value, str | bytes) and (
            value.decode("latin-1", "replace") if isinstance(value, bytes) else value
        ).strip(" \x00").upper() == "YES"
    if value is None or value == "" or isinstance(value, Dataset):
        return None
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    if not values or isinstance(values[0], Dataset):
        return None
    if column in INT_COLUMNS or column in FLOAT_COLUMNS:
        try:
            number = float(values[0])
        except (TypeError, ValueError):
            return None
        if not math.isfinite(number):
            return None
        return int(number) if column in INT_COLUMNS else number
    texts = [
        (item.decode("latin-1", "replace") if isinstance(item, bytes) else str(item)).strip(
            " \x00"
        )
        for item in values
    ]
    return "\\".join(texts) or None


def header_fields(ds: Dataset) -> dict[str, str | int | float | None]:
    """The allow-listed fields of an already-read dataset, one key per ALLOWED_FIELDS column.

    Missing, empty or malformed values become None; nothing outside the allow-list is read.
    """
    out: dict[str, str | int | float | None] = {}
    meta = getattr(ds, "file_meta", None)
    for keyword, column in ALLOWED_FIELDS.items():
        source = meta if keyword == "TransferSyntaxUID" else ds
        try:
            value = source.get(keyword) if source is not None else None
        except Exception:  # pydicom converts lazily; a malformed value raises on access
            value = None
        out[column] = _to_column_value(column, value)
    return out


def read_header(path: str | os.PathLike[str]) -> dict[str, str | int | float | None]:
    """Read the allow-listed header fields of one DICOM file (pixel data is not read).

    Returns a dict with exactly the columns of :data:`ALLOWED_FIELDS` (values str, int, float or
    None; multi-valued text is ``"\\\\"``-joined). ``age`` and ``sex`` are the raw header strings;
    use :func:`parse_dicom_age` for years.

    Raises
    ------
    PixelError
        status ``empty_file``, ``not_an_image`` (not DICOM), ``truncated``, ``unreadable`` or
        ``too_large`` (deflate bomb).
    """
    return header_fields(read_header_dataset(path).ds)


_AGE_PATTERN = re.compile(r"^\s*(\d{1,3})\s*([YMWD]?)\s*$", re.IGNORECASE)
_DAYS_PER_UNIT = {"Y": 365.25, "M": 365.25 / 12, "W": 7.0, "D": 1.0}


def parse_dicom_age(value: Any) -> float:
    """Years from a DICOM Age String (``"045Y"`` -> 45.0, ``"006M"`` -> 0.5, W and D too).

    A bare number is taken as years, as many writers omit the unit. None, empty strings,
    garbage and ages over 150 years give NaN.
    """
    if value is None:
        return math.nan
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    match = _AGE_PATTERN.match(str(value))
    if not match:
        return math.nan
    amount, unit = int(match.group(1)), (match.group(2) or "Y").upper()
    years = amount * _DAYS_PER_UNIT[unit] / 365.25
    return years if years <= 150 else math.nan


# ---------------------------------------------------------------------------------------------
# Pixel data, checked from bytes on disk
# ---------------------------------------------------------------------------------------------


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
    if implicit or head[4:6] not in _ALL_VRS:
        (length,), value_start = struct.unpack_from(endian + "I", head, 4), header.pixel_offset + 8
    elif head[4:6] in _LONG_LENGTH_VRS:
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
