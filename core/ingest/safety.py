"""Guards for untrusted input: paths that escape the source folder, hostile ZIP archives."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# ZIP limits: generous for real studies, small enough that a zip bomb cannot fill the disk.
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_TOTAL_BYTES = 50 * 1024**3
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per member larger than 1 MiB


class UnsafePathError(ValueError):
    """A path that points outside the folder it must stay in."""


def resolve_inside(root: Path, candidate: str | os.PathLike[str]) -> Path:
    """Resolve ``candidate`` (relative to ``root`` unless absolute) and insist it stays inside.

    Symlinks are followed before the check, so a link pointing out of ``root`` is refused too.

    Raises
    ------
    UnsafePathError
        When the resolved path is not inside ``root``.
    """
    root = Path(root).resolve()
    path = Path(candidate)
    resolved = (path if path.is_absolute() else root / path).resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafePathError(f"path {str(candidate)!r} points outside the source folder {root}")
    return resolved


@dataclass
class ZipExtraction:
    """What :func:`safe_extract_zip` did: where files went and which members it refused."""

    root: Path
    n_extracted: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    posix = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path in ZIP member name (refused)"
    if ".." in posix.parts:
        return "'..' in ZIP member name would escape the extraction folder (refused)"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link in ZIP (refused)"
    if info.file_size > 1024**2 and info.compress_size and (
        info.file_size / info.compress_size > MAX_ZIP_RATIO
    ):
        return (
            f"compression ratio {info.file_size / info.compress_size:.0f}:1 exceeds "
            f"{MAX_ZIP_RATIO}:1 (possible zip bomb, refused)"
        )
    return None


def safe_extract_zip(zip_path: Path, out_dir: Path) -> ZipExtraction:
    """Extract ``zip_path`` into ``out_dir``, refusing hostile members one by one.

    Members with absolute paths, ``..`` components, symlinks or bomb-like compression ratios are
    skipped and listed in ``refused``; the rest are extracted. The archive as a whole is refused
    (``ValueError``) when it is not a ZIP, has more than ``MAX_ZIP_MEMBERS`` members or would
    expand past ``MAX_ZIP_TOTAL_BYTES``.
    """
    zip_path = Path(zip_path)
    out_dir = Path(out_dir)
    if not zipfile.is_zipfile(zip_path):
        raise ValueError(f"{zip_path}: not a ZIP archive")
    result = ZipExtraction(root=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path) as archive:
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise ValueError(f"{zip_path}: {len(members)} members exceeds the limit of {MAX_ZIP_MEMBERS}")
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_TOTAL_BYTES:
            raise ValueError(
                f"{zip_path}: would expand to {total / 1024**3:.1f} GiB, over the "
                f"{MAX_ZIP_TOTAL_BYTES / 1024**3:.0f} GiB limit"
            )
        for info in members:
            if info.is_dir():
                continue
            problem = _member_problem(info)
            if problem is None:
                try:
                    target = resolve_inside(out_dir, info.filename.replace("\\", "/"))
                except UnsafePathError as error:
                    problem = str(error)
            if problem is not None:
                result.refused.append((info.filename, problem))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, length=1024**2)
            result.n_extracted += 1
    return result
