"""The ingest pipeline: read a layout, probe every candidate file, build the tables, write them.

``ingest(source, out_dir)`` is the one entry point (see :mod:`core.ingest`). Single files and
rows never raise: a bad name, a bad header, a bad decode or a lying frame count becomes a row
of the report with its reason, and the batch goes on.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.dicom import FrameRangeError, read_header
from core.ingest.budget import DEFAULT_DECODE_BUDGET_BYTES, DecodeGate
from core.ingest.dataset import (
    FORMAT_VERSION,
    IMAGE_COLUMNS,
    REPORT_COLUMNS,
    IngestResult,
    write_dataset,
)
from core.ingest.join import MetadataJoin, read_metadata_join
from core.ingest.layouts import (
    LAYOUTS,
    Candidate,
    LayoutResult,
    csv_memo,
    detect_layout,
    read_class_folders,
    read_covid_chestxray,
    read_dicom_tree,
    read_image_csv,
    read_patient_csv,
    report_row,
)
from core.ingest.normalize import clean_text, normalize_age, normalize_bool, normalize_sex
from core.ingest.safety import ZipLimits, check_zip, name_problem, printable_name, safe_extract_zip
from core.pixels import DEFAULT_MAX_PIXELS, PixelError, probe_image, verify_bytes, verify_pixels
from core.previews import (
    PREVIEW_FOLDER,
    PREVIEW_SIZE,
    PreviewWriter,
    encode_preview,
    ingest_probe,
    remove_previews,
)

ProgressFn = Callable[[int, int, str], None]


def sha256_file(path: Path, chunk_size: int = 1024**2) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
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
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for the benchmark
    decode: str = ""  # how frame 0 was decoded ("jpeg 1/4", "png full", "j2k 1/4"...)
    preview: bytes | None = None  # frame 0's preview as JPEG, until the writer takes it


def _probe(candidate: Candidate, max_pixels: int, verify: bool, gate: DecodeGate,
           previews: bool = False) -> _Probed:
    """Hash, read the header and (optionally) decode the first frame of one file.

    With ``previews`` (and ``verify``) frame 0 is decoded once, at reduced scale where the
    format allows (``core.previews.ingest_probe``), and its preview encoded as JPEG; a PNG is
    checked by its structure without inflating it, and gets its preview from the embedding.
    Without it, the full-frame check of earlier versions (``verify_pixels``) runs.
    Never raises for a property of the file: every failure becomes ``error``.
    """
    probed = _Probed(candidate)
    path = candidate.path
    problem = name_problem(path)
    if problem is not None:
        probed.error = ("bad_file_name", problem)
        return probed
    clock = time.perf_counter
    try:
        started = clock()
        probed.sha256 = sha256_file(path)
        probed.seconds["hash"] = clock() - started
        if verify and previews:
            preview = ingest_probe(path, max_pixels=max_pixels, reserve=gate.hold)
            probed.info, probed.header, probed.decode = preview.info, preview.header, preview.decode
            probed.seconds.update(preview.seconds)
            if preview.picture is not None:  # None for a PNG: made by the embedding's decode
                started = clock()
                probed.preview = encode_preview(preview.picture)
                probed.seconds["preview_encode"] = clock() - started
            return probed
        started = clock()
        probed.info = probe_image(path, max_pixels=max_pixels)
        if probed.info.kind == "dicom":
            probed.header = read_header(path)
        probed.seconds["header"] = clock() - started
        if verify:
            # Declared sizes were checked against the budget by probe_image; the gate bounds
            # how many decodes hold memory at once.
            started = clock()
            with gate.hold(verify_bytes(probed.info)):
                verify_pixels(path, max_pixels=max_pixels)
            probed.seconds["decode"] = clock() - started
            probed.decode = "full check"
    except PixelError as error:
        probed.error = (error.status, error.reason)
    except FrameRangeError as error:
        probed.error = ("unreadable", str(error))
    except FileNotFoundError:
        probed.error = ("missing_file", "file not found")
    except OSError as error:
        probed.error = ("unreadable", f"cannot read file: {error}")
    except RecursionError as error:  # deeply nested sequences in a hostile header
        probed.error = ("unreadable", f"cannot parse file ({error})")
    return probed


def _keep_embedded_previews(writer: PreviewWriter, out_dir: Path, probed: list[_Probed]) -> None:
    """A re-ingest keeps the previews an earlier embedding made for files it checks without
    decoding (PNG: ``core.previews``), when the same bytes are still there: the embedding
    would not decode them again (its vectors are cached)."""
    from core.previews import PreviewStore

    deferred = [item for item in probed if item.error is None and item.decode == "png structure"]
    old = PreviewStore.open(out_dir) if deferred else None
    if old is None:
        return
    for item in deferred:
        jpeg = old.jpeg(f"{item.sha256}-0")
        if jpeg is not None:
            writer.add(f"{item.sha256}-0", jpeg)


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _canonical_row(meta: dict, header: dict | None) -> dict:
    """Merge CSV metadata (wins) with DICOM header fields (fill gaps) into canonical values."""
    merged = dict(header or {})
    merged.update({k: v for k, v in meta.items() if _present(v)})
    for key in ("patient_id", "modality", "view", "label"):
        value = merged.get(key)
        merged[key] = None if value is None or str(value).strip() == "" else str(value).strip()
    merged["age"] = normalize_age(merged.get("age"))
    merged["sex"] = normalize_sex(merged.get("sex"))
    merged["text"] = clean_text(merged.get("text")) or None
    merged["burned_in_annotation"] = normalize_bool(merged.get("burned_in_annotation"))
    return merged


def _fallback_patient_id(probed: _Probed) -> str:
    header = probed.header or {}
    study = header.get("study_uid")
    return f"study-{study[-12:]}" if study else f"file-{probed.sha256[:12]}"


def _build_rows(probed_items: list[_Probed], patient_join: MetadataJoin | None = None
                ) -> tuple[list[dict], list[dict]]:
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
        if patient_join is not None:
            extra = patient_join.for_patient(base["patient_id"])
            if extra:
                base = _canonical_row({**candidate.meta, **extra}, item.header)
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
        if column == "burned_in_annotation":
            frame[column] = series.map(normalize_bool).astype(bool)
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
            "patient_id", "instance_number", "sop_uid", "slice_location", "filename",
            "burned_in_annotation"}
    candidates = [c for c in images.columns if c not in skip]
    counts = grouped[candidates].nunique(dropna=False) if candidates else None  # one pass, all columns
    constant = [c for c in candidates if (counts[c] <= 1).all()]
    for column in constant:
        patients[column] = grouped[column].first().values
    return patients


def _only_csv(folder: Path) -> Path:
    """The one CSV at the top of ``folder`` (the patient table of a patient-csv layout given as
    a folder); ``ValueError`` naming what was found otherwise."""
    found = sorted(p for p in folder.glob("*.csv") if p.is_file() and not p.name.startswith("."))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise ValueError(f"--layout patient-csv with the folder {folder.name}: expected one CSV at its top (the "
                         f"patient table), found {names}; pass the CSV file as SOURCE or with --metadata")
    return found[0]


def _read_layout(layout: str, source: Path, csv_path: Path | None, column_map, *,
                 images_dir: Path | None = None, link_roots: list[Path] | tuple[Path, ...] = ()) -> LayoutResult:
    root = source if source.is_dir() else source.parent
    if layout == "patient-csv":
        if csv_path is None and source.is_dir():
            csv_path = _only_csv(source)
        return read_patient_csv(csv_path or source, root, column_map, link_roots=link_roots)
    if layout == "class-folders":
        return read_class_folders(root, link_roots=link_roots)
    if layout == "covid-chestxray":
        return read_covid_chestxray(root, csv_path=csv_path, images_dir=images_dir, link_roots=link_roots)
    if layout == "dicom":
        return read_dicom_tree(root)
    if layout == "image-csv":
        if csv_path is None:
            raise ValueError("--layout image-csv needs the CSV: give it as SOURCE or with --metadata")
        return read_image_csv(csv_path, root, column_map, images_dir=images_dir, link_roots=link_roots)
    raise ValueError(f"layout={layout!r} is not one of {['auto', *LAYOUTS]}")


def _printable_report(report: list[dict]) -> list[dict]:
    """Report rows whose every text can be written: undecodable name bytes become ``\\xNN``."""
    clean = []
    for row in report:
        fixed = {}
        for key, value in row.items():
            if isinstance(value, str) and name_problem(value):
                value = printable_name(value)
            fixed[key] = value
        clean.append(fixed)
    return clean


def _check_free_space(zip_path: Path, out_dir: Path, limits: ZipLimits) -> None:
    members = check_zip(zip_path, limits)
    needed = sum(m.file_size for m in members if not m.is_dir())
    probe_dir = out_dir if out_dir.exists() else next(p for p in out_dir.parents if p.exists())
    free = shutil.disk_usage(probe_dir).free
    if needed > free:
        raise ValueError(f"{zip_path.name}: would expand to {needed:,} bytes but only {free:,} "
                         "are free on the output disk (refused, nothing extracted)")


def _reading_each_csv_once(function: Callable[..., IngestResult]) -> Callable[..., IngestResult]:
    """The layout's CSV is read several times (detecting the layout, finding its image column,
    reading it): within one ingest each read is kept (``core.ingest.layouts.csv_memo``)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs) -> IngestResult:
        with csv_memo():
            return function(*args, **kwargs)

    return wrapper


