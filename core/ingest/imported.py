"""Bring your own embeddings: vectors made elsewhere + a metadata CSV -> a dataset folder.

``import_embeddings`` reads vectors (``core.ingest.vector_files``) from Parquet (a list/array column, or one numeric column per
dimension), ``.npy`` (+ an id list), ``.npz`` (ids and vectors inside, or + an id list) or CSV (an
id column and one column per dimension), joins the metadata CSV on an id column, and writes a
dataset folder that the rest of ScanAtlas opens like an ingested one:

    images.parquet      one row per vector (image_id = the given id, no path: there are no pixels)
    patients.parquet    one row per patient (patient_id from the metadata, else the id)
    ingest_report.csv   warnings (only with ``allow_unmatched``)
    manifest.json       layout "imported-embeddings", and under "imported" each encoder's file,
                        dimension and sha256
    embeddings/<encoder>.npy   float32 of shape (n_images, dim), aligned with images.parquet

``core.embed.embed_dataset(dataset, encoder)`` returns these vectors for that encoder name, so
cohorts, maps, clusters, drift, classifiers and fairness work unchanged.

Nothing is half-written: the folder is built beside ``out_dir`` and renamed into place only when
every check has passed (``core.atomic.atomic_folder``). Refused, with counts and example ids:
ragged or non-numeric vectors, rows with NaN or infinite values, duplicate ids (in either file),
vector ids missing from the metadata and metadata ids without a vector (both allowed, and
reported, with ``allow_unmatched``), and a dimension that differs from the vectors already
stored under the same encoder name (a built-in encoder's, or another imported dataset's).
The vectors are streamed in batches, so memory stays around one batch plus the ids and metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.atomic import atomic_folder, atomic_write, is_temp
from core.ingest.dataset import (
    FORMAT_VERSION,
    IMAGE_COLUMNS,
    REPORT_COLUMNS,
    Dataset,
    write_dataset,
)
from core.ingest.layouts import read_csv, report_row
from core.ingest.normalize import canonical_column_map, clean_text, normalize_age, normalize_sex
from core.ingest.pipeline import _parquet_safe
from core.ingest.vector_files import (  # noqa: F401 (EmbeddingImportError: callers catch it here)
    ID_COLUMNS,
    EmbeddingImportError,
    _check_ids,
    _examples,
    _pick,
    open_vectors,
)

LAYOUT = "imported-embeddings"
VECTORS_DIR = "embeddings"
ENCODER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass
class ImportResult:
    dataset: Dataset
    encoder: str
    dim: int
    n_vectors: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


def imported_dims(roots) -> dict[str, tuple[int, Path]]:
    """``{encoder: (dim, dataset folder)}`` for the imported datasets directly under ``roots``."""
    found: dict[str, tuple[int, Path]] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            manifest = folder / "manifest.json"
            if is_temp(folder) or not manifest.is_file():
                continue
            try:
                encoders = json.loads(manifest.read_text()).get("imported", {}).get("encoders", {})
            except (OSError, ValueError, AttributeError):
                continue
            for name, entry in encoders.items():
                found.setdefault(name, (int(entry.get("dim", 0)), folder))
    return found


def _check_dimension(encoder: str, dim: int, out_dir: Path, roots) -> None:
    from core.encoders.registry import ENCODERS

    spec = ENCODERS.get(encoder)
    if spec is not None and spec.dim != dim:
        raise EmbeddingImportError(
            f"encoder name {encoder!r} is the built-in {spec.dim}-dimensional encoder; these vectors have "
            f"{dim} dimensions. Give them their own name (--encoder), e.g. the model that made them")
    known = imported_dims(roots).get(encoder)
    if known is not None and known[0] != dim and known[1].resolve() != out_dir.resolve():
        raise EmbeddingImportError(
            f"vectors under encoder name {encoder!r} have {known[0]} dimensions (dataset {known[1].name}); "
            f"these have {dim}. Use another --encoder name for a different model")


# Printable ASCII without "&": text that ftfy leaves as it is (no mojibake, no HTML entity, no
# control character), so the repair skips it; at 50,000 rows the repair is otherwise most of an import.
_PLAIN = r"[ -%'-~]*"


def _repaired(frame: pd.DataFrame) -> pd.DataFrame:
    """``clean_text`` (as ``read_csv`` applies it) on the cells that may need it; the rest stripped."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        text = values.map(lambda v: v if isinstance(v, str) else None)
        plain = text.notna() & text.fillna("").str.fullmatch(_PLAIN)
        repaired = values.copy()
        repaired[plain] = text[plain].str.strip()
        rest = text.notna() & ~plain
        if rest.any():
            repaired[rest] = values[rest].map(clean_text)
        frame[column] = repaired
    return frame


