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
* Before escaping, every CSV text cell (and header) is *neutralised*: control characters other
  than tab and line feed are removed (``\r\n`` and a lone ``\r`` become ``\n``), and so are the
  Unicode bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E/F, U+061C) that can make a
  name display backwards ("Trojan Source"); a cell longer than ``MAX_CELL_CHARS`` (Excel holds
  32,767 characters per cell and spills the rest) is cut and ends with ``TRUNCATED``.
* Neither writes the DataFrame index; call ``reset_index()`` first to keep it.
* ``export_columns`` drops what must not leave the server: absolute file paths (the ``path``
  column, ``*_path`` columns, and any text column whose values are mostly absolute paths) say
  how the server is laid out and may hold names. Kept: ``image_id``, ``patient_id`` and
  ``sha256`` (a content hash: it identifies the file to whoever already has it, and reveals
  nothing to anyone else; ``image_id`` holds it anyway), relative names such as ``filename``,
  and metadata the user loaded (``text`` included: it came with their data).
* ``labeled_export`` builds the table the Export page and the CLI offer: each patient's cluster
  (``patient_clusters``), the saved label mapping and overrides, and, by default,
  de-identification (``core.deid``); only an admin may export identifiable data or free text.
  Its first columns are ``EXPORT_FIRST_COLUMNS`` (patient, cluster, disease, ICD-10 code and
  description): what a reader looks for first, whatever metadata the dataset brings.
* The Export page writes its CSV with a UTF-8 byte-order mark (``bom=True``): without it Excel
  reads UTF-8 as the local code page and "37.5 °C" turns into "37.5 Â°C". Download files are
  named ``export_file_name``: ``{dataset}-labels-{YYYY-MM-DD}.csv``.
* ``mappings_elsewhere`` says which other clusterings of a dataset have a saved mapping (e.g.
  "kmeans k=4"), so that an Export page with none for the current clustering can say where one is.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from core.deid import private_columns

__all__ = [
    "EXPORT_FIRST_COLUMNS",
    "FORMULA_PREFIXES",
    "MAX_CELL_CHARS",
    "ExportTable",
    "export_columns",
    "export_file_name",
    "labeled_export",
    "mappings_elsewhere",
    "neutralise_text",
    "patient_clusters",
    "private_columns",
    "to_csv_bytes",
    "to_parquet_bytes",
]

MAX_CELL_CHARS = 32_000
TRUNCATED = " [truncated]"
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
_DOWNLOAD_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # core.datasets' rule (a task module)
EXPORT_FIRST_COLUMNS = ("patient_id", "cluster", "disease", "icd10_code", "icd10_description")


def neutralise_text(value: object, *, max_chars: int = MAX_CELL_CHARS) -> object:
    """``value`` with control and bidi-override characters removed and at most ``max_chars``
    characters (plus ``TRUNCATED``); non-strings are returned as they are."""
    if not isinstance(value, str):
        return value
    text = _UNSAFE_CHARS.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))
    return text[:max_chars] + TRUNCATED if len(text) > max_chars else text


def _escape(value: object) -> object:
    value = neutralise_text(value)
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


