from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from core.pixels import PixelError
from core.windowing import CT_WINDOW_PRESETS, apply_window, load_scan_values

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")


def test_apply_window_by_hand() -> None:
    # Soft tissue 40/400: black at or below 39.5 - 199.5 = -160, white above 39.5 + 199.5 = 239.
    values = np.array([-1000.0, -160.0, 40.0, 239.0, 240.0, 3000.0])
    shown = apply_window(values, 40, 400)
    assert shown.dtype == np.float32
    # (40 - 39.5) / 399 + 0.5 = 0.50125; (239 - 39.5) / 399 + 0.5 = 1.0
    np.testing.assert_allclose(shown, [0.0, 0.0, 0.50125313, 1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(apply_window(values, 40, 400, inverted=True), 1 - shown, atol=1e-6)


def test_lung_window_by_hand() -> None:
    # Lung -600/1500: (-600 - (-600.5)) / 1499 + 0.5 = 0.500334; air (-1000) -> 0.233656.
    np.testing.assert_allclose(apply_window(np.array([-600.0, -1000.0]), *CT_WINDOW_PRESETS["lung"]),
                               [0.5003336, (-1000 + 600.5) / 1499 + 0.5], atol=1e-6)


def test_width_one_is_a_threshold() -> None:
    np.testing.assert_array_equal(apply_window(np.array([9.0, 10.0]), 10, 1), [0.0, 1.0])


@pytest.mark.parametrize("center, width, message", [(40, 0, "width=0"), (float("nan"), 400, "finite")])
def test_bad_windows_are_refused(center, width, message) -> None:
    with pytest.raises(ValueError, match=message):
        apply_window(np.zeros(3), center, width)


def test_ct_values_are_hounsfield_units_with_the_files_window(tmp_path) -> None:
    source = get_testdata_file("CT_small.dcm")  # CT, slope 1, intercept -1024
    ds = pydicom.dcmread(source)
    ds.WindowCenter, ds.WindowWidth = [40, -600], [400, 1500]
    ds.save_as(tmp_path / "ct.dcm")
    scan = load_scan_values(tmp_path / "ct.dcm")
    assert scan.units == "HU" and scan.is_ct and not scan.inverted
    np.testing.assert_array_equal(scan.values, ds.pixel_array.astype(np.float32) - 1024)
    assert scan.own_windows == [(40.0, 400.0), (-600.0, 1500.0)] and scan.default_window() == (40.0, 400.0)


def test_other_dicom_reports_its_rescale_type_and_inversion(tmp_path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Modality, ds.RescaleType, ds.PhotometricInterpretation = "OT", "US", "MONOCHROME1"
    ds.RescaleSlope, ds.RescaleIntercept = 2, 10
    ds.add_new(0x00281050, "LO", "garbage")  # WindowCenter that is no number
    ds.WindowWidth = 0
    ds.save_as(tmp_path / "ot.dcm")
    scan = load_scan_values(tmp_path / "ot.dcm")
    assert scan.units == "US" and scan.inverted and scan.own_windows == []
    np.testing.assert_array_equal(scan.values, ds.pixel_array.astype(np.float32) * 2 + 10)
    low, high = float(scan.values.min()), float(scan.values.max())
    assert scan.default_window() == ((low + high) / 2, high - low)


def test_png_values_are_grey_levels(covid_dir) -> None:
    path = next(p for p in sorted(covid_dir.rglob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    scan = load_scan_values(path)
    assert scan.units == "grey level (0-255)" and scan.own_windows == []
    assert scan.values.min() >= 0 and scan.values.max() <= 255 and scan.values.max() > 1


def test_unreadable_dicom_is_a_pixel_error(tmp_path) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes()[:2000])
    with pytest.raises(PixelError) as caught:
        load_scan_values(path)
    assert str(path) in str(caught.value)
