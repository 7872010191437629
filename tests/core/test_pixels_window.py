"""load_pixels' own LINEAR windowing and min-max scaling give pydicom's / the plain formula's
numbers exactly, on real pydicom-data files and on edited windows (LINEAR_EXACT, width 1,
rescaled, signed, inverted)."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from core.pixels import _linear_window, to_unit_range

WINDOWED = ["CT_small.dcm", "MR_small.dcm", "RG3_UNCR.dcm", "MR2_UNCR.dcm", "RG1_UNCI.dcm"]


def _reference_unit_range(values: np.ndarray) -> np.ndarray:
    """to_unit_range as it was written before its fast path (masked min/max)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.float32)
    low, high = values[finite].min(), values[finite].max()
    if not finite.all():
        values = np.where(finite, values, low)
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _windows(ds: pydicom.Dataset):
    """The file's own window, then edited ones."""
    yield ds
    for function, centre, width in [("LINEAR_EXACT", 40.5, 400.0), ("LINEAR", 100.0, 1.0),
                                     ("LINEAR", -50.0, 2.0), ("LINEAR_EXACT", 0.0, 0.5),
                                     ("LINEAR", 10.0, 0.5)]:
        edited = copy.deepcopy(ds)
        edited.VOILUTFunction, edited.WindowCenter, edited.WindowWidth = function, centre, width
        yield edited
    rescaled = copy.deepcopy(ds)
    rescaled.RescaleSlope, rescaled.RescaleIntercept = 2.5, -1024
    rescaled.WindowCenter, rescaled.WindowWidth = [300.0, 40.0], [1500.0, 400.0]
    yield rescaled


@pytest.mark.parametrize("name", WINDOWED)
def test_linear_window_equals_pydicoms(name):
    path = pydicom.data.get_testdata_file(name)
    source = pydicom.dcmread(path)
    if "WindowCenter" not in source:
        source.WindowCenter, source.WindowWidth = 1000.0, 2000.0
    array = source.pixel_array
    for ds in _windows(source):
        values = apply_modality_lut(array, ds)
        try:
            expected = apply_voi_lut(values, copy.deepcopy(ds), index=0)
        except ValueError as error:
            with pytest.raises(ValueError, match="window width"):
                _linear_window(values, ds)
            assert "Window Width" in str(error)
            continue
        ours = _linear_window(values, ds)
        assert ours is not None and ours.dtype == np.float64
        assert np.array_equal(ours, expected), (name, ds.get("VOILUTFunction"), ds.WindowWidth)


def test_linear_window_leaves_other_cases_to_pydicom():
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    values = ds.pixel_array
    unwindowed = copy.deepcopy(ds)
    assert "WindowCenter" not in unwindowed and "VOILUTSequence" not in unwindowed
    ds.WindowCenter, ds.WindowWidth = 40.0, 400.0
    assert _linear_window(values, ds) is not None
    sigmoid = copy.deepcopy(ds)
    sigmoid.VOILUTFunction = "SIGMOID"
    colour = pydicom.dcmread(pydicom.data.get_testdata_file("SC_rgb.dcm"))
    colour.WindowCenter, colour.WindowWidth = 128.0, 256.0
    for case in (sigmoid, unwindowed, colour):
        assert _linear_window(values, case) is None


def test_to_unit_range_equals_the_masked_formula():
    rng = np.random.default_rng(0)
    ct = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm")).pixel_array
    cases = [ct, ct.astype(np.float64) * 0.37 - 1024, rng.normal(size=(40, 30)),
             np.full((5, 5), 7.0), np.zeros((0, 3))]
    with_nan = rng.normal(size=(20, 20))
    with_nan[3, 4], with_nan[5, 6], with_nan[7, 8] = np.nan, np.inf, -np.inf
    cases += [with_nan, np.full((3, 3), np.nan)]
    for values in cases:
        ours, reference = to_unit_range(values), _reference_unit_range(values)
        assert ours.dtype == np.float32 and ours.shape == np.shape(values)
        assert np.array_equal(ours, reference)
        assert ours.size == 0 or (ours.min() >= 0.0 and ours.max() <= 1.0)
