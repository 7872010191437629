"""The one way ScanAtlas writes a file that must never be seen half-written.

Protocol: write to a temporary file in the destination folder, flush and ``fsync`` it, rename it
over the final name with ``os.replace`` (atomic on POSIX and Windows), then ``fsync`` the folder
so that the rename itself survives a power cut. A reader sees the old file or the new one, never
a mix; a crash leaves at most a ``.tmp-*`` file, which readers ignore and cleaners remove.

Every module that persists results (the embedding cache, ingest, the run store, the demo
cohort) calls :func:`atomic_write`; tests check the protocol through :data:`fault_hook`.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TEMP_PREFIX = ".tmp-"

# Test seam: called as ``fault_hook(stage, temp_path)`` with stage "written" (data written,
# not yet fsynced), "synced" (fsynced, not yet renamed) and "renamed". A test can raise or kill
# the process at any stage and check that no partial file is ever visible under the final name.
fault_hook: Callable[[str, Path], None] | None = None


def _hook(stage: str, path: Path) -> None:
    if fault_hook is not None:
        fault_hook(stage, path)


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    """A unique temporary name beside ``path`` (same folder, so the rename stays atomic)."""
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}-{path.name}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` atomically: ``write(handle)`` fills a binary temp file, then fsync + rename.

    ``write`` receives a binary file object (``np.save``, ``DataFrame.to_parquet`` and
    ``DataFrame.to_csv`` all accept one). The parent folder is created if needed. On any error
    the temp file is removed and the previous content of ``path`` (if any) is untouched.
    Returns the final path.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            _hook("written", tmp)
            os.fsync(handle.fileno())
        _hook("synced", tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    _hook("renamed", final)
    return final


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`atomic_write` of a bytes value."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text value."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def is_temp(path: Path) -> bool:
    """True for a temp file left by an interrupted :func:`atomic_write`."""
    return path.name.startswith(TEMP_PREFIX)


@contextmanager
def atomic_folder(path: str | os.PathLike[str], *, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Build a whole folder and put it at ``path`` only when every file is written.

    Yields a new empty temp folder beside ``path`` (``.tmp-...``, ignored by readers); fill it
    (with :func:`atomic_write`). When the block ends without error the temp folder is renamed to
    ``path`` (one atomic rename when ``path`` does not exist; otherwise the old folder is renamed
    aside first and removed after, so ``path`` is never a mix of old and new files). Files named
    in ``keep`` (e.g. ``owner.json``) are carried over from the old folder. On any error the temp
    folder is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(final)
    temp.mkdir()
    old = None
    try:
        yield temp
        if final.exists():
            for name in keep:
                if (final / name).is_file() and not (temp / name).exists():
                    shutil.copy2(final / name, temp / name)
            old = temp_name(final)
            os.replace(final, old)
        _hook("synced", temp)
        os.replace(temp, final)
        fsync_dir(final.parent)
        _hook("renamed", final)
    except BaseException:
        if old is not None and not final.exists():
            os.replace(old, final)  # the new folder never arrived: the old one goes back
        shutil.rmtree(temp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
