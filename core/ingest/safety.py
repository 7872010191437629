"""Guards for untrusted input: paths that escape the source folder, hostile ZIP archives."""

from __future__ import annotations

import contextlib
import os
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# ZIP limits: generous for real studies, small enough that a zip bomb cannot fill the disk.
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_TOTAL_BYTES = 20 * 1024**3
# Archives inside the ZIP are reported per member and never unpacked (no recursion, no bombs).
NESTED_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar")
MAX_ZIP_RATIO = 100  # uncompressed / compressed, for the archive and for each member
# Below this size a member's own ratio is not judged (a small text file may compress 200:1);
# the archive's total ratio still counts it.
ZIP_RATIO_MIN_BYTES = 64 * 1024


@dataclass(frozen=True)
class ZipLimits:
    """What a ZIP may expand to before it is refused whole, with nothing written.

    max_members : most entries in the archive
    max_total_bytes : most bytes all members together may expand to
    max_ratio : most uncompressed / compressed, for the archive as a whole and for each member
        of at least ``ZIP_RATIO_MIN_BYTES`` (scans compress 1:1 to 10:1; zero-filled bombs 1000:1)
    """

    max_members: int = MAX_ZIP_MEMBERS
    max_total_bytes: int = MAX_ZIP_TOTAL_BYTES
    max_ratio: float = MAX_ZIP_RATIO

    def __post_init__(self) -> None:
        for name in ("max_members", "max_total_bytes", "max_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive number")


class ZipRefusedError(ValueError):
    """A ZIP refused as a whole (not a ZIP, too many members, would expand too far)."""


def printable_name(path: str | os.PathLike[str]) -> str:
    """``path`` as text that can be stored and shown: bytes that are not UTF-8 become ``\\xNN``."""
    raw = os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace")


def name_problem(path: str | os.PathLike[str]) -> str | None:
    """Why a file name cannot be ingested as it is, or None.

    A name whose bytes are not valid UTF-8 (Python keeps them as lone surrogates) cannot be
    written to a table or shown; it is reported with its bytes escaped instead.
    """
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return (f"file name is not valid UTF-8 ({printable_name(path)!r}); rename the file "
                "to ingest it")
    return None


class UnsafePathError(ValueError):
    """A path that points outside the folder it must stay in."""


