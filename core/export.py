"""Tables as download bytes: CSV safe to open in a spreadsheet, and Parquet with raw values.

Choices:

* **CSV** is what people open in Excel / LibreOffice / Google Sheets, which run a cell that
  starts with ``= + - @`` (or a tab / carriage return / line feed before one) as a formula.
  Following OWASP's CSV-injection advice, every *text* cell (and header) that starts with one of
  those, or with spaces before ``= + - @``, gets a leading ``'``. Real numbers, including
  negative ones, are not text and are written unchanged; the text "-2" becomes "'-2", which is
  the price of not guessing which text is safe. Text cells are always quoted, so a ``,`` or
  ``;`` inside a value cannot start a new cell in any locale's spreadsheet.
* **Parquet** keeps raw values: it is typed and read by code (pandas, R, DuckDB), never run as
  a spreadsheet, and escaping would corrupt data for exactly those readers.
* Neither writes the DataFrame index; call ``reset_index()`` first to keep it.
* ``export_columns`` drops what must not leave the server: absolute file paths (the ``path``
  column, ``*_path`` columns, and any text column whose values are mostly absolute paths) say
  how the server is laid out and may hold names. Kept: ``image_id``, ``patient_id`` and
  ``sha256`` (a content hash: it identifies the file to whoever already has it, and reveals
  nothing to anyone else; ``image_id`` holds it anyway), relative names such as ``filename``,
  and metadata the user loaded (``text`` included: it came with their data).
"""

from __future__ import annotations

import csv
import io
import re

import pandas as pd

__all__ = ["FORMULA_PREFIXES", "export_columns", "private_columns", "to_csv_bytes", "to_parquet_bytes"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
_PATH_COLUMN_NAMES = {"path", "filepath", "file_path", "abs_path", "absolute_path", "fullpath", "full_path"}
_ABSOLUTE_PATH = re.compile(r"^(/[^/\x00]+/|[A-Za-z]:[\\/]|\\\\|file:/|~/)")


def _escape(value: object) -> object:
    if isinstance(value, str) and (value.startswith(FORMULA_PREFIXES) or value.lstrip(" ").startswith(("=", "+", "-", "@"))):
        return "'" + value
    return value


def _text_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_datetime64_any_dtype(df[c]))]


def to_csv_bytes(df: pd.DataFrame, *, bom: bool = False) -> bytes:
    """``df`` as UTF-8 CSV bytes with formula-like text escaped (see module docstring).

    Parameters
    ----------
    df : DataFrame of shape (n_rows, n_columns); its index is not written.
    bom : start with a UTF-8 byte-order mark, which older Excel needs to read non-ASCII text
        correctly (most other readers cope either way, but some keep it in the first header).

    Returns
    -------
    bytes: a header line and ``n_rows`` records. Missing values are empty cells.
    """
    out = df.copy()
    for column in _text_columns(out):
        # object dtype so escaped strings fit whatever the column held (categoricals included)
        out[column] = out[column].astype(object).map(_escape)
    out.columns = [_escape(str(c)) for c in out.columns]
    buffer = io.StringIO()
    # QUOTE_NONNUMERIC quotes every non-number, so text never spills into the next cell.
    out.to_csv(buffer, index=False, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    return (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8")


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    """``df`` as Parquet bytes (pyarrow), values and dtypes as they are; index not written.

    Raises ``ValueError`` / ``pyarrow.ArrowException`` if a column holds values Parquet cannot
    store (e.g. mixed Python objects).
    """
    buffer = io.BytesIO()
    df.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()


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


def export_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the columns that must not leave the app (see ``private_columns``).

    Rows are never dropped. Show the user ``private_columns(df)`` to say what was left out.
    """
    return df.drop(columns=private_columns(df))
