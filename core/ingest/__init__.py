"""Ingest: whatever a clinic has on disk -> one table of images and one of patients.

``ingest(source, out_dir)`` writes ``images.parquet`` (one row per 2-D image or frame),
``patients.parquet`` (one row per patient), ``ingest_report.csv`` (every file or row that was
not ingested, with the reason) and ``manifest.json``. ``load_dataset(out_dir)`` reads them back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import atomic_write, atomic_write_text
from core.dicom import read_header
from core.ingest.layouts import (
    LAYOUTS,
    Candidate,
    LayoutResult,
    detect_layout,
    read_class_folders,
    read_covid_chestxray,
    read_csv,
    read_dicom_tree,
    read_image_csv,
    read_patient_csv,
    report_row,
)
from core.ingest.normalize import canonical_column_map, clean_text, normalize_age, normalize_sex
from core.ingest.safety import safe_extract_zip
from core.pixels import DEFAULT_MAX_PIXELS, PixelError, load_pixels, probe_image

__all__ = [
    "LAYOUTS",
    "Dataset",
    "IngestResult",
    "ingest",
    "load_dataset",
    "detect_layout",
    "summarize",
]

IMAGE_COLUMNS = [
    "image_id", "sha256", "patient_id", "path", "frame", "n_frames", "rows", "columns",
    "modality", "view", "age", "sex", "label", "text",
]
REPORT_COLUMNS = ["source", "path", "status", "reason"]
# Report statuses that are warnings about data that was still ingested.
WARNING_STATUSES = {"slice_count_mismatch"}
FORMAT_VERSION = 1

ProgressFn = Callable[[int, int, str], None]


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

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.root.name


@dataclass
class IngestResult:
    dataset: Dataset
    layout: str

    @property
    def n_images(self) -> int:
        return len(self.dataset.images)

    @property
    def n_reported(self) -> int:
        return len(self.dataset.report)


def sha256_file(path: Path, chunk_size: int = 1024**2) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class _Probed:
    candidate: Candidate
    sha256: str | None = None
    info: object = None
    header: dict | None = None
    error: tuple[str, str] | None = None  # (status, reason)


def _probe(candidate: Candidate, max_pixels: int, verify: bool) -> _Probed:
    """Hash, read the header and (optionally) decode the first frame of one file."""
    probed = _Probed(candidate)
    path = candidate.path
    try:
        probed.sha256 = sha256_file(path)
        probed.info = probe_image(path, max_pixels=max_pixels)
        if probed.info.kind == "dicom":
            probed.header = read_header(path)
        if verify:
            load_pixels(path, 0, max_pixels=max_pixels)
    except PixelError as error:
        probed.error = (error.status, error.reason)
    except FileNotFoundError:
        probed.error = ("missing_file", "file not found")
    except OSError as error:
        probed.error = ("unreadable", f"cannot read file: {error}")
    return probed


def _canonical_row(meta: dict, header: dict | None) -> dict:
    """Merge CSV metadata (wins) with DICOM header fields (fill gaps) into canonical values."""
    merged = dict(header or {})
    merged.update({k: v for k, v in meta.items() if v is not None and not (isinstance(v, float) and math.isnan(v))})
    for key in ("patient_id", "modality", "view", "label"):
        value = merged.get(key)
        merged[key] = None if value is None or str(value).strip() == "" else str(value).strip()
    merged["age"] = normalize_age(merged.get("age"))
    merged["sex"] = normalize_sex(merged.get("sex"))
    merged["text"] = clean_text(merged.get("text")) or None
    return merged


def _fallback_patient_id(probed: _Probed) -> str:
    header = probed.header or {}
    study = header.get("study_uid")
    return f"study-{study[-12:]}" if study else f"file-{probed.sha256[:12]}"


def _build_rows(probed_items: list[_Probed]) -> tuple[list[dict], list[dict]]:
    rows: list[dict] = []
    report: list[dict] = []
    seen: dict[str, Candidate] = {}
    for item in probed_items:
        candidate = item.candidate
        if item.error is not None:
            status, reason = item.error
            report.append(report_row(candidate.source, candidate.path, status, reason))
            continue
        if item.sha256 in seen:
            first = seen[item.sha256]
            report.append(
                report_row(
                    candidate.source,
                    candidate.path,
                    "duplicate_file",
                    f"same bytes as {first.source} (ingested once, as that file)",
                )
            )
            continue
        seen[item.sha256] = candidate
        base = _canonical_row(candidate.meta, item.header)
        base["patient_id"] = base["patient_id"] or _fallback_patient_id(item)
        info = item.info
        for frame in range(info.n_frames):
            row = dict(base)
            row.update(
                image_id=f"{item.sha256}-{frame}",
                sha256=item.sha256,
                path=str(candidate.path.resolve()),
                frame=frame,
                n_frames=info.n_frames,
                rows=info.rows,
                columns=info.columns,
            )
            rows.append(row)
    return rows, report


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Give every extra column one type: numbers when all values parse, else strings."""
    frame = frame.copy()
    for column in frame.columns:
        series = frame[column]
        if column in ("patient_id", "image_id", "sha256", "path", "label", "text", "sex"):
            frame[column] = series.astype(object).where(series.notna(), None)
            continue
        if series.dtype != object and not pd.api.types.is_string_dtype(series):
            continue
        present = series.dropna()
        numeric = pd.to_numeric(present, errors="coerce")
        if len(present) and numeric.notna().all():
            frame[column] = pd.to_numeric(series, errors="coerce")
        else:
            frame[column] = series.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return frame


