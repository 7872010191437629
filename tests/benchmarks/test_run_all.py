"""benchmarks/run_all.py (issue 12, "Done when"): --collect gathers the headline figures of the
results files into all.json and SUMMARY.md; a missing or changed file says "not measured".
Nothing here runs a benchmark."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


@pytest.fixture(scope="module")
def run_all():
    """benchmarks/run_all.py as a module (benchmarks/ is not a package on the import path)."""
    spec = importlib.util.spec_from_file_location("scanatlas_run_all", REPO / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _collect(run_all, folder: Path, *extra: str) -> dict:
    assert run_all.main(["--collect", "--results", str(folder), *extra]) == 0
    return json.loads((folder / "all.json").read_text())


def _figure(report: dict, benchmark: str, start: str) -> dict:
    found = [f for f in report["figures"] if f["benchmark"] == benchmark and f["figure"].startswith(start)]
    assert len(found) == 1, [f["figure"] for f in report["figures"] if f["benchmark"] == benchmark]
    return found[0]


def test_collect_extracts_the_figures_of_hand_written_files(run_all, tmp_path):
    (tmp_path / "embed.json").write_text(json.dumps({
        "encoder": "efficientnet-lite0", "model_only": {"images": 64, "images_per_s": 40.0},
        "end_to_end": {"images": 64, "images_per_s": 30.0},
        "cache": {"cold_read_seconds_median": 0.5, "write_seconds": 2.0, "n_vectors": 1000, "dim": 8},
        "cores": 2, "load_average_1min_before_after": [1.5, 2.5], "measured_at": "2026-11-29T10:00:00+0000"}))
    (tmp_path / "audit_speed_10k.json").write_text(json.dumps({
        "source": "dataset demo (10000 images)",
        "sizes": [{"n": 1250, "total_s": 50.0, "peak_rss_mb": 400.0, "candidates": 6250, "load": 3.0},
                  {"n": 10000, "total_s": 500.0, "peak_rss_mb": 900.0, "candidates": 55000, "load": 4.0}],
        "growth": {"total_s": {"exponent": 1.11}}}))
    report = _collect(run_all, tmp_path, "--only", "embed,audit_speed_10k,ingest")
    embed = _figure(report, "embed", "embedding end to end")
    assert (embed["value"], embed["baseline_value"], embed["ratio"], embed["unit"]) == (30.0, 40.0, 0.75, "images/s")
    assert _figure(report, "embed", "embedding cache cold read")["ratio"] == 0.25
    audit = _figure(report, "audit_speed_10k", "audit at 10,000 images")
    assert (audit["value"], audit["baseline_value"], audit["ratio"]) == (500.0, 50.0, 10.0)
    assert "growth exponent 1.11" in audit["note"]
    assert _figure(report, "audit_speed_10k", "audit peak memory")["ratio"] == 2.25
    assert _figure(report, "audit_speed_10k", "duplicate candidates per image")["value"] == 5.5
    # The file's own time, cores and load travel with it; the machine now is recorded too.
    recorded = {f["file"]: f for f in report["files"]}
    assert recorded["embed.json"] == {"file": "embed.json", "measured_at": "2026-11-29T10:00:00+0000", "cores": 2,
                                      "load": [1.5, 2.5]}
    assert recorded["audit_speed_10k.json"]["load"] == 4.0
    assert report["machine"]["cores"] >= 1 and len(report["machine"]["load_average"]) == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", report["machine"]["time"])
    # ingest.json is missing: reported, not a failure.
    ingest = _figure(report, "ingest", "ingest")
    assert ingest["status"] == "not measured" and ingest["value"] is None
    assert "no ingest.json: run benchmarks/bench_ingest.py" in ingest["note"]
    assert report["not_measured"] == ["ingest: no ingest.json: run benchmarks/bench_ingest.py"]
    summary = (tmp_path / "SUMMARY.md").read_text()
    assert "| embed | embedding end to end (decode + model) | 30 images/s | 40 (model alone) | 0.75 |" in summary
    assert "| ingest | ingest | not measured |" in summary


def test_collect_on_a_copy_of_the_real_results(run_all, tmp_path):
    names = ["embed.json", "decode.json", "scale.json", "api_latency.json", "propagation.json", "fuzz_ingest.json"]
    for name in names:
        shutil.copy(RESULTS / name, tmp_path / name)
    report = _collect(run_all, tmp_path)
    data = {name: json.loads((tmp_path / name).read_text()) for name in names}
    embed = _figure(report, "embed", "embedding end to end")
    assert embed["value"] == data["embed.json"]["end_to_end"]["images_per_s"]
    assert embed["ratio"] == pytest.approx(data["embed.json"]["end_to_end_over_model_only"], abs=0.01)
    for name, one in data["decode.json"]["sets"].items():
        figure = _figure(report, "decode", f"load_pixels time, {name}")
        assert figure["ratio"] == pytest.approx(one["load_over_decoder"], abs=0.01)
    for task, entry in data["scale.json"]["tasks"].items():
        finished = [r for r in entry["runs"] if "seconds" in r]
        figure = _figure(report, "scale", task + (" at" if finished else " ("))
        if finished:
            largest = max(finished, key=lambda r: r["rows"])
            assert figure["value"] == pytest.approx(largest["seconds"], rel=1e-3)
        elif any("timed_out_after_s" in r for r in entry["runs"]):  # stopped at its limit: a lower bound
            stopped = min((r for r in entry["runs"] if "timed_out_after_s" in r), key=lambda r: r["rows"])
            assert figure["value"] == stopped["timed_out_after_s"] and figure["unit"] == "s (at least)"
            assert "lower bounds" in figure["note"]
        else:
            assert figure["status"] == "not measured"
    api = _figure(report, "api_latency", "prediction API p50")
    assert api["ratio"] == pytest.approx(data["api_latency.json"]["ratio_api_to_model"]["p50"], abs=0.02)
    fuzz = _figure(report, "fuzz_ingest", "hostile inputs")
    assert fuzz["baseline_value"] == data["fuzz_ingest.json"]["inputs"]
    assert fuzz["ratio"] == (1.0 if data["fuzz_ingest.json"]["unaccounted"] == 0 else fuzz["ratio"])
    # Every registered benchmark whose file was not copied shows up as not measured.
    absent = {b.name for b in run_all.REGISTRY.values() if not set(b.files) & set(names)}
    not_measured = {f["benchmark"] for f in report["figures"] if f["note"].startswith("no ")}
    assert absent <= not_measured


def test_a_file_in_another_format_is_not_measured_not_a_crash(run_all, tmp_path):
    (tmp_path / "finetune.json").write_text(json.dumps({"comparison": []}))
    (tmp_path / "api_latency.json").write_text(json.dumps({"model_only": {"p50_ms": 10}}))
    (tmp_path / "load.json").write_text("{not json")
    report = _collect(run_all, tmp_path, "--only", "finetune,api_latency,load")
    notes = {f["benchmark"]: f["note"] for f in report["figures"]}
    assert all(f["status"] == "not measured" for f in report["figures"])
    assert "finetune.json has an unexpected shape (StopIteration)" in notes["finetune"]
    assert "api_latency.json lacks 'api_sequential.p50_ms'" in notes["api_latency"]
    assert notes["load"] == "load.json is unreadable: JSONDecodeError"


def test_registry_arguments_are_the_scripts_own(run_all):
    for bench in run_all.REGISTRY.values():
        script = REPO / "benchmarks" / bench.script
        if not script.is_file():  # a benchmark another branch adds (bench_ingest.py)
            continue
        text = script.read_text()
        for argument in (*bench.args, *(bench.quick or ())):
            if argument.startswith("--"):
                assert f'"{argument}"' in text, (bench.name, argument)


def test_what_cannot_run_is_skipped_with_the_reason(run_all, monkeypatch):
    bench = run_all.REGISTRY["audit_speed_10k"]
    values = {"results": "/tmp/r", "python": sys.executable}
    assert run_all._arguments(bench, False, values).startswith("skipped: needs --audit-cohort DIR")
    filled = run_all._arguments(bench, True, values | {"audit_cohort": "/data/cohort"})
    assert filled[:2] == ["--dataset", "/data/cohort"] and filled[-1] == "/tmp/r/audit_speed_10k.json"
    missing = run_all.Benchmark("nothing", "no_such_script.py", (), ("x.json",), lambda data: [])
    record = run_all.run_benchmark(missing, quick=False, values=values, timeout=1)
    assert record["status"] == "skipped: benchmarks/no_such_script.py does not exist"
    with pytest.raises(SystemExit):
        run_all.main(["--collect", "--only", "no-such-benchmark"])
    # What a run records of its arguments holds no absolute path of this machine.
    assert run_all._portable(str(RESULTS / "scale.json")) == "benchmarks/results/scale.json"
    assert run_all._portable("/data/cohort") == ".../cohort" and run_all._portable("--sizes") == "--sizes"
