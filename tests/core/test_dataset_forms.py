"""Form helpers for the Data page: suggested dataset names, the name rules in words, where an
ingest's labels came from, field names in plain words and a CSV preview from memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.datasets import (
    NAME_RULES,
    ingest_summary_status,
    label_source,
    suggest_dataset_name,
    validate_dataset_name,
)
from core.ingest import ingest
from core.ingest.normalize import CANONICAL_FIELDS, FIELD_NAMES
from core.uploads import metadata_preview_bytes


@pytest.mark.parametrize(("file_name", "expected"), [
    ("Covid chest xrays (40).zip", "covid-chest-xrays-40"),
    ("C:\\Users\\ann\\My Scans.ZIP", "my-scans"),
    ("../../etc/passwd.zip", "passwd"),
    ("study_2020.v2.zip", "study-2020-v2"),
    ("().zip", ""),
    ("ü.zip", ""),
])
def test_suggested_names_are_slugs_of_the_file_name(file_name: str, expected: str) -> None:
    assert suggest_dataset_name(file_name) == expected


def test_a_suggestion_always_passes_the_rules_that_refused_the_raw_name() -> None:
    with pytest.raises(ValueError, match="not allowed"):
        validate_dataset_name("Covid chest xrays (40)")
    assert validate_dataset_name(suggest_dataset_name("Covid chest xrays (40).zip")) == "covid-chest-xrays-40"
    long = suggest_dataset_name("a" * 200 + ".zip")
    assert len(long) == 64 and validate_dataset_name(long) == long
    assert "64 characters" in NAME_RULES and "letter or digit" in NAME_RULES


def test_label_source_in_words() -> None:
    assert label_source("class-folders") == "the folder names (one folder per label)"
    assert label_source("class-folders", "finding").startswith("the CSV column 'finding'")
    assert label_source("image-csv", "diagnosis") == "the CSV column 'diagnosis'"
    assert "no diagnosis" in label_source("dicom")


def test_every_canonical_field_has_a_plain_name() -> None:
    assert set(FIELD_NAMES) == set(CANONICAL_FIELDS)
    assert FIELD_NAMES["patient_id"] == "Patient ID"


def test_metadata_preview_from_memory_guesses_the_fields() -> None:
    preview = metadata_preview_bytes("meta.csv", b"Patient ID,filename,finding\np1,a.png,COVID-19\n")
    assert list(preview.rows.columns) == ["Patient ID", "filename", "finding"]
    assert preview.guessed == {"Patient ID": "patient_id", "filename": "path", "finding": "label"}
    with pytest.raises(ValueError, match="meta.csv: not a text CSV"):
        metadata_preview_bytes("meta.csv", b"\x00\x01")


def test_class_folders_with_a_csv_label_column_say_the_labels_came_from_the_csv(tmp_path: Path) -> None:
    source = tmp_path / "src"
    rng = np.random.default_rng(0)
    for folder in ("normal", "sick"):
        (source / folder).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(source / folder / f"{folder}{i}.png")
    csv = tmp_path / "meta.csv"
    csv.write_text("filename,finding\nnormal0.png,Pneumonia\nnormal1.png,Pneumonia\nsick0.png,COVID-19\n")
    result = ingest(source, tmp_path / "out", layout="class-folders", metadata=csv)
    labels = dict(zip(result.dataset.images["path"].map(lambda p: Path(p).name), result.dataset.images["label"], strict=True))
    # The CSV wins over the folder name; the folder fills the image the CSV has no row for.
    assert labels == {"normal0.png": "Pneumonia", "normal1.png": "Pneumonia", "sick0.png": "COVID-19", "sick1.png": "sick"}
    level, message = ingest_summary_status(result, csv_label_column="finding")
    assert level == "success"
    assert "Ground-truth labels for 4 images, from the CSV column 'finding'" in message
    _, plain = ingest_summary_status(ingest(source, tmp_path / "out2", layout="class-folders"))
    assert "from the folder names" in plain
