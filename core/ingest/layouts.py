"""Readers for each on-disk layout. Each turns a source into candidate image files.

A reader does no pixel work: it only says which files belong to the cohort and what metadata
goes with each, and reports rows or files it could not use. ``core.ingest.ingest`` then hashes,
probes and de-duplicates the candidates.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.dicom import is_dicom
from core.ingest.normalize import (
    canonical_column_map,
    clean_frame_text,
    clean_text,
    n_replacement_chars,
)
from core.ingest.safety import UnsafePathError, resolve_inside

LAYOUTS = ("patient-csv", "class-folders", "covid-chestxray", "dicom", "image-csv")
PATIENT_CSV_COLUMNS = ("patient_id", "age", "gender", "modality", "num_slices", "folder_path")
COVID_COLUMNS = ("patientid", "finding")  # plus an image column (IMAGE_COLUMN_VARIANTS)
# Names an image column goes by in collections found in the wild, compared after lower-casing and
# dropping everything but letters and digits ("ImageName" == "image_name" == "imagename").
IMAGE_COLUMN_VARIANTS = ("filename", "imagename", "image", "file", "path", "imagefile", "imagepath", "filepath")
RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}
IMAGE_SUFFIXES = RASTER_SUFFIXES | DICOM_SUFFIXES


@dataclass
class Candidate:
    """One file that should become one or more image rows."""

    path: Path
    source: str  # where it came from, for messages: "metadata.csv row 12", "COVID/x.png"
    meta: dict = field(default_factory=dict)  # canonical fields + extra columns


@dataclass
class LayoutResult:
    """candidates : files to ingest; report : rows/files not used, with reasons; notes : what
    the reader decided that the user should know (which column, where it looked, warnings)."""

    candidates: list[Candidate] = field(default_factory=list)
    report: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _squash(name: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def image_column(columns: list[str]) -> str | None:
    """The column naming image files: the first of :data:`IMAGE_COLUMN_VARIANTS` present."""
    squashed = {_squash(c): c for c in reversed(list(columns))}
    return next((squashed[v] for v in IMAGE_COLUMN_VARIANTS if v in squashed), None)


def search_dirs(csv_path: Path, root: Path, images_dir: Path | None = None) -> list[tuple[Path, str, str]]:
    """Where the names in a CSV are looked up, in order, as ``(base, prefix, words)``: a name
    is resolved as ``base/prefix/name`` and must stay inside ``base`` (links followed only into
    the allowed roots). The CSV's folder, the source folder (when another), then ``images_dir``
    or else an ``images/`` folder next to the CSV when there is one. An ``images`` folder is
    taken as a prefix under the CSV's folder, not as a base, so that a link named ``images``
    is judged like any other link."""
    csv_dir = Path(csv_path).parent
    found = [(csv_dir, "", "the CSV's folder")]
    if Path(root).resolve() != csv_dir.resolve():
        found.append((Path(root), "", "the source folder"))
    if images_dir is not None:
        found.append((Path(images_dir), "", "--images-dir"))
    elif (csv_dir / "images").is_dir():
        found.append((csv_dir, "images", "the images/ folder next to the CSV"))
    return found


def report_row(source: str, path: object, status: str, reason: str) -> dict:
    return {"source": source, "path": "" if path is None else str(path), "status": status, "reason": reason}


def natural_key(path: Path) -> list:
    """Sort key so that slice_2 comes before slice_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name.startswith("__MACOSX")


def looks_like_image(path: Path) -> bool:
    """Image by suffix, or an extension-less file that is DICOM (common in PACS exports)."""
    suffix = path.suffix.lower()
    return suffix in IMAGE_SUFFIXES or (suffix == "" and is_dicom(path))


# Within one ingest the layout's CSV is read several times (detecting the layout, finding its
# image column, reading it): ``csv_memo()`` keeps each read for the duration.
_CSV_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("scanatlas_csv_memo", default=None)


@contextlib.contextmanager
def csv_memo() -> Iterator[None]:
    """Within this block, :func:`read_csv` reads each (unchanged) file once and hands out copies."""
    token = _CSV_MEMO.set({})
    try:
        yield
    finally:
        _CSV_MEMO.reset(token)


