"""Issue 9 ingest defects: each test here failed before its fix.

Hostile single files must become reported rows (with a reason) and never cost the server its
memory or the batch its other files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from core.dicom import PixelError, read_header
from core.dicom_layout import inspect_dicom
from core.export import FORMULA_PREFIXES
from core.ingest import ingest, load_dataset

REPO_ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")


def frames_bomb(path: Path, *, frames: int = 1_000_000, rows: int = 8, columns: int = 8,
                pixel_bytes: int = 64, bits: int = 8) -> Path:
    """A tiny, valid-looking DICOM whose header claims ``frames`` frames of rows x columns."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "P1", "OT"
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = rows, columns, frames, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = bytes(i % 256 for i in range(pixel_bytes))
    ds.save_as(path, enforce_file_format=True)
    return path


def by_name(report: pd.DataFrame, column: str = "status") -> dict[str, str]:
    return dict(zip(report["path"].map(lambda p: Path(p).name), report[column], strict=True))


# ------------------------------------------------------------------ 1. frame-count DoS


def test_a_662_byte_dicom_claiming_a_million_frames_is_reported_not_a_million_rows(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    bomb = frames_bomb(source / "bomb.dcm")
    assert bomb.stat().st_size < 1000
    shutil.copy(pydicom.data.get_testdata_file("CT_small.dcm"), source / "ct.dcm")
    shutil.copy(pydicom.data.get_testdata_file("emri_small.dcm"), source / "multi.dcm")
    dataset = ingest(source, tmp_path / "out", layout="dicom", verify=False).dataset
    assert len(dataset.images) == 1 + 10  # CT_small + the 10 real frames of emri_small
    assert by_name(dataset.report) == {"bomb.dcm": "frames_mismatch"}
    reason = by_name(dataset.report, "reason")["bomb.dcm"]
    assert "64 bytes" in reason and "1000000 frames" in reason


def test_a_frame_count_the_compressed_data_cannot_hold_is_refused(tmp_path):
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("emri_small_jpeg_2k_lossless.dcm"))
    assert int(ds.NumberOfFrames) == 10
    ds.NumberOfFrames = 500_000
    ds.save_as(tmp_path / "lying.dcm")
    with pytest.raises(PixelError) as caught:
        inspect_dicom(tmp_path / "lying.dcm", max_pixels=64_000_000)
    assert caught.value.status == "frames_mismatch"
    assert "10 fragment" in caught.value.reason


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"frames": 1, "rows": 8, "columns": 8, "bits": 16}, "truncated"),  # 64 bytes, needs 128
        ({"frames": 1, "rows": 8, "columns": 8, "bits": 32768 - 8}, "truncated"),  # absurd bits
        ({"frames": 20_001, "rows": 1, "columns": 1, "pixel_bytes": 20_002}, "too_many_frames"),
    ],
)
def test_geometry_that_the_pixel_data_cannot_back_is_refused(tmp_path, kwargs, status):
    path = frames_bomb(tmp_path / "x.dcm", **kwargs)
    with pytest.raises(PixelError) as caught:
        inspect_dicom(path, max_pixels=64_000_000)
    assert caught.value.status == status, caught.value.reason


def test_all_frames_together_count_against_a_per_file_pixel_budget(tmp_path):
    path = frames_bomb(tmp_path / "x.dcm", frames=100, pixel_bytes=6400)
    assert inspect_dicom(path, max_pixels=64).n_frames == 100
    with pytest.raises(PixelError) as caught:
        inspect_dicom(path, max_pixels=64, max_file_pixels=6399)
    assert caught.value.status == "over_pixel_budget"


# --------------------------------------------------------- 2. memory per file, and at once


def test_decode_gate_never_holds_more_than_its_budget():
    from core.ingest.budget import DecodeGate

    gate = DecodeGate(300)
    errors: list[str] = []

    def work(n_bytes: int) -> None:
        with gate.hold(n_bytes):
            if gate.in_flight > 300 and n_bytes <= 300:
                errors.append(f"{gate.in_flight} in flight")
            time.sleep(0.01)

    threads = [threading.Thread(target=work, args=(n,)) for n in [100, 200, 150, 250, 100, 500] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert gate.peak == 500  # the over-budget request ran, and ran alone
    assert gate.in_flight == 0
    with pytest.raises(ValueError, match="budget_bytes"):
        DecodeGate(0)


_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from core.ingest import ingest
    from core.pixels import probe_image
    probe_image(sys.argv[1] + "/A/0.png")  # warm the imports and plugins
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = ingest(sys.argv[1], sys.argv[2], layout="class-folders", workers=4)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_growth_mb": (after - before) / 1024, "n_images": result.n_images,
                      "report": result.dataset.report["status"].tolist()}))
