"""``scanatlas embed DIR --engine ray``: the CLI path, the messages without Ray, bad options."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from cli.main import main

HAS_RAY = importlib.util.find_spec("ray") is not None


def test_ray_options_need_the_ray_engine(demo_dataset, capsys):
    assert main(["embed", str(demo_dataset.root), "--address", "auto"]) == 2
    assert "--address and --actors need --engine ray" in capsys.readouterr().out
    assert main(["embed", str(demo_dataset.root), "--engine", "ray", "--actors", "0"]) == 2
    assert "--actors 0 must be >= 1" in capsys.readouterr().out


def test_without_ray_the_message_names_the_install_command(demo_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when not installed
    code = main(["embed", str(demo_dataset.root), "--engine", "ray", "--cache", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 2
    assert 'pip install -e ".[ray]"' in out and "Traceback" not in out
    assert not any(tmp_path.iterdir())  # nothing embedded, nothing written


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason='Ray is an optional extra: pip install -e ".[ray]"')
def test_embed_with_the_ray_engine_then_the_local_engine_reads_its_cache(demo_dataset, tmp_path, capsys):
    root, cache = str(demo_dataset.root), str(tmp_path / "cache")
    n = len(demo_dataset.images)
    args = ["embed", root, "--encoder", "efficientnet-lite0", "--cache", cache, "--batch-size", "16"]
    assert main([*args, "--engine", "ray"]) == 0  # starts and stops a local Ray instance
    out = capsys.readouterr().out
    assert f"computed: {n}\n" in out and "failed:   0" in out
    assert main(args) == 0  # the local engine finds every vector in the same cache
    out = capsys.readouterr().out
    assert f"cached:   {n}\n" in out and "computed: 0\n" in out
    assert Path(root, "embed_failures_efficientnet-lite0.csv").is_file()