def read_csv(path: Path, *, clean: bool = True) -> pd.DataFrame:
    """Read a metadata CSV as text, whatever its encoding, and repair broken text.

    The encoding is found by :func:`decode_csv_bytes` (a CSV it cannot decode with confidence
    is refused with ``ValueError`` naming the file and the reason, never garbled).
    Values stay strings (so ``"001"`` stays ``"001"``); empty cells become missing; columns
    with no name and no values (a trailing comma) are dropped. ``clean=False`` leaves the text
    as found (for callers that compare raw text before repairing it).
    """
    memo = _CSV_MEMO.get()
    if memo is None:
        return _read_csv(path, clean)
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, clean)
    if key not in memo:
        memo[key] = _read_csv(path, clean)
    return memo[key].copy()


def _read_csv(path: Path, clean: bool) -> pd.DataFrame:
    text = decode_csv_bytes(Path(path).read_bytes(), path)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from error
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:") and frame[c].isna().all()]
    frame = frame.drop(columns=unnamed)
    frame.columns = [str(c).strip() for c in frame.columns]
    if clean:
        frame = clean_frame_text(frame)
    return frame.astype(object).where(frame.notna(), None)


_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


# Encodings whose chaos score is this close to the best one are taken as equally likely.
_CHAOS_MARGIN = 0.1


_WESTERN_SYMBOLS = set("°€£§©®–—‘’“”…·±µ×÷«»¼½¾")


def _reads_as_western(text: str) -> bool:
    """Whether every non-ASCII character is a Latin letter or a common symbol: Polish or Czech
    text read as Windows-1252 shows stray ¹ ³ ¿ Ÿ and is not taken for Western text."""
    return all(
        ord(char) < 128 or char in _WESTERN_SYMBOLS
        or (ord(char) < 0x250 and unicodedata.category(char).startswith("L"))
        for char in text
    )


def _detect_with_charset_normalizer(raw: bytes, name: str) -> str:
    """The text of ``raw`` when charset-normalizer can tell its encoding without doubt.

    Short texts fit several code pages equally well; when those decode to different text the
    CSV is refused (naming the candidates) rather than garbled. Windows-1252, Excel's default
    on Western systems, is taken when it is among the equally likely decodings.
    """
    try:
        from charset_normalizer import from_bytes
    except ImportError as error:
        raise ValueError(f"{name}: not valid UTF-8 and no encoding detector (charset-normalizer)"
                         " is installed; save it as UTF-8") from error
    matches = list(from_bytes(raw))
    if not matches:
        raise ValueError(f"{name}: not valid UTF-8 and not text in any known encoding; "
                         "save it as UTF-8")
    best = min(match.chaos for match in matches)
    likely = [match for match in matches if match.chaos <= best + _CHAOS_MARGIN]
    texts = {str(match) for match in likely}
    try:
        western = raw.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    if western is not None and western in texts and _reads_as_western(western):
        return western
    if len(texts) == 1:
        return texts.pop()
    names = ", ".join(sorted({match.encoding for match in likely})[:6])
    raise ValueError(f"{name}: not valid UTF-8, and its encoding is ambiguous (could be "
                     f"{names}, which read differently); save it as UTF-8")


