"""core.dicom: recognising DICOM files, the header allow-list, ages, cheap pixel-data vetting."""

from __future__ import annotations

import math
import os
import shutil
import struct
from pathlib import Path

import pandas as pd
import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.datadict import tag_for_keyword

import core.dicom
from core.dicom import (
    ALLOWED_FIELDS,
    BOOL_COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    PIXEL_STATUSES,
    FrameRangeError,
    PixelError,
    is_dicom,
    parse_dicom_age,
    read_header,
)
from core.dicom_layout import inspect_dicom

BIG = 64_000_000
# Many test files are deliberately malformed, and pydicom says so for each one.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")


def sample(name: str) -> str:
    return pydicom.data.get_testdata_file(name)


def all_testdata_files() -> list[str]:
    """pydicom's own test files plus pydicom-data's, which get_testdata_files also searches."""
    return sorted(path for path in pydicom.data.get_testdata_files() if os.path.isfile(path))


def test_testdata_includes_the_pydicom_data_package():
    # The whole-corpus tests below are only as wide as this list.
    files = all_testdata_files()
    assert any("data_store" in path for path in files), "pydicom-data files are not searched"
    assert len(files) > 200


# ----------------------------------------------------------------------------- recognition


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "DICOMDIR"])
def test_part10_files_are_dicom(name):
    assert is_dicom(sample(name))


@pytest.mark.parametrize(
    "name",
    # implicit LE, explicit LE, explicit BE, and a real image without a preamble
    ["rtstruct.dcm", "ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm", "OT-PAL-8-face.dcm"],
)
def test_preambleless_datasets_are_dicom(name):
    path = sample(name)
    with open(path, "rb") as handle:
        assert handle.read(132)[128:132] != b"DICM"
    assert is_dicom(path)


def test_images_text_and_odd_paths_are_not_dicom(tmp_path):
    png = tmp_path / "grey.png"
    Image.new("L", (8, 8), 7).save(png)
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(jpeg)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    for path in (png, jpeg, empty, tmp_path, tmp_path / "missing.dcm",
                 sample("README.txt"), sample("test1.json"), sample("zipMR.gz")):
        assert not is_dicom(path), path
    # pydicom's deliberately broken no-meta file starts one byte off: not a dataset.
    assert not is_dicom(sample("no_meta.dcm"))


# -------------------------------------------------------------------------------- allow-list

FORBIDDEN_KEYWORDS = {
    "PatientName", "PatientBirthDate", "PatientBirthTime", "PatientAddress", "OtherPatientIDs",
    "OtherPatientNames", "PatientMotherBirthName", "PatientTelephoneNumbers", "AccessionNumber",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
    "OperatorsName", "StationName", "DeviceSerialNumber", "StudyDescription",
    "SeriesDescription", "ImageComments", "PatientComments", "StudyComments",
    "AdditionalPatientHistory", "RequestingPhysician", "StudyID",
}


def test_allow_list_has_the_contract_columns():
    required = {
        "PatientID": "patient_id", "PatientAge": "age", "PatientSex": "sex",
        "Modality": "modality", "BodyPartExamined": "body_part", "ViewPosition": "view",
        "StudyDate": "study_date", "Manufacturer": "manufacturer",
        "SeriesInstanceUID": "series_uid", "InstanceNumber": "instance_number",
    }
    for keyword, column in required.items():
        assert ALLOWED_FIELDS[keyword] == column
    for keyword in ("StudyInstanceUID", "SOPClassUID", "Rows", "Columns", "NumberOfFrames",
                    "PhotometricInterpretation", "BitsStored", "PixelSpacing", "SliceThickness",
                    "SliceLocation", "ManufacturerModelName", "MagneticFieldStrength", "KVP",
                    "EchoTime", "RepetitionTime", "TransferSyntaxUID"):
        assert keyword in ALLOWED_FIELDS
    assert len(set(ALLOWED_FIELDS.values())) == len(ALLOWED_FIELDS), "duplicate column names"
    assert set(ALLOWED_FIELDS.values()) >= INT_COLUMNS | FLOAT_COLUMNS


