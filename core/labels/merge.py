"""Three-way merge of cluster mappings after a save conflict.

When two people edit the same mapping, the second save is refused (``ConflictError``). The page
then shows, per cluster, the version both started from (base), the refused edit (yours) and the
version saved in between (theirs), and proposes a merge: a cluster only one side changed takes
that side's value; a cluster both changed differently keeps yours and is flagged, for the person
to decide before saving on top of theirs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from core.labels.icd import normalize_icd10

__all__ = ["MERGE_COLUMNS", "merge_mappings"]

MERGE_COLUMNS = ["cluster", "yours_disease", "yours_code", "theirs_disease", "theirs_code",
                 "disease", "icd10_code", "resolution"]
Entry = tuple[str, str]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _entry(value: Any) -> Entry:
    if value is None:
        return ("", "")
    disease, code = value
    return (_text(disease), _text(code))


def _same(a: Entry, b: Entry) -> bool:
    return a[0] == b[0] and normalize_icd10(a[1]) == normalize_icd10(b[1])


def merge_mappings(base: Mapping[int, Any] | None, yours: Mapping[int, Any],
                   theirs: Mapping[int, Any]) -> pd.DataFrame:
    """Merge two edits of one mapping made from the same ``base``.

    Each argument maps cluster id -> ``(disease, code)`` (``None``/NaN/"" for empty; ``base``
    may be ``None`` when both started from nothing saved). Returns one row per cluster in any
    of them, sorted, with columns ``MERGE_COLUMNS``; ``resolution`` is ``same`` (both agree),
    ``yours`` or ``theirs`` (only that side changed it) or ``both changed`` (they differ and
    both changed it: yours is proposed). ``disease``/``icd10_code`` hold the proposal.
    """
    base = base or {}
    rows = []
    for cluster in sorted({*base, *yours, *theirs}):
        before, mine, other = _entry(base.get(cluster)), _entry(yours.get(cluster)), _entry(theirs.get(cluster))
        if _same(mine, other):
            merged, resolution = mine, "same"
        elif _same(mine, before):
            merged, resolution = other, "theirs"
        elif _same(other, before):
            merged, resolution = mine, "yours"
        else:
            merged, resolution = mine, "both changed"
        rows.append({"cluster": int(cluster), "yours_disease": mine[0], "yours_code": mine[1],
                     "theirs_disease": other[0], "theirs_code": other[1], "disease": merged[0],
                     "icd10_code": merged[1], "resolution": resolution})
    return pd.DataFrame(rows, columns=MERGE_COLUMNS)
