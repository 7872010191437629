"""Fixtures for the encoder tests: real scans, the default encoder, and a machine without network."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from core.encoders import ENCODERS, DownloadWeights, get_encoder
from core.encoders.weights import forget_failed_downloads

XRAY_PA = "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
XRAY_PA_OTHER = "auntminnie-c-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
CT_SLICE = "jkms-35-e79-g001-l-d.jpg"


@pytest.fixture(scope="module")
def images(covid_dir: Path) -> Path:
    return covid_dir / "images"


@pytest.fixture(scope="module")
def effnet():
    return get_encoder("efficientnet-lite0", device="cpu")


@pytest.fixture
def refuse_downloads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every download attempt fails at once and is recorded."""
    attempts: list[str] = []

    def refuse(url: str, dst: str, *args, **kwargs) -> None:
        attempts.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    forget_failed_downloads()
    yield attempts
    forget_failed_downloads()


@pytest.fixture
def offline(refuse_downloads: list[str], monkeypatch: pytest.MonkeyPatch,
            tmp_path: Path) -> list[str]:
    """No network, empty weight caches in tmp_path and no weights environment variables."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for spec in ENCODERS.values():
        if isinstance(spec.weights, DownloadWeights):
            monkeypatch.delenv(spec.weights.env, raising=False)
    return refuse_downloads
