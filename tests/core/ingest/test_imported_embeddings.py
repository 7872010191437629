"""Imported embeddings (core.ingest.imported): every format, every bad input refused with a clear
message and nothing written, a 50k x 1376 float32 file, and a round trip of the demo cohort's own
vectors (same clusters as the original)."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score

from core.embed import embed_dataset
from core.ingest import load_dataset
from core.ingest.imported import (
    EmbeddingImportError,
    has_images,
    import_embeddings,
    imported_encoders,
)

N, DIM = 60, 8


def _ids(n: int = N) -> list[str]:
    return [f"scan-{i:05d}" for i in range(n)]


def _metadata(folder: Path, ids: list[str], **extra) -> Path:
    frame = pd.DataFrame({
        "image_id": ids, "PatientID": [f"p{i // 2}" for i in range(len(ids))],
        "Gender": ["M", "F", "F"] * (len(ids) // 3) + ["M"] * (len(ids) % 3),
        "age": [20 + i % 60 for i in range(len(ids))], "finding": ["a", "b"] * (len(ids) // 2) + ["a"] * (len(ids) % 2),
        "view": ["PA", "AP", "L"] * (len(ids) // 3) + ["PA"] * (len(ids) % 3), **extra,
    })
    path = folder / "metadata.csv"
    frame.to_csv(path, index=False)
    return path


def _vectors(n: int = N, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32)


def _list_parquet(path: Path, ids, rows) -> Path:
    table = pa.table({"image_id": ids, "embedding": pa.array([list(map(float, r)) if r is not None else None for r in rows],
                                                             type=pa.list_(pa.float32()))})
    pq.write_table(table, path)
    return path


def _nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.fixture
def files(tmp_path: Path):
    return tmp_path, _metadata(tmp_path, _ids()), _vectors()


def test_parquet_list_column_opens_like_an_ingested_dataset(files):
    folder, _, vectors = files
    notes = ["Fever 38Â°C, cafÃ© worker", "plain & simple", *["clear"] * (N - 2)]  # mojibake is repaired
    metadata = _metadata(folder, _ids(), Report=notes)
    _list_parquet(folder / "v.parquet", _ids(), vectors)
    result = import_embeddings(folder / "v.parquet", metadata, folder / "out", encoder="cxr-test", dataset_roots=[folder])
    assert (result.n_vectors, result.dim, result.encoder) == (N, DIM, "cxr-test")
    dataset = load_dataset(folder / "out")
    assert dataset.images["image_id"].tolist() == _ids()
    assert dataset.images["path"].isna().all() and not has_images(dataset)
    assert dataset.images["patient_id"].tolist()[:3] == ["p0", "p0", "p1"]  # PatientID -> patient_id
    assert set(dataset.images["sex"]) == {"M", "F"} and dataset.images["label"].iloc[1] == "b"
    assert len(dataset.patients) == N // 2
    assert dataset.images["text"].tolist()[:3] == ["Fever 38°C, café worker", "plain & simple", "clear"]
    assert imported_encoders(dataset)["cxr-test"]["dim"] == DIM
    embedded = embed_dataset(dataset, "cxr-test")
    np.testing.assert_array_equal(embedded.vectors, vectors)
    assert embedded.n_cached == N and embedded.n_computed == 0 and embedded.key.startswith("cxr-test-imported-")
    with pytest.raises(ValueError, match="no images, only imported vectors"):
        embed_dataset(dataset, "efficientnet-lite0")


def test_parquet_one_column_per_dimension_npy_npz_and_csv_give_the_same_vectors(files):
    folder, metadata, vectors = files
    ids = _ids()
    wide = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(DIM)]).assign(id=ids)
    wide.to_parquet(folder / "wide.parquet", index=False)
    wide.to_csv(folder / "wide.csv", index=False)
    np.save(folder / "v.npy", vectors)
    (folder / "ids.txt").write_text("\n".join(ids) + "\n")
    np.savez(folder / "v.npz", ids=np.array(ids), vectors=vectors)
    cases = {"wide.parquet": {"id_column": "id"}, "wide.csv": {"id_column": "id"},
             "v.npy": {"ids_path": folder / "ids.txt"}, "v.npz": {}}
    meta = pd.read_csv(metadata).rename(columns={"image_id": "id"})
    meta.to_csv(folder / "meta_id.csv", index=False)
    for i, (name, options) in enumerate(cases.items()):
        csv = folder / "meta_id.csv" if "id_column" in options else metadata
        result = import_embeddings(folder / name, csv, folder / f"out{i}", encoder="same", dataset_roots=[folder], **options)
        loaded = embed_dataset(load_dataset(result.dataset.root), "same").vectors
        np.testing.assert_allclose(loaded, vectors, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("problem, message", [
    ("ragged", r"2 rows are ragged .*'scan-00003', 'scan-00007'"),
    ("nan", r"2 rows hold NaN, infinite or missing values, e\.g\. ids 'scan-00004', 'scan-00009'"),
    ("duplicate", r"1 ids appear more than once \(2 rows\), e\.g\. 'scan-00001'"),
    ("missing_metadata", r"3 of 60 vector ids have no metadata row .*every metadata row has a vector"),
    ("missing_vectors", r"every vector has a metadata row; 5 of 65 metadata rows have no vector"),
    ("non_numeric", r"column 'embedding' holds string, not numbers"),
    ("dimension", r"vectors under encoder name 'dimtest' have 8 dimensions \(dataset first\); these have 6"),
    ("builtin", r"'efficientnet-lite0' is the built-in 1280-dimensional encoder; these vectors have 8"),
    ("bad_name", r"encoder name '\.\./x' is not allowed"),
    ("metadata_duplicate", r"metadata\.csv: 1 ids appear more than once"),
])
def test_bad_input_is_refused_with_counts_and_nothing_is_written(tmp_path: Path, problem: str, message: str):
    ids, vectors = _ids(), _vectors()
    rows: list = list(vectors)
    metadata_ids, encoder = ids, "cxr-test"
    if problem == "ragged":
        rows[3], rows[7] = vectors[3][:5], None
    elif problem == "nan":
        rows[4] = np.where(np.arange(DIM) == 2, np.nan, vectors[4])
        rows[9] = np.where(np.arange(DIM) == 0, np.inf, vectors[9])
    elif problem == "duplicate":
        ids = [*ids[:2], ids[1], *ids[3:]]
    elif problem == "missing_metadata":
        metadata_ids = ids[3:]
    elif problem == "missing_vectors":
        metadata_ids = _ids(65)
    elif problem == "dimension":
        _list_parquet(tmp_path / "first.parquet", ids, vectors)
        import_embeddings(tmp_path / "first.parquet", _metadata(tmp_path, ids), tmp_path / "first", encoder="dimtest",
                          dataset_roots=[tmp_path])
        rows, encoder = [r[:6] for r in vectors], "dimtest"
    elif problem == "builtin":
        encoder = "efficientnet-lite0"
    elif problem == "bad_name":
        encoder = "../x"
    elif problem == "metadata_duplicate":
        metadata_ids = [*ids[:-1], ids[0]]
    if problem == "non_numeric":
        pq.write_table(pa.table({"image_id": ids, "embedding": [["a", "b"]] * N}), tmp_path / "v.parquet")
    else:
        _list_parquet(tmp_path / "v.parquet", ids, rows)
    metadata = _metadata(tmp_path, metadata_ids)
    out = tmp_path / "out"
    with pytest.raises(EmbeddingImportError, match=message):
        import_embeddings(tmp_path / "v.parquet", metadata, out, encoder=encoder, dataset_roots=[tmp_path])
    _nothing_written(tmp_path, out)


def test_unmatched_ids_can_be_imported_and_are_reported(tmp_path: Path):
    ids = _ids()
    _list_parquet(tmp_path / "v.parquet", ids, _vectors())
    metadata = _metadata(tmp_path, [*ids[2:], "scan-99999"])
    result = import_embeddings(tmp_path / "v.parquet", metadata, tmp_path / "out", encoder="x", allow_unmatched=True,
                               dataset_roots=[tmp_path])
    report = load_dataset(tmp_path / "out").report
    assert len(report) == 3 and set(report["status"]) == {"unmatched_metadata"}
    assert "2 of 60 vector ids have no metadata row" in result.warnings[0]
    unmatched = result.dataset.images.set_index("image_id").loc["scan-00000"]
    assert unmatched["patient_id"] == "scan-00000" and unmatched["sex"] == "unknown"


def test_npy_without_ids_and_pickled_npz_are_refused(tmp_path: Path):
    metadata = _metadata(tmp_path, _ids())
    np.save(tmp_path / "v.npy", _vectors())
    with pytest.raises(EmbeddingImportError, match="no ids; give the id list"):
        import_embeddings(tmp_path / "v.npy", metadata, tmp_path / "out", encoder="x", dataset_roots=[tmp_path])
    np.savez(tmp_path / "o.npz", ids=np.array(_ids(), dtype=object), vectors=_vectors())
    with pytest.raises(EmbeddingImportError, match="never unpickled"):
        import_embeddings(tmp_path / "o.npz", metadata, tmp_path / "out", encoder="x", dataset_roots=[tmp_path])
    (tmp_path / "short.txt").write_text("\n".join(_ids(10)))
    with pytest.raises(EmbeddingImportError, match="10 ids for 60 vectors"):
        import_embeddings(tmp_path / "v.npy", metadata, tmp_path / "out", encoder="x", ids_path=tmp_path / "short.txt",
                          dataset_roots=[tmp_path])
    _nothing_written(tmp_path, tmp_path / "out")


def test_replacing_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path: Path):
    ids = _ids()
    metadata = _metadata(tmp_path, ids)
    _list_parquet(tmp_path / "v.parquet", ids, _vectors())
    out = tmp_path / "out"
    import_embeddings(tmp_path / "v.parquet", metadata, out, encoder="x", dataset_roots=[tmp_path])
    before = json.loads((out / "manifest.json").read_text())
    with pytest.raises(EmbeddingImportError, match="already holds files"):
        import_embeddings(tmp_path / "v.parquet", metadata, out, encoder="x", dataset_roots=[tmp_path])
    bad = list(_vectors())
    bad[0] = None
    _list_parquet(tmp_path / "bad.parquet", ids, bad)
    with pytest.raises(EmbeddingImportError, match="1 rows are ragged"):
        import_embeddings(tmp_path / "bad.parquet", metadata, out, encoder="x", replace=True, dataset_roots=[tmp_path])
    assert json.loads((out / "manifest.json").read_text()) == before  # the old dataset, whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_patient_table_matches_ingests():
    from core.ingest.imported import _patients
    from core.ingest.pipeline import _patients_table

    rng = np.random.default_rng(0)
    n = 600
    images = pd.DataFrame({
        "patient_id": [f"p{i}" for i in rng.integers(0, 150, n)], "image_id": [str(i) for i in range(n)],
        "age": np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 90, n).astype(float)),
        "sex": rng.choice(["M", "F", "unknown"], n), "label": rng.choice(["a", "b", "c"], n), "site": "X",
        "view": rng.choice(["PA", "AP"], n)}).astype({"patient_id": object, "sex": object, "label": object,
                                                      "site": object, "view": object})
    images.loc[rng.random(n) < 0.2, "label"] = None
    pd.testing.assert_frame_equal(_patients(images), _patients_table(images), check_dtype=False)


def test_fifty_thousand_vectors_of_1376_dimensions(tmp_path: Path, capsys):
    """50,000 x 1376 float32 (275 MB, the size of a common CXR foundation model's embeddings),
    written in chunks so the test itself stays bounded; the import streams it in batches."""
    n, dim, chunk = 50_000, 1376, 5_000
    path = tmp_path / "cxr.parquet"
    schema = pa.schema([("image_id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, n, chunk):
            block = np.random.default_rng(start).standard_normal((chunk, dim), dtype=np.float32)
            writer.write_table(pa.table({
                "image_id": [f"dicom-{i:06d}" for i in range(start, start + chunk)],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), dim)}, schema=schema))
            del block
    ids = [f"dicom-{i:06d}" for i in range(n)]
    pd.DataFrame({"image_id": ids, "subject_id": [f"s{i // 3}" for i in range(n)], "sex": np.where(np.arange(n) % 2, "F", "M"),
                  "age": 18 + np.arange(n) % 70, "label": np.where(np.arange(n) % 7 == 0, "Effusion", "No Finding"),
                  "site": np.where(np.arange(n) % 4 == 0, "B", "A")}).to_csv(tmp_path / "meta.csv", index=False)
    import core.encoders.registry  # noqa: F401 (loads torch once; the app has it loaded already)

    tracemalloc.start()
    started = time.perf_counter()
    result = import_embeddings(path, tmp_path / "meta.csv", tmp_path / "out", encoder="cxr-foundation",
                               dataset_roots=[tmp_path])
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    with capsys.disabled():
        print(f"\nimport of {n} x {dim} float32 ({path.stat().st_size / 1e6:.0f} MB Parquet): {seconds:.1f} s, "
              f"peak traced memory {peak / 1e6:.0f} MB")
    assert (result.n_vectors, result.dim) == (n, dim)
    assert peak < 0.5 * n * dim * 4  # streamed: never the whole 275 MB matrix at once
    stored = np.load(tmp_path / "out" / "embeddings" / "cxr-foundation.npy", mmap_mode="r")
    expected = np.random.default_rng(45_000).standard_normal((chunk, dim), dtype=np.float32)
    np.testing.assert_array_equal(stored[45_000:50_000], expected)
    dataset = load_dataset(tmp_path / "out")
    assert dataset.patients["patient_id"].nunique() == (n + 2) // 3  # subject_id -> patient_id


def test_round_trip_of_the_demo_cohorts_own_vectors_gives_the_same_clusters(demo_dataset, cache_env, tmp_path: Path):
    from core.clustering.runs import cluster_cohort
    from core.cohort import build_cohort

    original = embed_dataset(demo_dataset, "efficientnet-lite0", device="cpu")
    images = demo_dataset.images
    pq.write_table(pa.table({"image_id": images["image_id"].tolist(),
                             "embedding": pa.array(list(original.vectors), type=pa.list_(pa.float32()))}),
                   tmp_path / "exported.parquet")
    images[["image_id", "patient_id", "age", "sex", "label", "modality", "view"]].to_csv(tmp_path / "meta.csv", index=False)
    import_embeddings(tmp_path / "exported.parquet", tmp_path / "meta.csv", tmp_path / "demo-imported",
                      encoder="demo-effnet", dataset_roots=[tmp_path])
    imported = load_dataset(tmp_path / "demo-imported")
    again = embed_dataset(imported, "demo-effnet")
    np.testing.assert_array_equal(again.vectors, original.vectors)
    for level in ("patient", "image"):
        before = build_cohort(demo_dataset, original, level=level)
        after = build_cohort(imported, again, level=level)
        assert before.table["patient_id"].tolist() == after.table["patient_id"].tolist()
        _, first = cluster_cohort(before, algorithm="kmeans", k=4)
        _, second = cluster_cohort(after, algorithm="kmeans", k=4)
        np.testing.assert_array_equal(first.labels, second.labels)
        assert adjusted_rand_score(first.labels, second.labels) == 1.0