def _patients_table(images: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: first known age, most common known sex and label, image count,
    and every other column whose value is the same on all of the patient's images."""
    if images.empty:
        return pd.DataFrame(columns=["patient_id", "age", "sex", "label", "n_images"])

    def mode(values: pd.Series, unknown: object = None) -> object:
        known = values.dropna()
        if known.dtype == object:
            known = known[known != "unknown"]
        return known.mode().iloc[0] if len(known) else unknown

    grouped = images.groupby("patient_id", sort=False)
    patients = pd.DataFrame({"patient_id": list(grouped.groups)})
    patients["age"] = grouped["age"].apply(lambda s: s.dropna().iloc[0] if s.notna().any() else np.nan).values
    patients["sex"] = grouped["sex"].apply(lambda s: mode(s, "unknown")).values
    patients["label"] = grouped["label"].apply(mode).values
    patients["n_images"] = grouped.size().values
    skip = {"image_id", "sha256", "path", "frame", "n_frames", "rows", "columns", "age", "sex", "label",
            "patient_id", "instance_number", "sop_uid", "slice_location", "filename"}
    constant = [c for c in images.columns if c not in skip and (grouped[c].nunique(dropna=False) <= 1).all()]
    for column in constant:
        patients[column] = grouped[column].first().values
    return patients


def _join_metadata(candidates: list[Candidate], metadata_csv: Path, column_map: Mapping[str, str] | None) -> None:
    """Join an extra metadata CSV onto candidates by file name (when it has a path column)
    or by patient_id. CSV values win over what the layout guessed."""
    frame = read_csv(metadata_csv)
    mapping = canonical_column_map(list(frame.columns), column_map)
    frame = frame.rename(columns=mapping)
    if "path" in frame.columns:
        by_name = {Path(str(v)).name: row for v, row in zip(frame["path"], frame.to_dict("records"), strict=True)}
        for candidate in candidates:
            row = by_name.get(candidate.path.name)
            if row:
                candidate.meta.update({k: v for k, v in row.items() if k != "path"})
    elif "patient_id" in frame.columns:
        by_patient = {str(row["patient_id"]): row for row in frame.to_dict("records")}
        for candidate in candidates:
            row = by_patient.get(str(candidate.meta.get("patient_id")))
            if row:
                candidate.meta.update(row)
    else:
        raise ValueError(
            f"{metadata_csv}: cannot join: needs a patient_id or file-path column "
            f"(columns found: {list(frame.columns)}); use --map COLUMN=patient_id"
        )


def _read_layout(layout: str, source: Path, csv_path: Path | None, column_map) -> LayoutResult:
    root = source if source.is_dir() else source.parent
    if layout == "patient-csv":
        return read_patient_csv(csv_path or source, root, column_map)
    if layout == "class-folders":
        return read_class_folders(root)
    if layout == "covid-chestxray":
        return read_covid_chestxray(root)
    if layout == "dicom":
        return read_dicom_tree(root)
    if layout == "image-csv":
        if csv_path is None:
            raise ValueError("--layout image-csv needs the CSV: give it as SOURCE or with --metadata")
        return read_image_csv(csv_path, root, column_map)
    raise ValueError(f"layout={layout!r} is not one of {['auto', *LAYOUTS]}")


def ingest(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    layout: str = "auto",
    metadata: str | os.PathLike[str] | None = None,
    column_map: Mapping[str, str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    verify: bool = True,
    name: str | None = None,
    progress: ProgressFn | None = None,
    workers: int | None = None,
) -> IngestResult:
    """Ingest ``source`` (a folder, a metadata CSV or a ZIP archive) into ``out_dir``.

    Parameters
    ----------
    layout : "auto" or one of ``LAYOUTS``
    metadata : optional CSV joined onto the images (by file name or patient_id); for
        ``image-csv`` and ``patient-csv`` it is the layout's own CSV.
    column_map : ``{csv_column: canonical_field}``, the ``--map`` choices
    max_pixels : per-frame pixel budget; larger images are refused as ``too_large``
    verify : decode the first frame of every file so that later steps cannot meet a file that
        cannot be read (a few seconds per thousand images)
    progress : ``progress(done, total, message)`` callback

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing source, an unknown layout, or a CSV without a required column; the
        message names the file and the reason. Problems with single files or rows never raise:
        they go to the report.
    """
    source = Path(source)
    out_dir = Path(out_dir)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_report: list[dict] = []
    if source.is_file() and source.suffix.lower() == ".zip":
        extract_dir = out_dir / "source"
        if extract_dir.exists():
            shutil.rmtree(extract_dir)
        extraction = safe_extract_zip(source, extract_dir)
        zip_report = [report_row(f"{source.name}:{member}", member, "unsafe_zip_member", reason)
                      for member, reason in extraction.refused]
        source = extract_dir
    metadata = Path(metadata) if metadata else None
    csv_path = metadata if layout in ("image-csv", "patient-csv") else None
    if layout == "auto":
        layout, detected_csv = detect_layout(source)
        csv_path = csv_path or detected_csv
    elif source.is_file() and source.suffix.lower() == ".csv":
        csv_path = csv_path or source
    layout_result = _read_layout(layout, source, csv_path, column_map)
    if metadata and layout not in ("image-csv", "patient-csv"):
        _join_metadata(layout_result.candidates, metadata, column_map)

    candidates = layout_result.candidates
    total = len(candidates)
    probed: list[_Probed] = []
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        for done, item in enumerate(pool.map(lambda c: _probe(c, max_pixels, verify), candidates), start=1):
            probed.append(item)
            if progress:
                progress(done, total, item.candidate.source)
    rows, file_report = _build_rows(probed)

    images = pd.DataFrame(rows)
    for column in IMAGE_COLUMNS:
        if column not in images.columns:
            images[column] = pd.Series(dtype=object)
    images = images[IMAGE_COLUMNS + [c for c in images.columns if c not in IMAGE_COLUMNS]]
    images = _parquet_safe(images.reset_index(drop=True))
    patients = _parquet_safe(_patients_table(images))
    report = pd.DataFrame(zip_report + layout_result.report + file_report, columns=REPORT_COLUMNS)

    manifest = {
        "name": name or out_dir.name,
        "source": str(Path(source).resolve()),
        "layout": layout,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "format_version": FORMAT_VERSION,
        "max_pixels": max_pixels,
        "n_images": len(images),
        "n_patients": len(patients),
        "n_reported": len(report),
    }
    atomic_write(out_dir / "images.parquet", lambda fh: images.to_parquet(fh, index=False))
    atomic_write(out_dir / "patients.parquet", lambda fh: patients.to_parquet(fh, index=False))
    atomic_write(out_dir / "ingest_report.csv", lambda fh: report.to_csv(fh, index=False))
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2))
    dataset = Dataset(root=out_dir, images=images, patients=patients, report=report, manifest=manifest)
    return IngestResult(dataset=dataset, layout=layout)


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read an ingested dataset folder written by :func:`ingest`.

    Raises ``FileNotFoundError`` naming the missing file when ``path`` is not a dataset folder.
    """
    root = Path(path)
    for required in ("images.parquet", "patients.parquet"):
        if not (root / required).is_file():
            raise FileNotFoundError(f"{root}: not an ingested dataset ({required} missing); run `scanatlas ingest` first")
    report_path = root / "ingest_report.csv"
    report = pd.read_csv(report_path, dtype=str, keep_default_na=False) if report_path.is_file() else pd.DataFrame(columns=REPORT_COLUMNS)
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