def decode_csv_bytes(raw: bytes, path: str | os.PathLike[str] = "CSV") -> str:
    """Decode a CSV's bytes: byte-order mark first, then strict UTF-8, then charset-normalizer.

    Raises
    ------
    ValueError
        Naming ``path`` and the reason: NUL bytes (a binary file, or UTF-16 saved without a
        byte-order mark), bytes invalid in the encoding its byte-order mark names, or an
        encoding that cannot be told with confidence (or no detector installed): save it as
        UTF-8 then.
    """
    name = Path(path).name
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            try:
                text = raw[len(bom):].decode(encoding)
            except UnicodeDecodeError as error:
                raise ValueError(f"{name}: starts with a {encoding.upper()} byte-order mark but "
                                 f"byte {error.start + len(bom)} is not valid {encoding.upper()}"
                                 ) from error
            break
    else:
        if b"\x00" in raw:
            raise ValueError(
                f"{name}: contains NUL bytes (first at byte {raw.index(0)}): not a text CSV, or "
                "UTF-16 saved without a byte-order mark; save it as UTF-8"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            try:
                text = _detect_with_charset_normalizer(raw, name)
            except ValueError as refusal:
                raise ValueError(f"{refusal} (first non-UTF-8 byte at {error.start})") from error
    if "\x00" in text:
        raise ValueError(f"{name}: contains NUL characters (first at character "
                         f"{text.index(chr(0))}); save it as UTF-8 text")
    return text


def require_columns(frame: pd.DataFrame, required: tuple[str, ...], csv_path: Path) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{csv_path}: missing required column(s) {missing}; columns found: {list(frame.columns)}"
        )


def _canonical_meta(row: Mapping, mapping: Mapping[str, str], skip: tuple[str, ...] = ()) -> dict:
    """Rename a CSV row's columns to canonical fields; other columns are kept as they are."""
    meta = {}
    for column, value in row.items():
        if column in skip:
            continue
        meta[mapping.get(column, column)] = value
    return meta


# ----------------------------------------------------------------------------- patient-csv


def read_patient_csv(csv_path: Path, root: Path, column_map: Mapping[str, str] | None = None, *,
                     link_roots: tuple[Path, ...] | list[Path] = ()) -> LayoutResult:
    """One CSV row per patient, ``folder_path`` naming a folder of that patient's slices.

    Every image file in the folder becomes a slice, in natural file-name order. When the number
    found differs from ``num_slices`` the mismatch is reported (status ``slice_count_mismatch``)
    and the slices found are still ingested.
    """
    frame = read_csv(csv_path)
    frame = frame.rename(columns={k: v for k, v in (column_map or {}).items()})
    require_columns(frame, PATIENT_CSV_COLUMNS, csv_path)
    mapping = canonical_column_map(list(frame.columns))
    result = LayoutResult()
    if frame.empty:
        result.report.append(report_row(csv_path.name, csv_path, "empty_csv",
                                        "the CSV has a header but no rows"))
    for number, row in enumerate(frame.to_dict("records"), start=2):
        source = f"{csv_path.name} row {number}"
        patient = row.get("patient_id")
        if not patient:
            result.report.append(report_row(source, None, "missing_patient_id", "row has no patient_id"))
            continue
        try:
            folder = resolve_inside(root, row.get("folder_path") or "", link_roots=link_roots)
            exists = folder.is_dir()
        except UnsafePathError as error:
            result.report.append(report_row(source, row.get("folder_path"), "outside_source", str(error)))
            continue
        except (OSError, ValueError) as error:
            result.report.append(report_row(source, row.get("folder_path"), "unreadable_path",
                                            f"cannot look up the folder: {error}"))
            continue
        if not exists:
            result.report.append(
                report_row(source, folder, "missing_folder", f"folder for patient {patient} not found")
            )
            continue
        files = sorted((p for p in folder.iterdir() if p.is_file() and not is_hidden(p)), key=natural_key)
        expected = row.get("num_slices")
        if expected not in (None, "") and str(expected).strip().isdigit() and int(expected) != len(files):
            result.report.append(
                report_row(
                    source,
                    folder,
                    "slice_count_mismatch",
                    f"patient {patient}: CSV says num_slices={int(expected)}, found {len(files)} file(s)"
                    " (the files found are ingested)",
                )
            )
        meta = _canonical_meta(row, mapping, skip=("folder_path",))
        for path in files:
            result.candidates.append(Candidate(path=path, source=f"{folder.name}/{path.name}", meta=dict(meta)))
    return result


# --------------------------------------------------------------------------- class-folders


