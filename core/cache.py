"""Content-addressed, crash-safe store of embedding vectors on local disk.

Layout::

    ROOT/<namespace>/namespace.json                      encoder, version, preprocess params, dim
    ROOT/<namespace>/chunk-<seq>-<uuid>.arrow            immutable shards (Arrow IPC files)

A vector's key is ``(image_id, encoder name + version, preprocess params)``. The last two pick
the *namespace*, ``namespace_key(encoder, version, preprocess)``: a readable slug plus a short
hash of the canonical JSON of all three, so changing any preprocessing parameter starts a new
namespace instead of silently mixing vectors. Inside a namespace the key is the ``image_id``
(``f"{sha256_of_file_bytes}-{frame}"``) or any other content-derived string, such as
``text_key(text)`` for text encoders.

Crash safety: a shard holds ``id`` (string) and ``vector`` (fixed-size list of float32) columns
and is never modified. It is written with ``core.atomic.atomic_write`` (a ``.tmp-<pid>-<uuid>-<name>`` file in the
same directory, fsynced, ``os.replace``d to its final name, directory fsynced); so a shard is
either wholly there or not there. There is no mutable index file that a crash could corrupt:
the set of shards *is* the manifest, and each process keeps its own in-memory index of
``id -> (shard, row)``, rebuilt from the shard listing when it changes. Temp files left by
a killed writer are ignored and deleted once their process is gone. A shard that cannot be read
(disk damage, a file copied in half) is skipped with a warning and removed by ``prune``.

The same id may sit in more than one shard (two processes computing the same image); vectors
are content-addressed, so any copy is right, and the newest shard wins. ``compact`` merges a
namespace's shards into one so that a cold read opens one file instead of hundreds.

Failures are never cached: only finite vectors can be stored (``put`` and the writer refuse NaN
rows), so an image that failed to decode or embed is simply missing and is retried next run.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from core.atomic import atomic_write, atomic_write_bytes

DEFAULT_ROOT = "cache/embeddings"
DEFAULT_CHUNK_SIZE = 256
META_FILE = "namespace.json"
# fmt: off
INFO_COLUMNS = ["namespace", "encoder", "version", "dim", "n_vectors", "n_shards",
                "n_unreadable", "bytes", "created"]
PRUNE_STATS = ["namespaces", "namespaces_removed", "shards_rewritten", "shards_deleted",
               "vectors_kept", "vectors_removed", "bytes_before", "bytes_after"]
# fmt: on

_SHARD_RE = re.compile(r"^chunk-(\d{20})-([0-9a-f]{8,32})\.arrow$")
_TMP_RE = re.compile(r"^\.tmp-(\d+)-[0-9a-f]+[-.].+$")
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A temp file this old is an orphan even if its pid has been reused by another process.
_TMP_MAX_AGE_S = 24 * 3600


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal params always hash equally.

    Raises ``ValueError`` when ``value`` holds something JSON cannot represent.
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"preprocess params must be plain JSON values, got {value!r}: {error}"
        ) from None


def namespace_key(encoder: str, version: str, preprocess: Mapping[str, Any]) -> str:
    """The namespace for vectors of ``encoder`` at ``version`` under ``preprocess`` params.

    Returns ``f"{slug}-{hash12}"``: the encoder name made path-safe, then 12 hex digits of the
    sha256 of the canonical JSON of encoder, version and params.
    """
    import hashlib

    payload = canonical_json(
        {"encoder": encoder, "version": version, "preprocess": dict(preprocess)}
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder).strip("._-")[:60] or "encoder"
    return f"{slug}-{digest}"


def text_key(text: str) -> str:
    """Cache key of a text for text encoders: ``"text-" + sha256(utf-8 bytes)``."""
    import hashlib

    return "text-" + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Shard:
    name: str
    ids: np.ndarray  # (n,) object array of str
    vectors: np.ndarray  # (n, dim) float32, a read-only view into the memory-mapped file


@dataclass
class _Index:
    names: tuple[str, ...]  # shard file names, oldest first
    shards: list[_Shard]
    ids: pd.Index  # unique ids
    shard_of: np.ndarray  # (n_unique,) int, position in .shards
    row_of: np.ndarray  # (n_unique,) int, row inside that shard
    dim: int


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _as_ids(image_ids: Iterable[str]) -> np.ndarray:
    ids = np.asarray(
        list(image_ids) if not isinstance(image_ids, np.ndarray) else image_ids, dtype=object
    )
    if ids.ndim != 1:
        raise ValueError(f"image_ids must be one-dimensional, got shape {ids.shape}")
    bad = [value for value in ids if not isinstance(value, str) or not value]
    if bad:
        raise ValueError(f"image_ids must be non-empty strings, got {bad[:3]!r}")
    return ids


def _check_vectors(ids: np.ndarray, vectors: Any) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"vectors must have shape (n_ids={len(ids)}, dim), got {vectors.shape}")
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        bad = ids[~finite][:3].tolist()
        raise ValueError(
            f"{int((~finite).sum())} vectors are not finite (e.g. ids {bad}); failures are not "
            "cached, leave them out so they are retried next run"
        )
    return vectors


class ChunkWriter:
    """Buffers vectors and writes one immutable shard every ``chunk_size`` vectors.

    Use as a context manager (or call ``close``); leaving the block, even by an exception,
    writes what is buffered, because those vectors were computed correctly. A killed process
    loses at most the vectors not yet flushed (fewer than ``chunk_size``).
    """

    def __init__(
        self, cache: EmbeddingCache, namespace: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ):
        if chunk_size < 1:
            raise ValueError(f"chunk_size={chunk_size} must be >= 1")
        self.cache = cache
        self.namespace = namespace
        self.chunk_size = chunk_size
        self.n_written = 0
        self.n_shards = 0
        self._ids: list[np.ndarray] = []
        self._vectors: list[np.ndarray] = []
        self._n_buffered = 0
        self._dim: int | None = None

    def add(self, image_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Queue ``vectors`` (shape ``(len(image_ids), dim)``, finite) for ``image_ids``."""
        ids = _as_ids(image_ids)
        if len(ids) == 0:
            return
        vectors = _check_vectors(ids, vectors)
        if self._dim is None:
            self.cache._check_dim(self.namespace, vectors.shape[1])
            self._dim = vectors.shape[1]
        elif vectors.shape[1] != self._dim:
            raise ValueError(
                f"vectors have dim {vectors.shape[1]}, earlier ones had dim {self._dim}"
            )
        self._ids.append(ids)
        self._vectors.append(vectors)
        self._n_buffered += len(ids)
        while self._n_buffered >= self.chunk_size:
            self._write(self.chunk_size)

    def flush(self) -> None:
        """Write everything buffered now, as one (possibly short) shard."""
        if self._n_buffered:
            self._write(self._n_buffered)

    def close(self) -> None:
        self.flush()

    def _write(self, n: int) -> None:
        ids = np.concatenate(self._ids)
        vectors = np.concatenate(self._vectors)
        self.cache._write_shard(self.namespace, ids[:n], vectors[:n])
        self._ids = [ids[n:]] if len(ids) > n else []
        self._vectors = [vectors[n:]] if len(ids) > n else []
        self._n_buffered = len(ids) - n
        self.n_written += n
        self.n_shards += 1

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class EmbeddingCache:
    """Embedding vectors on disk under ``root``, keyed by content; see the module docstring.

    Parameters
    ----------
    root : path, default "cache/embeddings"
        Directory holding one sub-directory per namespace; created on first write.
    chunk_size : int, default 256
        Vectors per shard for writers that do not give their own.

    Instances are cheap; the per-namespace index is built on first read and refreshed when
    another writer (this process or another) adds or removes shards. Thread-safe for reads.
    """

    def __init__(
        self, root: str | os.PathLike = DEFAULT_ROOT, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ):
        self.root = Path(root)
        self.chunk_size = chunk_size
        self._indexes: dict[str, _Index] = {}
        self._unreadable: dict[str, set[str]] = {}
        self._cleaned: set[str] = set()
        self._lock = threading.RLock()

    # -- namespaces ---------------------------------------------------------------------------
    def namespace(
        self, encoder: str, version: str, preprocess: Mapping[str, Any], *, dim: int | None = None
    ) -> str:
        """Return the namespace key for this encoder config, recording its config on disk.

        ``namespace.json`` (encoder, version, preprocess, dim, created) is written once,
        atomically, so ``info`` can say what each namespace holds.
        """
        key = namespace_key(encoder, version, preprocess)
        directory = self._dir(key)
        if not (directory / META_FILE).exists():
            directory.mkdir(parents=True, exist_ok=True)
            meta = {
                "namespace": key,
                "encoder": encoder,
                "version": version,
                "preprocess": json.loads(canonical_json(dict(preprocess))),
                "dim": dim,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            data = json.dumps(meta, indent=2, sort_keys=True).encode("utf-8")
            atomic_write_bytes(directory / META_FILE, data)
        return key

    def namespaces(self) -> list[str]:
        """Names of the namespace directories under ``root``, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and _NAMESPACE_RE.match(p.name)
        )

    def _dir(self, namespace: str) -> Path:
        if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
            raise ValueError(
                f"namespace {namespace!r} must be 1-128 letters, digits, '.', '_' or '-' "
                "(use EmbeddingCache.namespace(...) or namespace_key(...) to make one)"
            )
        return self.root / namespace

    def _meta(self, namespace: str) -> dict:
        try:
            return json.loads((self._dir(namespace) / META_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return {}

    # -- reading ------------------------------------------------------------------------------
    def get(self, namespace: str, image_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Look up vectors.

        Returns
        -------
        vectors : ndarray of shape (n_ids, dim), float32
            A fresh array; rows of ids not in the cache are NaN. ``dim`` is 0 when the
            namespace holds nothing and recorded no dim.
        hit : ndarray of shape (n_ids,), bool
        """
        ids = _as_ids(image_ids)
        index = self._index(namespace)
        if index is None:
            dim = int(self._meta(namespace).get("dim") or 0)
            out = np.empty((len(ids), dim), np.float32)
            out.fill(np.nan)
            return out, np.zeros(len(ids), bool)
        position = index.ids.get_indexer(ids) if len(ids) else np.zeros(0, np.intp)
        hit = position >= 0
        out = np.empty((len(ids), index.dim), np.float32)
        out[~hit] = np.nan
        where = np.flatnonzero(hit)
        shard = index.shard_of[position[where]]
        row = index.row_of[position[where]]
        if len(index.shards) == 1 and len(where) == len(ids):
            # The common case after compact(): one gather straight into the output.
            np.take(index.shards[0].vectors, row, axis=0, out=out)
            return out, hit
        order = np.argsort(shard, kind="stable")
        shard, row, where = shard[order], row[order], where[order]
        starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]]) if len(shard) else []
        stops = np.r_[starts[1:], len(shard)] if len(shard) else []
        for start, stop in zip(starts, stops, strict=True):
            out[where[start:stop]] = index.shards[shard[start]].vectors[row[start:stop]]
        return out, hit

    def contains(self, namespace: str, image_ids: Iterable[str]) -> np.ndarray:
        """Boolean mask of shape (n_ids,): which ids have a cached vector."""
        ids = _as_ids(image_ids)
        index = self._index(namespace)
        if index is None or not len(ids):
            return np.zeros(len(ids), bool)
        return index.ids.get_indexer(ids) >= 0

    def shard_count(self, namespace: str) -> int:
        """Number of shard files in ``namespace`` (0 when it does not exist)."""
        return len(self._shard_names(namespace))

    def _shard_names(self, namespace: str) -> tuple[str, ...]:
        directory = self._dir(namespace)
        try:
            names = [entry.name for entry in os.scandir(directory)]
        except FileNotFoundError:
            return ()
        if namespace not in self._cleaned:
            self._clean_temp(directory, names)
            self._cleaned.add(namespace)
        # Sorting by name sorts by sequence number (zero-padded), i.e. oldest first.
        return tuple(sorted(name for name in names if _SHARD_RE.match(name)))

    def _clean_temp(self, directory: Path, names: list[str]) -> None:
        now = time.time()
        for name in names:
            match = _TMP_RE.match(name)
            if not match:
                continue
            pid = int(match.group(1))
            path = directory / name
            try:
                old = now - path.stat().st_mtime > _TMP_MAX_AGE_S
            except FileNotFoundError:
                continue
            if pid != os.getpid() and (old or not _pid_alive(pid)):
                path.unlink(missing_ok=True)

    def _read_shard(self, path: Path) -> _Shard:
        table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        if table.schema.names != ["id", "vector"]:
            raise ValueError(f"columns {table.schema.names}, expected ['id', 'vector']")
        vector_type = table.schema.field("vector").type
        if not pa.types.is_fixed_size_list(vector_type) or vector_type.value_type != pa.float32():
            raise ValueError(
                f"vector column has type {vector_type}, expected fixed_size_list<float>"
            )
        column = table.column("vector")
        if column.num_chunks == 0:
            raise ValueError("shard holds no rows")
        # .values of the single chunk is zero-copy; combine_chunks/flatten would copy.
        chunk = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        dim = vector_type.list_size
        values = chunk.values.slice(chunk.offset * dim, len(chunk) * dim)
        vectors = values.to_numpy(zero_copy_only=True).reshape(len(chunk), dim)
        ids = table.column("id").to_numpy(zero_copy_only=False).astype(object)
        return _Shard(path.name, ids, vectors)

    def _index(self, namespace: str) -> _Index | None:
        with self._lock:
            names = self._shard_names(namespace)
            current = self._indexes.get(namespace)
            if current is not None and current.names == names:
                return current
            if not names:
                self._indexes.pop(namespace, None)
                return None
            known = {shard.name: shard for shard in current.shards} if current else {}
            unreadable = self._unreadable.setdefault(namespace, set())
            shards: list[_Shard] = []
            for name in names:
                if name in known:
                    shards.append(known[name])
                    continue
                if name in unreadable:
                    continue
                try:
                    shards.append(self._read_shard(self._dir(namespace) / name))
                except FileNotFoundError:
                    continue  # removed by a concurrent compact/prune after listing
                except (OSError, ValueError, pa.ArrowException) as error:
                    unreadable.add(name)
                    warnings.warn(
                        f"ignoring unreadable cache shard {namespace}/{name}: {error}", stacklevel=3
                    )
            dims = {shard.vectors.shape[1] for shard in shards}
            if len(dims) > 1:
                # Only possible if someone wrote into the namespace by hand: refuse to guess.
                raise ValueError(f"cache namespace {namespace} mixes vector dims {sorted(dims)}")
            if not shards:
                self._indexes.pop(namespace, None)
                return None
            all_ids = np.concatenate([shard.ids for shard in shards])
            shard_of = np.concatenate(
                [np.full(len(s.ids), i, np.int32) for i, s in enumerate(shards)]
            )
            row_of = np.concatenate([np.arange(len(s.ids), dtype=np.int64) for s in shards])
            keep = ~pd.Index(all_ids).duplicated(keep="last")  # newest shard wins
            index = _Index(
                names, shards, pd.Index(all_ids[keep]), shard_of[keep], row_of[keep], dims.pop()
            )
            self._indexes[namespace] = index
            return index

    # -- writing ------------------------------------------------------------------------------
    def writer(self, namespace: str, *, chunk_size: int | None = None) -> ChunkWriter:
        """A ``ChunkWriter`` into ``namespace`` flushing every ``chunk_size`` vectors."""
        self._dir(namespace)
        return ChunkWriter(self, namespace, chunk_size=chunk_size or self.chunk_size)

    def put(self, namespace: str, image_ids: Sequence[str], vectors: np.ndarray) -> int:
        """Store ``vectors`` (shape ``(n_ids, dim)``, finite float) for ``image_ids``.

        Ids already cached are left as they are (their vectors are content-addressed, so the
        same); duplicated ids keep their last vector. Returns the number of vectors written.
        Raises ``ValueError`` for NaN/inf rows, a shape mismatch or a dim that differs from the
        namespace's.
        """
        ids = _as_ids(image_ids)
        vectors = _check_vectors(ids, vectors)
        self._check_dim(namespace, vectors.shape[1])
        keep = ~pd.Index(ids).duplicated(keep="last") & ~self.contains(namespace, ids)
        if not keep.any():
            return 0
        self._write_shard(namespace, ids[keep], vectors[keep])
        return int(keep.sum())

    def _check_dim(self, namespace: str, dim: int) -> None:
        index = self._index(namespace)
        expected = index.dim if index is not None else self._meta(namespace).get("dim")
        if expected and dim != int(expected):
            raise ValueError(
                f"vectors have dim {dim} but namespace {namespace} holds dim {expected}"
            )

    def _write_shard(
        self, namespace: str, ids: np.ndarray, vectors: np.ndarray, *, seq: int | None = None
    ) -> Path:
        directory = self._dir(namespace)
        directory.mkdir(parents=True, exist_ok=True)
        dim = vectors.shape[1]
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1), pa.float32())
        table = pa.table(
            {
                "id": pa.array(ids.tolist(), pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
            }
        )

        def write(handle) -> None:
            with ipc.new_file(handle, table.schema) as sink:
                sink.write_table(table)

        name = (
            f"chunk-{seq if seq is not None else time.time_ns():020d}-{uuid.uuid4().hex[:12]}.arrow"
        )
        return atomic_write(directory / name, write)

    # -- maintenance --------------------------------------------------------------------------
    def compact(self, namespace: str) -> int:
        """Merge all readable shards of ``namespace`` into one (duplicates dropped).

        The merged shard is written atomically before the old ones are deleted; a crash in
        between leaves duplicates, which reads tolerate. Returns the number of shards merged
        (0 when there was at most one).
        """
        with self._lock:
            index = self._index(namespace)
            if index is None or len(index.shards) < 2:
                return 0
            vectors, _ = self.get(namespace, index.ids.to_numpy())
            newest_seq = int(_SHARD_RE.match(index.shards[-1].name).group(1))
            self._write_shard(namespace, index.ids.to_numpy(dtype=object), vectors, seq=newest_seq)
            for shard in index.shards:
                (self._dir(namespace) / shard.name).unlink(missing_ok=True)
            return len(index.shards)

    def info(self) -> pd.DataFrame:
        """One row per namespace.

        Columns: namespace, encoder, version, dim, n_vectors (distinct ids), n_shards,
        n_unreadable (shards skipped as corrupt), bytes (all files in the namespace), created.
        """
        rows = []
        for namespace in self.namespaces():
            meta = self._meta(namespace)
            index = self._index(namespace)
            directory = self._dir(namespace)
            size = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
            unreadable = self._unreadable.get(namespace, set()) & set(self._shard_names(namespace))
            rows.append(
                {
                    "namespace": namespace,
                    "encoder": meta.get("encoder"),
                    "version": meta.get("version"),
                    "dim": index.dim if index else meta.get("dim"),
                    "n_vectors": len(index.ids) if index else 0,
                    "n_shards": len(index.shards) if index else 0,
                    "n_unreadable": len(unreadable),
                    "bytes": size,
                    "created": meta.get("created"),
                }
            )
        return pd.DataFrame(rows, columns=INFO_COLUMNS)

    def prune(self, keep_image_ids: Iterable[str]) -> dict[str, int]:
        """Delete every vector whose id is not in ``keep_image_ids``, in every namespace.

        Shards that keep some rows are rewritten (new shard first, then the old one deleted,
        so a crash never loses kept vectors); shards that keep none, duplicates and unreadable
        shards are deleted; namespaces left empty are removed. For text encoders the ids are
        ``text_key(text)``, so pass those too.

        Returns counts: namespaces, namespaces_removed, shards_rewritten, shards_deleted,
        vectors_kept, vectors_removed, bytes_before, bytes_after.
        """
        keep = pd.Index(pd.unique(np.asarray(list(keep_image_ids), dtype=object)))
        stats = dict.fromkeys(PRUNE_STATS, 0)
        with self._lock:
            for namespace in self.namespaces():
                stats["namespaces"] += 1
                directory = self._dir(namespace)
                stats["bytes_before"] += sum(
                    p.stat().st_size for p in directory.iterdir() if p.is_file()
                )
                index = self._index(namespace)
                for name in self._unreadable.get(namespace, set()):
                    if (directory / name).exists():
                        (directory / name).unlink()
                        stats["shards_deleted"] += 1
                self._unreadable.pop(namespace, None)
                if index is not None:
                    self._prune_namespace(namespace, index, keep, stats)
                if not self._shard_names(namespace):
                    for path in directory.iterdir():
                        path.unlink()
                    directory.rmdir()
                    self._indexes.pop(namespace, None)
                    stats["namespaces_removed"] += 1
                else:
                    stats["bytes_after"] += sum(
                        p.stat().st_size for p in directory.iterdir() if p.is_file()
                    )
        return stats

    def _prune_namespace(
        self, namespace: str, index: _Index, keep: pd.Index, stats: dict[str, int]
    ) -> None:
        directory = self._dir(namespace)
        for number, shard in enumerate(index.shards):
            # A row survives if its id is kept and this shard holds the winning copy.
            winner = np.zeros(len(shard.ids), bool)
            winner[index.row_of[index.shard_of == number]] = True
            survives = winner & (keep.get_indexer(shard.ids) >= 0)
            stats["vectors_kept"] += int(survives.sum())
            stats["vectors_removed"] += int((~survives & (keep.get_indexer(shard.ids) < 0)).sum())
            if survives.all():
                continue
            if survives.any():
                seq = int(_SHARD_RE.match(shard.name).group(1))
                self._write_shard(
                    namespace, shard.ids[survives], np.asarray(shard.vectors[survives]), seq=seq
                )
                stats["shards_rewritten"] += 1
            else:
                stats["shards_deleted"] += 1
            (directory / shard.name).unlink(missing_ok=True)
