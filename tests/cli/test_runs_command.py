"""``scanatlas runs list|show|rm`` over a real store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main
from core.runs import RunStore, run_key


def test_runs_list_show_rm(tmp_path, capsys):
    store = RunStore(tmp_path)
    key = run_key("projection", inputs={"m": 1}, config={}, version=1)
    store.save("projection", key, version=1, config={"method": "pca"}, dataset="demo",
               payload={"coords": np.zeros((2, 2))}, summary={"method": "pca"})
    assert main(["runs", "list", "--runs", str(tmp_path), "--dataset", "demo"]) == 0
    listed = capsys.readouterr().out
    assert key in listed and "projection" in listed
    assert main(["runs", "list", "--runs", str(tmp_path), "--kind", "clustering"]) == 0
    assert "no saved runs of kind clustering" in capsys.readouterr().out
    assert main(["runs", "show", key, "--runs", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"] == {"method": "pca"} and shown["files"] == ["coords"]
    assert main(["runs", "rm", key, "--runs", str(tmp_path)]) == 0
    assert store.find(key) is None
    assert main(["runs", "show", key, "--runs", str(tmp_path)]) == 2
    assert "no saved run" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["../../etc", "projection-../x"])
def test_a_hostile_key_is_refused_with_one_line(tmp_path, capsys, key):
    assert main(["runs", "rm", key, "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a run key" in err and "Traceback" not in err
