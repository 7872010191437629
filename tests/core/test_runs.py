"""The run store: keys, atomic save, load in a new process, listing, deletion, hostile keys."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.runs import RunStore, check_key, run_key

ROOT = Path(__file__).resolve().parents[2]


def test_key_depends_on_inputs_config_and_version_only():
    base = run_key("projection", inputs={"cohort": "c1"}, config={"perplexity": 5.0}, version=1)
    assert base.startswith("projection-")
    assert base == run_key("projection", inputs={"cohort": "c1"}, config={"perplexity": 5}, version="1")
    assert base != run_key("projection", inputs={"cohort": "c2"}, config={"perplexity": 5}, version=1)
    assert base != run_key("projection", inputs={"cohort": "c1"}, config={"perplexity": 6}, version=1)
    assert base != run_key("projection", inputs={"cohort": "c1"}, config={"perplexity": 5}, version=2)


@pytest.mark.parametrize("key", ["../x-0123abcd", "/etc/passwd", "projection-../../a", "", "a" * 200, "x-ZZZZ1234"])
def test_hostile_keys_are_refused_before_any_path_is_built(tmp_path, key):
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        RunStore(tmp_path).delete(key)


def test_every_payload_type_survives_save_and_load_in_a_new_process(tmp_path):
    store = RunStore(tmp_path)
    key = run_key("demo-kind", inputs={"d": 1}, config={"k": 3}, version=2)
    table = pd.DataFrame({"a": [1, 2], "b": ["x", None], "c": [0.5, np.nan]})
    store.save("demo-kind", key, version=2, config={"k": 3, "names": ("a", "b")}, inputs={"d": 1},
               dataset="ds", summary={"k": 3},
               payload={"coords": np.arange(6, dtype=np.float32).reshape(3, 2), "table": table,
                        "notes": ["one", "two"], "model": b"\x00\x01raw"})
    code = (
        "import json, sys; from core.runs import RunStore\n"
        f"run = RunStore({str(tmp_path)!r}).load('demo-kind', {key!r}, version=2)\n"
        "print(json.dumps({'coords': run.load('coords').tolist(), 'dtype': str(run.load('coords').dtype),"
        " 'table': run.load('table').astype(object).where(run.load('table').notna(), None).to_dict('list'),"
        " 'notes': run.load('notes'), 'model': list(run.load('model')), 'config': run.config,"
        " 'dataset': run.dataset, 'summary': run.summary, 'inputs': run.inputs}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout)
    assert out["coords"] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]] and out["dtype"] == "float32"
    assert out["table"] == {"a": [1, 2], "b": ["x", None], "c": [0.5, None]}
    assert out["notes"] == ["one", "two"] and out["model"] == [0, 1, 114, 97, 119]
    assert out["config"] == {"k": 3, "names": ["a", "b"]} and out["inputs"] == {"d": 1}
    assert out["dataset"] == "ds" and out["summary"] == {"k": 3}


def test_a_run_without_its_commit_marker_or_of_another_version_is_a_miss(tmp_path):
    store = RunStore(tmp_path)
    key = run_key("projection", inputs={}, config={}, version=1)
    run = store.save("projection", key, version=1, config={}, payload={"coords": np.zeros((2, 2))})
    assert store.load("projection", key, version=1) is not None
    assert store.load("projection", key, version=2) is None
    (run.folder / "run.json").unlink()
    assert store.load("projection", key) is None
    assert store.list().empty


def test_list_filters_by_kind_and_dataset_and_delete_removes_only_that_run(tmp_path):
    store = RunStore(tmp_path)
    keys = {}
    for kind, dataset in [("projection", "a"), ("clustering", "a"), ("clustering", "b")]:
        key = run_key(kind, inputs={"dataset": dataset}, config={}, version=1)
        store.save(kind, key, version=1, config={}, dataset=dataset, payload={"x": np.ones(1)})
        keys[(kind, dataset)] = key
    assert len(store.list()) == 3
    assert set(store.list(kind="clustering")["dataset"]) == {"a", "b"}
    assert store.list(dataset="a")["kind"].tolist().count("projection") == 1
    assert store.delete(keys[("clustering", "a")]) is True
    assert store.delete(keys[("clustering", "a")]) is False
    assert sorted(store.list()["key"]) == sorted([keys[("projection", "a")], keys[("clustering", "b")]])


def test_compute_or_load_computes_once(tmp_path):
    store = RunStore(tmp_path)
    calls = []
    key = run_key("k-sweep", inputs={}, config={}, version=1)

    def compute():
        calls.append(1)
        return {"scores": pd.DataFrame({"k": [2, 3]})}, {"best_k": 3}

    first, cached = store.compute_or_load("k-sweep", key, version=1, compute=compute, config={})
    second, cached_again = store.compute_or_load("k-sweep", key, version=1, compute=compute, config={})
    assert (cached, cached_again, len(calls)) == (False, True, 1)
    assert second.summary == {"best_k": 3}
    assert second.load("scores")["k"].tolist() == [2, 3]


def test_payload_names_cannot_escape_the_run_folder(tmp_path):
    store = RunStore(tmp_path)
    key = run_key("projection", inputs={}, config={}, version=1)
    with pytest.raises(ValueError):
        store.save("projection", key, version=1, config={}, payload={"../evil": np.zeros(1)})
    with pytest.raises(ValueError):
        store.save("projection", key, version=1, config={}, payload={"o": np.array([object()], dtype=object)})


def test_a_table_column_of_mixed_types_is_stored_as_text_keeping_missing_values(tmp_path):
    store = RunStore(tmp_path)
    key = run_key("cluster-drivers", inputs={}, config={}, version=1)
    frame = pd.DataFrame({"top": [3, "3", None, 2.5], "n": [1, 2, 3, 4]})
    run = store.save("cluster-drivers", key, version=1, config={}, payload={"t": frame})
    loaded = run.load("t")
    assert [None if pd.isna(v) else v for v in loaded["top"]] == ["3", "3", None, "2.5"]
    assert loaded["n"].tolist() == [1, 2, 3, 4]


def test_a_key_of_another_kind_is_refused_but_clusterings_keep_their_historical_keys(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(ValueError, match="does not belong to kind"):
        store.load("projection", "drift-study-0123456789abcdef")
    run = store.save("clustering", "kmeans-72e6ad838c336596", version=2, config={}, payload={"labels": np.zeros(3)})
    assert store.find("kmeans-72e6ad838c336596").folder == run.folder


def test_save_removes_its_own_stale_files_but_never_through_a_link_out_of_the_store(tmp_path):
    store = RunStore(tmp_path / "runs")
    key = run_key("projection", inputs={}, config={}, version=1)
    first = store.save("projection", key, version=1, config={}, payload={"a": np.zeros(1), "b": np.ones(1)})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the store's")
    (first.folder / "link-to-outside").symlink_to(outside, target_is_directory=True)
    (first.folder / "old-dir").mkdir()
    (first.folder / "old-dir" / "x.npy").write_bytes(b"x")
    # Saved again with fewer files: the stale file, folder and link go; the link's target stays.
    second = store.save("projection", key, version=1, config={}, payload={"a": np.zeros(1)})
    assert sorted(p.name for p in second.folder.iterdir()) == ["a.npy", "run.json"]
    assert (outside / "keep.txt").read_text() == "not the store's"

    # A run folder replaced by a link to a folder elsewhere is refused before anything is
    # written or removed there.
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.npy").write_bytes(b"data")
    shutil.rmtree(second.folder)
    second.folder.symlink_to(victim, target_is_directory=True)
    with pytest.raises(ValueError, match="not a run folder"):
        store.save("projection", key, version=1, config={}, payload={"a": np.zeros(1)})
    assert sorted(p.name for p in victim.iterdir()) == ["precious.npy"]
