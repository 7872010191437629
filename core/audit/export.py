"""The audit as files: duplicates.csv, label_issues.csv, image_issues.csv, outliers.csv, plus
summary.txt and audit.json.

CSV cells go through :func:`core.export.to_csv_bytes` (formula-like text escaped, control and
bidi characters removed), files through :mod:`core.atomic`; server paths never appear (images
are named by image id, patient id and frame).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.atomic import atomic_write_bytes, atomic_write_text
from core.audit.duplicates import DEFAULT_THRESHOLDS, Thresholds
from core.audit.runs import Audit, audit_json, row_problems, summary_lines
from core.export import to_csv_bytes

AUDIT_FILES = ("duplicates.csv", "label_issues.csv", "image_issues.csv", "outliers.csv", "summary.txt", "audit.json")


def _ids(audit: Audit, rows: pd.Series) -> pd.DataFrame:
    columns = [c for c in ("image_id", "patient_id", "frame", "label", "cluster") if c in audit.images]
    return audit.images.iloc[rows.to_numpy(dtype=int)][columns].reset_index(drop=True)


def audit_tables(audit: Audit, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> dict[str, pd.DataFrame]:
    """The four tables, as written to CSV (no server paths)."""
    pairs, sets = audit.duplicates(thresholds)
    cross = sets.set_index("set_id")["cross_patient"] if len(sets) else pd.Series(dtype=bool)
    duplicates = pairs.drop(columns=["i", "j"]).assign(
        set_cross_patient=pairs["set_id"].map(cross).fillna(False).astype(bool))
    labels = audit.label_issues
    label_table = pd.concat([_ids(audit, labels["row"]), labels.drop(columns=["row"]).reset_index(drop=True)], axis=1)
    issues = audit.image_issues
    issue_table = pd.concat([_ids(audit, issues["row"]), issues.drop(columns=["row", "image_id"]).reset_index(drop=True)], axis=1)
    flagged = audit.outliers[audit.outliers["outlier"] | audit.outliers["cluster_outlier"]].sort_values("rank")
    outlier_table = pd.concat([_ids(audit, pd.Series(flagged.index)),
                               flagged.drop(columns=["cluster"]).reset_index(drop=True)], axis=1)
    return {"duplicates.csv": duplicates, "label_issues.csv": label_table, "image_issues.csv": issue_table,
            "outliers.csv": outlier_table}


def write_audit(audit: Audit, out_dir: str | Path, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Path:
    """Write ``AUDIT_FILES`` to ``out_dir`` (created if needed); returns it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in audit_tables(audit, thresholds).items():
        atomic_write_bytes(out / name, to_csv_bytes(table))
    atomic_write_text(out / "summary.txt", "\n".join(summary_lines(audit, thresholds)) + "\n")
    atomic_write_text(out / "audit.json", audit_json(audit))
    return out


__all__ = ["AUDIT_FILES", "audit_tables", "row_problems", "write_audit"]
