"""De-identification for exports and display, in the style of the DICOM PS3.15 basic profile.

``deidentify(table, salt=deployment_salt())`` returns a copy of a patient or image table that
can leave the hospital:

* **Identifiers are replaced by pseudonyms**: ``patient_id`` and every other ``*_id`` column
  (``image_id`` included) and ``sha256`` become ``HMAC-SHA256(salt, kind + value)``, shortened;
  the same patient gets the same pseudonym in every export of one deployment, and nobody without
  the salt can go back or check a guess.
* **Instance UIDs** (``*_uid`` columns: study, series, SOP instance) become salted ``2.25.<n>``
  UIDs, consistent across exports. UIDs that the DICOM standard itself defines (root
  ``1.2.840.10008.``, e.g. the SOP class or transfer syntax) identify nobody and are kept.
* **Dates are reduced to the year** (``*date*`` columns and datetime columns); times of day
  (``study_time``, ...) are dropped. Ages over 89 become 90 (HIPAA Safe Harbor's rule).
* **Dropped**: server paths and file names (``core.export.private_columns``, ``filename``, ...),
  columns that name a person or a contact (``name``, ``birth*``, ``address``, ``phone``, ``email``,
  ``mrn``, ``accession*``, ``institution*``, ``physician*``, ...), links (``url``), and **free
  text** (``text``, ``notes``, ``*_description``, any column of long sentences) unless
  ``keep_free_text=True``: notes often name people and places. The label columns
  (``disease``, ``icd10_description``, ...) are not free text: they come from the label store.
* Belt and braces: a kept text cell equal to an original identifier, UID or date is replaced by
  ``"[removed]"``.

The salt is one per deployment: 32 random bytes (``secrets``) in ``cache/deid.salt``, created
once with file mode 0600 and never rewritten; deleting it changes every pseudonym.

``obscure_image`` makes a display copy of a scan whose pixels carry burned-in text unreadable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import cache_root

_PATH_COLUMN_NAMES = {"path", "filepath", "file_path", "abs_path", "absolute_path", "fullpath", "full_path"}
_ABSOLUTE_PATH = re.compile(r"^(/[^/\x00]+/|[A-Za-z]:[\\/]|\\\\|file:/|~/)")


def private_columns(df: pd.DataFrame) -> list[str]:
    """Columns of ``df`` that ``export_columns`` would drop: absolute server paths, by name
    (``path``, ``*_path``) or by content (more than half of the non-empty text values are
    absolute paths: ``/a/b``, ``C:\\``, ``\\\\server``, ``file:/``, ``~/``)."""
    private = []
    for column in df.columns:
        name = str(column).lower()
        if name in _PATH_COLUMN_NAMES or name.endswith("_path"):
            private.append(column)
            continue
        if pd.api.types.is_numeric_dtype(df[column]) or pd.api.types.is_datetime64_any_dtype(df[column]):
            continue
        values = df[column].dropna()
        values = values[values.map(lambda v: isinstance(v, str) and v.strip() != "")]
        if len(values) and values.map(lambda v: bool(_ABSOLUTE_PATH.match(v.strip()))).mean() > 0.5:
            private.append(column)
    return private

__all__ = [
    "SALT_BYTES",
    "DeidResult",
    "deidentify",
    "deployment_salt",
    "obscure_image",
    "pseudo_uid",
    "pseudonym",
    "salt_path",
]

SALT_BYTES = 32
SALT_FILE = "deid.salt"
STANDARD_UID_ROOT = "1.2.840.10008."
REMOVED = "[removed]"
PROTECTED_COLUMNS = {"cluster", "disease", "icd10_code", "icd10_description", "label_source", "label"}
_IDENTIFYING_NAMES = re.compile(
    r"(^|_)(name|names|first_?name|last_?name|surname|given_?name|birth\w*|dob|address|street|city_?address|"
    r"zip|zip_?code|postcode|postal_?code|phone|telephone|fax|email|e_?mail|mrn|ssn|social_?security|"
    r"accession\w*|institution\w*|physician\w*|referring\w*|operator\w*|performing\w*|url|uri|ip_?address)($|_)"
)
_FILE_NAMES = {"filename", "file_name", "file", "folder", "folder_name", "directory", "dir", "source", "source_file",
               "image_name", "image_file", "filepath"}
_FREE_TEXT_NAMES = re.compile(
    r"^(text|notes?|clinical_notes?|comments?|remarks?|report|reports|findings_text|impression|history|"
    r"description|\w+_description|\w+_notes?|\w+_comments?|\w+_text)$"
)
_TIME_OF_DAY = re.compile(r"^(time|study_time|series_time|acquisition_time|content_time|\w+_time_of_day)$")
_DATE_NAME = re.compile(r"(^|_)(date|datetime|dt)($|_)|date$")
_DICOM_DATE = re.compile(r"^\s*(\d{4})(\d{2})(\d{2})")
_ANY_YEAR = re.compile(r"(?<!\d)(1[89]\d{2}|20\d{2})(?!\d)")


def salt_path() -> Path:
    return cache_root() / SALT_FILE


def deployment_salt(path: Path | None = None) -> bytes:
    """The deployment's pseudonym salt, created on first use (``secrets``, mode 0600).

    Creation is exclusive (``O_CREAT | O_EXCL``), so two processes starting at once end up with
    one salt. Raises ``OSError`` when the file cannot be read or created, and ``ValueError``
    when it exists but does not hold ``SALT_BYTES`` bytes (a damaged salt must be looked at,
    not silently replaced: that would change every pseudonym).
    """
    path = Path(path or salt_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_bytes(SALT_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
    for _ in range(50):  # another process may be between its create and its write
        salt = path.read_bytes()
        if len(salt) == SALT_BYTES:
            return salt
        time.sleep(0.02)
    raise ValueError(f"{path}: the de-identification salt is damaged ({len(salt)} bytes, expected {SALT_BYTES}); "
                     "restore it from a backup, or delete it to start new pseudonyms")


def _digest(salt: bytes, kind: str, value: object) -> bytes:
    return hmac.new(salt, f"{kind}\0{value}".encode(), hashlib.sha256).digest()


def pseudonym(value: object, salt: bytes, kind: str = "patient") -> str:
    """``"<KIND>-<16 hex>"`` for ``value``: the same for the same (salt, kind, value)."""
    return f"{kind[:3].upper()}-{_digest(salt, kind, value).hex()[:16]}"


def pseudo_uid(value: object, salt: bytes) -> str:
    """A valid DICOM UID (``2.25.`` + a 128-bit number) standing for ``value``."""
    return "2.25." + str(int.from_bytes(_digest(salt, "uid", value)[:16], "big"))


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT


def _year(value: object) -> object:
    if _missing(value):
        return None
    if isinstance(value, pd.Timestamp | np.datetime64):
        return int(pd.Timestamp(value).year)
    text = str(value)
    match = _DICOM_DATE.match(text) or _ANY_YEAR.search(text)
    return int(match.group(1)) if match else None


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series)
                or pd.api.types.is_bool_dtype(series))


def _looks_like_free_text(series: pd.Series) -> bool:
    values = series.dropna()
    values = values[values.map(lambda v: isinstance(v, str) and v.strip() != "")]
    if len(values) == 0:
        return False
    lengths = values.str.len()
    return bool(lengths.median() > 40 and values.str.contains(" ").mean() > 0.5)


def _is_uid_column(name: str, series: pd.Series) -> bool:
    if name.endswith("uid"):
        return True
    values = series.dropna().astype(str)
    return len(values) > 0 and values.str.fullmatch(r"\d+(\.\d+){4,}").mean() > 0.8


@dataclass
class DeidResult:
    """A de-identified table and what happened to each column.

    table : the de-identified copy (rows in the same order, none dropped)
    dropped : ``{column: reason}`` for columns left out
    changed : ``{column: what was done}`` for columns kept with new values
    """

    table: pd.DataFrame
    dropped: dict[str, str] = field(default_factory=dict)
    changed: dict[str, str] = field(default_factory=dict)


def _drop_reason(name: str, series: pd.Series, private: set, keep_free_text: bool) -> str | None:
    lowered = name.lower()
    if name in private or lowered in _FILE_NAMES or lowered.endswith(("_path", "_file", "_filename", "_folder")):
        return "server path or file name"
    if _IDENTIFYING_NAMES.search(lowered):
        return "names a person, a place or a record"
    if _TIME_OF_DAY.match(lowered):
        return "time of day"
    if name not in PROTECTED_COLUMNS and not keep_free_text and _is_text(series) and (
            _FREE_TEXT_NAMES.match(lowered) or _looks_like_free_text(series)):
        return "free text (may name people or places)"
    return None


def deidentify(table: pd.DataFrame, *, salt: bytes, keep_free_text: bool = False) -> DeidResult:
    """A de-identified copy of ``table`` (see the module docstring for the rules).

    Parameters
    ----------
    table : DataFrame of shape (n_rows, n_columns), e.g. a patient or image table.
    salt : the deployment salt (``deployment_salt()``); at least 16 bytes.
    keep_free_text : keep free-text columns (notes, descriptions) as they are.

    Returns
    -------
    DeidResult with a table of shape (n_rows, <= n_columns).

    Raises ``ValueError`` for a salt under 16 bytes.
    """
    if len(salt) < 16:
        raise ValueError(f"salt of {len(salt)} bytes is too short; use deployment_salt()")
    out = table.copy()
    result = DeidResult(table=out)
    private = set(private_columns(table))
    originals: set[str] = set()
    for column in list(out.columns):
        name = str(column)
        lowered = name.lower()
        series = out[column]
        reason = _drop_reason(name, series, private, keep_free_text)
        if reason:
            out = out.drop(columns=column)
            result.dropped[name] = reason
        elif lowered in ("patient_id", "patientid", "sha256", "id") or lowered.endswith("_id"):
            kind = "patient" if lowered in ("patient_id", "patientid") else lowered
            originals.update(series.dropna().astype(str))
            out[column] = series.map(lambda v, k=kind: None if _missing(v) else pseudonym(str(v), salt, k)).astype(object)
            result.changed[name] = "pseudonym (salted hash)"
        elif _is_text(series) and _is_uid_column(lowered, series):
            values = series.dropna().astype(str)
            if len(values) and values.str.startswith(STANDARD_UID_ROOT).all():
                continue  # a UID the DICOM standard defines (SOP class, transfer syntax)
            originals.update(values)
            out[column] = series.map(lambda v: None if _missing(v) else pseudo_uid(str(v), salt)).astype(object)
            result.changed[name] = "UID replaced (salted hash)"
        elif pd.api.types.is_datetime64_any_dtype(series) or _DATE_NAME.search(lowered):
            originals.update(series.dropna().astype(str))
            out[column] = pd.array([_year(v) for v in series], dtype="Int64")
            result.changed[name] = "year only"
        elif lowered == "age" and pd.api.types.is_numeric_dtype(series):
            out[column] = series.where(~(series > 89), 90)
            if (series > 89).any():
                result.changed[name] = "ages over 89 shown as 90"
    originals.discard("")
    for column in out.columns:
        if str(column) in result.changed or not _is_text(out[column]):
            continue
        hits = out[column].astype(object).map(lambda v: isinstance(v, str) and v in originals)
        if hits.any():
            out[column] = out[column].astype(object).where(~hits, REMOVED)
            result.changed[str(column)] = "cells equal to an identifier removed"
    result.table = out
    return result


def obscure_image(image: np.ndarray, *, block: int = 16) -> np.ndarray:
    """A display copy of ``image`` (H x W or H x W x C) pixelated into ``block``-pixel squares
    (the scan's layout stays visible, burned-in text does not). ``block`` is scaled up for large
    images so that text is unreadable at any size."""
    image = np.asarray(image)
    height, width = image.shape[:2]
    step = max(block, max(height, width) // 24)
    out = image.astype(np.float32, copy=True)
    for top in range(0, height, step):
        for left in range(0, width, step):
            tile = out[top:top + step, left:left + step]
            tile[...] = tile.mean(axis=(0, 1))
    return out.astype(image.dtype) if np.issubdtype(image.dtype, np.floating) else out.round().astype(image.dtype)
