"""One store for every expensive result: named runs, in the spirit of FiftyOne's brain runs.

A run has a *kind* (``projection``, ``clustering``, ``k-sweep``, ``cluster-drivers``,
``drift-study``, ``classifier-study``, ``explanation``, ``audit``, ``duplicate-merge``...), a
*key* derived from its inputs, its config and the code version of that kind, the config itself,
a created time and its files::

    ROOT/<kind>/<key>/run.json        kind, key, version, config, inputs, dataset, created, files
    ROOT/<kind>/<key>/<name>.npy      arrays (allow_pickle=False)
    ROOT/<kind>/<key>/<name>.parquet  tables
    ROOT/<kind>/<key>/<name>.json     JSON values
    ROOT/<kind>/<key>/<name>.bin      opaque bytes (e.g. a skops model file)

Every file is written with :func:`core.atomic.atomic_write`; ``run.json`` is written last and is
the commit marker, so a run is listed and loaded only once all of its files are on disk. Nothing
here unpickles: arrays load with ``allow_pickle=False``, tables through Arrow, values as JSON.

Keys are ``f"{kind}-{hash}"`` (unique across kinds; clusterings keep their historical
``f"{algorithm}-{hash}"`` form because label mappings are saved under it), checked against a
strict pattern before any path is built from them, so a key that arrives from a URL or a command
line cannot leave the store.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import atomic_write, atomic_write_text, is_temp

RUN_FILE = "run.json"
# Kinds whose keys keep an older form instead of "<kind>-<hash>": label mappings are saved under
# clustering keys ("kmeans-<hash>"), so those never change.
FREE_FORM_KEY_KINDS = frozenset({"clustering"})
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}-[0-9a-f]{8,64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
_EXTENSIONS = (".npy", ".parquet", ".json", ".bin")


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples -> lists, numpy scalars -> Python, 5.0 -> 5)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, Path):
        return str(value)
    raise ValueError(f"{value!r} ({type(value).__name__}) cannot be part of a run config")


def run_key(kind: str, *, inputs: Mapping[str, Any], config: Mapping[str, Any], version: str | int) -> str:
    """The key of a run: ``f"{kind}-{sha256[:20]}"`` over inputs, config and code version.

    ``inputs`` names what the run was computed from (dataset token, embedding or cohort key,
    clustering key); ``config`` its parameters, defaults filled in so that spelling a default
    out gives the same key. Raises ValueError for a bad kind or a value that is not JSON.
    """
    check_kind(kind)
    payload = json.dumps(
        {"kind": kind, "inputs": _jsonable(dict(inputs)), "config": _jsonable(dict(config)),
         "version": str(version)},
        sort_keys=True,
    )
    return f"{kind}-{hashlib.sha256(payload.encode()).hexdigest()[:20]}"


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _NAME_RE.match(kind):
        raise ValueError(f"run kind {kind!r} must be lower-case letters, digits, '-' or '_'")
    return kind


def check_key(key: str) -> str:
    """Return ``key`` if it is a well-formed run key, else raise ValueError (never a path)."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"{key!r} is not a run key (expected KIND-HEX, e.g. projection-3f2a...)")
    return key


def _check_file_name(name: str) -> str:
    if not isinstance(name, str) or not _FILE_RE.match(name) or name == RUN_FILE:
        raise ValueError(f"run file name {name!r} must be letters, digits, '.', '_' or '-'")
    return name


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Run:
    """A stored run. ``files`` maps each payload name to its file name inside ``folder``."""

    kind: str
    key: str
    version: str
    config: dict[str, Any]
    inputs: dict[str, Any]
    created: str
    folder: Path
    dataset: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.files

    def path(self, name: str) -> Path:
        """The file behind payload ``name`` (KeyError naming the run when it has none)."""
        if name not in self.files:
            raise KeyError(f"run {self.key} has no {name!r}; it has {sorted(self.files)}")
        return self.folder / self.files[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.load(name) if name in self.files else default

    def load(self, name: str) -> Any:
        """Payload ``name`` as it was saved: ndarray, DataFrame, JSON value or bytes."""
        path = self.path(name)
        suffix = path.suffix
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        return path.read_bytes()

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)


