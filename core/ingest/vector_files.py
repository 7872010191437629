"""Vector files as they arrive: Parquet (a list/array column, or one numeric column per
dimension), ``.npy`` + an id list, ``.npz`` (ids and vectors inside, or + an id list) and CSV (an
id column and one column per dimension), opened for streaming in batches of ``BATCH_ROWS`` rows.

``open_vectors`` reads the ids and the dimension up front (duplicate or blank ids are refused
there) and returns batches lazily; a batch marks its ragged rows (wrong length, or no vector)
so the caller can report every bad row at once. Nothing here unpickles.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ID_COLUMNS = ("image_id", "id", "dicom_id", "sample_id")
VECTOR_COLUMNS = ("embedding", "embeddings", "vector", "vectors", "features", "x")
SUFFIXES = (".parquet", ".npy", ".npz", ".csv")
BATCH_ROWS = 4096
EXAMPLES = 5  # ids named in a message


class EmbeddingImportError(ValueError):
    """The vectors or the metadata cannot be imported; the message names the file, the reason,
    how many rows and a few example ids. Nothing was written."""



@dataclass
class _Vectors:
    """A vectors file opened for streaming: ids in row order, the dimension, and batches of
    shape (rows, dim) float32 in the same order (NaN for values that are missing)."""

    path: Path
    ids: np.ndarray
    dim: int
    batches: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]  # (vectors, ragged mask)


def _examples(values) -> str:
    values = [str(v) for v in values]
    shown = ", ".join(repr(v) for v in values[:EXAMPLES])
    return shown + (f" and {len(values) - EXAMPLES} more" if len(values) > EXAMPLES else "")


def _check_ids(ids: np.ndarray, where: str) -> None:
    blank = [i for i, v in enumerate(ids) if v is None or str(v).strip() == "" or str(v) == "nan"]
    if blank:
        raise EmbeddingImportError(f"{where}: {len(blank)} rows have no id (rows {_examples(blank)})")
    counts = pd.Series(ids).value_counts()
    repeated = counts[counts > 1]
    if len(repeated):
        raise EmbeddingImportError(
            f"{where}: {len(repeated)} ids appear more than once ({int(repeated.sum())} rows), e.g. "
            f"{_examples(repeated.index)}; every id must name one vector"
        )


def _pick(names: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, where: Path) -> str:
    if wanted is not None:
        if wanted not in names:
            raise EmbeddingImportError(f"{where}: no {what} column {wanted!r}; columns found: {names[:30]}")
        return wanted
    lowered = {n.lower(): n for n in names}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    raise EmbeddingImportError(
        f"{where}: cannot tell the {what} column (tried {list(candidates)}); columns found: {names[:30]}; "
        "name it with --id-column"
    )


def _read_id_list(path: Path) -> np.ndarray:
    """One id per line (a header line 'id' or 'image_id' is skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise EmbeddingImportError(f"{path}: cannot read the id list ({error})") from error
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[0].strip().lower() in ID_COLUMNS:
        lines = lines[1:]
    return np.array([line.strip() for line in lines], dtype=object)


def _none_ragged(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return batch, np.zeros(len(batch), dtype=bool)


def _open_numpy(path: Path, ids_path: Path | None) -> _Vectors:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            ids = None
        else:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                vector_key = next((n for n in names if n.lower() in VECTOR_COLUMNS), None)
                if vector_key is None:
                    two_d = [n for n in names if archive[n].ndim == 2]
                    if len(two_d) != 1:
                        raise EmbeddingImportError(
                            f"{path}: cannot tell which array holds the vectors (arrays: {names}); "
                            f"name it one of {list(VECTOR_COLUMNS)}")
                    vector_key = two_d[0]
                id_key = next((n for n in names if n.lower() in ("ids", *ID_COLUMNS)), None)
                array = archive[vector_key]
                ids = archive[id_key] if id_key is not None else None
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise EmbeddingImportError(
                f"{path}: holds Python objects (ragged rows or object ids), which are never unpickled; "
                "save a 2-D float array and ids as a string array") from error
        raise EmbeddingImportError(f"{path}: not a readable NumPy file ({error})") from error
    except OSError as error:
        raise EmbeddingImportError(f"{path}: cannot read ({error})") from error
    if array.ndim != 2:
        raise EmbeddingImportError(f"{path}: vectors must be a 2-D array (rows x dimensions), got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise EmbeddingImportError(f"{path}: vectors must be numbers, got dtype {array.dtype}")
    if ids_path is not None:
        ids = _read_id_list(ids_path)
        where = ids_path
    elif ids is None:
        raise EmbeddingImportError(f"{path}: no ids; give the id list (one id per line) with --ids")
    else:
        if ids.dtype.kind not in "USiu":
            raise EmbeddingImportError(f"{path}: ids must be strings or integers, got dtype {ids.dtype}")
        ids = ids.astype(str).astype(object)
        where = path
    if len(ids) != len(array):
        raise EmbeddingImportError(f"{where}: {len(ids)} ids for {len(array)} vectors in {path.name}; they must match row for row")

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(array), BATCH_ROWS):
            yield _none_ragged(np.asarray(array[start:start + BATCH_ROWS], dtype=np.float32))

    return _Vectors(path, ids, int(array.shape[1]), batches)


def _list_values(column, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch of an Arrow list column as (rows, dim) float32 and a mask of rows whose length is
    not ``dim`` (or that are null); those rows are NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    lengths = pc.fill_null(pc.list_value_length(column), -1).to_numpy(zero_copy_only=False)
    ragged = lengths != dim
    values = np.full((n, dim), np.nan, dtype=np.float32)
    if not ragged.any():
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.astype(np.float32, copy=False).reshape(n, dim), ragged
    for row in np.flatnonzero(~ragged):
        values[row] = np.asarray(column[int(row)].values.to_numpy(zero_copy_only=False), dtype=np.float32)
    return values, ragged


def _open_parquet(path: Path, id_column: str | None) -> _Vectors:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise EmbeddingImportError(f"{path}: not a readable Parquet file ({error})") from error
    schema = parquet.schema_arrow
    names = list(schema.names)
    id_name = _pick(names, id_column, ID_COLUMNS, "id", path)
    is_list = [n for n in names if n != id_name and (pa.types.is_list(schema.field(n).type)
               or pa.types.is_large_list(schema.field(n).type) or pa.types.is_fixed_size_list(schema.field(n).type))]
    ids = parquet.read(columns=[id_name]).column(0).to_pylist()
    ids = np.array([None if v is None else str(v) for v in ids], dtype=object)
    if is_list:
        vector_name = is_list[0] if len(is_list) == 1 else next((n for n in is_list if n.lower() in VECTOR_COLUMNS), None)
        if vector_name is None:
            raise EmbeddingImportError(f"{path}: several list columns {is_list}; name the vector column one of {list(VECTOR_COLUMNS)}")
        value_type = schema.field(vector_name).type.value_type
        if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
            raise EmbeddingImportError(f"{path}: column {vector_name!r} holds {value_type}, not numbers")
        first = next(parquet.iter_batches(batch_size=64, columns=[vector_name]), None)
        lengths = [] if first is None else [len(v) for v in first.column(0).to_pylist() if v is not None]
        if not lengths:
            raise EmbeddingImportError(f"{path}: column {vector_name!r} has no vectors")
        dim = max(set(lengths), key=lengths.count)  # the common length; others are ragged rows

        def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[vector_name]):
                yield _list_values(batch.column(0), dim)

        return _Vectors(path, ids, dim, batches)
    columns = [n for n in names if n != id_name]
    text = [n for n in columns if not (pa.types.is_floating(schema.field(n).type) or pa.types.is_integer(schema.field(n).type))]
    if text:
        raise EmbeddingImportError(
            f"{path}: one column per dimension expected, but {len(text)} columns are not numbers "
            f"({_examples(text)}); vectors must be numeric (or one list column)")
    if not columns:
        raise EmbeddingImportError(f"{path}: no vector columns besides the id column {id_name!r}")

    def column_batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            values = np.column_stack([c.to_numpy(zero_copy_only=False) for c in batch.columns]).astype(np.float32)
            yield _none_ragged(values)

    return _Vectors(path, ids, len(columns), column_batches)


def _open_csv(path: Path, id_column: str | None) -> _Vectors:
    try:
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise EmbeddingImportError(f"{path}: not a readable CSV ({error})") from error
    names = [str(c) for c in header.columns]
    id_name = _pick(names, id_column, ID_COLUMNS, "id", path)
    columns = [n for n in names if n != id_name]
    if not columns:
        raise EmbeddingImportError(f"{path}: no vector columns besides the id column {id_name!r}")
    try:
        ids = pd.read_csv(path, usecols=[id_name], dtype=str, keep_default_na=False, encoding="utf-8-sig")[id_name]
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise EmbeddingImportError(f"{path}: ragged or unreadable CSV ({error})") from error
    ids = ids.to_numpy(dtype=object)
    dtypes = {name: np.float32 for name in columns}

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        try:
            reader = pd.read_csv(path, usecols=columns, dtype=dtypes, chunksize=BATCH_ROWS, encoding="utf-8-sig")
            for chunk in reader:
                yield _none_ragged(chunk[columns].to_numpy(dtype=np.float32))
        except pd.errors.ParserError as error:
            raise EmbeddingImportError(f"{path}: ragged rows ({error})") from error
        except ValueError as error:
            raise EmbeddingImportError(f"{path}: non-numeric vector values ({error})") from error

    return _Vectors(path, ids, len(columns), batches)


def open_vectors(path: str | os.PathLike[str], *, id_column: str | None = None,
                 ids_path: str | os.PathLike[str] | None = None) -> _Vectors:
    """Open a vectors file for streaming (see the module docstring for the formats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such vectors file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise EmbeddingImportError(f"{path}: unknown vectors format {suffix!r}; use one of {list(SUFFIXES)}")
    if suffix in (".npy", ".npz"):
        vectors = _open_numpy(path, Path(ids_path) if ids_path else None)
    elif suffix == ".parquet":
        vectors = _open_parquet(path, id_column)
    else:
        vectors = _open_csv(path, id_column)
    if len(vectors.ids) == 0:
        raise EmbeddingImportError(f"{path}: no vectors")
    if vectors.dim < 1:
        raise EmbeddingImportError(f"{path}: vectors have no dimensions")
    _check_ids(vectors.ids, str(path))
    return vectors
