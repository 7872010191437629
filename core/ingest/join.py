"""Join an extra metadata CSV (``--metadata``) onto the candidates of any layout.

By file name when the CSV has a path column; by ``patient_id`` otherwise. A patient join is
applied after the headers are read, because for a DICOM tree the patient id only exists in the
headers. CSV values win over what the layout or the header said. Rows that match no image are
reported (status ``unmatched_metadata``, a warning) rather than dropped silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.ingest.layouts import Candidate, read_csv, report_row
from core.ingest.normalize import canonical_column_map


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


@dataclass
class MetadataJoin:
    """A metadata CSV, read and keyed, ready to join.

    by_name : {file name: (csv row number, values)} when the CSV has a path column
    by_patient : {patient_id: (csv row number, values)} otherwise
    """

    csv_path: Path
    by_name: dict[str, tuple[int, dict]] = field(default_factory=dict)
    by_patient: dict[str, tuple[int, dict]] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)
    report: list[dict] = field(default_factory=list)

    def apply_by_name(self, candidates: list[Candidate]) -> None:
        """Merge the rows keyed by file name into the candidates' metadata."""
        for candidate in candidates:
            match = self.by_name.get(candidate.path.name)
            if match:
                number, row = match
                self.used.add(number)
                candidate.meta.update({k: v for k, v in row.items() if k != "path" and _present(v)})

    def for_patient(self, patient_id: object) -> dict:
        """The CSV values for ``patient_id`` (empty when no row names it)."""
        match = self.by_patient.get(str(patient_id)) if _present(patient_id) else None
        if not match:
            return {}
        number, row = match
        self.used.add(number)
        return {k: v for k, v in row.items() if _present(v)}

    def unmatched(self) -> list[dict]:
        """Report rows for every CSV row that no image used."""
        rows = []
        keyed = self.by_name if self.by_name else self.by_patient
        for key, (number, _row) in keyed.items():
            if number not in self.used:
                what = "file" if self.by_name else "patient_id"
                rows.append(report_row(f"{self.csv_path.name} row {number}", None,
                                       "unmatched_metadata",
                                       f"{what} {key!r} matches no ingested image"))
        return self.report + rows


def read_metadata_join(metadata_csv: Path, column_map: Mapping[str, str] | None) -> MetadataJoin:
    """Read ``metadata_csv`` and key it by file name or patient_id.

    Raises ``ValueError`` naming the file when it has neither a path nor a patient_id column,
    or cannot be read (encoding, NUL bytes, parse errors).
    """
    frame = read_csv(metadata_csv)
    mapping = canonical_column_map(list(frame.columns), column_map)
    frame = frame.rename(columns=mapping)
    join = MetadataJoin(Path(metadata_csv))
    records = frame.to_dict("records")
    if "path" in frame.columns:
        key, target = "path", join.by_name
    elif "patient_id" in frame.columns:
        key, target = "patient_id", join.by_patient
    else:
        raise ValueError(
            f"{metadata_csv}: cannot join: needs a patient_id or file-path column "
            f"(columns found: {list(frame.columns)}); use --map COLUMN=patient_id"
        )
    for number, row in enumerate(records, start=2):
        value = row.get(key)
        if not _present(value) or str(value).strip() == "":
            join.report.append(report_row(f"{join.csv_path.name} row {number}", None,
                                          "unmatched_metadata", f"row has no {key}"))
            continue
        name = Path(str(value)).name if key == "path" else str(value).strip()
        if name in target:
            join.report.append(report_row(f"{join.csv_path.name} row {number}", None,
                                          "unmatched_metadata",
                                          f"{key} {name!r} already given by row {target[name][0]}"
                                          " (first row used)"))
            continue
        target[name] = (number, row)
    return join