def read_class_folders(root: Path, *, link_roots: tuple[Path, ...] | list[Path] = ()) -> LayoutResult:
    """``ROOT/<label>/*.png|jpg|dcm``: the folder name is the ground-truth label.

    Each image is its own patient (``patient_id`` = ``<label>/<file stem>``) unless a metadata
    CSV joined later says otherwise. Files directly under ROOT are reported, not guessed at; a
    file reached through a link outside ``root`` and ``link_roots`` is refused
    (``outside_source``). Only one label folder is a warning (in ``notes``, which ingest keeps
    in the manifest and the CLI prints) naming the layout that was probably meant.
    """
    result = LayoutResult()
    labels: dict[str, int] = {}
    for entry in sorted(root.iterdir(), key=natural_key):
        if is_hidden(entry):
            continue
        if entry.is_file():
            if entry.suffix.lower() != ".csv":
                result.report.append(
                    report_row(entry.name, entry, "no_label_folder", "file is not inside a label folder")
                )
            continue
        for path in sorted((p for p in entry.rglob("*") if p.is_file() and not is_hidden(p)), key=natural_key):
            rel = path.relative_to(root).as_posix()
            try:
                resolve_inside(root, path.relative_to(root), link_roots=link_roots)
            except UnsafePathError as error:
                result.report.append(report_row(rel, path, "outside_source", str(error)))
                continue
            labels[entry.name] = labels.get(entry.name, 0) + 1
            result.candidates.append(
                Candidate(
                    path=path,
                    source=rel,
                    meta={"label": entry.name, "patient_id": f"{entry.name}/{path.stem}", "filename": path.name},
                )
            )
    if len(labels) == 1:
        [(label, count)] = labels.items()
        warning = (f"class-folders found a single class: all {count} images are labelled {label!r}, each its "
                   f"own patient. {_probable_layout(root, label)}")
        result.notes.append(f"Warning: {warning}")
    return result


def _probable_layout(root: Path, folder: str) -> str:
    """A sentence naming the layout a single-folder dataset probably is."""
    for csv_path in sorted(p for p in root.glob("*.csv") if not is_hidden(p)):
        columns = _csv_columns(csv_path)
        if image_column(columns) is not None:
            if set(COVID_COLUMNS) <= set(columns):
                return (f"{csv_path.name} looks like a covid-chestxray metadata file: pass --layout "
                        "covid-chestxray.")
            return (f"{csv_path.name} names image files: pass --layout image-csv --metadata {csv_path.name} "
                    "(with --map COLUMN=label for the labels).")
    if any(is_dicom(p) for p in list((root / folder).rglob("*"))[:50] if p.is_file()):
        return "For DICOM files whose headers say who the patient is, pass --layout dicom."
    return (f"If {folder!r} is not a diagnosis, pass --layout image-csv with a CSV that names each file and "
            "its label.")


# ------------------------------------------------------------------- image-csv and covid


