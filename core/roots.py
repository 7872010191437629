"""Which server folders the app may read, and the one safe way to delete a folder.

A path typed into the browser is hostile. The app reads only inside *allowed roots*:

* the folders an administrator lists in ``SCANATLAS_DATA_ROOTS`` (``os.pathsep``-separated,
  e.g. ``/srv/pacs-export:/data/xray``); **none by default**, in single-user and multi-user mode
  alike: a server folder is open to the app only when someone who runs the server said so;
* the synthetic demo cohort (``cache/demo-cohort``);
* the user's own upload staging area (``cache/uploads/<user key>``), never another user's.

Every path is resolved (``~``, ``..`` and symlinks) *before* it is compared with the roots, so
a symlink inside a root that points outside it is refused too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from core.settings import cache_root

__all__ = [
    "DATA_ROOTS_ENV",
    "OutsideRootsError",
    "allowed_roots",
    "configured_roots",
    "describe_roots",
    "is_inside",
    "links_outside",
    "remove_tree_inside",
    "resolve_inside",
    "user_key",
    "user_staging_root",
]

DATA_ROOTS_ENV = "SCANATLAS_DATA_ROOTS"


class OutsideRootsError(ValueError):
    """A path outside every folder the app may read (or delete in)."""


def user_key(user_id: str) -> str:
    """A folder-safe, stable key for ``user_id`` (sha256, 20 hex digits).

    A user id may hold any character (an e-mail address, ``../x``); its hash never does.
    Raises ``ValueError`` for an empty id.
    """
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(f"user_id={user_id!r} must be a non-empty string")
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:20]


def user_staging_root(user_id: str) -> Path:
    """``cache/uploads/<user key>``: where ``user_id``'s uploads are staged (may not exist yet)."""
    return cache_root() / "uploads" / user_key(user_id)


def configured_roots() -> list[Path]:
    """The folders listed in ``SCANATLAS_DATA_ROOTS``, resolved; empty entries are ignored."""
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    return [Path(entry.strip()).expanduser().resolve() for entry in raw.split(os.pathsep) if entry.strip()]


def allowed_roots(user_id: str | None = None) -> list[Path]:
    """Folders the app may read for ``user_id``: configured roots, the demo cohort and (with a
    user) that user's staging area. All resolved."""
    roots = [*configured_roots(), (cache_root() / "demo-cohort").resolve()]
    if user_id is not None:
        roots.append(user_staging_root(user_id).resolve())
    return list(dict.fromkeys(roots))


def describe_roots(roots: list[Path]) -> str:
    """The roots as one line for a message."""
    return ", ".join(str(r) for r in roots) if roots else "(none)"


def is_inside(path: Path, root: Path) -> bool:
    """True when resolved ``path`` is ``root`` or below it (both must already be resolved)."""
    return path == root or root in path.parents


def resolve_inside(path: str | os.PathLike[str], roots: list[Path]) -> Path:
    """``path`` resolved (``~``, ``..``, symlinks), provided it lies inside one of ``roots``.

    Raises
    ------
    OutsideRootsError (a ValueError)
        When the resolved path is outside every root; the message names the allowed roots and
        how to add one. An empty ``path`` is refused the same way.
    """
    text = os.fspath(path)
    if not str(text).strip() or "\x00" in str(text):
        raise OutsideRootsError(f"{text!r} is not a path; folders the app may read: {describe_roots(roots)}")
    resolved = Path(text).expanduser().resolve()
    resolved_roots = [Path(r).resolve() for r in roots]
    if not any(is_inside(resolved, root) for root in resolved_roots):
        raise OutsideRootsError(
            f"{text} is outside the folders the app may read ({describe_roots(resolved_roots)}). "
            f"An administrator can add server folders with {DATA_ROOTS_ENV}."
        )
    return resolved


def links_outside(folder: Path, roots: list[Path], *, limit: int = 5) -> list[Path]:
    """Symlinks below ``folder`` whose targets resolve outside every root (at most ``limit``).

    Checking the folder itself is not enough: a link inside an allowed folder can point at
    any file on the server, and ingest would read it. Folders are walked without following links.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    resolved_roots = [Path(r).resolve() for r in roots]
    found: list[Path] = []
    for directory, subdirs, files in os.walk(folder, followlinks=False):
        for entry in (*subdirs, *files):
            path = Path(directory) / entry
            if path.is_symlink() and not any(is_inside(path.resolve(), root) for root in resolved_roots):
                found.append(path)
                if len(found) >= limit:
                    return found
    return found


def remove_tree_inside(path: Path, root: Path) -> bool:
    """Delete the folder ``path`` when it lies strictly below ``root``; the only way core deletes
    a user's folder.

    ``path`` itself must not be a symlink (``rmtree`` would follow nothing, but the check makes
    the rule plain) and, resolved, must be a descendant of resolved ``root`` (never ``root``
    itself). Returns False when there was nothing to delete.

    Raises ``OutsideRootsError`` for anything else, before touching the disk.
    """
    path, root = Path(path), Path(root).resolve()
    if path.is_symlink():
        raise OutsideRootsError(f"refusing to delete {path}: it is a symbolic link")
    resolved = path.resolve()
    if resolved == root or root not in resolved.parents:
        raise OutsideRootsError(f"refusing to delete {path}: not inside {root}")
    if not resolved.exists():
        return False
    shutil.rmtree(resolved)
    return True
