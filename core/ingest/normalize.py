"""Normalise metadata values into ScanAtlas's canonical fields.

Canonical fields: ``patient_id``, ``path``, ``modality``, ``view``, ``age`` (years, float),
``sex`` (``"M"``, ``"F"`` or ``"unknown"``), ``label`` and ``text``. Any other column is kept
as it came, only with its text repaired.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

CANONICAL_FIELDS = ("patient_id", "path", "modality", "view", "age", "sex", "label", "text")
# Each field in plain words, for forms.
FIELD_NAMES = {
    "patient_id": "Patient ID", "path": "Image file name", "modality": "Modality (CT, MR, X-ray...)",
    "view": "View (e.g. PA, AP)", "age": "Age (years)", "sex": "Sex", "label": "Ground-truth label (diagnosis)",
    "text": "Report / clinical notes",
}

# Column names that mean a canonical field, compared after lower-casing and dropping
# everything but letters and digits ("Patient ID" == "patient_id" == "patientid").
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "patient_id": ("patientid", "patient", "subjectid", "subject", "pid", "caseid"),
    "path": ("path", "filename", "file", "filepath", "image", "imagepath", "imagefile"),
    "modality": ("modality",),
    "view": ("view", "viewposition", "projection"),
    "age": ("age", "patientage", "ageyears"),
    "sex": ("sex", "gender", "patientsex"),
    "label": ("label", "diagnosis", "finding", "groundtruth", "class", "target"),
    "text": ("text", "report", "clinicalnotes", "notes", "impression"),
}

_SEX_VALUES = {
    "m": "M", "male": "M", "man": "M", "1": "M", "1.0": "M",
    "f": "F", "female": "F", "woman": "F", "0": "F", "0.0": "F",
}

_AGE_UNITS_TO_YEARS = {"y": 1.0, "m": 1 / 12, "w": 7 / 365.25, "d": 1 / 365.25}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def canonical_column_map(columns: list[str], explicit: Mapping[str, str] | None = None) -> dict[str, str]:
    """Map source column names to canonical field names.

    Parameters
    ----------
    columns : list of str
        Column names found in the CSV.
    explicit : mapping COLUMN -> FIELD, optional
        The user's ``--map`` choices; they win over the aliases. A column named here that the
        CSV lacks raises ``ValueError`` naming the column and the columns found.

    Returns
    -------
    dict
        ``{source_column: canonical_field}`` for the columns that map to a field. Each field is
        taken by at most one column, the first alias match in CSV order.
    """
    explicit = dict(explicit or {})
    for column, field in explicit.items():
        if column not in columns:
            raise ValueError(
                f"--map names column {column!r}, which the CSV lacks; columns found: {list(columns)}"
            )
        if field not in CANONICAL_FIELDS:
            raise ValueError(f"--map field {field!r} is not one of {list(CANONICAL_FIELDS)}")
    mapping = dict(explicit)
    taken = set(explicit.values())
    for field, aliases in FIELD_ALIASES.items():
        if field in taken:
            continue
        wanted = {_squash(field), *aliases}
        for column in columns:
            if column not in mapping and _squash(column) in wanted:
                mapping[column] = field
                taken.add(field)
                break
    return mapping


def normalize_sex(value: object) -> str:
    """``"M"``, ``"F"`` or ``"unknown"`` from M/F, Male/Female, 1/0 (1 = male) and the like."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return _SEX_VALUES.get(str(value).strip().lower(), "unknown")


def normalize_age(value: object) -> float:
    """Age in years as a float; NaN when missing or unreadable.

    Accepts numbers, ``"65"``, ``"65 years"``, and DICOM age strings ``"045Y"``, ``"006M"``,
    ``"003W"``, ``"010D"``. Values outside 0..130 years are treated as unreadable.
    """
    if value is None:
        return math.nan
    if isinstance(value, int | float):
        years = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([ymwd]?)[a-z]*\s*", str(value).lower())
        if not match:
            return math.nan
        years = float(match.group(1)) * _AGE_UNITS_TO_YEARS.get(match.group(2) or "y", 1.0)
    return years if 0 <= years <= 130 else math.nan


# A U+FFFD replacement character is a byte that an earlier tool could not decode. The bytes
# are gone, but these cases are unambiguous from context and read better repaired.
_REPLACEMENT_FIXES = (
    (re.compile(r"(\d)\s?\ufffd\s?([CF])\b"), "\\1 °\\2"),  # 38�C, 38 � C -> 38 °C
    (re.compile(r"(\d)\s?\ufffd(?=\s?[),.;]|\s*$|\s[a-z])"), "\\1 °"),  # fever 37.8 � -> 37.8 °
    (re.compile(r"(\w)\ufffd(s|t|ll|re|ve|d)\b"), "\\1'\\2"),  # People�s -> People's
    (re.compile(r"(?<!\w)\ufffd([A-Za-z][^\ufffd]{0,40}?)\ufffd(?!\w)"), "\"\\1\""),  # �wet market� -> "wet market"
)


_PLAIN_ASCII = re.compile(r"[\x20-\x25\x27-\x7e\n\t]*")  # printable ASCII but "&", newlines, tabs
# The same with U+FFFD: ftfy cannot repair a replacement character among plain ASCII (nothing
# there is mojibake), so only the fixes below apply (checked against ftfy on random text).
_PLAIN_ASCII_LOSSY = re.compile(r"[\x20-\x25\x27-\x7e\n\t\ufffd]*")


def clean_text(value: object) -> object:
    """Repair broken text encodings so that notes stay readable.

    Mojibake (UTF-8 read as Latin-1, like ``"Ã©"``) is undone with ftfy; replacement
    characters left by earlier lossy decoding are repaired where the context is unambiguous
    (degrees, apostrophes, paired quotes) and otherwise kept, so nothing is silently invented.
    Non-strings pass through unchanged.
    """
    if not isinstance(value, str):
        return value
    if _PLAIN_ASCII.fullmatch(value):
        # Nothing ftfy or the fixes below change: no non-ASCII character to repair, no HTML
        # entity, no CR line break, no control character. ftfy was most of a CSV's read time.
        return value.strip()
    if _PLAIN_ASCII_LOSSY.fullmatch(value):
        text = value
        for pattern, replacement in _REPLACEMENT_FIXES:
            text = pattern.sub(replacement, text)
        return text.strip()
    import ftfy  # only text that needs it pays its import (~30 ms)

    text = ftfy.fix_text(value)
    for pattern, replacement in _REPLACEMENT_FIXES:
        text = pattern.sub(replacement, text)
    return text.strip()


def n_replacement_chars(value: object) -> int:
    """How many undecodable characters (U+FFFD) a value still holds."""
    return value.count("\ufffd") if isinstance(value, str) else 0


def clean_frame_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Apply :func:`clean_text` to every text column of ``frame`` (a copy is returned)."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object or pd.api.types.is_string_dtype(frame[column]):
            frame[column] = frame[column].map(clean_text)
    return frame


_TRUE_VALUES = {"yes", "y", "true", "t", "1", "1.0"}


def normalize_bool(value: object) -> bool:
    """True for DICOM ``"YES"`` and the usual spellings of yes/true/1; False for anything else,
    missing included (``burned_in_annotation`` is only True when a source says so)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return str(value).strip().lower() in _TRUE_VALUES
