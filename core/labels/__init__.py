"""Cluster -> disease labels with ICD-10-CM codes, kept as append-only versioned history.

* ``core.labels.icd``: ``search_icd10``, ``validate_icd10`` over the ICD-10-CM code set.
* ``core.labels.defaults``: ``suggest_default_mapping`` from each cluster's majority label.
* ``core.labels.store``: ``LabelStore``, versioned mappings and patient overrides in SQL.
* ``core.labels.combine``: ``labeled_patients``, the labelled patient table.
* ``core.labels.propagate``: ``propagate_labels`` (proposals from the hand labels, a named run),
  ``accept_proposals`` / ``reject_proposals``, ``propagation_curve`` (accuracy vs share labelled).
"""

from __future__ import annotations

from core.labels.combine import LABEL_COLUMNS, labeled_patients
from core.labels.defaults import (
    DEFAULT_LABEL_CODES,
    Mapping,
    majority_labels,
    suggest_default_mapping,
)
from core.labels.icd import (
    CODE_SET_VERSION,
    IcdCode,
    normalize_icd10,
    search_icd10,
    suggest_icd10,
    validate_icd10,
)
from core.labels.store import (
    MAPPING_COLUMNS,
    OVERRIDE_COLUMNS,
    ConflictError,
    LabelStore,
    SaveResult,
    StoreBusyError,
)

__all__ = [
    "CODE_SET_VERSION",
    "DEFAULT_LABEL_CODES",
    "LABEL_COLUMNS",
    "MAPPING_COLUMNS",
    "OVERRIDE_COLUMNS",
    "ConflictError",
    "IcdCode",
    "LabelStore",
    "Mapping",
    "SaveResult",
    "StoreBusyError",
    "labeled_patients",
    "majority_labels",
    "normalize_icd10",
    "search_icd10",
    "suggest_icd10",
    "suggest_default_mapping",
    "validate_icd10",
]
