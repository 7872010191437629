"""core.imports: imported embeddings as a dataset of the app, with the server's checks (role,
allowed folders, staging, dataset claims, audit log); a failed import leaves no folder behind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.auth import AccessStore, User
from core.datasets import DatasetExistsError, dataset_owner, list_datasets
from core.imports import import_dataset, stage_import
from core.ingest import load_dataset
from core.ingest.imported import EmbeddingImportError
from core.roots import OutsideRootsError
from core.uploads import Upload, UploadRejected

IDS = [f"img-{i}" for i in range(30)]


def person(name: str, role: str = "admin") -> User:
    return User(id=name, email=f"{name}@example.org", name=name, role=role, source="table")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCANATLAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCANATLAS_DATA_ROOTS", raising=False)
    monkeypatch.delenv("SCANATLAS_MAX_UPLOAD_BYTES", raising=False)
    return tmp_path / "cache"


def uploads(vectors: np.ndarray | None = None) -> tuple[Upload, Upload, Upload]:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32) if vectors is None else vectors)
    metadata = pd.DataFrame({"id": IDS, "patient_id": [f"p{i // 3}" for i in range(30)], "label": ["x", "y"] * 15})
    return (Upload("My vectors.npy", buffer.getvalue()), Upload("meta.csv", metadata.to_csv(index=False).encode()),
            Upload("ids.txt", "\n".join(IDS).encode()))


def test_an_admin_imports_uploaded_vectors_as_a_dataset(cache: Path):
    admin = person("ana")
    vectors, metadata, ids = stage_import(admin.id, "vendor-export", *uploads())
    assert vectors.name == "vectors.npy" and vectors.parent.parent.parent.parent.name == "uploads"
    result = import_dataset(vectors, metadata, "vendor-export", user=admin, encoder="pacs-v2", ids=ids, id_column="id")
    assert "vendor-export" in list_datasets() and dataset_owner("vendor-export") == "ana"
    assert load_dataset(result.dataset.root).manifest["imported"]["encoders"]["pacs-v2"]["dim"] == 4
    events = AccessStore().events(action="dataset.import")
    assert events["detail"].iloc[0] == "30 vectors of dimension 4 as encoder pacs-v2"
    with pytest.raises(DatasetExistsError):
        import_dataset(vectors, metadata, "vendor-export", user=admin, encoder="pacs-v2", ids=ids, id_column="id")


def test_roles_folders_and_bad_input_are_refused_and_leave_nothing(cache: Path, tmp_path: Path):
    admin = person("ana")
    staged = stage_import(admin.id, "vendor-export", *uploads())
    with pytest.raises(PermissionError):
        import_dataset(*staged[:2], "vendor-export", user=person("lee", "labeler"), encoder="x", ids=staged[2])
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes(uploads()[0].data)
    with pytest.raises(OutsideRootsError):
        import_dataset(outside, staged[1], "vendor-export", user=admin, encoder="x", ids=staged[2])
    with pytest.raises(UploadRejected, match="must be .parquet or .npy"):
        stage_import(admin.id, "other", Upload("v.pkl", b"x"), uploads()[1])
    nan_vectors = np.ones((30, 4), np.float32)
    nan_vectors[5, 1] = np.nan
    bad = stage_import(admin.id, "broken", *uploads(nan_vectors))
    with pytest.raises(EmbeddingImportError, match="1 rows hold NaN, infinite or missing values, e.g. ids 'img-5'"):
        import_dataset(bad[0], bad[1], "broken", user=admin, encoder="x", ids=bad[2], id_column="id")
    assert "broken" not in list_datasets() and not (cache / "datasets" / "broken").exists()
