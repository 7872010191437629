"""Cohort filters: restrict a study to some rows ("view in [PA, AP]", "age >= 18").

A filter is a tuple of :class:`Condition` s combined with AND. The same text form is used by the
command line (``--where "view in [PA, AP]"``), the app's URL (``?where=...``) and run keys:

    COLUMN in [V1, V2, ...]      COLUMN not in [V1, ...]
    COLUMN == V    COLUMN != V   COLUMN >= N   COLUMN <= N   COLUMN > N   COLUMN < N

Conditions are checked against the table they filter (``validate``): the column must exist, a
numeric column takes numbers, ``<``/``>`` need a numeric column, and a filter that leaves no rows
is refused. A missing value (NaN, None) never matches a condition, ``!=`` and ``not in``
included (as in SQL), so "sex != F" does not quietly keep rows whose sex is unknown.

``select_dataset`` applies a filter (and an optional set of excluded image ids, the hook through
which an audit or a reviewer removes single images) to a :class:`~core.ingest.Dataset` and
returns the subset as a Dataset whose ``selection`` names the filter. ``Dataset.token`` includes
``selection``, so every run keyed by the dataset or its cohort (projection, clustering, drift,
classifier studies) is keyed by the filter too; an empty filter leaves every key as it was.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

OPERATORS = ("in", "not in", "==", "!=", ">=", "<=", ">", "<")
ORDERING_OPERATORS = (">=", "<=", ">", "<")
# Columns no filter may name: server paths and file hashes say nothing about a patient and must
# never reach a URL.
UNFILTERABLE = frozenset({"path", "sha256", "folder_path"})
MAX_VALUES = 200  # values in one "in [...]" list

_LIST_RE = re.compile(r"^\s*(?P<column>.+?)\s+(?P<op>not\s+in|in)\s*\[(?P<values>.*)\]\s*$", re.IGNORECASE | re.DOTALL)
_COMPARE_RE = re.compile(r"^\s*(?P<column>.+?)\s*(?P<op>==|!=|>=|<=|>|<|=)\s*(?P<value>.*?)\s*$", re.DOTALL)


class FilterError(ValueError):
    """A filter that cannot be used: bad syntax, an unknown column, a value of the wrong type,
    or no rows left. The message says which and what would be valid."""


@dataclass(frozen=True)
class Condition:
    """One condition: ``column op values``. ``values`` holds strings as parsed; ``validate``
    turns them into numbers for a numeric column."""

    column: str
    op: str
    values: tuple

    def __str__(self) -> str:
        shown = [quote_value(_format_value(v)) for v in self.values]
        if self.op in ("in", "not in"):
            return f"{self.column} {self.op} [{', '.join(shown)}]"
        return f"{self.column} {self.op} {shown[0]}"


def _format_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _split_values(raw: str, text: str) -> list[str]:
    """``a, 'b, c', "d"`` -> ``["a", "b, c", "d"]``: commas split, quotes keep a value whole."""
    values, current, quote, quoted = [], [], None, False
    for char in raw:
        if quote is not None:
            if char == quote:
                quote = None
            else:
                current.append(char)
        elif char in "'\"" and not "".join(current).strip():
            quote, quoted, current = char, True, []
        elif char == ",":
            values.append("".join(current) if quoted else "".join(current).strip())
            current, quoted = [], False
        elif not (quoted and char.isspace()):
            current.append(char)
    if quote is not None:
        raise FilterError(f"{text!r}: a quote ({quote}) is not closed")
    values.append("".join(current) if quoted else "".join(current).strip())
    return values


def quote_value(value: object) -> str:
    """``value`` as it must be written inside ``[...]`` (quoted when it holds , [ ] or quotes)."""
    text = str(value)
    if re.search(r"[,\[\]'\"]", text) or text != text.strip():
        return f"'{text}'" if '"' in text else f'"{text}"'
    return text


def parse_condition(text: str) -> Condition:
    """One condition from its text form, e.g. ``"view in [PA, AP]"`` or ``"age >= 18"``.

    Values may be quoted ('AP Supine' or "AP Supine") and are otherwise trimmed. Raises
    ``FilterError`` naming the text and the forms that are understood.
    """
    if not isinstance(text, str) or not text.strip():
        raise FilterError("an empty filter; write e.g. \"view in [PA, AP]\" or \"age >= 18\"")
    if len(text) > 2000:
        raise FilterError(f"filter of {len(text)} characters is too long (2000 at most)")
    match = _LIST_RE.match(text)
    if match:
        op = "not in" if match["op"].lower().startswith("not") else "in"
        values = tuple(dict.fromkeys(v for v in _split_values(match["values"], text) if v != ""))
        if not values:
            raise FilterError(f"{text!r}: the list is empty; give at least one value, e.g. [PA, AP]")
        if len(values) > MAX_VALUES:
            raise FilterError(f"{text!r}: {len(values)} values; {MAX_VALUES} at most")
        return Condition(_unquote(match["column"]), op, values)
    match = _COMPARE_RE.match(text)
    if match and match["value"]:
        op = "==" if match["op"] == "=" else match["op"]
        return Condition(_unquote(match["column"]), op, (_unquote(match["value"]),))
    raise FilterError(
        f"cannot read the filter {text!r}; write COLUMN in [V1, V2], COLUMN not in [V1], "
        "or COLUMN OP VALUE with OP one of ==, !=, >=, <=, >, <"
    )


def parse_where(texts: Iterable[str] | None) -> tuple[Condition, ...]:
    """Every condition of ``--where`` options (or URL values), in order; ``()`` for none."""
    return tuple(parse_condition(text) for text in (texts or ()))


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def _as_number(value: object, condition: Condition) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FilterError(
            f"{condition}: {value!r} is not a number, and column {condition.column!r} holds numbers"
        ) from None
    if math.isnan(number):
        raise FilterError(f"{condition}: NaN is not a value to compare with")
    return number


def validate(conditions: Sequence[Condition], table: pd.DataFrame) -> tuple[Condition, ...]:
    """``conditions`` checked against ``table``'s columns and types, values typed (numbers for a
    numeric column, strings otherwise). Raises ``FilterError`` for an unknown or unfilterable
    column (the message lists the columns that can be used), a value that is not a number for a
    numeric column, or ``<``/``>`` on a column that is not numeric."""
    checked = []
    for condition in conditions:
        if condition.op not in OPERATORS:
            raise FilterError(f"operator {condition.op!r} must be one of {list(OPERATORS)}")
        if condition.column not in table.columns or not filterable(condition.column):
            raise FilterError(
                f"{condition}: no column {condition.column!r} to filter on; columns: "
                f"{', '.join(filterable_columns(table))}"
            )
        column = table[condition.column]
        if _is_numeric(column):
            values = tuple(_as_number(v, condition) for v in condition.values)
        elif condition.op in ORDERING_OPERATORS:
            raise FilterError(
                f"{condition}: {condition.op} needs a numeric column, and {condition.column!r} holds text; "
                f"use 'in [...]' or '==' instead"
            )
        else:
            values = tuple(str(v) for v in condition.values)
        checked.append(replace(condition, values=values))
    return tuple(checked)


def filterable(column: str) -> bool:
    return column not in UNFILTERABLE and not str(column).lower().endswith("_path")


def filterable_columns(table: pd.DataFrame) -> list[str]:
    """Columns a filter may name, in table order (everything but paths and file hashes)."""
    return [str(c) for c in table.columns if filterable(str(c))]


def condition_mask(condition: Condition, table: pd.DataFrame) -> np.ndarray:
    """Bool mask of shape (n_rows,): rows of ``table`` that meet a *validated* condition.
    Missing values never match."""
    column = table[condition.column]
    present = column.notna().to_numpy()
    if _is_numeric(column):
        numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            if condition.op in ("in", "=="):
                hit = np.isin(numbers, np.asarray(condition.values, dtype=np.float64))
            elif condition.op in ("not in", "!="):
                hit = ~np.isin(numbers, np.asarray(condition.values, dtype=np.float64))
            else:
                value = condition.values[0]
                hit = {">=": numbers >= value, "<=": numbers <= value, ">": numbers > value, "<": numbers < value}[condition.op]
        return hit & np.isfinite(numbers)
    text = column.astype(object).where(column.notna(), None).map(lambda v: None if v is None else str(v))
    inside = text.isin(condition.values).to_numpy()
    hit = inside if condition.op in ("in", "==") else ~inside
    return hit & present


def table_mask(conditions: Sequence[Condition], table: pd.DataFrame) -> np.ndarray:
    """Rows of ``table`` that meet every condition (validated first; ``FilterError`` as in
    :func:`validate`). No conditions: every row."""
    mask = np.ones(len(table), dtype=bool)
    for condition in validate(conditions, table):
        mask &= condition_mask(condition, table)
    return mask


def canonical(conditions: Sequence[Condition], exclude_ids: Iterable[str] = ()) -> str:
    """The filter as one stable string (conditions sorted, values sorted and typed, excluded ids
    as their count and a hash): equal filters give equal strings, whatever order they were typed
    in. ``""`` for no filter, so unfiltered keys do not change."""
    parts = []
    for condition in conditions:
        values = sorted(condition.values, key=lambda v: (isinstance(v, str), v))
        if condition.op in ("in", "not in"):
            parts.append(str(Condition(condition.column, condition.op, tuple(values))))
        else:
            parts.append(str(condition))
    parts = sorted(set(parts))
    excluded = sorted({str(i) for i in exclude_ids})
    if excluded:
        digest = hashlib.sha256("\n".join(excluded).encode()).hexdigest()[:16]
        parts.append(f"exclude {len(excluded)} images {digest}")
    return "; ".join(parts)


def describe(conditions: Sequence[Condition]) -> str:
    """The conditions for people: "view in [PA, AP] and age >= 18"."""
    return " and ".join(str(c) for c in conditions)


def filter_table(dataset) -> pd.DataFrame:
    """What a filter on ``dataset`` may name: the images table plus the columns only the
    patients table has (one row per image, patient values repeated)."""
    images, patients = dataset.images, dataset.patients
    extra = [c for c in patients.columns if c not in images.columns]
    if not extra:
        return images
    return images.merge(patients[["patient_id", *extra]], on="patient_id", how="left")


def select_dataset(dataset, conditions: Sequence[Condition] = (), *, exclude_ids: Iterable[str] = ()):
    """The rows of ``dataset`` (a ``core.ingest.Dataset``) that meet every condition and are not
    excluded, as a Dataset of their own.

    Conditions are evaluated per image (a patient-level column counts for each of the patient's
    images); the patients table keeps the patients with at least one image left. ``exclude_ids``
    is a set of ``image_id`` s to leave out (e.g. images an audit flagged). The result's
    ``selection`` is :func:`canonical` of the filter and is part of its ``token``, so runs on it
    never collide with runs on the whole dataset or another filter. No conditions and no
    exclusions: ``dataset`` itself, unchanged.

    Raises ``FilterError`` for an invalid condition (see :func:`validate`) or when no image is
    left (the message gives how many images each condition keeps).
    """
    excluded = {str(i) for i in exclude_ids}
    if not conditions and not excluded:
        return dataset
    table = filter_table(dataset)
    checked = validate(conditions, table)
    mask = np.ones(len(table), dtype=bool)
    kept_by = []
    for condition in checked:
        hit = condition_mask(condition, table)
        kept_by.append(f"{condition} keeps {int(hit.sum())}")
        mask &= hit
    if excluded:
        mask &= ~dataset.images["image_id"].astype(str).isin(excluded).to_numpy()
    if not mask.any():
        detail = "; ".join(kept_by) if kept_by else "every image is excluded"
        raise FilterError(
            f"the filter leaves no rows of {len(table)} images in {dataset.name!r} ({detail}); "
            "widen or remove a condition"
        )
    images = dataset.images[mask].reset_index(drop=True)
    patients = dataset.patients[dataset.patients["patient_id"].isin(images["patient_id"])].reset_index(drop=True)
    selection = canonical(checked, excluded)
    manifest = {**dataset.manifest, "selection": selection}
    return replace(dataset, images=images, patients=patients, manifest=manifest, selection=selection)