def _metadata_frame(metadata_csv: Path, id_column: str | None, column_map: Mapping[str, str] | None) -> tuple[pd.DataFrame, str]:
    frame = _repaired(read_csv(Path(metadata_csv), clean=False))  # hostile-safe decoding, strings
    names = list(frame.columns)
    id_name = _pick(names, id_column, ID_COLUMNS, "id", Path(metadata_csv))
    mapping = {k: v for k, v in canonical_column_map([n for n in names if n != id_name], column_map).items() if v != "path"}
    frame = frame.rename(columns=mapping)
    # A file-name column means nothing without the files (and may name the patient).
    frame = frame.rename(columns={"path": "source_path"})
    ids = frame[id_name].astype(object).where(frame[id_name].notna(), None).map(lambda v: None if v is None else str(v).strip())
    _check_ids(ids.to_numpy(dtype=object), str(metadata_csv))
    frame = frame.assign(**{id_name: ids}).set_index(id_name)
    frame.index.name = "image_id"
    return frame.drop(columns=[c for c in ("image_id",) if c in frame.columns]), id_name


def _images_table(ids: np.ndarray, metadata: pd.DataFrame) -> pd.DataFrame:
    joined = metadata.reindex(pd.Index(ids, name="image_id")).reset_index()
    for column in ("patient_id", "modality", "view", "label"):
        if column in joined:
            joined[column] = joined[column].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v))
                                                or str(v).strip() == "" else str(v).strip())
        else:
            joined[column] = None
    joined["patient_id"] = joined["patient_id"].where(joined["patient_id"].notna(), joined["image_id"])
    joined["age"] = joined["age"].map(normalize_age) if "age" in joined else np.nan
    joined["sex"] = joined["sex"].map(normalize_sex) if "sex" in joined else "unknown"
    if "text" not in joined:
        joined["text"] = None
    joined = joined.assign(sha256=None, path=None, frame=0, n_frames=1, rows=None, columns=None,
                           burned_in_annotation=False)
    ordered = IMAGE_COLUMNS + [c for c in joined.columns if c not in IMAGE_COLUMNS]
    return _parquet_safe(joined[ordered])


