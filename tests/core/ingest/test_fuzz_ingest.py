"""Hostile input, at volume (issue 9): the fuzz harness of benchmarks/fuzz_ingest.py, seeded
and bounded, in the suite. Mutated DICOM, PNG, JPEG, CSV and ZIP inputs must each be ingested
or reported with a reason; no exception may escape ingest other than a clear whole-source
refusal; nothing may be written outside the output folder."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pydicom
import pydicom.data
import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
N_INPUTS = 300  # about 20 s here; the benchmark runs 10,000


@pytest.fixture(scope="module")
def fuzz(covid_dir):
    path = REPO_ROOT / "benchmarks" / "fuzz_ingest.py"
    spec = importlib.util.spec_from_file_location("fuzz_ingest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_ingest"] = module
    spec.loader.exec_module(module)
    return module


def test_mutated_inputs_are_each_ingested_or_reported_and_never_crash(fuzz, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    counts = fuzz.run_fuzz(N_INPUTS, seed=0, workdir=workdir)
    result = counts.as_dict()
    assert result["crashes"] == 0, result["crash_examples"]
    assert result["unaccounted"] == 0, result["unaccounted_examples"]
    assert result["outside_writes"] == 0, result["outside_write_examples"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert not any(workdir.iterdir())
    assert result["inputs"] == N_INPUTS
    assert set(result["by_kind"]) == {"dicom", "png", "jpeg", "csv", "zip"}
    assert result["ingested"] + result["reported"] + result["refused_whole_source"] == N_INPUTS
    # The mutations reach the guards, not just the parsers.
    assert result["ingested"] > 0.2 * N_INPUTS
    assert {"truncated", "unreadable", "not_an_image", "too_large"} <= set(result["reported_by_reason"])
    assert result["refused_whole_source"] > 0
    # No lying frame count became rows: no input gives more rows than the seed with most frames.
    most_frames = max(int(pydicom.dcmread(pydicom.data.get_testdata_file(name),
                                          stop_before_pixels=True, force=True).get("NumberOfFrames", 1) or 1)
                      for name in fuzz.DICOM_SEEDS)
    assert result["max_rows_per_input"] <= most_frames


def test_mutators_are_deterministic_for_a_seed(fuzz):
    import random

    seeds = fuzz.load_seeds()
    first = [fuzz.mutate_dicom(seeds["dicom"][0], random.Random(7))[0] for _ in range(3)]
    again = [fuzz.mutate_dicom(seeds["dicom"][0], random.Random(7))[0] for _ in range(3)]
    assert first == again
    png, tag = fuzz.mutate_png(seeds["png"][0], random.Random(3))
    assert png != seeds["png"][0] and tag