def _first_link(root: Path, lexical: Path) -> Path | None:
    """The first component of ``lexical`` (below ``root``) that is a symbolic link, or None."""
    current = root
    for part in lexical.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def resolve_inside(root: Path, candidate: str | os.PathLike[str], *,
                   link_roots: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Resolve ``candidate`` (relative to ``root`` unless absolute) and insist it stays inside.

    The path must stay inside ``root`` as written (``..`` and absolute paths may not leave it).
    Symlinks are then followed: where they lead must be inside ``root`` too, or inside one of
    ``link_roots`` (the allowed data roots, ``core.roots.allowed_roots()``), so an ``images``
    folder that links to another allowed folder is followed while a link to anywhere else on
    the server is refused.

    Raises
    ------
    UnsafePathError
        When the path leaves ``root`` as written, or resolves outside ``root`` and every link
        root; for a link, the message names the link, its target and the data root that would
        allow it.
    """
    root = Path(root).resolve()
    path = Path(candidate)
    lexical = Path(os.path.normpath(path if path.is_absolute() else root / path))
    if lexical != root and root not in lexical.parents:
        raise UnsafePathError(f"path {str(candidate)!r} points outside the source folder {root}")
    resolved = lexical.resolve()
    allowed = [root, *(Path(r).resolve() for r in link_roots)]
    if any(resolved == r or r in resolved.parents for r in allowed):
        return resolved
    from core.roots import DATA_ROOTS_ENV, describe_roots

    link = _first_link(root, lexical)
    target = link.resolve() if link is not None else resolved
    through = f" through the link {link.relative_to(root).as_posix()} -> {target}" if link is not None else ""
    raise UnsafePathError(
        f"path {str(candidate)!r} leads{through} outside the source folder {root} and the allowed data "
        f"roots ({describe_roots(list(allowed[1:]))}); adding {target if target.is_dir() else target.parent} "
        f"to {DATA_ROOTS_ENV} would allow it")


@dataclass
class ZipExtraction:
    """What :func:`safe_extract_zip` did: where files went and which members it refused."""

    root: Path
    n_extracted: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)  # (member name, reason)


def _member_problem(info: zipfile.ZipInfo, limits: ZipLimits) -> str | None:
    name = info.filename
    posix = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path in ZIP member name (refused)"
    if ".." in posix.parts:
        return "'..' in ZIP member name would escape the extraction folder (refused)"
    if "\x00" in name:
        return "NUL byte in ZIP member name (refused)"
    if any(len(part.encode("utf-8", "surrogateescape")) > 255 for part in posix.parts):
        return "a ZIP member name part is longer than 255 bytes (refused)"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link in ZIP (refused)"
    if posix.name.lower().endswith(NESTED_ARCHIVE_SUFFIXES):
        return "nested archive not unpacked (upload the inner archive on its own)"
    return None


def _ratio(uncompressed: int, compressed: int) -> float:
    return uncompressed / max(compressed, 1)


def check_zip(zip_path: Path, limits: ZipLimits | None = None) -> list[zipfile.ZipInfo]:
    """Judge a ZIP from its central directory alone; returns its members.

    Raises
    ------
    ZipRefusedError
        Naming the archive and the reason: not a ZIP, more than ``max_members`` members,
        expanding past ``max_total_bytes``, an archive or member compression ratio over
        ``max_ratio`` (a zip bomb), or an encrypted member.
    """
    limits = limits or ZipLimits()
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise ZipRefusedError(f"{zip_path.name}: not a ZIP archive")
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
    except Exception as error:  # a hostile central directory raises many types
        raise ZipRefusedError(f"{zip_path.name}: unreadable ZIP archive "
                              f"({type(error).__name__}: {error})") from error
    if len(members) > limits.max_members:
        raise ZipRefusedError(f"{zip_path.name}: {len(members)} members exceeds the limit of "
                              f"{limits.max_members}")
    files = [m for m in members if not m.is_dir()]
    total = sum(m.file_size for m in files)
    compressed = sum(m.compress_size for m in files)
    if total > limits.max_total_bytes:
        raise ZipRefusedError(
            f"{zip_path.name}: would expand to {total:,} bytes, over the limit of "
            f"{limits.max_total_bytes:,} bytes (refused, nothing extracted)"
        )
    if total > ZIP_RATIO_MIN_BYTES and _ratio(total, compressed) > limits.max_ratio:
        raise ZipRefusedError(
            f"{zip_path.name}: {compressed:,} compressed bytes would expand to {total:,} "
            f"(ratio {_ratio(total, compressed):.0f}:1, over the limit of "
            f"{limits.max_ratio:g}:1; possible zip bomb, refused, nothing extracted)"
        )
    for info in files:
        if info.file_size > ZIP_RATIO_MIN_BYTES and _ratio(info.file_size, info.compress_size) > limits.max_ratio:
            raise ZipRefusedError(
                f"{zip_path.name}: member {info.filename!r} would expand "
                f"{_ratio(info.file_size, info.compress_size):.0f}:1, over the limit of "
                f"{limits.max_ratio:g}:1 (possible zip bomb, refused, nothing extracted)"
            )
        if info.flag_bits & 0x1:
            raise ZipRefusedError(f"{zip_path.name}: member {info.filename!r} is encrypted "
                                  "(refused)")
    return members


def safe_extract_zip(zip_path: Path, out_dir: Path, limits: ZipLimits | None = None) -> ZipExtraction:
    """Extract ``zip_path`` into ``out_dir``, refusing hostile members one by one.

    The archive is first judged whole by :func:`check_zip` (``ZipRefusedError``, nothing
    written). Members with absolute paths, ``..`` components or symlinks are then skipped and
    listed in ``refused``; the rest are extracted, each stopped at its declared size.
    """
    limits = limits or ZipLimits()
    zip_path = Path(zip_path)
    out_dir = Path(out_dir)
    members = check_zip(zip_path, limits)
    result = ZipExtraction(root=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(zip_path)
    except Exception as error:
        raise ZipRefusedError(f"{zip_path.name}: unreadable ZIP archive "
                              f"({type(error).__name__}: {error})") from error
    with archive:
        for info in members:
            if info.is_dir():
                continue
            problem = _member_problem(info, limits)
            if problem is None:
                try:
                    target = resolve_inside(out_dir, info.filename.replace("\\", "/"))
                except UnsafePathError as error:
                    problem = str(error)
            if problem is None and target == out_dir.resolve():
                problem = "empty ZIP member name (refused)"
            if problem is not None:
                result.refused.append((info.filename, problem))
                continue
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_dir():
                    raise IsADirectoryError(f"{target.name} is already a folder")
                with archive.open(info) as source, open(target, "wb") as sink:
                    _copy_bounded(source, sink, info.file_size)
            except Exception as error:  # CRC, zlib, size and I/O errors: this member only
                with contextlib.suppress(OSError):
                    target.unlink(missing_ok=True)
                result.refused.append((info.filename, f"cannot extract ({type(error).__name__}: {error})"))
                continue
            result.n_extracted += 1
    return result


def _copy_bounded(source, sink, declared: int) -> None:
    """Copy at most ``declared`` bytes: a member whose data inflates past its header's size is
    cut off and refused rather than trusted."""
    written = 0
    while chunk := source.read(1024**2):
        written += len(chunk)
        if written > declared:
            raise ValueError(f"member inflates past its declared {declared} bytes")
        sink.write(chunk)
