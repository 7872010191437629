"""An ingested dataset folder: what :func:`core.ingest.ingest` writes and how it is read back.

Files: ``images.parquet`` (one row per 2-D image or frame), ``patients.parquet`` (one row per
patient), ``ingest_report.csv`` (every file or row that was not ingested, with the reason;
formula-escaped because people open it in a spreadsheet) and ``manifest.json``; ingest also
stores a 256 px preview of frame 0 of every file in ``previews/`` (:mod:`core.previews`) unless
run with ``previews=False``. A folder without ``previews/`` (an older dataset) works the same;
galleries decode its originals.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from core.export import FORMULA_PREFIXES, to_csv_bytes

__all__ = [
    "FORMAT_VERSION",
    "IMAGE_COLUMNS",
    "REPORT_COLUMNS",
    "WARNING_STATUSES",
    "Dataset",
    "IngestResult",
    "load_dataset",
    "summarize",
    "write_dataset",
]

IMAGE_COLUMNS = [
    "image_id", "sha256", "patient_id", "path", "frame", "n_frames", "rows", "columns",
    "modality", "view", "age", "sex", "label", "text", "burned_in_annotation",
]
REPORT_COLUMNS = ["source", "path", "status", "reason"]
# Report statuses that are warnings about data that was still ingested.
WARNING_STATUSES = {"slice_count_mismatch", "unmatched_metadata"}
FORMAT_VERSION = 1


@dataclass
class Dataset:
    """An ingested dataset folder, loaded.

    images : DataFrame, one row per 2-D image or frame (columns: ``IMAGE_COLUMNS`` + extras)
    patients : DataFrame, one row per patient
    report : DataFrame, every file or row not ingested, with ``status`` and ``reason``
    """

    root: Path
    images: pd.DataFrame
    patients: pd.DataFrame
    report: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    # The cohort filter this is a subset by (``core.filters.select_dataset``); "" for the whole.
    selection: str = ""

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.root.name

    @property
    def token(self) -> str:
        """Names one ingest of this folder: it changes whenever the folder is re-ingested, so
        every run keyed by it is recomputed for new data. A filtered subset adds its filter."""
        whole = f"{self.root.resolve()}@{self.manifest.get('created', '')}"
        return f"{whole}#{self.selection}" if self.selection else whole


@dataclass
class IngestResult:
    """dataset : what was written; layout : the layout used; notes : what the layout reader
    decided (image column, where it looked) and warnings (e.g. a single class folder);
    stage_seconds : time per stage summed over files and workers ("hash", "header", "decode",
    "preview_write"); decodes : how each ingested file's frame 0 was decoded ("jpeg 1/4"...)."""

    dataset: Dataset
    layout: str
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    decodes: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.dataset.images)

    @property
    def n_reported(self) -> int:
        return len(self.dataset.report)


def write_dataset(out_dir: Path, images: pd.DataFrame, patients: pd.DataFrame,
                  report: pd.DataFrame, manifest: dict) -> Dataset:
    """Write the four files of a dataset folder, each atomically; returns the Dataset."""
    atomic_write(out_dir / "images.parquet", lambda fh: images.to_parquet(fh, index=False))
    atomic_write(out_dir / "patients.parquet", lambda fh: patients.to_parquet(fh, index=False))
    # The report holds file names and CSV text from the user: a name such as
    # "=HYPERLINK(...)" must not run as a formula when the report is opened in a spreadsheet.
    atomic_write_bytes(out_dir / "ingest_report.csv", to_csv_bytes(report))
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2))
    return Dataset(root=out_dir, images=images, patients=patients, report=report, manifest=manifest)


def _unescape(value: str) -> str:
    """Undo the spreadsheet escaping of one report cell (``"'=x"`` -> ``"=x"``)."""
    if value.startswith("'"):
        rest = value[1:]
        if rest.startswith(FORMULA_PREFIXES) or rest.lstrip(" ").startswith(("=", "+", "-", "@")):
            return rest
    return value


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read an ingested dataset folder written by :func:`core.ingest.ingest`.

    The report's cells come back as ingest found them (the ``'`` that keeps a spreadsheet from
    running a cell as a formula is removed again), so a loaded dataset equals the one ingest
    returned; export it with ``core.export.to_csv_bytes``, which escapes again. Raises ``FileNotFoundError`` naming the missing file when ``path`` is not a dataset
    folder.
    """
    root = Path(path)
    for required in ("images.parquet", "patients.parquet"):
        if not (root / required).is_file():
            raise FileNotFoundError(f"{root}: not an ingested dataset ({required} missing); run `scanatlas ingest` first")
    report_path = root / "ingest_report.csv"
    if report_path.is_file():
        report = pd.read_csv(report_path, dtype=str, keep_default_na=False)
        report.columns = [_unescape(str(c)) for c in report.columns]
        report = report.map(_unescape)
    else:
        report = pd.DataFrame(columns=REPORT_COLUMNS)
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return Dataset(
        root=root,
        images=pd.read_parquet(root / "images.parquet"),
        patients=pd.read_parquet(root / "patients.parquet"),
        report=report,
        manifest=manifest,
    )


def summarize(dataset: Dataset, *, top: int = 12) -> str:
    """A one-screen text summary: counts by status, by modality, by label."""
    images, report = dataset.images, dataset.report
    refused = report[~report["status"].isin(WARNING_STATUSES)] if len(report) else report
    lines = [
        f"Dataset {dataset.name}: {len(images)} images ({images['sha256'].nunique() if len(images) else 0} files) "
        f"from {len(dataset.patients)} patients; {len(refused)} files/rows not ingested, "
        f"{len(report) - len(refused)} warnings (see ingest_report.csv)",
        "",
        "By status:",
        f"  {'ingested':<28}{len(images):>7}",
    ]
    for status, count in report["status"].value_counts().items() if len(report) else []:
        lines.append(f"  {status:<28}{count:>7}")
    for title, column in (("By modality:", "modality"), ("By label:", "label")):
        lines += ["", title]
        counts = images[column].fillna("(none)").value_counts() if len(images) else pd.Series(dtype=int)
        for value, count in counts.head(top).items():
            lines.append(f"  {str(value)[:28]:<28}{count:>7}")
        if len(counts) > top:
            lines.append(f"  ... {len(counts) - top} more")
    return "\n".join(lines)