def _encode(value: Any) -> tuple[str, Callable[[Any], Any]]:
    """(extension, writer(handle)) for one payload value."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError("object arrays cannot be stored (they would need pickle); use a DataFrame")
        return ".npy", lambda handle: np.save(handle, value, allow_pickle=False)
    if isinstance(value, pd.DataFrame):
        frame = value.copy()
        frame.columns = [str(c) for c in frame.columns]
        for column in [c for c in frame.columns if frame[c].dtype == object]:
            # Parquet needs one type per column: a mix (e.g. 3 and "3") is stored as text.
            present = frame[column].dropna()
            if present.map(type).nunique() > 1:
                frame[column] = frame[column].map(lambda v: v if v is None or v != v else str(v))
        return ".parquet", lambda handle: frame.to_parquet(handle, index=False)
    if isinstance(value, bytes | bytearray):
        return ".bin", lambda handle: handle.write(bytes(value))
    text = json.dumps(_jsonable(value), indent=1, allow_nan=False)
    return ".json", lambda handle: handle.write(text.encode("utf-8"))


class RunStore:
    """Named runs under ``root`` (default ``core.settings.runs_root()``). Thread- and
    process-safe for readers; two writers of the same key write the same content."""

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from core.settings import runs_root

            root = runs_root()
        self.root = Path(root)

    def _folder(self, kind: str, key: str) -> Path:
        check_kind(kind)
        check_key(key)
        if kind not in FREE_FORM_KEY_KINDS and not key.startswith(f"{kind}-"):
            raise ValueError(f"run key {key!r} does not belong to kind {kind!r}")
        return self.root / kind / key

    def save(
        self,
        kind: str,
        key: str,
        *,
        version: str | int,
        config: Mapping[str, Any],
        payload: Mapping[str, Any],
        inputs: Mapping[str, Any] | None = None,
        dataset: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> Run:
        """Store ``payload`` (name -> ndarray | DataFrame | bytes | JSON value) as run ``key``.

        ``summary`` holds a few small values shown by ``scanatlas runs list``. Any earlier run
        under the same key is replaced; ``run.json`` is written last.
        """
        folder = self._folder(kind, key)
        encoded = {_check_file_name(name): _encode(value) for name, value in payload.items()}
        folder.mkdir(parents=True, exist_ok=True)
        # Resolved and checked before anything is written or removed (as in ``delete``): a run
        # folder that is a link out of the store is refused, never cleaned.
        folder = self._checked_folder(folder)
        (folder / RUN_FILE).unlink(missing_ok=True)  # the old run stops being visible first
        files: dict[str, str] = {}
        for name, (extension, writer) in encoded.items():
            atomic_write(folder / f"{name}{extension}", writer)
            files[name] = f"{name}{extension}"
        for stale in folder.iterdir():
            if stale.name in files.values() or stale.name == RUN_FILE:
                continue
            if stale.is_symlink() or stale.is_file():
                stale.unlink(missing_ok=True)  # a link is removed itself, never what it points to
            elif stale.resolve().parent == folder:
                shutil.rmtree(stale, ignore_errors=True)
        record = {
            "kind": kind,
            "key": key,
            "version": str(version),
            "config": _jsonable(dict(config)),
            "inputs": _jsonable(dict(inputs or {})),
            "dataset": dataset,
            "created": now_iso(),
            "summary": _jsonable(dict(summary or {})),
            "files": files,
        }
        atomic_write_text(folder / RUN_FILE, json.dumps(record, indent=1))
        return self._from_record(record, folder)

    @staticmethod
    def _from_record(record: Mapping[str, Any], folder: Path) -> Run:
        return Run(
            kind=record["kind"], key=record["key"], version=str(record["version"]),
            config=dict(record.get("config") or {}), inputs=dict(record.get("inputs") or {}),
            created=record["created"], folder=folder, dataset=record.get("dataset"),
            summary=dict(record.get("summary") or {}), files=dict(record.get("files") or {}),
        )

    def _read(self, folder: Path) -> Run | None:
        try:
            record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
            run = self._from_record(record, folder)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, half-deleted or damaged: a miss, recomputed and overwritten
        if any(not (folder / name).is_file() for name in run.files.values()):
            return None
        return run

    def load(self, kind: str, key: str, *, version: str | int | None = None) -> Run | None:
        """The run ``key`` of ``kind``, or None when absent, incomplete or (when ``version`` is
        given) written by another code version."""
        run = self._read(self._folder(kind, key))
        if run is None or (version is not None and run.version != str(version)):
            return None
        return run

    def find(self, key: str) -> Run | None:
        """The run ``key`` whatever its kind."""
        check_key(key)
        for kind_dir in self._kind_dirs():
            run = self._read(kind_dir / key)
            if run is not None:
                return run
        return None

    def _kind_dirs(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and _NAME_RE.match(p.name))

    def runs(self, *, kind: str | None = None, dataset: str | None = None) -> list[Run]:
        """Stored runs, newest first, optionally of one kind and/or one dataset."""
        found: list[Run] = []
        for kind_dir in self._kind_dirs():
            if kind is not None and kind_dir.name != kind:
                continue
            for folder in kind_dir.iterdir():
                if not folder.is_dir() or is_temp(folder) or not _KEY_RE.match(folder.name):
                    continue
                run = self._read(folder)
                if run is not None and (dataset is None or run.dataset == dataset):
                    found.append(run)
        return sorted(found, key=lambda r: (r.created, r.key), reverse=True)

    def list(self, *, kind: str | None = None, dataset: str | None = None) -> pd.DataFrame:
        """One row per run: key, kind, dataset, created, version, summary (JSON), n_files."""
        rows = [
            {"key": r.key, "kind": r.kind, "dataset": r.dataset, "created": r.created,
             "version": r.version, "summary": json.dumps(r.summary, sort_keys=True),
             "n_files": len(r.files)}
            for r in self.runs(kind=kind, dataset=dataset)
        ]
        return pd.DataFrame(rows, columns=["key", "kind", "dataset", "created", "version", "summary", "n_files"])

    def _checked_folder(self, folder: Path) -> Path:
        """``folder`` resolved (links, ``..``), checked to be a run folder ``root/kind/key``."""
        resolved, root = folder.resolve(), self.root.resolve()
        if resolved.parent.parent != root:
            raise ValueError(f"refusing to change {resolved}: not a run folder of {root}")
        return resolved

    def delete(self, key: str) -> bool:
        """Remove run ``key``; True when it existed. The folder is resolved and checked to lie
        inside the store before anything is removed."""
        run = self.find(key)
        if run is None:
            return False
        folder = self._checked_folder(run.folder)
        (folder / RUN_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def compute_or_load(
        self,
        kind: str,
        key: str,
        *,
        version: str | int,
        compute: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]],
        config: Mapping[str, Any],
        inputs: Mapping[str, Any] | None = None,
        dataset: str | None = None,
        summary: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> tuple[Run, bool]:
        """Load run ``key`` or compute it: ``compute()`` returns ``(payload, extra_summary)``.

        Returns ``(run, from_store)``.
        """
        stored = self.load(kind, key, version=version)
        if stored is not None:
            return stored, True
        payload, extra = compute()
        run = self.save(kind, key, version=version, config=config, payload=payload, inputs=inputs,
                        dataset=dataset, summary={**(summary(payload) if summary else {}), **dict(extra)})
        return run, False


def describe(run: Run) -> str:
    """A one-line description of a run for pickers: "clustering · kmeans k=4 · 10:42"."""
    when = run.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
    parts = [f"{k}={v}" for k, v in list(run.summary.items())[:4]]
    return " · ".join([run.kind, *parts, when])
