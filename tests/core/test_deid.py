"""core.deid and the de-identified export: no original patient id, UID, date or path survives
in the CSV or Parquet, pseudonyms are stable per deployment, free text only when asked, and only
admins may switch de-identification off."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from core.deid import SALT_BYTES, deidentify, deployment_salt, obscure_image, pseudo_uid, salt_path
from core.export import labeled_export, to_csv_bytes, to_parquet_bytes

SALT = b"s" * 32


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SCANATLAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_salt_is_created_once_secret_and_stable(cache: Path) -> None:
    salt = deployment_salt()
    path = salt_path()
    assert path.parent == cache and len(salt) == SALT_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert deployment_salt() == salt and path.read_bytes() == salt
    other = cache / "other.salt"
    assert deployment_salt(other) != salt  # random, not derived


def test_a_damaged_salt_is_reported_not_replaced(cache: Path) -> None:
    cache.mkdir(parents=True)
    salt_path().write_bytes(b"short")
    with pytest.raises(ValueError, match="damaged"):
        deployment_salt()
    assert salt_path().read_bytes() == b"short"


def originals(images: pd.DataFrame) -> set[str]:
    """Every identifying string of the demo images: patient ids, instance UIDs, dates, paths."""
    values = set(images["patient_id"]) | set(images["path"]) | {Path(p).parent.as_posix() for p in images["path"]}
    for column in ("study_uid", "series_uid", "sop_instance_uid"):
        values |= set(images[column].dropna())
    for date in images["study_date"].dropna().astype(str):
        values |= {date, f"{date[:4]}-{date[4:6]}-{date[6:]}"}
    return {v for v in values if v}


def parquet_strings(data: bytes) -> str:
    table = pq.read_table(io.BytesIO(data))
    metadata = b"".join(v for v in (table.schema.metadata or {}).values()).decode("utf-8", "replace")
    return table.to_pandas().astype(str).to_csv() + metadata + " ".join(table.column_names)


def test_deidentified_csv_and_parquet_hold_no_identifier(demo_dataset, cache: Path) -> None:
    images = demo_dataset.images
    secrets_ = originals(images)
    assert len(secrets_) > 3 * len(demo_dataset.patients)
    labels = np.arange(len(images)) % 3
    export = labeled_export(demo_dataset.patients, images["patient_id"].tolist(), labels, None)
    image_table = deidentify(images, salt=deployment_salt()).table
    for table in (export.table, image_table):
        csv_text = to_csv_bytes(table).decode("utf-8")
        parquet_text = parquet_strings(to_parquet_bytes(table))
        leaked = sorted(s for s in secrets_ if s in csv_text or s in parquet_text)
        assert leaked == []
        assert "path" not in table.columns
    assert export.deidentified and export.changed["patient_id"] == "pseudonym (salted hash)"
    assert set(export.table["study_date"].dropna()) <= set(range(1900, 2100))
    assert export.table["study_uid"].str.startswith("2.25.").all()
    assert set(image_table["sop_class_uid"]) == set(images["sop_class_uid"])  # a standard UID names nobody
    assert len(export.table) == len(demo_dataset.patients)


def test_the_same_patient_gets_the_same_pseudonym_in_two_exports(demo_dataset, cache: Path) -> None:
    images = demo_dataset.images
    ids = images["patient_id"].tolist()
    first = labeled_export(demo_dataset.patients, ids, np.zeros(len(ids), dtype=int), None).table
    second = labeled_export(demo_dataset.patients.iloc[::-1], ids, np.ones(len(ids), dtype=int), None).table
    by_age = first.set_index("patient_id")["study_uid"].to_dict()
    assert second.set_index("patient_id")["study_uid"].to_dict() == by_age
    assert sorted(first["patient_id"]) == sorted(second["patient_id"])
    assert first["patient_id"].nunique() == demo_dataset.patients["patient_id"].nunique()
    other_salt = deidentify(demo_dataset.patients, salt=b"x" * 32).table
    assert set(other_salt["patient_id"]).isdisjoint(first["patient_id"])


def hostile_patients() -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": ["MRN-0001", "MRN-0002"],
        "patient_name": ["Doe^Jane", "Roe^Richard"],
        "birth_date": ["19500101", "19620214"],
        "accession_number": ["A123", "A456"],
        "filename": ["jane_doe.dcm", "richard_roe.dcm"],
        "url": ["https://hospital.example/case/1", "https://hospital.example/case/2"],
        "notes": ["Seen by Dr House in Princeton on 2020-03-01", "Transferred from St Mary's"],
        "study_time": ["101500", "093000"],
        "study_date": ["20200301", "20200415"],
        "age": [95.0, 40.0],
        "sex": ["F", "M"],
        "other": ["MRN-0001", "ok"],
        "exposure_time": [12.0, 15.0],
        "label": ["COVID-19", "normal"],
    })


def test_identifying_columns_are_dropped_and_free_text_kept_only_when_asked() -> None:
    result = deidentify(hostile_patients(), salt=SALT)
    table = result.table
    assert set(result.dropped) == {"patient_name", "birth_date", "accession_number", "filename", "url", "notes",
                                   "study_time"}
    assert table["study_date"].tolist() == [2020, 2020]
    assert table["age"].tolist() == [90.0, 40.0]
    assert table["exposure_time"].tolist() == [12.0, 15.0]  # an acquisition setting, not a time of day
    assert table["other"].tolist() == ["[removed]", "ok"]  # a cell equal to an identifier
    assert table["label"].tolist() == ["COVID-19", "normal"]
    kept = deidentify(hostile_patients(), salt=SALT, keep_free_text=True).table
    assert kept["notes"].tolist() == hostile_patients()["notes"].tolist()
    assert "patient_name" not in kept.columns


def test_only_an_admin_may_export_identifiable_data_or_free_text(demo_dataset, cache: Path) -> None:
    ids = demo_dataset.images["patient_id"].tolist()
    labels = np.zeros(len(ids), dtype=int)
    with pytest.raises(PermissionError, match="administrator"):
        labeled_export(demo_dataset.patients, ids, labels, None, deidentify=False)
    with pytest.raises(PermissionError, match="administrator"):
        labeled_export(demo_dataset.patients, ids, labels, None, keep_free_text=True)
    raw = labeled_export(demo_dataset.patients, ids, labels, None, deidentify=False, is_admin=True)
    assert not raw.deidentified
    assert set(raw.table["patient_id"]) == set(demo_dataset.patients["patient_id"])


def test_pseudo_uids_are_valid_dicom_uids() -> None:
    uid = pseudo_uid("1.2.826.0.1.3680043.8.498.1", SALT)
    assert uid.startswith("2.25.") and len(uid) <= 64 and uid[5:].isdigit()
    assert uid == pseudo_uid("1.2.826.0.1.3680043.8.498.1", SALT) != pseudo_uid("1.2.826.0.1.3680043.8.498.2", SALT)


def test_obscure_image_makes_burned_in_text_unreadable() -> None:
    canvas = Image.new("L", (256, 256), 0)
    ImageDraw.Draw(canvas).text((10, 10), "DOE^JANE 1950-01-01", fill=255)
    image = np.asarray(canvas, dtype=np.float32) / 255
    hidden = obscure_image(image)
    assert hidden.shape == image.shape and hidden.dtype == image.dtype
    for top in range(0, 256, 16):
        for left in range(0, 256, 16):
            block = hidden[top:top + 16, left:left + 16]
            assert np.ptp(block) < 1e-6  # every 16 px square is one grey level
    assert abs(hidden.mean() - image.mean()) < 1e-3
    assert np.abs(hidden - image).max() > 0.5  # the strokes themselves are gone
    colour = obscure_image(np.full((40, 40, 3), 200, dtype=np.uint8))
    assert colour.dtype == np.uint8 and (colour == 200).all()


def test_salt_file_is_never_group_or_world_readable_even_with_a_loose_umask(cache: Path) -> None:
    old = os.umask(0)
    try:
        deployment_salt()
    finally:
        os.umask(old)
    assert stat.S_IMODE(salt_path().stat().st_mode) == 0o600
