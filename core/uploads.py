"""Uploads and server folders -> a named dataset, with the checks a shared server needs.

* **Staging.** ``stage_uploads(user_id, name, files)`` writes a user's uploaded files under
  ``cache/uploads/<user key>/<dataset name>/<upload-set key>/``: the user key is a hash of the
  user id (``core.roots.user_key``), so two users who pick the same dataset name never share a
  folder; the upload-set key hashes the files' names, sizes and bytes, so the same upload set is
  written once, however often the page reruns. Names are validated before anything touches the
  disk; file names from the browser are reduced to a safe base name; limits on the number of
  files and bytes (``SCANATLAS_MAX_UPLOAD_FILES``, default 20,000; ``SCANATLAS_MAX_UPLOAD_BYTES``,
  default 2 GiB) are checked before anything is written.
* **Ingest.** ``ingest_staged`` and ``ingest_server_source`` claim the dataset name
  (``core.datasets.claim_dataset``: never the demo, never another user's dataset, never an
  existing one without ``replace=True``), then run ``core.ingest.ingest``. Server paths must lie
  inside ``core.roots.allowed_roots``.
* **Clean-up.** Older upload sets of the same user and dataset name are removed when a new one
  is staged, except a set an ingested dataset still reads its images from; only folders inside
  the user's own staging area are ever deleted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.atomic import atomic_write_bytes, atomic_write_text
from core.auth import AccessStore, User, require
from core.datasets import (
    claim_dataset,
    dataset_manifest,
    list_datasets,
    release_dataset,
    validate_dataset_name,
)
from core.ingest import IngestResult, ingest
from core.ingest.normalize import canonical_column_map
from core.roots import (
    OutsideRootsError,
    allowed_roots,
    is_inside,
    links_outside,
    remove_tree_inside,
    resolve_inside,
    user_staging_root,
)

__all__ = [
    "MAX_BYTES_ENV",
    "MAX_FILES_ENV",
    "METADATA_NAME",
    "SCAN_SUFFIXES",
    "MetadataPreview",
    "OutsideRootsError",
    "StagedUpload",
    "Upload",
    "UploadLimits",
    "UploadRejected",
    "ingest_server_source",
    "ingest_staged",
    "metadata_preview",
    "metadata_preview_bytes",
    "safe_file_name",
    "stage_uploads",
    "upload_limits",
    "upload_set_key",
]

MAX_FILES_ENV = "SCANATLAS_MAX_UPLOAD_FILES"
MAX_BYTES_ENV = "SCANATLAS_MAX_UPLOAD_BYTES"
DEFAULT_MAX_FILES = 20_000
DEFAULT_MAX_BYTES = 2 * 1024**3
SCAN_SUFFIXES = ("dcm", "dicom", "png", "jpg", "jpeg", "tif", "tiff", "zip")
METADATA_NAME = "metadata_upload.csv"
MARKER_NAME = "staged.json"
PREVIEW_BYTES = 1024**2  # the preview reads at most this much of a CSV
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9 ._()+,-]")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")

ProgressFn = Callable[[int, int, str], None]


class UploadRejected(ValueError):
    """An upload set over the limits (or empty); nothing was written."""


@dataclass(frozen=True)
class Upload:
    """One file from the browser: its name as the browser sent it and its bytes."""

    name: str
    data: bytes | bytearray | memoryview

    @property
    def size(self) -> int:
        return memoryview(self.data).nbytes


@dataclass(frozen=True)
class UploadLimits:
    max_files: int
    max_bytes: int


def _positive_int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} must be a whole number") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be at least 1")
    return value


def upload_limits() -> UploadLimits:
    """Limits from ``SCANATLAS_MAX_UPLOAD_FILES`` / ``SCANATLAS_MAX_UPLOAD_BYTES`` (defaults
    20,000 files, 2 GiB). Raises ``ValueError`` naming a variable that is not a positive int."""
    return UploadLimits(max_files=_positive_int_env(MAX_FILES_ENV, DEFAULT_MAX_FILES),
                        max_bytes=_positive_int_env(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))


@dataclass
class StagedUpload:
    """An upload set on disk, ready to ingest.

    root : the upload-set folder; source : what to ingest (the ``scans`` folder, or the one
    ZIP); metadata : the uploaded metadata CSV or None; key : the upload-set key; refused :
    ``(file name, reason)`` for files not staged; renamed : ``(sent name, stored name)``;
    reused : True when the set was already on disk and nothing was written.
    """

    root: Path
    source: Path
    metadata: Path | None
    key: str
    n_files: int
    n_bytes: int
    refused: list[tuple[str, str]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    reused: bool = False


def safe_file_name(name: str) -> tuple[str | None, str]:
    """``(safe base name, "")`` for a name sent by a browser, or ``(None, reason)``.

    Folders are dropped (``a/../b.dcm`` -> ``b.dcm``), control and bidi-override characters
    removed, leading dots stripped (ingest skips hidden files), other unusual characters become
    ``_``; at most 150 characters (the suffix kept). The suffix must be a scan type.
    """
    base = re.split(r"[/\\]", str(name))[-1]
    base = _CONTROL_CHARS.sub("", base).strip().lstrip(".").strip()
    if not base:
        return None, "no usable file name"
    base = _UNSAFE_CHARS.sub("_", base)
    stem, dot, suffix = base.rpartition(".")
    if not dot or suffix.lower() not in SCAN_SUFFIXES:
        return None, f"not a scan file type (allowed: {', '.join(SCAN_SUFFIXES)})"
    return f"{stem[: 150 - len(suffix) - 1]}.{suffix}", ""


def upload_set_key(files: Sequence[Upload], metadata: Upload | None = None) -> str:
    """24 hex digits from the names, sizes and sha256 of ``files`` (order-free) and ``metadata``."""
    parts = sorted(f"{f.name}\0{f.size}\0{hashlib.sha256(f.data).hexdigest()}" for f in files)
    if metadata is not None:
        parts.append(f"metadata\0{metadata.name}\0{metadata.size}\0{hashlib.sha256(metadata.data).hexdigest()}")
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:24]


def _check_limits(files: Sequence[Upload], metadata: Upload | None, limits: UploadLimits) -> tuple[int, int]:
    if not files:
        raise UploadRejected("no scan files were uploaded")
    n_files = len(files) + (metadata is not None)
    n_bytes = sum(f.size for f in files) + (metadata.size if metadata is not None else 0)
    if n_files > limits.max_files:
        raise UploadRejected(f"{n_files} files is over the limit of {limits.max_files} files per upload "
                             f"({MAX_FILES_ENV}); nothing was saved")
    if n_bytes > limits.max_bytes:
        raise UploadRejected(f"{n_bytes / 1024**2:.1f} MiB is over the limit of {limits.max_bytes / 1024**2:.1f} MiB "
                             f"per upload ({MAX_BYTES_ENV}); nothing was saved")
    return n_files, n_bytes


def _plan_names(files: Sequence[Upload]) -> tuple[list[tuple[Upload, str]], list, list]:
    """Which upload goes to which stored name; refused and renamed files."""
    used = {METADATA_NAME.lower()}
    planned, refused, renamed = [], [], []
    for upload in files:
        safe, reason = safe_file_name(upload.name)
        if safe is None:
            refused.append((upload.name, reason))
            continue
        stem, _, suffix = safe.rpartition(".")
        stored, n = safe, 1
        while stored.lower() in used:  # browsers send base names only: two IM0001.dcm can arrive
            n += 1
            stored = f"{stem}-{n}.{suffix}"
        used.add(stored.lower())
        if stored != upload.name:
            renamed.append((upload.name, stored))
        planned.append((upload, stored))
    zips = [stored for _, stored in planned if stored.lower().endswith(".zip")]
    if zips and len(planned) > 1:
        refused += [(name, "a ZIP archive must be uploaded on its own") for name in zips]
        planned = [(u, s) for u, s in planned if not s.lower().endswith(".zip")]
    return planned, refused, renamed


def _staged_from_marker(set_dir: Path, key: str) -> StagedUpload | None:
    try:
        info = json.loads((set_dir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    scans = set_dir / "scans"
    metadata = scans / METADATA_NAME if info.get("metadata") else None
    source = scans / info["zip"] if info.get("zip") else scans
    return StagedUpload(root=set_dir, source=source, metadata=metadata, key=key, n_files=info["n_files"],
                        n_bytes=info["n_bytes"], refused=[tuple(r) for r in info["refused"]],
                        renamed=[tuple(r) for r in info["renamed"]], reused=True)


def stage_uploads(user_id: str, name: str, files: Sequence[Upload], *, metadata: Upload | None = None,
                  limits: UploadLimits | None = None) -> StagedUpload:
    """Write ``files`` (and an optional metadata CSV) into ``user_id``'s staging area for dataset
    ``name``, once per distinct upload set.

    Raises ``ValueError`` for a bad dataset name and ``UploadRejected`` for an empty set or one
    over ``limits`` (default ``upload_limits()``), in both cases before anything is written.
    Files with unusable names or types are not written and are listed in ``refused``.
    """
    name = validate_dataset_name(name)
    _check_limits(files, metadata, limits or upload_limits())
    planned, refused, renamed = _plan_names(files)
    if not planned:
        raise UploadRejected("no file could be staged: " + "; ".join(f"{n}: {r}" for n, r in refused))
    key = upload_set_key(files, metadata)
    user_root = user_staging_root(user_id)
    set_dir = user_root / name / key
    resolve_inside(set_dir, [user_root.resolve()])  # the name was validated; this makes it plain
    existing = _staged_from_marker(set_dir, key)
    if existing is not None:
        return existing
    scans = set_dir / "scans"
    for upload, stored in planned:
        atomic_write_bytes(scans / stored, bytes(upload.data))
    if metadata is not None:
        atomic_write_bytes(scans / METADATA_NAME, bytes(metadata.data))
    zip_name = planned[0][1] if len(planned) == 1 and planned[0][1].lower().endswith(".zip") else None
    n_bytes = sum(upload.size for upload, _ in planned) + (metadata.size if metadata is not None else 0)
    atomic_write_text(set_dir / MARKER_NAME, json.dumps({
        "n_files": len(planned), "n_bytes": n_bytes, "zip": zip_name, "metadata": metadata is not None,
        "refused": refused, "renamed": renamed,
    }))
    _prune_other_sets(user_root, name, keep=key)
    staged = _staged_from_marker(set_dir, key)
    staged.reused = False
    return staged


def _referenced_sources() -> list[Path]:
    """The folders ingested datasets read their images from (their manifests' ``source``)."""
    sources = []
    for dataset in list_datasets():
        source = dataset_manifest(dataset).get("source")
        if source:
            sources.append(Path(source).resolve())
    return sources


def _prune_other_sets(user_root: Path, name: str, *, keep: str) -> list[Path]:
    """Remove ``user_root/name/*`` except ``keep`` and sets a dataset still reads from."""
    folder = user_root / name
    referenced = _referenced_sources()
    removed = []
    for set_dir in folder.iterdir() if folder.is_dir() else []:
        if set_dir.name == keep or set_dir.is_symlink() or not set_dir.is_dir():
            continue
        if any(is_inside(source, set_dir.resolve()) for source in referenced):
            continue
        remove_tree_inside(set_dir, user_root)
        removed.append(set_dir)
    return removed


def ingest_staged(staged: StagedUpload, name: str, *, user: User, replace: bool = False,
                  layout: str = "auto", column_map: Mapping[str, str] | None = None,
                  progress: ProgressFn | None = None) -> IngestResult:
    """Ingest a staged upload set as dataset ``name`` for ``user`` (who needs the ``ingest``
    permission, else ``PermissionError``); the ingest is recorded in the audit log.

    Raises ``OutsideRootsError`` when ``staged`` is not in ``user``'s staging area, what
    ``core.datasets.claim_dataset`` raises (name taken, demo, another user's dataset), and what
    ``core.ingest.ingest`` raises (bad layout, missing CSV column). A new name whose ingest
    fails is released again.
    """
    require(user, "ingest")
    own_root = user_staging_root(user.id).resolve()
    source = resolve_inside(staged.source, [own_root])
    metadata = resolve_inside(staged.metadata, [own_root]) if staged.metadata is not None else None
    return _claim_and_ingest(source, name, metadata=metadata, user=user, replace=replace, layout=layout,
                             column_map=column_map, progress=progress, origin="an upload")


def ingest_server_source(source: str | os.PathLike[str], name: str, *, user: User,
                         metadata: str | os.PathLike[str] | None = None, replace: bool = False,
                         layout: str = "auto", column_map: Mapping[str, str] | None = None,
                         progress: ProgressFn | None = None) -> IngestResult:
    """Ingest a folder, CSV or ZIP on the server as dataset ``name``; both ``source`` and
    ``metadata`` must resolve inside ``allowed_roots(user.id)`` (else ``OutsideRootsError``);
    ``user`` needs the ``server_folders`` permission. Raises as ``ingest_staged`` otherwise."""
    require(user, "server_folders")
    roots = allowed_roots(user.id)
    resolved = resolve_inside(source, roots)
    metadata_path = resolve_inside(metadata, roots) if metadata else None
    escaping = links_outside(resolved, roots)
    if escaping:
        raise OutsideRootsError(f"{source} holds links to files outside the folders the app may read "
                                f"({', '.join(str(p) for p in escaping)}); remove them or ask an administrator")
    return _claim_and_ingest(resolved, name, metadata=metadata_path, user=user, replace=replace, layout=layout,
                             column_map=column_map, progress=progress, origin="a server folder")


def _claim_and_ingest(source: Path, name: str, *, metadata: Path | None, user: User, replace: bool,
                      layout: str, column_map, progress, origin: str) -> IngestResult:
    require(user, "ingest")
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    target, created = claim_dataset(name, user_id=user.id, is_admin=user.is_admin, replace=replace)
    try:
        result = ingest(source, target, layout=layout, metadata=metadata, column_map=column_map or None,
                        name=target.name, progress=progress)
    except BaseException:
        if created:
            release_dataset(target.name)
        raise
    AccessStore().record(user, "dataset.ingest", target.name,
                         f"{result.n_images} images from {origin}" + ("" if created else " (replaced)"))
    return result


@dataclass(frozen=True)
class MetadataPreview:
    """The first rows of a metadata CSV and the guessed ``{csv column: canonical field}``."""

    rows: pd.DataFrame
    guessed: dict[str, str]


def metadata_preview(path: str | os.PathLike[str], roots: list[Path], *, n_rows: int = 8) -> MetadataPreview:
    """The first ``n_rows`` of the CSV at ``path`` (inside ``roots``), reading at most 1 MiB.

    Raises ``OutsideRootsError`` outside the roots, ``FileNotFoundError`` when it is not a file,
    ``ValueError`` naming the file when it is not a readable text CSV.
    """
    resolved = resolve_inside(path, roots)
    if not resolved.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(resolved, "rb") as handle:
        head = handle.read(PREVIEW_BYTES)
    return metadata_preview_bytes(resolved.name, head, n_rows=n_rows)


def metadata_preview_bytes(file_name: str, data: bytes | memoryview, *, n_rows: int = 8) -> MetadataPreview:
    """As ``metadata_preview`` for a CSV still in memory (an upload before it is staged): reads
    at most the first 1 MiB of ``data``; ``file_name`` only names it in errors."""
    head = bytes(data[:PREVIEW_BYTES])
    if b"\x00" in head:
        raise ValueError(f"{file_name}: not a text CSV (binary content)")
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = head.decode("cp1252", errors="replace")
    if len(head) == PREVIEW_BYTES:
        text = text[: text.rfind("\n") + 1] or text  # never a half row at the cut
    try:
        rows = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""], nrows=n_rows)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as error:
        raise ValueError(f"{file_name}: not a readable CSV ({error})") from None
    rows.columns = [str(c).strip() for c in rows.columns]
    return MetadataPreview(rows=rows, guessed=canonical_column_map(list(rows.columns)))
