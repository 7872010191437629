"""DICOM specifics: recognise a file, read an allow-listed header, vet the pixel data cheaply.

Headers are read with ``stop_before_pixels`` so that looking at a file never costs a decode,
and only the fields named in :data:`ALLOWED_FIELDS` ever leave this module: names, birth
dates, addresses, institutions, free text and private tags cannot leak because nothing outside
the allow-list is read. :func:`core.dicom_layout.inspect_dicom` checks, from bytes on disk and without decoding,
everything that would make a decode fail or explode; :mod:`core.pixels` then decodes.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pydicom is imported where a DICOM is read: a raster-only ingest never needs it
    from pydicom.dataset import Dataset

PIXEL_STATUSES = frozenset({"empty_file", "not_an_image", "unreadable", "truncated",
                            "no_pixel_data", "unsupported_transfer_syntax", "too_large",
                            "frames_mismatch", "over_pixel_budget", "too_many_frames"})



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
# Value representations, as bytes, for walking raw elements (shared with core.dicom_layout).
LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                    b"UR", b"UT", b"UV"}
ALL_VRS = LONG_LENGTH_VRS | {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL",
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
            if vr not in ALL_VRS:
                return False
            long_vr = vr in LONG_LENGTH_VRS
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
        if vr in LONG_LENGTH_VRS:
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
            import pydicom

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
    from pydicom.dataset import Dataset
    from pydicom.multival import MultiValue

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
