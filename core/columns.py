"""The one place that says what each column of an images or patients table is.

Roles:
- ``identifier``: names a row or a file (ids, hashes, paths, UIDs). Never a feature, never a
  colour, never a model input; paths and UIDs are never shown to users.
- ``technical``: describes the file rather than the patient (frame, size in pixels...).
- ``text``: free-text notes or reports (the text encoder's input).
- ``target``: the ground-truth label.
- ``metadata``: everything else: age, sex, view, modality, site, and any extra CSV column.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

IDENTIFIER_COLUMNS = frozenset({
    "patient_id", "image_id", "sha256", "path", "filename", "file", "folder_path",
})
TECHNICAL_COLUMNS = frozenset({"frame", "n_frames", "rows", "columns", "n_images", "cluster"})
TEXT_COLUMNS = frozenset({"text"})
TARGET_COLUMNS = frozenset({"label"})
# Columns whose association with clusters would mean "acquisition or demographics, not disease".
CONFOUNDER_COLUMNS = (
    "view", "modality", "sex", "age", "site", "country", "location", "manufacturer", "body_part",
)
# Patient attributes a fairness breakdown groups by (derived ones such as age_band included).
SENSITIVE_COLUMNS = ("sex", "age_band", "country", "site", "race", "ethnicity", "insurance")
# What a scan's caption, hover or viewer shows about its row, in this order.
DESCRIBING_COLUMNS = ("patient_id", "label", "age", "sex", "modality", "view")


def column_role(name: str) -> str:
    """``identifier``, ``technical``, ``text``, ``target`` or ``metadata`` for a column name."""
    lowered = str(name).lower()
    if lowered in IDENTIFIER_COLUMNS or lowered.endswith(("_uid", "_path")):
        return "identifier"
    if lowered in TECHNICAL_COLUMNS:
        return "technical"
    if lowered in TEXT_COLUMNS:
        return "text"
    if lowered in TARGET_COLUMNS:
        return "target"
    return "metadata"


def metadata_columns(table: pd.DataFrame, *, exclude: Iterable[str] = ()) -> list[str]:
    """The columns of ``table`` whose role is ``metadata``, in table order."""
    skip = set(exclude)
    return [c for c in table.columns if c not in skip and column_role(c) == "metadata"]


def target_candidates(table: pd.DataFrame, *, max_classes: int = 50) -> list[str]:
    """Columns a classifier could learn: the label and metadata with 2..``max_classes`` values."""
    return [
        c for c in table.columns
        if column_role(c) in ("target", "metadata") and 2 <= table[c].nunique() <= max_classes
    ]


def tells_rows_apart(column: pd.Series, *, max_categories: int = 30) -> bool:
    """True for a column worth colouring or grouping by: not constant and, unless numeric, not
    near-unique (an identifier in disguise)."""
    distinct = column.nunique()
    return distinct > 1 and (pd.api.types.is_numeric_dtype(column) or distinct <= max_categories)
