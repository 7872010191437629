"""Drift tables as people read them: plain column names, 2-3 significant digits, and no server
paths in messages."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from core.notes import hide_paths

# An absolute POSIX or Windows path (at least two components); its last component is kept.

CONFOUNDER_NAMES = {"column": "column", "n": "rows tested", "n_levels": "values",
                    "cramers_v": "association (Cramér's V, 0-1)", "p_value": "p-value",
                    "flagged": "clusters follow it", "note": "note"}
GRID_NAMES = {"encoder": "encoder", "algorithm": "algorithm", "n_clusters": "clusters",
              "n_noise": "unclustered rows", "label_change_pct": "labels that change (%)",
              "ari": "agreement (ARI)", "nmi": "shared information (NMI)", "purity": "purity",
              "silhouette": "separation (silhouette)", "seconds": "seconds", "error": "error"}


def significant(value: Any, digits: int = 3) -> Any:
    """``value`` rounded to ``digits`` significant digits (65.7895 -> 65.8, 0.0004567 ->
    0.000457); NaN, infinities, non-numbers and booleans are returned unchanged.
    Raises ValueError for ``digits < 1``."""
    if digits < 1:
        raise ValueError(f"digits={digits} must be >= 1")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value == 0:
        return value
    return round(float(value), digits - 1 - math.floor(math.log10(abs(value))))


def _rounded(frame: pd.DataFrame, digits: int) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(lambda v: significant(v, digits))
        elif pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(hide_paths)
    return out


def readable_confounders(checks: pd.DataFrame, *, digits: int = 2) -> pd.DataFrame:
    """The tested columns of :func:`~core.drift.confounders.confounder_checks` with plain names
    (:data:`CONFOUNDER_NAMES`), numbers to ``digits`` significant digits, skipped ones left out."""
    tested = checks[~checks["note"].astype(str).str.startswith("skipped")]
    return _rounded(tested[[c for c in CONFOUNDER_NAMES if c in tested]], digits).rename(columns=CONFOUNDER_NAMES)


def readable_grid(grid: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """A drift study grid with plain names (:data:`GRID_NAMES`), ``digits`` significant digits
    and no server paths in error messages."""
    return _rounded(grid[[c for c in GRID_NAMES if c in grid]], digits).rename(columns=GRID_NAMES)


__all__ = ["CONFOUNDER_NAMES", "GRID_NAMES", "hide_paths", "readable_confounders", "readable_grid",
           "significant"]