""")


def test_four_8k_pngs_are_verified_within_a_bounded_memory(tmp_path):
    """A 187 KB 7999 x 8000 PNG cost 1.6 GB at ingest (four at once: 7.4 GB)."""
    folder = tmp_path / "src" / "A"
    folder.mkdir(parents=True)
    for index in range(4):
        image = Image.new("L", (7999, 8000))
        image.putpixel((index, index), 255)  # four different files, so none is a duplicate
        image.save(folder / f"{index}.png", optimize=False)
    assert (folder / "0.png").stat().st_size < 300_000
    completed = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / "src"), str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=True,
    )
    measured = json.loads(completed.stdout.strip().splitlines()[-1])
    assert measured["n_images"] == 4 and measured["report"] == []
    # One decoded 8-bit 8k frame is 64 MB; the gate lets at most two run at once.
    assert measured["peak_growth_mb"] < 400, measured


def test_a_png_declaring_dimensions_over_the_budget_is_refused_before_decoding(tmp_path):
    folder = tmp_path / "src" / "A"
    folder.mkdir(parents=True)
    Image.new("L", (3000, 3000)).save(folder / "big.png")
    dataset = ingest(tmp_path / "src", tmp_path / "out", max_pixels=4_000_000).dataset
    assert by_name(dataset.report) == {"big.png": "too_large"}


# ------------------------------------------------------------------ 4. undecodable names


def test_a_file_name_with_invalid_utf8_is_reported_and_the_batch_goes_on(covid_dir, tmp_path):
    folder = tmp_path / "src" / "COVID"
    folder.mkdir(parents=True)
    real = sorted((covid_dir / "images").glob("*.png"))[:2]
    shutil.copy(real[0], folder / "good.png")
    bad_name = os.fsdecode(b"scan-\xff\xfe-caf\xe9.png")
    shutil.copy(real[1], folder / bad_name)
    result = ingest(tmp_path / "src", tmp_path / "out")
    dataset = result.dataset
    assert dataset.images["filename"].tolist() == ["good.png"]
    assert dataset.report["status"].tolist() == ["bad_file_name"]
    assert "\\xff\\xfe" in dataset.report["path"].iloc[0]
    assert "not valid UTF-8" in dataset.report["reason"].iloc[0]
    reloaded = load_dataset(tmp_path / "out")
    assert reloaded.report["status"].tolist() == ["bad_file_name"]


# -------------------------------------------------------------- 5. formula-escaped report


def test_ingest_report_csv_escapes_cells_that_a_spreadsheet_would_run(covid_dir, tmp_path):
    source = tmp_path / "src"
    (source / "COVID").mkdir(parents=True)
    shutil.copy(sorted((covid_dir / "images").glob("*.png"))[0], source / "COVID" / "a.png")
    hostile = ["=HYPERLINK(\"http-x\",\"y\").txt", "+cmd.txt", "-2+3.txt", "@SUM(1).txt",
               "\tTAB.txt", " =spaced.txt"]
    for name in hostile:
        (source / name).write_text("not a scan")
    ingest(source, tmp_path / "out", layout="class-folders")
    text = (tmp_path / "out" / "ingest_report.csv").read_text(encoding="utf-8")
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert any("HYPERLINK" in cell for cell in cells)
    for cell in cells:
        assert not cell.startswith(FORMULA_PREFIXES), cell
        assert not cell.lstrip(" ").startswith(("=", "+", "-", "@")), cell
    # Loading gives back the names as they are: the escaping is for spreadsheets only.
    report = load_dataset(tmp_path / "out").report
    assert sorted(report["source"]) == sorted(hostile)


# --------------------------------------------------- 6. --metadata by patient_id on DICOM


def test_metadata_joined_on_patient_id_reaches_a_dicom_tree(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    patients = {}
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(pydicom.data.get_testdata_file(name), source / name)
        patients[name] = str(pydicom.dcmread(source / name, stop_before_pixels=True).PatientID)
    assert len(set(patients.values())) == 2
    pd.DataFrame({
        "PatientID": [patients["CT_small.dcm"], patients["MR_small.dcm"], "nobody"],
        "diagnosis": ["tumour", "normal", "lost"],
        "site": ["A", "B", "C"],
    }).to_csv(tmp_path / "extra.csv", index=False)
    dataset = ingest(source, tmp_path / "out", layout="dicom", metadata=tmp_path / "extra.csv").dataset
    labels = dict(zip(dataset.images["modality"], dataset.images["label"], strict=True))
    assert labels == {"CT": "tumour", "MR": "normal"}
    assert sorted(dataset.images["site"]) == ["A", "B"]
    assert dataset.report[["status", "reason"]].values.tolist() == [
        ["unmatched_metadata", "patient_id 'nobody' matches no ingested image"]]


# --------------------------------------------------------------- 8. BurnedInAnnotation


def test_burned_in_annotation_is_a_boolean_column_per_image(covid_dir, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for value in ("YES", "NO"):
        ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
        ds.BurnedInAnnotation = value
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(source / f"burned-{value}.dcm")
    shutil.copy(pydicom.data.get_testdata_file("MR_small.dcm"), source / "absent.dcm")
    shutil.copy(sorted((covid_dir / "images").glob("*.png"))[0], source / "photo.png")
    assert read_header(source / "burned-YES.dcm")["burned_in_annotation"] is True
    assert read_header(source / "burned-NO.dcm")["burned_in_annotation"] is False
    ingest(source, tmp_path / "out", layout="dicom")
    images = load_dataset(tmp_path / "out").images
    assert images["burned_in_annotation"].dtype == bool
    flags = dict(zip(images["path"].map(lambda p: Path(p).name), images["burned_in_annotation"], strict=True))
    assert flags == {"burned-YES.dcm": True, "burned-NO.dcm": False, "absent.dcm": False,
                     "photo.png": False}


def test_a_dataset_without_dicom_still_has_the_burned_in_column(covid_dataset):
    assert covid_dataset.images["burned_in_annotation"].dtype == bool
    assert not covid_dataset.images["burned_in_annotation"].any()