# The exact allow-list as last reviewed for identifying content. Adding a keyword (say
# PatientBirthName or EthnicGroup) must fail here until a reviewer has judged it and updated
# this snapshot in the same change; a deny-list cannot catch names nobody thought of.
REVIEWED_ALLOW_LIST = {
    "PatientID": "patient_id",
    "PatientAge": "age",
    "PatientSex": "sex",
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "ViewPosition": "view",
    "Laterality": "laterality",
    "ImageLaterality": "image_laterality",
    "PatientPosition": "patient_position",
    "StudyDate": "study_date",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model",
    "StudyInstanceUID": "study_uid",
    "SeriesInstanceUID": "series_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
    "SeriesNumber": "series_number",
    "InstanceNumber": "instance_number",
    "AcquisitionNumber": "acquisition_number",
    "ImageType": "image_type",
    "Rows": "dicom_rows",
    "Columns": "dicom_columns",
    "NumberOfFrames": "number_of_frames",
    "SamplesPerPixel": "samples_per_pixel",
    "PhotometricInterpretation": "photometric_interpretation",
    "BitsAllocated": "bits_allocated",
    "BitsStored": "bits_stored",
    "PixelRepresentation": "pixel_representation",
    "PixelSpacing": "pixel_spacing",
    "ImagerPixelSpacing": "imager_pixel_spacing",
    "SliceThickness": "slice_thickness",
    "SpacingBetweenSlices": "spacing_between_slices",
    "SliceLocation": "slice_location",
    "RescaleSlope": "rescale_slope",
    "RescaleIntercept": "rescale_intercept",
    "RescaleType": "rescale_type",
    "WindowCenter": "window_center",
    "WindowWidth": "window_width",
    "PresentationIntentType": "presentation_intent",
    "BurnedInAnnotation": "burned_in_annotation",
    "MagneticFieldStrength": "magnetic_field_strength",
    "ScanningSequence": "scanning_sequence",
    "SequenceVariant": "sequence_variant",
    "MRAcquisitionType": "mr_acquisition_type",
    "EchoTime": "echo_time",
    "RepetitionTime": "repetition_time",
    "InversionTime": "inversion_time",
    "FlipAngle": "flip_angle",
    "EchoTrainLength": "echo_train_length",
    "KVP": "kvp",
    "XRayTubeCurrent": "xray_tube_current",
    "Exposure": "exposure",
    "ExposureTime": "exposure_time",
    "ConvolutionKernel": "convolution_kernel",
    "TransferSyntaxUID": "transfer_syntax_uid",
}


def test_allow_list_is_exactly_the_reviewed_snapshot():
    added = sorted(set(ALLOWED_FIELDS) - set(REVIEWED_ALLOW_LIST))
    removed = sorted(set(REVIEWED_ALLOW_LIST) - set(ALLOWED_FIELDS))
    assert not added, f"keywords added to the DICOM allow-list without review: {added}"
    assert not removed, f"keywords removed from the DICOM allow-list: {removed}"
    assert ALLOWED_FIELDS == REVIEWED_ALLOW_LIST


def test_read_header_returns_exactly_the_reviewed_columns():
    header = read_header(sample("CT_small.dcm"))
    assert set(header) == set(REVIEWED_ALLOW_LIST.values())


def test_allow_list_names_only_public_non_identifying_keywords():
    assert not FORBIDDEN_KEYWORDS & set(ALLOWED_FIELDS)
    for keyword in ALLOWED_FIELDS:
        tag = tag_for_keyword(keyword)
        assert tag is not None, f"{keyword} is not a DICOM dictionary keyword"
        assert (tag >> 16) % 2 == 0, f"{keyword} is a private tag"


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "RG1_UNCI.dcm", "eCT_Supplemental.dcm"])
def test_read_header_never_returns_the_patient_name_or_birth_date(name):
    path = sample(name)
    full = pydicom.dcmread(path, stop_before_pixels=True)
    patient_name = str(full.PatientName).strip()
    birth_date = str(full.get("PatientBirthDate", "") or "").strip()
    assert patient_name, f"{name} should carry a name for this test to bite"
    header = read_header(path)
    assert set(header) == set(ALLOWED_FIELDS.values())
    for column, value in header.items():
        assert value != patient_name and (not birth_date or value != birth_date), column
        if isinstance(value, str):
            assert patient_name not in value, f"{column}={value!r} leaks the patient name"
    # and none of the other identifying elements present in the file either
    for keyword in FORBIDDEN_KEYWORDS & set(full.dir()):
        value = str(full.get(keyword) or "").strip()
        if value and len(value) > 8:  # short codes ("0010") can coincide with allowed values
            assert value not in header.values(), keyword


