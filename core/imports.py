"""Imported embeddings as a named dataset of the app, with the checks a shared server needs.

``stage_import(user_id, name, vectors, metadata, ids)`` writes uploaded files under the user's
staging area (``cache/uploads/<user key>/<dataset>/import-<hash>/``), once per distinct set, after
checking names, types and the upload byte limit. ``import_dataset`` claims the dataset name
(``core.datasets.claim_dataset``: never the demo, never another user's dataset, an existing one
only with ``replace=True``), checks that server paths lie inside ``core.roots.allowed_roots``,
runs ``core.ingest.imported.import_embeddings`` into the datasets folder and records the import
in the audit log. Only a user with the ``ingest`` permission (admins) may import.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from core.atomic import atomic_write_bytes
from core.auth import AccessStore, User, require
from core.datasets import claim_dataset, release_dataset, validate_dataset_name
from core.ingest.imported import ImportResult, import_embeddings
from core.ingest.vector_files import SUFFIXES
from core.roots import allowed_roots, resolve_inside, user_staging_root
from core.uploads import MAX_BYTES_ENV, Upload, UploadRejected, upload_limits

ID_LIST_SUFFIXES = (".txt", ".csv")


def _stored_name(upload: Upload, role: str, suffixes: tuple[str, ...]) -> str:
    suffix = Path(re.split(r"[/\\]", str(upload.name))[-1]).suffix.lower()
    if suffix not in suffixes:
        raise UploadRejected(f"{upload.name}: the {role} file must be {' or '.join(suffixes)}")
    return f"{role}{suffix}"


def stage_import(user_id: str, name: str, vectors: Upload, metadata: Upload,
                 ids: Upload | None = None) -> tuple[Path, Path, Path | None]:
    """Write an uploaded vectors file, metadata CSV and optional id list into ``user_id``'s
    staging area for dataset ``name``; returns their paths. Same files again: nothing written.

    Raises ``ValueError`` for a bad dataset name and ``UploadRejected`` for a wrong file type or
    a set over the byte limit (``SCANATLAS_MAX_UPLOAD_BYTES``), before anything is written.
    """
    name = validate_dataset_name(name)
    files = [("vectors", vectors, SUFFIXES), ("metadata", metadata, (".csv",))]
    if ids is not None:
        files.append(("ids", ids, ID_LIST_SUFFIXES))
    stored = [(_stored_name(upload, role, suffixes), upload) for role, upload, suffixes in files]
    total = sum(upload.size for _, upload in stored)
    limit = upload_limits().max_bytes
    if total > limit:
        raise UploadRejected(f"{total / 1024**2:.1f} MiB is over the limit of {limit / 1024**2:.1f} MiB per upload "
                             f"({MAX_BYTES_ENV}); nothing was saved")
    digest = hashlib.sha256()
    for file_name, upload in stored:
        digest.update(f"{file_name}\0{upload.size}\0".encode())
        digest.update(hashlib.sha256(upload.data).digest())
    user_root = user_staging_root(user_id)
    folder = user_root / name / f"import-{digest.hexdigest()[:24]}"
    resolve_inside(folder, [user_root.resolve()])
    paths = []
    for file_name, upload in stored:
        path = folder / file_name
        if not path.is_file() or path.stat().st_size != upload.size:
            atomic_write_bytes(path, bytes(upload.data))
        paths.append(path)
    return paths[0], paths[1], paths[2] if ids is not None else None


def import_dataset(vectors: str | os.PathLike[str], metadata: str | os.PathLike[str], name: str, *,
                   user: User, encoder: str, ids: str | os.PathLike[str] | None = None,
                   id_column: str | None = None, allow_unmatched: bool = False, replace: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Import ``vectors`` + ``metadata`` (+ ``ids``) as dataset ``name`` for ``user``.

    Every path must resolve inside ``allowed_roots(user.id)`` (the user's own staging area
    included); a path outside the user's staging area needs the ``server_folders`` permission.
    Raises ``PermissionError`` (role, demo cohort, another user's dataset),
    ``core.datasets.DatasetExistsError`` (name taken, ``replace`` False), ``OutsideRootsError``
    and ``EmbeddingImportError`` (bad input; see ``core.ingest.imported``). A dataset folder this
    call created is removed again when the import fails; a replaced one is left as it was.
    """
    require(user, "ingest")
    roots = allowed_roots(user.id)
    staging = user_staging_root(user.id).resolve()
    resolved = []
    for path in (vectors, metadata, ids):
        if path is None:
            resolved.append(None)
            continue
        inside = resolve_inside(path, roots)
        if not inside.is_relative_to(staging):
            require(user, "server_folders")
        resolved.append(inside)
    target, created = claim_dataset(name, user_id=user.id, is_admin=user.is_admin, replace=replace)
    try:
        result = import_embeddings(resolved[0], resolved[1], target, encoder=encoder, ids_path=resolved[2],
                                   id_column=id_column or None, name=target.name, allow_unmatched=allow_unmatched,
                                   replace=replace, progress=progress)
    except BaseException:
        if created:
            release_dataset(target.name)
        raise
    AccessStore().record(user, "dataset.import", target.name,
                         f"{result.n_vectors} vectors of dimension {result.dim} as encoder {encoder}"
                         + ("" if created else " (replaced)"))
    return result
