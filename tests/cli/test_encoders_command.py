"""``scanatlas encoders``: the registry table, built from the entries, without downloading."""

from __future__ import annotations

import argparse
import urllib.error
from pathlib import Path

import pytest
import torch

from core.encoders import ENCODERS, DownloadWeights
from core.encoders.weights import forget_failed_downloads


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    attempts: list[str] = []

    def refuse(url: str, dst: str, *args, **kwargs) -> None:
        attempts.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for spec in ENCODERS.values():
        if isinstance(spec.weights, DownloadWeights):
            monkeypatch.delenv(spec.weights.env, raising=False)
    forget_failed_downloads()
    return attempts


def test_encoders_command_prints_the_table(offline: list[str], capsys: pytest.CaptureFixture):
    from cli.commands import encoders as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["encoders", "--verbose"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:5] == ["name", "kind", "dim", "input", "weights"]
    for name, spec in ENCODERS.items():
        assert name in out and spec.version in out
    for spec in ENCODERS.values():
        if isinstance(spec.weights, DownloadWeights):
            assert f"{spec.name}: weights file '{spec.weights.file}' is not in" in out
    assert "weights file 'resnet18-f37072fd.pth' is not in" in out
    assert offline == [], "listing encoders must never download"


def test_encoders_command_without_verbose_points_at_it(offline: list[str],
                                                       capsys: pytest.CaptureFixture):
    from cli.commands import encoders as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["encoders"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "weights missing for resnet18, densenet121-xrv" in out
    assert "scanatlas encoders --verbose" in out
