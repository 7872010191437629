"""Tests for core.demo: the synthetic cardiac-MRI DICOM cohort and `scanatlas demo`."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cli.commands import demo as demo_command
from core.demo import (
    CSV_COLUMNS,
    DEMO_GROUPS,
    DEMO_SEED,
    FIELD_OF_VIEW_MM,
    ensure_demo_cohort,
    group_counts,
    make_demo_cohort,
)

SMALL = {"n_patients": 16, "n_slices": 4, "size": 64}


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_cohort(tmp_path_factory.mktemp("demo_small"), **SMALL)


@pytest.fixture(scope="module")
def separability_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 8 patients per group; three slices are enough for a mid-ventricular one.
    return make_demo_cohort(tmp_path_factory.mktemp("demo_sep"), n_patients=32, n_slices=3,
                            size=64, seed=DEMO_SEED)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_csv_columns_counts_and_groups(small_cohort: Path) -> None:
    with open(small_cohort, newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == CSV_COLUMNS
    table = pd.read_csv(small_cohort, dtype={"patient_id": str, "folder_path": str})
    assert len(table) == 16
    assert table["patient_id"].tolist() == [f"DEMO-{i:03d}" for i in range(1, 17)]
    assert table["diagnosis"].value_counts().to_dict() == dict.fromkeys(DEMO_GROUPS, 4)
    # Shuffled: not one block per group in DEMO_GROUPS order.
    assert table["diagnosis"].tolist() != [g for g in DEMO_GROUPS for _ in range(4)]
    assert set(table["gender"]) <= {"Male", "Female"}
    assert set(table["modality"]) == {"MR"}
    assert (table["num_slices"] == 4).all()
    assert table["age"].between(18, 88).all()
    for folder in table["folder_path"]:
        files = sorted((small_cohort.parent / folder).glob("*.dcm"))
        assert [f.name for f in files] == [f"slice_{k:02d}.dcm" for k in range(4)]


def test_group_counts_split_remainder() -> None:
    assert group_counts(80) == dict.fromkeys(DEMO_GROUPS, 20)
    assert list(group_counts(6).values()) == [2, 2, 1, 1]
    assert sum(group_counts(1).values()) == 1


def test_files_are_valid_mr_dicom_matching_the_csv(small_cohort: Path) -> None:
    table = pd.read_csv(small_cohort, dtype={"patient_id": str, "folder_path": str})
    sop_uids = set()
    for row in table.itertuples():
        series = [pydicom.dcmread(p) for p in sorted((small_cohort.parent / row.folder_path).glob("*.dcm"))]
        assert len({ds.SeriesInstanceUID for ds in series}) == 1
        assert len({ds.StudyInstanceUID for ds in series}) == 1
        locations = [float(ds.SliceLocation) for ds in series]
        assert locations == sorted(locations, reverse=True)  # base to apex
        for k, ds in enumerate(series):
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert ds.SOPClassUID == MRImageStorage == ds.file_meta.MediaStorageSOPClassUID
            assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
            sop_uids.add(ds.SOPInstanceUID)
            assert ds.PatientID == row.patient_id
            assert ds.PatientAge == f"{row.age:03d}Y"
            assert ds.PatientSex == row.gender[0]
            assert ds.Modality == "MR" and ds.BodyPartExamined == "HEART"
            assert ds.Manufacturer == "ScanAtlas synthetic"
            assert ds.SeriesDescription == "SAX cine (synthetic)"
            assert ds.InstanceNumber == k + 1
            assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
            assert ds.PhotometricInterpretation == "MONOCHROME2"
            assert float(ds.PixelSpacing[0]) == pytest.approx(FIELD_OF_VIEW_MM / 64)
            assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == 0.0
            assert float(ds.WindowWidth) > 0
            pixels = ds.pixel_array
            assert pixels.shape == (64, 64) and pixels.dtype == np.uint16
            assert 0 < pixels.max() <= 4095
            # Fake identifiers are present so that de-identification can be tested.
            assert str(ds.PatientName).startswith("SYNTHETIC^PATIENT")
            assert ds.InstitutionName == "ScanAtlas Demo Hospital"
            for keyword in ("PatientBirthDate", "ReferringPhysicianName", "AccessionNumber",
                            "PatientAddress"):
                assert str(ds.get(keyword, "")), keyword
    assert len(sop_uids) == 16 * 4


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    params = {"n_patients": 4, "n_slices": 2, "size": 64}
    first = make_demo_cohort(tmp_path / "a", seed=7, **params).parent
    second = make_demo_cohort(tmp_path / "b", seed=7, **params).parent
    other = make_demo_cohort(tmp_path / "c", seed=8, **params).parent
    files_a, files_b, files_c = _files(first), _files(second), _files(other)
    assert len(files_a) == 1 + 4 * 2
    assert files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert files_a["DEMO-001/slice_00.dcm"] != files_c["DEMO-001/slice_00.dcm"]
    assert files_a["patients.csv"] != files_c["patients.csv"]


def _mid_slice(csv_path: Path, folder: str, n_slices: int) -> tuple[np.ndarray, float]:
    ds = pydicom.dcmread(csv_path.parent / folder / f"slice_{n_slices // 2:02d}.dcm")
    return ds.pixel_array.astype(float), float(ds.PixelSpacing[0])


def _heart_region_values(pixels: np.ndarray, spacing: float) -> np.ndarray:
    """Pixels within 40 mm of the image centre, scaled by the image's 99th percentile."""
    centres = (np.arange(pixels.shape[0]) + 0.5 - pixels.shape[0] / 2) * spacing
    disk = np.hypot(centres[None, :], centres[:, None]) < 40.0
    return pixels[disk] / np.percentile(pixels, 99)