def read_image_csv(
    csv_path: Path,
    root: Path,
    column_map: Mapping[str, str] | None = None,
    *,
    path_column: str | None = None,
    folder_column: str | None = None,
    images_dir: Path | None = None,
    link_roots: tuple[Path, ...] | list[Path] = (),
) -> LayoutResult:
    """Any CSV with an image-path column; columns mapped to canonical fields.

    The image column is the one mapped to ``path`` (``--map``, or a name such as ``path`` or
    ``filename``), else the first of :data:`IMAGE_COLUMN_VARIANTS`. Each name (joined to
    ``folder_column`` when given) is looked up in :func:`search_dirs` order: the CSV's folder,
    the source folder, then ``images_dir`` (default: ``images/`` next to the CSV); ``notes``
    say which column was used and where it looked. Links are followed when they stay inside
    ``root`` or ``link_roots`` (the allowed data roots).

    Rules, in order, each reported with its reason:
    - a path that leaves the folder it is looked up in, or leads through a link outside the
      allowed roots, is refused (``outside_source``);
    - a row naming a file that is absent is reported (``missing_file``);
    - a row naming a file an earlier row already named is a ``duplicate_row``: the first row is
      kept, and where the repeat carries the same text with fewer undecodable characters its
      text repairs the kept row;
    - image files in the folders the CSV points into that no row names are reported
      (``unreferenced_file``).
    """
    frame = read_csv(csv_path, clean=False)
    mapping = canonical_column_map(list(frame.columns), column_map)
    path_column = path_column or next((c for c, f in mapping.items() if f == "path"), None) \
        or image_column(list(frame.columns))
    if path_column is None:
        raise ValueError(
            f"{csv_path}: no image-path column; map one with --map COLUMN=path "
            f"(columns found: {list(frame.columns)})"
        )
    require_columns(frame, (path_column,) + ((folder_column,) if folder_column else ()), csv_path)
    mapping.pop(path_column, None)
    result = LayoutResult()
    dirs = search_dirs(csv_path, root, images_dir)
    where = ", then ".join(f"{label} ({base / prefix if prefix else base})" for base, prefix, label in dirs)
    result.notes.append(f"{csv_path.name}: image column {path_column!r}"
                        + (f" inside folder column {folder_column!r}" if folder_column else "")
                        + f"; file names looked up in {where}")
    if frame.empty:
        result.report.append(report_row(csv_path.name, csv_path, "empty_csv",
                                        "the CSV has a header but no rows"))
    kept: dict[Path, tuple[int, Candidate]] = {}
    repairs: dict[str, str] = {}  # broken text -> its cleaner re-entered form
    for number, row in enumerate(frame.to_dict("records"), start=2):
        source = f"{csv_path.name} row {number}"
        named = row.get(path_column)
        if not named:
            result.report.append(report_row(source, None, "missing_path", f"row has no value in {path_column!r}"))
            continue
        relative = os.path.join(row.get(folder_column) or "", named) if folder_column else named
        try:
            path, exists = _look_up(relative, dirs, link_roots)
        except UnsafePathError as error:
            result.report.append(report_row(source, relative, "outside_source", str(error)))
            continue
        except (OSError, ValueError) as error:  # a name too long, a NUL, a loop of links
            result.report.append(report_row(source, relative, "unreadable_path",
                                            f"cannot look up {relative!r}: {error}"))
            continue
        if path in kept:
            first_number, first = kept[path]
            repaired = _repair_text_from_duplicate(first.meta, _canonical_meta(row, mapping), repairs)
            note = f"; its cleaner text repaired {repaired}" if repaired else ""
            result.report.append(
                report_row(
                    source,
                    path,
                    "duplicate_row",
                    f"names {named!r}, already named by row {first_number} "
                    f"(patient {first.meta.get('patient_id')}); first row kept{note}",
                )
            )
            continue
        if not exists:
            looked = ", ".join(label for _base, _prefix, label in dirs)
            result.report.append(report_row(source, path, "missing_file",
                                            f"file {relative!r} not found (looked in {looked})"))
            continue
        meta = _canonical_meta(row, mapping, skip=(path_column,) + ((folder_column,) if folder_column else ()))
        meta["filename"] = Path(named).name
        meta.setdefault("patient_id", Path(named).stem)
        candidate = Candidate(path=path, source=source, meta=meta)
        kept[path] = (number, candidate)
        result.candidates.append(candidate)

    _apply_text_repairs(result.candidates, repairs)
    for candidate in result.candidates:
        candidate.meta = {key: clean_text(value) for key, value in candidate.meta.items()}
    folders = {path.parent for path in kept}
    for folder in sorted(folders):
        for path in sorted(folder.iterdir(), key=natural_key):
            if path.is_file() and not is_hidden(path) and path.resolve() not in kept and looks_like_image(path):
                rel = path.relative_to(root).as_posix() if root in path.parents else str(path)
                result.report.append(
                    report_row(rel, path, "unreferenced_file", f"no row of {csv_path.name} names this file")
                )
    return result


def _look_up(relative: str, dirs: list[tuple[Path, str, str]], link_roots) -> tuple[Path, bool]:
    """(path, exists) of ``relative`` in the first of ``dirs`` that has it (else the first's
    path). Raises UnsafePathError when it leaves a folder or leads through a link outside the
    allowed roots: a name refused in one folder is not tried in the next."""
    first = None
    for base, prefix, _label in dirs:
        if not base.is_dir():
            continue
        if prefix and os.path.isabs(relative):
            continue  # an absolute name was already judged against the base itself
        path = resolve_inside(base, os.path.join(prefix, relative) if prefix else relative, link_roots=link_roots)
        if path.is_file():
            return path, True
        first = first or path
    if first is None:
        raise ValueError(f"none of the folders to look in exists ({', '.join(str(b) for b, _, _ in dirs)})")
    return first, False