def test_read_header_values_of_ct_small():
    header = read_header(sample("CT_small.dcm"))
    assert header["patient_id"] == "1CT1"
    assert header["age"] == "000Y" and header["sex"] == "O"  # raw strings
    assert header["modality"] == "CT"
    assert header["study_date"] == "20040119"
    assert header["instance_number"] == 1 and isinstance(header["instance_number"], int)
    assert header["dicom_rows"] == 128 and header["dicom_columns"] == 128
    assert header["pixel_spacing"] == "0.661468\\0.661468"
    assert header["image_type"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert header["rescale_intercept"] == -1024.0
    assert header["slice_thickness"] == 5.0
    assert header["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    assert header["number_of_frames"] is None and header["view"] is None


def test_headers_of_every_test_file_are_typed_scalars_and_fit_one_parquet_table(tmp_path):
    rows, failures = [], {}
    for path in all_testdata_files():
        if not is_dicom(path):
            continue
        try:
            rows.append(read_header(path))
        except PixelError as error:
            assert error.status in PIXEL_STATUSES and error.reason
            failures[Path(path).name] = error.status
    assert len(rows) > 200
    for row in rows:
        for column, value in row.items():
            if value is None:
                continue
            if column in INT_COLUMNS:
                assert type(value) is int, (column, value)
            elif column in FLOAT_COLUMNS:
                assert type(value) is float and math.isfinite(value), (column, value)
            elif column in BOOL_COLUMNS:
                assert type(value) is bool, (column, value)
            else:
                assert type(value) is str and value, (column, value)
    table = pd.DataFrame(rows)
    table.to_parquet(tmp_path / "headers.parquet")
    assert len(pd.read_parquet(tmp_path / "headers.parquet")) == len(rows)
    # Only a broken header may fail here; pixel problems are not read_header's business.
    assert set(failures.values()) <= {"truncated", "unreadable"}, failures


def test_read_header_failures_have_statuses(tmp_path):
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    text = tmp_path / "notes.dcm"
    text.write_text("not a scan\n")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(Path(sample("CT_small.dcm")).read_bytes()[:300])
    cases = {empty: "empty_file", text: "not_an_image", cut: "truncated",
             tmp_path / "missing.dcm": "unreadable"}
    for path, status in cases.items():
        with pytest.raises(PixelError) as caught:
            read_header(path)
        assert caught.value.status == status, caught.value
        assert str(caught.value) == f"{path}: {caught.value.reason}"


# ------------------------------------------------------------------------------------- ages


@pytest.mark.parametrize(
    ("raw", "years"),
    [("045Y", 45.0), ("006M", 0.5), ("003W", 21 / 365.25), ("010D", 10 / 365.25),
     ("000Y", 0.0), (" 45Y ", 45.0), ("45", 45.0), (b"030Y", 30.0), ("012m", 1.0)],
)
def test_parse_dicom_age(raw, years):
    assert parse_dicom_age(raw) == pytest.approx(years)


@pytest.mark.parametrize("raw", [None, "", "   ", "Y", "abc", "45X", "-5Y", "999Y", "1234Y", "4.5Y"])
def test_parse_dicom_age_garbage_is_nan(raw):
    assert math.isnan(parse_dicom_age(raw))


# ------------------------------------------------------------------------------ vetting


def test_pixel_error_validates_its_status():
    with pytest.raises(ValueError, match="status='bad'"):
        PixelError("x.dcm", "bad", "reason")
    error = PixelError("x.dcm", "truncated", "ends early")
    assert (error.path, error.status, error.reason, str(error)) == (
        "x.dcm", "truncated", "ends early", "x.dcm: ends early")


def test_inspect_reads_geometry_without_decoding():
    layout = inspect_dicom(sample("emri_small.dcm"), 9, max_pixels=BIG)
    assert (layout.n_frames, layout.rows, layout.columns, layout.channels) == (10, 64, 64, 1)
    assert inspect_dicom(sample("examples_palette.dcm"), max_pixels=BIG).channels == 3
    with pytest.raises(FrameRangeError, match=r"valid frames are 0\.\.9"):
        inspect_dicom(sample("emri_small.dcm"), 10, max_pixels=BIG)


def _patch_j2k_size(source: str, target: Path, width: int, height: int) -> None:
    data = bytearray(Path(source).read_bytes())
    siz = data.find(b"\xff\x4f\xff\x51")
    assert siz > 0
    struct.pack_into(">II", data, siz + 8, width, height)  # Xsiz, Ysiz (offsets are 0)
    target.write_bytes(bytes(data))


def test_compressed_frame_claiming_huge_dimensions_is_refused_before_decoding(tmp_path):
    # The decoder would size its buffer from the codestream (~37 GB here), not the header.
    bomb = tmp_path / "bomb.dcm"
    _patch_j2k_size(sample("MR_small_jp2klossless.dcm"), bomb, 200_000, 200_000)
    with pytest.raises(PixelError) as caught:
        inspect_dicom(bomb, max_pixels=BIG)
    assert caught.value.status == "too_large"
    assert "200000x200000" in caught.value.reason


def test_compressed_frame_disagreeing_with_header_is_unreadable(tmp_path):
    odd = tmp_path / "odd.dcm"
    _patch_j2k_size(sample("MR_small_jp2klossless.dcm"), odd, 32, 64)
    with pytest.raises(PixelError, match="declares 64x32 but the DICOM header says 64x64") as caught:
        inspect_dicom(odd, max_pixels=BIG)
    assert caught.value.status == "unreadable"


def test_deflate_bomb_is_refused_from_a_bounded_inflate(tmp_path, monkeypatch):
    path = tmp_path / "deflated.dcm"
    shutil.copy(sample("image_dfl.dcm"), path)
    assert inspect_dicom(path, max_pixels=BIG).rows == 512
    monkeypatch.setattr(core.dicom, "MAX_INFLATED_BYTES", 100_000)  # the file inflates to ~0.5 MB
    with pytest.raises(PixelError) as caught:
        inspect_dicom(path, max_pixels=BIG)
    assert caught.value.status == "too_large" and "inflates past 100000 bytes" in caught.value.reason