def _most_common(images: pd.DataFrame, column: str, patient_ids: pd.Index, unknown: object = None) -> list:
    """Per patient, the most common known value of ``column`` (ties: the smallest), as ingest's
    patient table has it, without a Python call per patient."""
    known = images[["patient_id", column]].dropna()
    known = known[known[column].astype(str) != "unknown"]
    if known.empty:
        return [unknown] * len(patient_ids)
    counts = known.groupby(["patient_id", column], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values(["patient_id", "n", column], ascending=[True, False, True], kind="stable")
    best = counts.drop_duplicates("patient_id").set_index("patient_id")[column]
    return [unknown if pd.isna(v) else v for v in best.reindex(patient_ids).tolist()]


def _patients(images: pd.DataFrame) -> pd.DataFrame:
    """One row per patient, as ``core.ingest.pipeline._patients_table`` makes it (first known age,
    most common known sex and label, image count, every column constant over the patient's
    images), vectorised: an import can hold hundreds of thousands of vectors."""
    grouped = images.groupby("patient_id", sort=False)
    patient_ids = pd.Index(images["patient_id"].drop_duplicates(), name="patient_id")  # first-seen order
    patients = pd.DataFrame({"patient_id": patient_ids})
    patients["age"] = grouped["age"].first().reindex(patient_ids).to_numpy()
    patients["sex"] = _most_common(images, "sex", patient_ids, "unknown")
    patients["label"] = _most_common(images, "label", patient_ids)
    patients["n_images"] = grouped.size().reindex(patient_ids).to_numpy()
    skip = {"image_id", "sha256", "path", "frame", "n_frames", "rows", "columns", "age", "sex", "label",
            "patient_id", "burned_in_annotation"}
    others = [c for c in images.columns if c not in skip]
    if others:
        distinct = grouped[others].nunique(dropna=False).reindex(patient_ids)
        firsts = grouped[others].first().reindex(patient_ids)
        for column in others:
            if (distinct[column] <= 1).all():
                patients[column] = firsts[column].to_numpy()
    return patients


def import_embeddings(
    vectors_path: str | os.PathLike[str],
    metadata_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    encoder: str,
    id_column: str | None = None,
    ids_path: str | os.PathLike[str] | None = None,
    name: str | None = None,
    column_map: Mapping[str, str] | None = None,
    allow_unmatched: bool = False,
    replace: bool = False,
    dataset_roots=None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportResult:
    """Import vectors made elsewhere as a dataset folder ``out_dir`` (see the module docstring).

    Parameters
    ----------
    vectors_path : .parquet, .npy, .npz or .csv file with n rows of dim values
    metadata_csv : CSV with the id column and metadata (patient id, sex, age, label, report...);
        column names are mapped to ScanAtlas fields as ingest does (``column_map`` = ``--map``)
    encoder : the name these vectors go by (e.g. ``cxr-foundation``); a built-in encoder's name
        only with that encoder's dimension
    id_column : the id column in both files (default: the first of ``ID_COLUMNS`` present)
    ids_path : id list, one per line, for .npy (and .npz without ids)
    allow_unmatched : keep vectors without a metadata row (patient id = the id) and ignore
        metadata rows without a vector; both are then listed in ``ingest_report.csv``
    replace : replace an existing dataset folder (else a non-empty ``out_dir`` is refused)
    dataset_roots : folders whose imported datasets fix each encoder name's dimension
        (default: ``out_dir``'s parent and ``core.settings.datasets_root()``)
    progress : ``progress(done, total)`` over the vectors

    Returns ImportResult. Raises ``EmbeddingImportError`` (a ValueError) for bad input, with
    counts and example ids, and ``FileNotFoundError`` for a missing file; nothing is written then.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if not isinstance(encoder, str) or ENCODER_NAME.fullmatch(encoder) is None:
        raise EmbeddingImportError(
            f"encoder name {encoder!r} is not allowed: a letter or digit first, then letters, digits, "
            "'-', '_' or '.' (64 characters at most)")
    if out_dir.exists() and any(p for p in out_dir.iterdir() if p.name != "owner.json") and not replace:
        raise EmbeddingImportError(f"{out_dir} already holds files; pick another folder or replace it")
    if not Path(metadata_csv).is_file():
        raise FileNotFoundError(f"{metadata_csv}: no such metadata CSV")
    vectors = open_vectors(vectors_path, id_column=id_column, ids_path=ids_path)
    if dataset_roots is None:
        from core.settings import datasets_root

        dataset_roots = {out_dir.resolve().parent, Path(datasets_root()).resolve()}
    _check_dimension(encoder, vectors.dim, out_dir, dataset_roots)
    metadata, _ = _metadata_frame(Path(metadata_csv), id_column, column_map)

    vector_ids = pd.Index(vectors.ids)
    without_metadata = vector_ids.difference(metadata.index)
    without_vector = metadata.index.difference(vector_ids)
    report: list[dict] = []
    warnings: list[str] = []
    if len(without_metadata) or len(without_vector):
        counts = (f"{len(without_metadata)} of {len(vector_ids)} vector ids have no metadata row "
                  f"({_examples(without_metadata)})" if len(without_metadata) else "every vector has a metadata row")
        reverse = (f"{len(without_vector)} of {len(metadata)} metadata rows have no vector "
                   f"({_examples(without_vector)})" if len(without_vector) else "every metadata row has a vector")
        if not allow_unmatched:
            raise EmbeddingImportError(
                f"{Path(vectors_path).name} and {Path(metadata_csv).name} do not match: {counts}; {reverse}. "
                "Check the id column, or import anyway with the unmatched rows reported (--allow-unmatched)")
        warnings.append(f"{counts}; {reverse}")
        report += [report_row(Path(vectors_path).name, None, "unmatched_metadata",
                              f"vector id {i!r} has no metadata row (kept; patient id = the id)") for i in without_metadata]
        report += [report_row(Path(metadata_csv).name, None, "unmatched_metadata",
                              f"id {i!r} has no vector") for i in without_vector]
    images = _images_table(vectors.ids, metadata)
    patients = _parquet_safe(_patients(images))
    vector_file = f"{VECTORS_DIR}/{encoder}.npy"
    digest = hashlib.sha256()
    n, dim = len(vectors.ids), vectors.dim

    with atomic_folder(out_dir, keep=("owner.json",)) as folder:

        def write_vectors(handle) -> None:
            np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                                          "fortran_order": False, "shape": (n, dim)})
            done, ragged_rows, bad_rows, wrong_shape = 0, [], [], None
            for batch, ragged in vectors.batches():
                if batch.ndim != 2 or batch.shape[1] != dim:
                    wrong_shape = batch.shape
                    break
                ragged_rows += (done + np.flatnonzero(ragged)).tolist()
                bad = ~np.isfinite(batch).all(axis=1) & ~ragged
                bad_rows += (done + np.flatnonzero(bad)).tolist()
                data = np.ascontiguousarray(batch, dtype="<f4").tobytes()
                digest.update(data)
                handle.write(data)
                done += len(batch)
                if progress is not None:
                    progress(done, n)
            if wrong_shape is not None or done != n:
                raise EmbeddingImportError(f"{vectors.path}: {done} vectors read for {n} ids (shape {wrong_shape})")
            problems = []
            if ragged_rows:
                problems.append(f"{len(ragged_rows)} rows are ragged (not {dim} values, or no vector), e.g. ids "
                                f"{_examples(vectors.ids[ragged_rows])}")
            if bad_rows:
                problems.append(f"{len(bad_rows)} rows hold NaN, infinite or missing values, e.g. ids "
                                f"{_examples(vectors.ids[bad_rows])}")
            if problems:
                raise EmbeddingImportError(f"{vectors.path}: " + "; ".join(problems)
                                           + ". Nothing was imported; fix or remove those rows")

        atomic_write(folder / vector_file, write_vectors)
        manifest = {
            "name": name or out_dir.name,
            "source": Path(vectors_path).name,
            "layout": LAYOUT,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "format_version": FORMAT_VERSION,
            "n_images": len(images),
            "n_patients": len(patients),
            "n_reported": len(report),
            "imported": {"encoders": {encoder: {
                "file": vector_file, "dim": dim, "n": n, "sha256": digest.hexdigest(),
                "source": Path(vectors_path).name, "metadata": Path(metadata_csv).name}}},
        }
        write_dataset(folder, images, patients, pd.DataFrame(report, columns=REPORT_COLUMNS), manifest)
    dataset = Dataset(root=out_dir, images=images, patients=patients,
                      report=pd.DataFrame(report, columns=REPORT_COLUMNS), manifest=manifest)
    return ImportResult(dataset=dataset, encoder=encoder, dim=dim, n_vectors=n,
                        seconds=time.perf_counter() - started, warnings=warnings)


def imported_encoders(dataset) -> dict[str, dict]:
    """``{encoder: {file, dim, n, sha256, ...}}`` of an imported dataset; ``{}`` otherwise."""
    manifest = getattr(dataset, "manifest", None) or {}
    encoders = manifest.get("imported", {}).get("encoders", {}) if isinstance(manifest, dict) else {}
    return dict(encoders) if isinstance(encoders, dict) else {}


def has_images(dataset) -> bool:
    """False for a dataset with no pixels to show (imported embeddings)."""
    if imported_encoders(dataset):
        return False
    images = getattr(dataset, "images", None)
    return images is None or "path" not in images or bool(images["path"].notna().any())


NO_IMAGES = ("This dataset has no images: it was imported as embedding vectors ({encoders}), so scans, "
             "the viewer and Grad-CAM cannot be shown. Maps, clusters, labels, drift, classifiers and "
             "fairness work on the vectors.")


def no_images_message(dataset) -> str:
    return NO_IMAGES.format(encoders=", ".join(imported_encoders(dataset)) or "no encoder")


def load_imported_vectors(dataset, encoder: str) -> tuple[np.ndarray, str, str, np.ndarray]:
    """The imported vectors of ``encoder`` for the rows of ``dataset.images`` (a filtered subset
    included): ``(vectors of shape (n_images, dim) float32, namespace, version, missing mask)``.
    Rows whose id is not in the stored file are NaN and flagged in ``missing``.

    Raises ``ValueError`` when ``encoder`` was not imported into this dataset (naming those that
    were), or when the stored file does not match the manifest.
    """
    encoders = imported_encoders(dataset)
    if encoder not in encoders:
        raise ValueError(
            f"dataset {dataset.name!r} has no images, only imported vectors ({', '.join(encoders)}); "
            f"{encoder!r} cannot embed it. Pick {' or '.join(repr(e) for e in encoders)}")
    entry = encoders[encoder]
    root = Path(dataset.root)
    path = (root / entry["file"]).resolve()
    if path.parent != (root / VECTORS_DIR).resolve():
        raise ValueError(f"dataset {dataset.name!r}: vectors file {entry['file']!r} is outside its folder")
    stored = np.load(path, mmap_mode="r", allow_pickle=False)
    if stored.ndim != 2 or stored.shape[1] != int(entry["dim"]):
        raise ValueError(f"{path}: shape {stored.shape} does not match the manifest (dim {entry['dim']})")
    stored_ids = pd.read_parquet(root / "images.parquet", columns=["image_id"])["image_id"].astype(str)
    if len(stored_ids) != len(stored):
        raise ValueError(f"{path}: {len(stored)} vectors for {len(stored_ids)} images")
    wanted = dataset.images["image_id"].astype(str)
    if len(wanted) == len(stored_ids) and (wanted.to_numpy() == stored_ids.to_numpy()).all():
        vectors = np.array(stored, dtype=np.float32)
        missing = np.zeros(len(wanted), dtype=bool)
    else:
        rows = pd.Index(stored_ids).get_indexer(wanted)
        missing = rows < 0
        vectors = np.full((len(wanted), stored.shape[1]), np.nan, dtype=np.float32)
        vectors[~missing] = stored[np.sort(rows[~missing])][np.argsort(np.argsort(rows[~missing]))]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder)
    version = f"imported-{entry['sha256'][:12]}"
    return vectors, f"{slug}-{version}", version, missing