@_reading_each_csv_once
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
    zip_limits: ZipLimits | None = None,
    decode_budget_bytes: int = DEFAULT_DECODE_BUDGET_BYTES,
    images_dir: str | os.PathLike[str] | None = None,
    data_roots: list[Path] | None = None,
    previews: bool = True,
) -> IngestResult:
    """Ingest ``source`` (a folder, a metadata CSV or a ZIP archive) into ``out_dir``.

    Parameters
    ----------
    layout : "auto" or one of ``LAYOUTS``
    metadata : optional CSV joined onto the images (by file name, or by patient_id once the
        DICOM headers are read); for ``image-csv`` and ``patient-csv`` it is the layout's own
        CSV.
    column_map : ``{csv_column: canonical_field}``, the ``--map`` choices
    max_pixels : per-frame pixel budget; larger images are refused as ``too_large`` from their
        header, before any decode
    verify : decode the first frame of every file so that later steps cannot meet a file that
        cannot be read (a few seconds per thousand images)
    previews : with ``verify``, decode frame 0 once at reduced scale (JPEG DCT scaling, JPEG
        2000 resolution levels) and store a ``PREVIEW_SIZE`` px preview per file under
        ``out_dir/previews/`` for galleries; a PNG is verified by its chunks without inflating
        it (``core.png_check``) and its preview is added by the first embedding that decodes
        it (``core.previews``); False runs the full-frame check of earlier versions and stores
        none
    progress : ``progress(done, total, message)`` callback
    zip_limits : what a ZIP source may expand to (``ZipLimits()`` by default)
    decode_budget_bytes : most bytes the verification decodes may hold at once, all workers
        together (a file larger than this is decoded alone)
    images_dir : image-csv / covid-chestxray: where bare file names are looked up after the
        CSV's folder (default: an ``images/`` folder next to the CSV when there is one)
    data_roots : folders that links inside the source may lead into (default
        ``core.roots.allowed_roots()``: ``SCANATLAS_DATA_ROOTS`` and the demo cohort); a link
        leading anywhere else is refused file by file (``outside_source``)

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing source, an unknown layout, a CSV without a required column or in an
        unknown encoding, or a ZIP refused whole (``ZipRefusedError``: not a ZIP, too many
        members, bomb-like ratio, too large, not enough disk); the message names the file and
        the reason. Problems with single files or rows never raise: they go to the report.
    """
    source = Path(source)
    out_dir = Path(out_dir)
    zip_limits = zip_limits or ZipLimits()
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    is_zip = source.is_file() and source.suffix.lower() == ".zip"
    if is_zip:
        _check_free_space(source, out_dir, zip_limits)  # refused before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_report: list[dict] = []
    zip_source = source if is_zip else None
    if is_zip:
        extract_dir = out_dir / "source"
        if extract_dir.is_symlink() or (extract_dir.exists() and extract_dir.resolve().parent != out_dir.resolve()):
            raise ValueError(f"{extract_dir}: is a link; refusing to replace it")
        if extract_dir.exists():
            shutil.rmtree(extract_dir)
        extraction = safe_extract_zip(source, extract_dir, zip_limits)
        zip_report = [report_row(f"{source.name}:{member}", member, "unsafe_zip_member", reason)
                      for member, reason in extraction.refused]
        source = extract_dir
    metadata = Path(metadata) if metadata else None
    csv_path = metadata if layout in ("image-csv", "patient-csv") else None
    if layout == "auto":
        try:
            layout, detected_csv = detect_layout(source)
        except ValueError as error:
            if zip_source is None:
                raise
            raise ValueError(f"{zip_source.name} (extracted to {source}): {error}") from error
        csv_path = csv_path or detected_csv
    elif source.is_file() and source.suffix.lower() == ".csv":
        csv_path = csv_path or source
    if data_roots is None:
        from core.roots import allowed_roots

        data_roots = allowed_roots()
    layout_result = _read_layout(layout, source, csv_path, column_map,
                                 images_dir=Path(images_dir) if images_dir else None, link_roots=data_roots)
    join: MetadataJoin | None = None
    if metadata and layout not in ("image-csv", "patient-csv"):
        join = read_metadata_join(metadata, column_map)
        join.apply_by_name(layout_result.candidates)

    candidates = layout_result.candidates
    total = len(candidates)
    gate = DecodeGate(decode_budget_bytes)
    probed: list[_Probed] = []
    previews = bool(previews and verify)
    writer = PreviewWriter(out_dir) if previews else None
    write_seconds = 0.0
    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        items = pool.map(lambda c: _probe(c, max_pixels, verify, gate, previews), candidates)
        for done, item in enumerate(items, start=1):
            if writer is not None and item.preview is not None and item.error is None:
                started = time.perf_counter()
                writer.add(f"{item.sha256}-0", item.preview)
                write_seconds += time.perf_counter() - started
            item.preview = None  # at most one pack of previews is held
            probed.append(item)
            if progress:
                progress(done, total, printable_name(item.candidate.source))
    rows, file_report = _build_rows(probed, join if join and join.by_patient else None)

    join_report = join.unmatched() if join else []

    images = pd.DataFrame(rows)
    for column in IMAGE_COLUMNS:
        if column not in images.columns:
            images[column] = pd.Series(dtype=bool if column == "burned_in_annotation" else object)
    images = images[IMAGE_COLUMNS + [c for c in images.columns if c not in IMAGE_COLUMNS]]
    images = _parquet_safe(images.reset_index(drop=True))
    patients = _parquet_safe(_patients_table(images))
    report_rows = _printable_report(zip_report + layout_result.report + file_report + join_report)
    report = pd.DataFrame(report_rows, columns=REPORT_COLUMNS)
    n_previews = 0
    if writer is not None:
        started = time.perf_counter()
        _keep_embedded_previews(writer, out_dir, probed)
        n_previews = writer.close()
        write_seconds += time.perf_counter() - started
    else:
        remove_previews(out_dir)  # an earlier ingest's previews must not outlive its images
    stage_seconds: dict[str, float] = {}
    for item in probed:
        for stage, seconds in item.seconds.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
    if writer is not None:
        stage_seconds["preview_write"] = write_seconds

    manifest = {
        "name": name or out_dir.name,
        "source": printable_name(Path(source).resolve()),
        "layout": layout,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "format_version": FORMAT_VERSION,
        "max_pixels": max_pixels,
        "n_images": len(images),
        "n_patients": len(patients),
        "n_reported": len(report),
        "notes": list(layout_result.notes),
        "previews": ({"folder": PREVIEW_FOLDER, "size": PREVIEW_SIZE, "format": "jpeg packs",
                      "count": n_previews, "frames": "frame 0 of each file",
                      "deferred": sum(item.decode == "png structure" for item in probed),
                      "deferred_until": "the first embedding that decodes the file (PNG)"}
                     if writer else None),
    }
    dataset = write_dataset(out_dir, images, patients, report, manifest)
    return IngestResult(dataset=dataset, layout=layout, notes=list(layout_result.notes),
                        stage_seconds=stage_seconds,
                        decodes=[item.decode for item in probed if item.error is None])