def test_groups_are_separable_from_pixels(separability_cohort: Path) -> None:
    table = pd.read_csv(separability_cohort, dtype={"folder_path": str})
    diagnosis = np.asarray(table["diagnosis"], dtype=object)
    bright_area, enhancement, quantiles = [], [], []
    for folder in table["folder_path"]:
        pixels, spacing = _mid_slice(separability_cohort, folder, 3)
        values = _heart_region_values(pixels, spacing)
        bright = values[values > 0.65]
        bright_area.append(bright.size * spacing**2)  # blood pool (+ scar) area, mm^2
        enhancement.append(np.percentile(values, 99.5) / np.median(bright))
        quantiles.append(np.percentile(values, np.linspace(50, 100, 21)))
    bright_area, enhancement = np.array(bright_area), np.array(enhancement)

    def auc(positive: str, negative: str, feature: np.ndarray) -> float:
        keep = np.isin(diagnosis, [positive, negative])
        return roc_auc_score(diagnosis[keep] == positive, feature[keep])

    # Dilated hearts have far more blood pool than hypertrophied ones.
    assert auc("Dilated cardiomyopathy", "Hypertrophic cardiomyopathy", bright_area) >= 0.95
    # Infarct scar is brighter than blood; normal hearts have nothing brighter than blood.
    assert auc("Myocardial infarction", "Normal", enhancement) >= 0.95
    # All four groups from intensity quantiles alone, cross-validated (chance is 0.25).
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(4, shuffle=True, random_state=0)
    accuracy = cross_val_score(model, np.array(quantiles), diagnosis, cv=folds).mean()
    assert accuracy >= 0.7


def test_ensure_demo_cohort_generates_once(tmp_path: Path) -> None:
    csv_path = ensure_demo_cohort(tmp_path, n_patients=4, n_slices=1, size=32)
    assert csv_path == tmp_path / "patients.csv"
    first = _files(tmp_path)
    assert len(first) == 1 + 4
    slice_file = tmp_path / "DEMO-001" / "slice_00.dcm"
    slice_file.write_bytes(b"marker")
    # Present CSV: nothing is regenerated, even with other parameters.
    assert ensure_demo_cohort(tmp_path, n_patients=8, n_slices=2, size=64) == csv_path
    assert slice_file.read_bytes() == b"marker"
    assert not (tmp_path / "DEMO-005").exists()


def test_default_cohort_shape(tmp_path: Path) -> None:
    csv_path = ensure_demo_cohort(tmp_path)
    table = pd.read_csv(csv_path)
    assert table["diagnosis"].value_counts().to_dict() == dict.fromkeys(DEMO_GROUPS, 20)
    assert len(list(tmp_path.glob("DEMO-*/slice_*.dcm"))) == 80 * 4
    ds = pydicom.dcmread(tmp_path / "DEMO-080" / "slice_03.dcm")
    assert ds.pixel_array.shape == (128, 128)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_patients": 0}, "n_patients=0"),
        ({"n_slices": 0}, "n_slices=0"),
        ({"size": 16}, "size=16"),
        ({"seed": -1}, "seed=-1"),
        ({"size": 64.5}, "size=64.5"),
        ({"n_patients": True}, "n_patients=True"),
    ],
)
def test_bad_parameters_raise_with_value(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_demo_cohort(tmp_path, **kwargs)
    assert not (tmp_path / "patients.csv").exists()


def _demo_command(argv: list[str]) -> argparse.Namespace:
    # Our own parser, so this test does not depend on the other subcommands' modules.
    parser = argparse.ArgumentParser(prog="scanatlas")
    demo_command.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_writes_cohort_and_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cohort"
    args = _demo_command(["demo", "--out", str(out), "--patients", "8", "--slices", "2",
                          "--size", "48", "--seed", "3"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out.strip()
    assert len(printed.splitlines()) == 1
    assert "8 synthetic patients" in printed and "16 DICOM files" in printed
    assert "Normal 2" in printed
    assert len(pd.read_csv(out / "patients.csv")) == 8
    assert pydicom.dcmread(out / "DEMO-008" / "slice_01.dcm").pixel_array.shape == (48, 48)


def test_cli_defaults_and_bad_size(tmp_path: Path) -> None:
    args = _demo_command(["demo", "--out", str(tmp_path)])
    assert (args.patients, args.slices, args.size, args.seed) == (80, 8, 128, DEMO_SEED)
    args = _demo_command(["demo", "--out", str(tmp_path), "--size", "8"])
    # cli.main turns ValueError into a one-line error with exit code 2.
    with pytest.raises(ValueError, match="size=8"):
        args.func(args)
