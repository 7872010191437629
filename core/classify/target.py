"""What a classifier predicts: one label column (binary or multi-class) or several CheXpert-style
label columns (multi-label), turned into integer codes plus a mask of the rows that can be used.

Rows are never dropped: a row whose label is missing, uncertain-and-ignored or otherwise
unusable keeps its place, gets ``y = -1``, ``mask = False`` and a reason in ``reasons``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

KINDS = ("binary", "multiclass", "multilabel")
UNCERTAIN_POLICIES = ("ignore", "as-positive", "as-negative")
# CheXpert convention: 1 positive, 0 negative, -1 uncertain, blank = not mentioned (unknown).
CHEXPERT_VALUES = {1: "positive", 0: "negative", -1: "uncertain"}


@dataclass
class Target:
    """Labels ready for :func:`core.classify.evaluate`.

    y : ndarray of int64. Binary/multi-class: shape (n_samples,), the index into ``classes``,
        -1 where the row is not usable. Multi-label: shape (n_samples, n_labels), 1/0 per label
        after the uncertainty policy, -1 where that label is unknown for that row.
    classes : class names (binary: ``[negative, positive]``) or, for multi-label, label names.
    mask : ndarray of bool, same shape as ``y``; True where ``y`` is usable.
    kind : "binary", "multiclass" or "multilabel".
    reasons : Series of length n_samples aligned with ``index``: None for a fully usable row,
        else why (some of) its labels cannot be used.
    """

    y: np.ndarray
    classes: list[str]
    mask: np.ndarray
    kind: str
    columns: list[str]
    reasons: pd.Series
    index: pd.Index
    positive: list[str] | None = None
    uncertain_policy: str | None = None
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def counts(self) -> pd.Series:
        """Usable rows per class (multi-label: positives per label)."""
        if self.kind == "multilabel":
            return pd.Series((self.y == 1).sum(axis=0), index=self.classes, dtype="int64")
        codes = self.y[self.mask]
        return pd.Series(np.bincount(codes, minlength=len(self.classes)), index=self.classes)


def clean_labels(series: pd.Series) -> pd.Series:
    """Labels as stripped strings (object Series, same index); missing, blank and
    whitespace-only become None.

    Whole-number floats print as integers so that a 0/1 column read as float gives "0"/"1".
    """

    def one(value: object) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return None
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return str(int(value))
        text = str(value).strip()
        return text or None

    return pd.Series([one(v) for v in series.tolist()], index=series.index, dtype=object)


def _check_columns(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"label column(s) {missing} not in the table; available columns: {list(df.columns)}"
        )


def prepare_target(
    df: pd.DataFrame,
    columns: str | Sequence[str],
    *,
    positive: str | Sequence[str] | None = None,
    uncertain_policy: str = "ignore",
) -> Target:
    """Turn label column(s) of ``df`` into a :class:`Target`.

    df : DataFrame with n_samples rows (its index becomes ``Target.index``).
    columns : one column name -> binary or multi-class target from its values (as strings);
        a list of column names -> multi-label target in the CheXpert convention
        (1 positive, 0 negative, -1 uncertain, blank unknown), one label per column.
    positive : single column only. A value (or several values) counted as the positive class;
        everything else that is not missing becomes ``"not <positive>"``. Without it, every
        distinct value is a class (2 values -> binary, more -> multi-class).
    uncertain_policy : multi-label only; what -1 means: "ignore" (unknown, row unused for that
        label), "as-positive" (U-Ones) or "as-negative" (U-Zeros).

    Raises ValueError for a missing column, an unknown policy, a ``positive`` value that does
    not occur, fewer than two classes, or a multi-label value outside {1, 0, -1, blank}.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if uncertain_policy not in UNCERTAIN_POLICIES:
        raise ValueError(
            f"uncertain_policy={uncertain_policy!r} is not valid; use one of {list(UNCERTAIN_POLICIES)}"
        )
    if isinstance(columns, str):
        _check_columns(df, [columns])
        return _single_column(df, columns, positive)
    columns = list(columns)
    if not columns:
        raise ValueError("columns=[] is empty; give one label column or a list of label columns")
    if positive is not None:
        raise ValueError(
            f"positive={positive!r} only applies to a single label column; with a list of "
            f"columns {columns} each column is its own 1/0/-1 label"
        )
    _check_columns(df, columns)
    return _multilabel(df, columns, uncertain_policy)


