"""The one metadata encoder: metadata columns -> a numeric matrix that the feature fusion
(``core.features``), the classifiers and SHAP all use, remembering the source column of every
derived feature so attributions can be summed back per column.

Numbers stay numbers (missing values get the column median plus a "missing" indicator, since
missingness itself often differs between sources or sites); text and categories are one-hot
encoded with missing as its own category; columns that cannot carry information (all missing,
constant, or an identifier where every row differs) are skipped and reported, never dropped
silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Part of every key of a result built from encoded metadata (cohorts with a metadata block).
ENCODING_VERSION = "2"
MISSING = "(missing)"
OTHER = "(other)"


@dataclass
class EncodedMetadata:
    """A metadata frame as numbers.

    matrix : ndarray of shape (n_rows, n_features) float64, no NaN.
    feature_names : one name per matrix column ("age", "age missing", "sex=F", ...).
    sources : the metadata column each feature came from (same length as feature_names).
    skipped : {column: reason} for columns that gave no features.
    """

    matrix: np.ndarray
    feature_names: list[str]
    sources: list[str]
    skipped: dict[str, str] = field(default_factory=dict)


def _as_numbers(values: pd.Series) -> np.ndarray | None:
    """The column as float64 with NaN for missing, or None if it is not numeric."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype("float64").to_numpy(na_value=np.nan)
    if pd.api.types.is_datetime64_any_dtype(values):
        # Days since the epoch: dates matter by order and spacing, not by calendar labels.
        stamps = pd.to_datetime(values)
        days = (stamps - pd.Timestamp(0, tz=stamps.dt.tz)) / pd.Timedelta(days=1)
        return days.to_numpy(dtype=np.float64, na_value=np.nan)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    present = values.dropna()
    if present.empty:
        return None
    # Text columns holding only numbers (a CSV read with stray blanks) are numbers.
    converted = pd.to_numeric(present.astype(str).str.strip(), errors="coerce")
    if converted.notna().all():
        return pd.to_numeric(values.astype(object).where(values.notna(), None), errors="coerce"
                             ).to_numpy(dtype=np.float64, na_value=np.nan)
    return None


def encode_metadata(frame: pd.DataFrame, *, max_categories: int = 20) -> EncodedMetadata:
    """Encode every column of ``frame`` (n_rows rows) for a classifier.

    Numbers (and booleans, datetimes, text holding only numbers): median-imputed values, plus
    an indicator feature ``"<column> missing"`` when any value is missing. Other columns:
    one-hot ``"<column>=<value>"`` for the ``max_categories`` most frequent values (missing is
    the value ``"(missing)"``), rarer values pooled in ``"<column>=(other)"``.
    Skipped (reported in ``skipped``): all-missing columns, constant columns, and text columns
    with more than ``max_categories`` distinct values in over half their rows (identifiers,
    file names, free text).

    Raises ValueError when ``frame`` is not a DataFrame or ``max_categories`` < 1.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"metadata must be a pandas DataFrame, got {type(frame).__name__}")
    if max_categories < 1:
        raise ValueError(f"max_categories={max_categories} must be >= 1")
    n_rows = len(frame)
    columns: list[np.ndarray] = []
    names: list[str] = []
    sources: list[str] = []
    skipped: dict[str, str] = {}
    for column in frame.columns:
        label = str(column)
        values = frame[column]
        numbers = _as_numbers(values)
        if numbers is not None:
            finite = np.isfinite(numbers)
            if not finite.any():
                skipped[label] = "all values missing"
                continue
            if np.unique(numbers[finite]).size < 2 and finite.all():
                skipped[label] = "constant"
                continue
            columns.append(np.where(finite, numbers, np.median(numbers[finite])))
            names.append(label)
            sources.append(label)
            if not finite.all():
                columns.append((~finite).astype(np.float64))
                names.append(f"{label} missing")
                sources.append(label)
            continue
        text = values.astype(object).where(values.notna(), MISSING).astype(str)
        counts = text.value_counts()
        if counts.size < 2:
            skipped[label] = "constant" if counts.size else "no rows"
            continue
        n_present = int(values.notna().sum())
        n_distinct = int(values.dropna().astype(str).nunique())
        if n_distinct > max_categories and n_distinct > n_present // 2:
            # Identifiers, file names, free text: one-hot columns would only memorise rows.
            skipped[label] = f"identifier-like: {n_distinct} distinct values in {n_present} rows"
            continue
        # Most frequent first, ties by name: the same table always gives the same columns.
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = [category for category, _ in ordered[:max_categories]]
        for category in kept:
            columns.append((text == category).to_numpy(dtype=np.float64))
            names.append(f"{label}={category}")
            sources.append(label)
        if counts.size > len(kept):
            columns.append((~text.isin(kept)).to_numpy(dtype=np.float64))
            names.append(f"{label}={OTHER}")
            sources.append(label)
    matrix = np.column_stack(columns) if columns else np.zeros((n_rows, 0))
    return EncodedMetadata(matrix, names, sources, skipped)


def sum_by_source(values: np.ndarray, sources: list[str]) -> tuple[np.ndarray, list[str]]:
    """Add up attributions of features that share a source column.

    values : ndarray of shape (n_rows, n_features[, n_outputs]).
    Returns (ndarray of shape (n_rows, n_sources[, n_outputs]), source names in first-seen
    order). SHAP values are additive, so the sum is the attribution of the whole column.
    """
    order = list(dict.fromkeys(sources))
    position = {name: index for index, name in enumerate(order)}
    out = np.zeros((values.shape[0], len(order), *values.shape[2:]), dtype=np.float64)
    for feature, source in enumerate(sources):
        out[:, position[source]] += values[:, feature]
    return out, order