def _repair_text_from_duplicate(kept_meta: dict, duplicate_meta: dict, repairs: dict[str, str]) -> list[str]:
    """Copy text from a re-entered row when it is cleaner (fewer U+FFFD) than the kept one,
    remembering each repair in ``repairs`` so that the same broken text is fixed everywhere."""
    repaired = []
    for key, value in duplicate_meta.items():
        if key in ("patient_id",) or not isinstance(value, str):
            continue
        current = kept_meta.get(key)
        if isinstance(current, str) and n_replacement_chars(current) > n_replacement_chars(value):
            repairs[current] = value
            kept_meta[key] = value
            repaired.append(key)
    return repaired


def _apply_text_repairs(candidates: list[Candidate], repairs: dict[str, str]) -> None:
    if not repairs:
        return
    for candidate in candidates:
        for key, value in candidate.meta.items():
            if isinstance(value, str) and value in repairs:
                candidate.meta[key] = repairs[value]


def read_covid_chestxray(root: Path, *, csv_path: Path | None = None, images_dir: Path | None = None,
                         link_roots: tuple[Path, ...] | list[Path] = ()) -> LayoutResult:
    """The COVID-19 image data collection: ``metadata.csv`` (or ``csv_path``) + ``images/``.

    ``patientid`` -> patient_id, ``finding`` -> label, ``clinical_notes`` -> text; the image
    column may be any of :data:`IMAGE_COLUMN_VARIANTS` (``filename``, ``imagename``, ...; the
    notes say which was used), joined to ``folder`` when that column exists, and looked up as
    :func:`read_image_csv` does.
    """
    csv_path = csv_path or root / "metadata.csv"
    columns = list(read_csv(csv_path).columns)
    require_columns(pd.DataFrame(columns=columns), COVID_COLUMNS, csv_path)
    path_column = image_column(columns)
    if path_column is None:
        raise ValueError(f"{csv_path}: no image column; expected one of {list(IMAGE_COLUMN_VARIANTS)} "
                         f"(columns found: {columns})")
    column_map = {"patientid": "patient_id", "finding": "label", "clinical_notes": "text"}
    column_map = {k: v for k, v in column_map.items() if k in columns}
    folder_column = "folder" if "folder" in columns and path_column != "folder" else None
    return read_image_csv(csv_path, root, column_map, path_column=path_column, folder_column=folder_column,
                          images_dir=images_dir, link_roots=link_roots)


# ---------------------------------------------------------------------------------- dicom


def read_dicom_tree(root: Path) -> LayoutResult:
    """Every file under ``root``; metadata comes from the DICOM headers later.

    Files that are not DICOM are still candidates so that the probe reports each with its
    reason (``not_an_image`` and the like) rather than being skipped silently.
    """
    result = LayoutResult()
    for path in sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.as_posix()):
        if any(is_hidden(part) for part in path.relative_to(root).parents if part.name) or is_hidden(path):
            continue
        result.candidates.append(Candidate(path=path, source=path.relative_to(root).as_posix(), meta={}))
    return result


# ----------------------------------------------------------------------------- detection


def _csv_columns(path: Path) -> list[str]:
    try:
        return list(read_csv(path, clean=False).columns)  # names only: no text repair needed
    except (ValueError, OSError):
        return []


def _image_names(source: Path, limit: int = 200_000) -> set[str]:
    """File names of the image files below ``source`` (at most ``limit`` entries looked at).
    Links to folders are followed (an ``images`` link is the collection's own folder); only
    names are read, and the limit ends a loop of links."""
    names: set[str] = set()
    seen = 0
    for _directory, subdirs, files in os.walk(source, followlinks=True):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        for name in files:
            seen += 1
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                names.add(name)
        if seen >= limit:
            break
    return names


