"""The scan viewer's window/level controls in the scan's own units (AppTest of ui.widgets)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")


def viewer_script(path: str) -> None:
    import pandas as pd

    from ui import widgets

    rows = pd.DataFrame({"path": [path], "frame": [0], "patient_id": ["p1"], "label": ["COVID-19"]})
    widgets.scan_viewer(None, rows, key="viewer")


def open_viewer(path) -> AppTest:
    at = AppTest.from_function(viewer_script, args=(str(path),), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_ct_viewer_offers_the_files_window_and_hounsfield_presets(tmp_path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # CT: stored - 1024 = HU
    ds.WindowCenter, ds.WindowWidth = 50, 350
    ds.save_as(tmp_path / "ct.dcm")
    at = open_viewer(tmp_path / "ct.dcm")
    preset = at.selectbox(key="viewer_0_preset")
    assert preset.options == ["the file's window (50 / 350)", "lung (-600 / 1500)",
                              "mediastinum / soft tissue (40 / 400)", "bone (480 / 2500)", "full range"]
    level, width = at.slider
    assert level.label == "Level (centre, HU)" and (level.value, width.value) == (50.0, 350.0)
    preset.set_value("lung (-600 / 1500)").run()
    level, width = at.slider
    assert (level.value, width.value) == (-600.0, 1500.0)
    assert level.min <= -600 and width.max >= 2500
    assert at.get("image")[0].proto.imgs[0].caption == "window -600 / 1500 HU"


def test_photo_viewer_uses_grey_levels_without_ct_presets(covid_dir) -> None:
    path = next(p for p in sorted(covid_dir.rglob("*")) if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    at = open_viewer(path)
    assert at.selectbox(key="viewer_0_preset").options == ["full range"]
    level, width = at.slider
    assert level.label == "Level (centre, grey level (0-255))"
    assert level.min >= 0 and level.max <= 255 and width.value > 1
    assert not np.isnan(level.value)