def export_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the columns that must not leave the app (see ``private_columns``).

    Rows are never dropped. Show the user ``private_columns(df)`` to say what was left out.
    """
    return df.drop(columns=private_columns(df))


def patient_clusters(patient_ids: Sequence[object], labels: np.ndarray) -> pd.Series:
    """The cluster of each patient: for image-level clusterings, the cluster most of the
    patient's rows fall in (ties: the lowest cluster id); noise rows (label < 0) do not count.

    Parameters
    ----------
    patient_ids : sequence of length n_rows, the patient of each clustered row
    labels : ndarray of shape (n_rows,), cluster ids (-1 for noise)

    Returns a Series patient_id -> cluster id (patients with only noise rows are absent).
    Raises ``ValueError`` when the lengths differ.
    """
    labels = np.asarray(labels)
    if len(labels) != len(patient_ids):
        raise ValueError(f"{len(labels)} labels for {len(patient_ids)} rows")
    series = pd.Series(labels, index=pd.Index(list(patient_ids), name="patient_id"))
    kept = series[series >= 0]
    if kept.empty:
        return pd.Series(dtype="int64", index=pd.Index([], name="patient_id"))
    return kept.groupby(level=0, sort=False).agg(lambda s: s.mode().iloc[0]).astype("int64")


@dataclass
class ExportTable:
    """What ``labeled_export`` made: the table to download and what happened to the columns.

    left_out : ``{column: reason}``; changed : ``{column: what was done}``.
    """

    table: pd.DataFrame
    deidentified: bool
    left_out: dict[str, str] = field(default_factory=dict)
    changed: dict[str, str] = field(default_factory=dict)


def labeled_export(
    patients: pd.DataFrame,
    patient_ids: Sequence[object],
    labels: np.ndarray,
    mapping: pd.DataFrame | None,
    overrides: pd.DataFrame | None = None,
    *,
    deidentify: bool = True,
    keep_free_text: bool = False,
    is_admin: bool = False,
    salt: bytes | None = None,
    drafts: Mapping[object, str] | None = None,
    excluded_images: Mapping[str, int] | None = None,
) -> ExportTable:
    """The labelled patient table, ready to download.

    Parameters
    ----------
    patients : the dataset's patient table, one row per patient (``patient_id`` column)
    patient_ids, labels : the clustered rows' patients and cluster ids (``patient_clusters``)
    mapping, overrides : ``LabelStore.current_mapping`` / ``patient_overrides`` (or None)
    deidentify : apply ``core.deid.deidentify`` (the default); False needs ``is_admin``
    keep_free_text : keep notes and other free text in a de-identified export; needs ``is_admin``
    salt : the pseudonym salt (default: ``core.deid.deployment_salt()``)
    drafts : patient_id -> report draft (``core.explain.report_draft``, as the analyst edited
        it), exported as the ``report_draft`` column. It is added after de-identification, which
        would drop it as free text: in a de-identified export it is scrubbed again (dates, ages,
        names, places become placeholders) and always starts with the draft mark.
    excluded_images : patient id -> how many of their images an audit decision excluded
        (``core.exclusions.excluded_per_patient``); adds an ``excluded_images`` column

    Returns an ``ExportTable`` with one row per patient; server paths are always left out.
    Raises ``PermissionError`` when a non-admin asks for identifiable data or free text, and
    what ``core.labels.labeled_patients`` raises.
    """
    from core.deid import deidentify as deidentify_table
    from core.deid import deployment_salt
    from core.labels import labeled_patients

    if not deidentify and not is_admin:
        raise PermissionError("only an administrator may export identifiable data; keep de-identification on")
    if keep_free_text and not is_admin:
        raise PermissionError("only an administrator may export free text")
    table = labeled_patients(patients, patient_clusters(patient_ids, labels), mapping, overrides)
    if excluded_images is not None:  # audit exclusions travel with the table (issue 13)
        table["excluded_images"] = table["patient_id"].astype(str).map(dict(excluded_images)).fillna(0).astype("int64")
    left_out = {column: "server path" for column in private_columns(table)}
    table = export_columns(table)
    if not deidentify:
        if drafts:
            table = table.assign(report_draft=_draft_column(table["patient_id"], drafts, scrub=False).to_numpy())
        return ExportTable(table=_first_columns(table), deidentified=False, left_out=left_out)
    result = deidentify_table(table, salt=salt if salt is not None else deployment_salt(),
                              keep_free_text=keep_free_text)
    changed = dict(result.changed)
    out = result.table
    if drafts:
        out = out.assign(report_draft=_draft_column(table["patient_id"], drafts, scrub=True).to_numpy())
        changed["report_draft"] = "draft from similar cases; dates, ages, names and places replaced by placeholders"
    return ExportTable(table=_first_columns(out), deidentified=True,
                       left_out={**left_out, **result.dropped}, changed=changed)


def _draft_column(patient_ids: pd.Series, drafts: Mapping[object, str], *, scrub: bool) -> pd.Series:
    """The ``report_draft`` cell of each patient (None without a draft), each starting with the
    draft mark so that no reader takes it for a report."""
    from core.notes import DRAFT_MARK, scrub_text

    by_id = {str(k): v for k, v in drafts.items() if isinstance(v, str) and v.strip()}

    def cell(patient: object) -> str | None:
        text = by_id.get(str(patient))
        if text is None:
            return None
        text = scrub_text(text) if scrub else text.strip()
        return text if text.upper().startswith(DRAFT_MARK) else f"{DRAFT_MARK}.\n{text}"

    return pd.Series([cell(p) for p in patient_ids], index=patient_ids.index, dtype=object)


def _first_columns(table: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in EXPORT_FIRST_COLUMNS if c in table.columns]
    return table[first + [c for c in table.columns if c not in first]]


def export_file_name(dataset: str, extension: str, *, day: date | None = None) -> str:
    """``f"{dataset}-labels-{YYYY-MM-DD}.{extension}"``, the day in UTC unless ``day`` is given.

    Raises ``ValueError`` when ``dataset`` is not shaped like a dataset name (a letter or digit,
    then letters, digits, ``-``, ``_``, ``.``; 64 at most) or ``extension`` is not "csv" or
    "parquet": a download name must never carry a path.
    """
    if not isinstance(dataset, str) or _DOWNLOAD_STEM.fullmatch(dataset) is None:
        raise ValueError(f"dataset name {dataset!r} is not allowed in a file name")
    if extension not in ("csv", "parquet"):
        raise ValueError(f"extension={extension!r} must be 'csv' or 'parquet'")
    day = day or datetime.now(UTC).date()
    return f"{dataset}-labels-{day.isoformat()}.{extension}"


def describe_clustering(config: dict) -> str:
    """A clustering run's config in words: "kmeans k=4" (the k when the algorithm takes one,
    else every parameter: "hdbscan min_cluster_size=5, min_samples=3")."""
    params = dict(config.get("params") or {})
    shown = {"k": params["k"]} if "k" in params else params
    return " ".join([str(config.get("algorithm", "clustering")), ", ".join(f"{k}={v}" for k, v in shown.items())]).strip()


def mappings_elsewhere(mapping_sets: pd.DataFrame, clustering_key: str, *, cohort_key: str | None = None,
                       runs=None) -> list[str]:
    """What other clusterings of a dataset have a saved mapping, in words, newest first.

    Parameters
    ----------
    mapping_sets : ``LabelStore.mapping_sets(dataset)`` (columns ``clustering_key, version,
        updated_at``)
    clustering_key : the current clustering, left out of the answer
    cohort_key : the current cohort (encoder, level, metadata); a clustering of another cohort
        says so ("on other features, image level"), since changing k alone will not reach it
    runs : the ``core.runs.RunStore`` the clusterings were stored in (default: ``RunStore()``)

    Returns e.g. ``["kmeans k=4 (mapping version 2)"]``; a clustering whose run is no longer in
    the store is named by its key.
    """
    from core.runs import RunStore

    runs = runs or RunStore()
    others = mapping_sets[mapping_sets["clustering_key"] != clustering_key]
    described = []
    for row in others.sort_values("updated_at", ascending=False).itertuples():
        try:
            run = runs.find(row.clustering_key)
        except ValueError:  # not a run key (e.g. saved by a script): name it as it is
            run = None
        if run is None:
            words = f"clustering {row.clustering_key}"
        else:
            words = describe_clustering(run.config)
            if cohort_key is not None and run.inputs.get("cohort") != cohort_key:
                level = run.summary.get("level")
                words += " on other features" + (f" ({level} level)" if level else "")
        described.append(f"{words} (mapping version {int(row.version)})")
    return described