def _single_column(df: pd.DataFrame, column: str, positive: str | Sequence[str] | None) -> Target:
    labels = clean_labels(df[column])
    missing = labels.isna().to_numpy()
    present = sorted(set(labels.dropna()))
    if positive is not None:
        wanted = [positive] if isinstance(positive, str) else [str(p) for p in positive]
        absent = [p for p in wanted if p not in present]
        if absent:
            raise ValueError(
                f"positive={absent} not found in column {column!r}; values present: {present[:30]}"
            )
        name = " or ".join(wanted)
        classes = [f"not {name}", name]
        y = np.where(labels.isin(wanted).to_numpy(), 1, 0)
        kind = "binary"
    else:
        if len(present) < 2:
            raise ValueError(
                f"column {column!r} needs at least 2 distinct labels to classify, found {present}"
            )
        classes = present
        lookup = {c: i for i, c in enumerate(classes)}
        y = np.array([lookup.get(v, -1) if v is not None else -1 for v in labels], dtype=np.int64)
        kind = "binary" if len(classes) == 2 else "multiclass"
        wanted = None
    y = np.where(missing, -1, y).astype(np.int64)
    reasons = pd.Series(
        np.where(missing, f"label {column!r} missing", None), index=df.index, dtype=object
    )
    return Target(
        y=y, classes=classes, mask=~missing, kind=kind, columns=[column], reasons=reasons,
        index=df.index, positive=wanted,
    )


def _chexpert_codes(series: pd.Series, column: str) -> np.ndarray:
    """1/0/-1 per row, NaN for blank; ValueError naming the first bad values."""
    text = clean_labels(series)
    codes = pd.to_numeric(text, errors="coerce")
    bad = text.notna() & ~codes.isin(list(CHEXPERT_VALUES))
    if bad.any():
        examples = sorted(set(text[bad]))[:10]
        raise ValueError(
            f"column {column!r} has values {examples} outside the CheXpert convention; valid: "
            f"1 (positive), 0 (negative), -1 (uncertain), blank (unknown)"
        )
    return codes.to_numpy(dtype=float)


def _multilabel(df: pd.DataFrame, columns: list[str], policy: str) -> Target:
    n = len(df)
    y = np.full((n, len(columns)), -1, dtype=np.int64)
    why: list[list[str]] = [[] for _ in range(n)]
    for j, column in enumerate(columns):
        codes = _chexpert_codes(df[column], column)
        uncertain = codes == -1
        if policy == "as-positive":
            codes = np.where(uncertain, 1.0, codes)
        elif policy == "as-negative":
            codes = np.where(uncertain, 0.0, codes)
        else:
            codes = np.where(uncertain, np.nan, codes)
        known = ~np.isnan(codes)
        y[known, j] = codes[known].astype(np.int64)
        for i in np.flatnonzero(~known):
            why[i].append(f"{column}: {'uncertain (ignored)' if uncertain[i] else 'blank'}")
    mask = y >= 0
    reasons = pd.Series(["; ".join(w) if w else None for w in why], index=df.index, dtype=object)
    return Target(
        y=y, classes=list(columns), mask=mask, kind="multilabel", columns=list(columns),
        reasons=reasons, index=df.index, uncertain_policy=policy,
    )


def merge_rare_classes(
    target: Target, min_count: int, *, other: str = "other", rows: np.ndarray | None = None
) -> Target:
    """Merge the classes of a binary/multi-class target with fewer than ``min_count`` usable
    rows into one class named ``other`` (appended last, or joined with an existing class of
    that name). ``rows`` (bool, shape (n_samples,)) restricts which rows are counted (default
    ``target.mask``). Returns a new Target; raises ValueError for multi-label targets or when
    fewer than two classes would remain.
    """
    if target.kind == "multilabel":
        raise ValueError("merge_rare_classes does not apply to multi-label targets")
    counted = target.mask if rows is None else np.asarray(rows, dtype=bool) & target.mask
    counts = pd.Series(
        np.bincount(target.y[counted], minlength=len(target.classes)), index=target.classes
    )
    rare = [c for c in target.classes if counts[c] < min_count]
    if not rare:
        return target
    kept = [c for c in target.classes if c not in rare and c != other]
    classes = [*kept, other]
    lookup = {c: (classes.index(c) if c in kept else len(kept)) for c in target.classes}
    codes = np.array([lookup[target.classes[k]] if k >= 0 else -1 for k in target.y], np.int64)
    if len(classes) < 2:
        raise ValueError(
            f"merging classes with < {min_count} rows ({rare}) into {other!r} leaves only "
            f"{classes}; at least 2 classes are needed"
        )
    note = f"merged {len(rare)} class(es) with < {min_count} rows into {other!r}: " + ", ".join(
        f"{c} ({counts[c]})" for c in rare
    )
    return replace(
        target, y=codes, classes=classes, kind="binary" if len(classes) == 2 else "multiclass",
        notes=[*target.notes, note],
    )
