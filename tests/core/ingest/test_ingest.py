"""Ingest: every layout and every kind of bad input, on real files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pydicom.data
import pytest
from PIL import Image

from cli.main import main as cli_main
from core.ingest import ingest, load_dataset, summarize
from core.ingest.normalize import clean_text, normalize_age, normalize_sex

PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
IDENTIFYING = ("PatientName", "PatientBirthDate", "PatientAddress", "AccessionNumber",
               "InstitutionName", "ReferringPhysicianName")


def statuses(dataset) -> dict[str, int]:
    return dataset.report["status"].value_counts().to_dict()


# ------------------------------------------------------------------ covid-chestxray (real)


def test_covid_ingests_633_images_and_reports_53(covid_dataset):
    assert len(covid_dataset.images) == 633
    assert len(covid_dataset.report) == 53
    assert statuses(covid_dataset) == {"missing_file": 35, "unreferenced_file": 13, "duplicate_row": 5}
    assert covid_dataset.report["reason"].str.len().gt(10).all()
    assert covid_dataset.images["image_id"].is_unique


def test_covid_canonical_fields(covid_dataset):
    images = covid_dataset.images
    assert set(images["sex"]) <= {"M", "F", "unknown"}
    assert images["label"].notna().all()
    assert images["label"].value_counts().index[0] == "COVID-19"
    assert images["age"].between(0, 130).sum() > 450
    assert {"survival", "location", "offset", "license"} <= set(images.columns)
    assert images["text"].notna().sum() > 450
    assert images["path"].map(lambda p: Path(p).is_file()).all()
    # One row per patient, and every image's patient is there.
    assert set(covid_dataset.patients["patient_id"]) == set(images["patient_id"])
    assert covid_dataset.patients["n_images"].sum() == len(images)


def test_covid_broken_text_is_repaired(covid_dataset):
    text = " ".join(covid_dataset.images["text"].dropna())
    assert "\"wet market\"" in text
    assert "38 °C" in text or "38.3 °C" in text
    # The re-entered rows' correctly encoded credits repaired the kept rows.
    notes = covid_dataset.images.loc[covid_dataset.images["patient_id"] == "285", "other_notes"]
    assert notes.str.contains("Inês Martins").all()


def test_covid_duplicate_rows_name_the_first_row(covid_dataset):
    duplicates = covid_dataset.report[covid_dataset.report["status"] == "duplicate_row"]
    assert duplicates["reason"].str.contains(r"already named by row \d+", regex=True).all()


# ---------------------------------------------------------------- patient-csv (demo cohort)


def test_demo_cohort_round_trips(demo_dir, demo_dataset):
    truth = pd.read_csv(demo_dir / "patients.csv", dtype={"patient_id": str})
    images = demo_dataset.images
    assert len(images) == truth["num_slices"].sum()
    assert len(demo_dataset.report) == 0
    patients = demo_dataset.patients.set_index("patient_id").loc[truth["patient_id"]]
    assert list(patients["label"]) == list(truth["diagnosis"])
    assert list(patients["sex"]) == [{"Male": "M", "Female": "F"}[g] for g in truth["gender"]]
    assert np.allclose(patients["age"], truth["age"])
    assert set(images["modality"]) == {"MR"}
    assert images["series_uid"].notna().all()


def test_dicom_identifying_fields_never_reach_the_tables(demo_dir, demo_dataset):
    header = pydicom.dcmread(next(demo_dir.rglob("*.dcm")))
    secrets = {str(header.get(keyword, "")) for keyword in IDENTIFYING} - {""}
    assert secrets, "the demo files should carry fake identifying fields to test against"
    for table in (demo_dataset.images, demo_dataset.patients, demo_dataset.report):
        assert not set(IDENTIFYING) & set(table.columns)
        text = table.astype(str).to_csv()
        for secret in secrets:
            assert secret not in text


def test_patient_csv_slice_count_mismatch_is_reported(demo_dir, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(demo_dir, cohort)
    first = pd.read_csv(cohort / "patients.csv", dtype=str).iloc[0]
    victim = sorted((cohort / first["folder_path"]).iterdir())[-1]
    victim.unlink()
    dataset = ingest(cohort, tmp_path / "out").dataset
    mismatches = dataset.report[dataset.report["status"] == "slice_count_mismatch"]
    assert len(mismatches) == 1
    assert first["patient_id"] in mismatches["reason"].iloc[0]
    assert f"num_slices={int(first['num_slices'])}" in mismatches["reason"].iloc[0]
    assert len(dataset.images) == int(pd.read_csv(cohort / "patients.csv")["num_slices"].sum()) - 1


def test_patient_csv_missing_column_names_it_and_the_columns_found(demo_dir, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(demo_dir, cohort)
    frame = pd.read_csv(cohort / "patients.csv").drop(columns=["num_slices"])
    frame.to_csv(cohort / "patients.csv", index=False)
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['num_slices'\].*columns found"):
        ingest(cohort / "patients.csv", tmp_path / "out", layout="patient-csv")


def test_patient_csv_given_as_its_folder_uses_the_one_csv_there(demo_dir, tmp_path, capsys):
    cohort = tmp_path / "cohort"
    shutil.copytree(demo_dir, cohort)
    dataset = ingest(cohort, tmp_path / "out", layout="patient-csv").dataset
    assert len(dataset.images) == int(pd.read_csv(cohort / "patients.csv")["num_slices"].sum())
    # Two CSVs at the top: which one is the patient table? The CLI says so in one line.
    shutil.copy(cohort / "patients.csv", cohort / "copy.csv")
    assert cli_main(["ingest", str(cohort), "--out", str(tmp_path / "out2"), "--layout", "patient-csv"]) == 2
    err = capsys.readouterr().err
    assert "expected one CSV at its top" in err and "copy.csv, patients.csv" in err
    assert "Traceback" not in err and not (tmp_path / "out2" / "images.parquet").exists()


def test_cli_reports_an_unreadable_source_in_one_line(tmp_path, capsys):
    folder = tmp_path / "metadata.csv"  # a folder where a CSV file is expected
    folder.mkdir()
    assert cli_main(["ingest", str(tmp_path), "--metadata", str(folder), "--out", str(tmp_path / "out"),
                     "--layout", "image-csv"]) == 2
    err = capsys.readouterr().err
    assert "scanatlas ingest: error:" in err and "Traceback" not in err


def test_patient_csv_folder_outside_source_is_refused(demo_dir, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(demo_dir, cohort)
    frame = pd.read_csv(cohort / "patients.csv", dtype=str)
    frame.loc[0, "folder_path"] = "../../etc"
    frame.to_csv(cohort / "patients.csv", index=False)
    dataset = ingest(cohort, tmp_path / "out").dataset
    refused = dataset.report[dataset.report["status"] == "outside_source"]
    assert len(refused) == 1 and "outside the source folder" in refused["reason"].iloc[0]
    assert frame.loc[0, "patient_id"] not in set(dataset.images["patient_id"])


# ----------------------------------------------------------------------------- class-folders


@pytest.fixture
def class_folders(covid_dir, tmp_path) -> Path:
    covid = pd.read_csv(covid_dir / "metadata.csv")
    root = tmp_path / "classes"
    for label, finding in (("COVID", "COVID-19"), ("Pneumonia", "Streptococcus"), ("Normal", "No Finding")):
        (root / label).mkdir(parents=True)
        names = covid.loc[covid["finding"] == finding, "filename"]
        names = [n for n in names if (covid_dir / "images" / n).is_file()][:3]
        for name in names:
            shutil.copy(covid_dir / "images" / name, root / label / name)
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), root / "Normal" / "ct.dcm")
    return root


def test_class_folders_label_comes_from_the_folder(class_folders, tmp_path):
    result = ingest(class_folders, tmp_path / "out")
    assert result.layout == "class-folders"
    images = result.dataset.images
    assert images["label"].value_counts().to_dict() == {"Normal": 4, "COVID": 3, "Pneumonia": 3}
    assert (images.loc[images["filename"] == "ct.dcm", "modality"] == "CT").all()


def test_class_folders_with_metadata_csv_joined_by_file_name(class_folders, tmp_path):
    files = sorted(p.name for p in class_folders.rglob("*") if p.is_file())
    pd.DataFrame({"image": files, "gender": ["Male"] * len(files), "site": ["A"] * len(files)}).to_csv(
        tmp_path / "extra.csv", index=False
    )
    dataset = ingest(class_folders, tmp_path / "out", metadata=tmp_path / "extra.csv").dataset
    assert set(dataset.images["sex"]) == {"M"}
    assert set(dataset.images["site"]) == {"A"}


# ------------------------------------------------------------------------------- image-csv


def test_image_csv_with_mapped_columns(covid_dir, tmp_path):
    images = sorted((covid_dir / "images").glob("*.png"))[:4]
    root = tmp_path / "study"
    (root / "img").mkdir(parents=True)
    for image in images:
        shutil.copy(image, root / "img" / image.name)
    pd.DataFrame(
        {
            "img": [f"img/{p.name}" for p in images],
            "subject": ["s1", "s1", "s2", "s3"],
            "dx": ["A", "A", "B", "B"],
            "gender": ["0", "1", "female", "?"],
            "years": ["45", "045Y", "6M", ""],
        }
    ).to_csv(root / "table.csv", index=False)
    dataset = ingest(
        root / "table.csv", tmp_path / "out", layout="image-csv",
        column_map={"img": "path", "subject": "patient_id", "dx": "label", "years": "age"},
    ).dataset
    assert list(dataset.images["patient_id"]) == ["s1", "s1", "s2", "s3"]
    assert list(dataset.images["sex"]) == ["F", "M", "F", "unknown"]
    assert np.allclose(dataset.images["age"].iloc[:3], [45, 45, 0.5])
    assert np.isnan(dataset.images["age"].iloc[3])
    assert len(dataset.patients) == 3


def test_image_csv_without_path_column_explains_how_to_map(tmp_path):
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"no image-path column; map one with --map COLUMN=path"):
        ingest(tmp_path / "t.csv", tmp_path / "out", layout="image-csv")


def test_map_naming_a_missing_column_is_refused(tmp_path):
    pd.DataFrame({"a": ["x.png"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"'nope'.*columns found: \['a'\]"):
        ingest(tmp_path / "t.csv", tmp_path / "out", layout="image-csv", column_map={"nope": "path"})


def test_image_csv_paths_outside_the_source_are_refused(covid_dir, tmp_path):
    root = tmp_path / "study"
    root.mkdir()
    inside = sorted((covid_dir / "images").glob("*.png"))[0]
    shutil.copy(inside, root / inside.name)
    outside = tmp_path / "secret.png"
    shutil.copy(inside, outside)
    pd.DataFrame({"path": [inside.name, "../secret.png", str(outside)]}).to_csv(root / "t.csv", index=False)
    dataset = ingest(root / "t.csv", tmp_path / "out").dataset
    assert len(dataset.images) == 1
    assert statuses(dataset) == {"outside_source": 2}


# ----------------------------------------------------------------------------------- dicom


def test_pydicom_test_files_all_ingest_or_are_explained(tmp_path):
    result = ingest(PYDICOM_FILES, tmp_path / "out", layout="dicom")
    dataset = result.dataset
    n_files = sum(1 for p in PYDICOM_FILES.rglob("*") if p.is_file())
    files_ingested = dataset.images["sha256"].nunique()
    # Every file is either ingested or in the report with a reason (DICOMDIR sets and other
    # byte-identical copies are reported as duplicates).
    assert files_ingested + len(dataset.report) == n_files
    assert files_ingested > 60
    assert (dataset.report["reason"].str.len() > 5).all()
    report_statuses = set(dataset.report["status"])
    assert {"no_pixel_data", "not_an_image"} <= report_statuses
    multi = dataset.images[dataset.images["n_frames"] > 1]
    assert len(multi) and (multi.groupby("sha256")["frame"].nunique() == multi.groupby("sha256")["n_frames"].first()).all()
    for column in IDENTIFYING:
        assert column not in dataset.images.columns
    assert "CompressedSamples^CT1" not in dataset.images.astype(str).to_csv()


def _copy_dicom(tmp_path: Path, name: str = "CT_small.dcm") -> Path:
    folder = tmp_path / "dicoms"
    folder.mkdir(exist_ok=True)
    target = folder / name
    shutil.copy(pydicom.data.get_testdata_file(name), target)
    return target


def test_bad_dicoms_are_reported_and_the_rest_goes_on(tmp_path):
    good = _copy_dicom(tmp_path)
    raw = good.read_bytes()
    (good.parent / "truncated.dcm").write_bytes(raw[: len(raw) // 2])
    (good.parent / "garbage.dcm").write_bytes(b"DICM" * 10)
    ds = pydicom.dcmread(good)
    del ds.PixelData
    ds.save_as(good.parent / "nopixels.dcm")
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("JPEG2000.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder exists
    ds.save_as(good.parent / "mpeg2.dcm")
    (good.parent / "empty.dcm").write_bytes(b"")
    dataset = ingest(good.parent, tmp_path / "out", layout="dicom").dataset
    assert len(dataset.images) == 1
    by_file = dict(zip(dataset.report["path"].map(lambda p: Path(p).name), dataset.report["status"], strict=True))
    assert by_file["truncated.dcm"] in {"truncated", "unreadable"}
    assert by_file["garbage.dcm"] in {"not_an_image", "unreadable"}
    assert by_file["nopixels.dcm"] == "no_pixel_data"
    assert by_file["mpeg2.dcm"] == "unsupported_transfer_syntax"
    assert by_file["empty.dcm"] == "empty_file"
    reasons = dict(zip(dataset.report["path"].map(lambda p: Path(p).name), dataset.report["reason"], strict=True))
    assert "MPEG2" in reasons["mpeg2.dcm"] or "1.2.840.10008.1.2.4.100" in reasons["mpeg2.dcm"]


def test_non_image_and_huge_images_are_refused(covid_dir, tmp_path):
    root = tmp_path / "Normal"
    root.mkdir()
    real = sorted((covid_dir / "images").glob("*.png"))[0]
    shutil.copy(real, root / "real.png")
    (root / "notes.png").write_text("this is not a picture")
    Image.new("L", (3000, 3000)).save(root / "big.png")
    dataset = ingest(tmp_path, tmp_path.parent / f"{tmp_path.name}-out", layout="class-folders",
                     max_pixels=4_000_000).dataset
    by_file = dict(zip(dataset.report["path"].map(lambda p: Path(p).name), dataset.report["status"], strict=True))
    assert by_file == {"notes.png": "not_an_image", "big.png": "too_large"}
    assert len(dataset.images) == 1


def test_duplicate_files_are_ingested_once(covid_dir, tmp_path):
    root = tmp_path / "src" / "A"
    root.mkdir(parents=True)
    real = sorted((covid_dir / "images").glob("*.jpg"))[0]
    shutil.copy(real, root / "one.jpg")
    shutil.copy(real, root / "two.jpg")
    dataset = ingest(tmp_path / "src", tmp_path / "out").dataset
    assert len(dataset.images) == 1
    assert statuses(dataset) == {"duplicate_file": 1}
    assert "same bytes as" in dataset.report["reason"].iloc[0]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        ingest(tmp_path / "nope", tmp_path / "out")


# ------------------------------------------------------------------------------------- ZIP


# (ZIP safety, including traversal checked against the real extraction folder, is in
# tests/core/ingest/test_zip_and_csv.py.)


# ------------------------------------------------------------------- normalisation and CLI


@pytest.mark.parametrize(
    ("value", "expected"),
    [("M", "M"), ("male", "M"), ("Male", "M"), ("1", "M"), (1, "M"), ("F", "F"), ("Female", "F"),
     ("0", "F"), (0.0, "F"), ("", "unknown"), (None, "unknown"), ("O", "unknown"), (float("nan"), "unknown")],
)
def test_normalize_sex(value, expected):
    assert normalize_sex(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("045Y", 45.0), ("006M", 0.5), ("52W", 52 * 7 / 365.25), ("65", 65.0), ("65 years", 65.0), (70, 70.0)],
)
def test_normalize_age(value, expected):
    assert normalize_age(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", None, "old", "200", "-3"])
def test_normalize_age_unreadable_is_nan(value):
    assert np.isnan(normalize_age(value))


def test_clean_text_fixes_mojibake_and_keeps_the_rest():
    assert clean_text("Ã©tÃ© fever") == "été fever"
    assert clean_text("People\ufffds Hospital") == "People's Hospital"
    assert clean_text("7\ufffd4 \ufffd 10") == "7\ufffd4 \ufffd 10"  # unrecoverable: kept, not invented


def test_cli_ingest_prints_summary_and_writes_outputs(covid_dir, tmp_path, capsys):
    code = cli_main(["ingest", str(covid_dir), "--out", str(tmp_path / "covid"), "--no-verify"])
    out = capsys.readouterr().out
    assert code == 0
    assert "633 images" in out and "missing_file" in out and "COVID-19" in out
    dataset = load_dataset(tmp_path / "covid")
    assert len(dataset.images) == 633
    assert summarize(dataset).splitlines()[0] == out.split("Layout: covid-chestxray\n")[1].splitlines()[0]


def test_cli_bad_map_is_a_clear_error(covid_dir, tmp_path, capsys):
    code = cli_main(["ingest", str(covid_dir), "--out", str(tmp_path), "--map", "nonsense"])
    assert code == 2
    assert "expected COLUMN=FIELD" in capsys.readouterr().err


def test_load_dataset_on_a_non_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an ingested dataset"):
        load_dataset(tmp_path)


def test_cli_refuses_a_zip_over_its_size_limit_in_one_line(covid_dir, tmp_path, capsys):
    import zipfile

    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(sorted((covid_dir / "images").glob("*.png"))[0], "COVID/a.png")
    code = cli_main(["ingest", str(archive), "--out", str(tmp_path / "out"), "--zip-max-bytes", "1000"])
    err = capsys.readouterr().err
    assert code == 2
    assert "upload.zip: would expand to" in err and "over the limit of 1,000 bytes" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