def csv_naming_images(source: Path, names: set[str] | None = None) -> tuple[Path, str, int] | None:
    """The CSV directly in ``source`` whose image column names the most image files found
    below ``source``: ``(csv_path, column, n_named)``, or None when no CSV names any."""
    best = None
    for csv_path in sorted(p for p in source.glob("*.csv") if not is_hidden(p) and p.is_file()):
        try:
            frame = read_csv(csv_path, clean=False)
        except (ValueError, OSError):
            continue
        column = image_column(list(frame.columns))
        if column is None:
            continue
        names = _image_names(source) if names is None else names
        values = {os.path.basename(str(v).replace("\\", "/")) for v in frame[column].dropna()}
        named = len(values & names)
        if named and (best is None or named > best[2]):
            best = (csv_path, column, named)
    return best


def detect_layout(source: Path) -> tuple[str, Path | None]:
    """Guess the layout of ``source``; returns ``(layout, csv_path_or_None)``.

    A CSV at the top of ``source`` that names the image files wins over folder names: it is a
    covid-chestxray metadata file (``patientid``, ``finding`` and an image column such as
    ``filename`` or ``imagename``) or an image-csv, never class-folders.

    Raises ``ValueError`` naming the candidates when the layout is ambiguous or unknown, so the
    user can pass ``--layout``.
    """
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() != ".csv":
            raise ValueError(f"{source}: a single file must be a metadata CSV or a ZIP archive")
        columns = _csv_columns(source)
        if set(PATIENT_CSV_COLUMNS) <= set(columns):
            return "patient-csv", source
        return "image-csv", source
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    csvs = sorted(p for p in source.glob("*.csv") if not is_hidden(p))
    for csv_path in csvs:
        if set(PATIENT_CSV_COLUMNS) <= set(_csv_columns(csv_path)):
            return "patient-csv", csv_path
    naming = csv_naming_images(source) if csvs else None
    if naming is not None:
        csv_path, _column, _named = naming
        columns = _csv_columns(csv_path)
        if set(COVID_COLUMNS) <= set(columns):
            return "covid-chestxray", csv_path
        folders = [p.name for p in source.iterdir() if p.is_dir() and not is_hidden(p)]
        if len(folders) > 1 and "label" not in canonical_column_map(columns).values():
            raise ValueError(
                f"{source}: ambiguous layout: {csv_path.name} names the image files but has no label "
                f"column, and the folders ({', '.join(sorted(folders)[:5])}) could be labels; pass "
                f"--layout class-folders --metadata {csv_path.name} (folder = label, CSV columns joined "
                f"by file name) or --layout image-csv --metadata {csv_path.name}")
        return "image-csv", csv_path
    subdirs = [p for p in source.iterdir() if p.is_dir() and not is_hidden(p)]
    top_images = [p for p in source.iterdir() if p.is_file() and looks_like_image(p)]
    files = [p for d in subdirs for p in d.rglob("*") if p.is_file() and not is_hidden(p)]
    if not files and not top_images:
        raise ValueError(f"{source}: no image files found")
    raster = [p for p in files if p.suffix.lower() in RASTER_SUFFIXES]
    dicoms = [p for p in files + top_images if is_dicom(p)]
    if subdirs and not top_images and raster:
        return "class-folders", None
    if dicoms and not raster:
        if subdirs and not top_images and all(p.parent.parent == source for p in dicoms):
            raise ValueError(
                f"{source}: ambiguous layout: DICOM files in one level of folders "
                f"({', '.join(sorted(d.name for d in subdirs)[:5])}) could be class-folders "
                "(folder = label) or a dicom tree; pass --layout class-folders or --layout dicom"
            )
        return "dicom", None
    if csvs:
        raise ValueError(
            f"{source}: cannot tell the layout; for a CSV of image paths pass --layout image-csv "
            f"--metadata {csvs[0].name} --map COLUMN=path"
        )
    raise ValueError(f"{source}: cannot tell the layout; pass --layout (one of {', '.join(LAYOUTS)})")
