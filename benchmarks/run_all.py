"""Run the project's benchmarks and gather every headline figure into one results file.

    .venv/bin/python benchmarks/run_all.py                 # every benchmark, full arguments
    .venv/bin/python benchmarks/run_all.py --quick         # shorter arguments for the slow ones
    .venv/bin/python benchmarks/run_all.py --only embed,scale
    .venv/bin/python benchmarks/run_all.py --collect       # run nothing; gather existing results

Writes ``benchmarks/results/all.json`` (every figure: its value, the baseline it is compared
with, measured in the same run of that benchmark, and the ratio; the machine's cores and load
and the time, both now and as each results file recorded them) and ``SUMMARY.md`` (the same
figures as a markdown table, the one the README's benchmark section shows).

Each benchmark is an entry of ``REGISTRY``: the script, its arguments (``quick`` for
``--quick``), the results files it writes (under ``{results}``) and an extractor that turns
those files into :class:`Figure` rows. To add one, write ``_my_figures(data) -> list[Figure]``
and one ``Benchmark(...)`` line; an extractor only reads keys, and a file that is missing, or
lacks a key it reads, shows as "not measured" with the reason instead of failing the run.
Arguments may use ``{results}`` (the results folder; scripts without ``--out`` write to
benchmarks/results/ whatever it is) and ``{python}``; an entry that needs a
value only the user can give (``{audit_cohort}``: an ingested 10,000-image cohort) is skipped,
with what to pass, when it is not given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
NOT_MEASURED = "not measured"


@dataclass
class Figure:
    """One headline figure: ``value`` against ``baseline_value`` (its baseline, measured in the
    same run of the same benchmark), ``ratio`` = value / baseline_value unless given. ``goal``
    says which way is good or what the target is."""

    figure: str
    value: float | None
    unit: str = ""
    baseline: str = ""
    baseline_value: float | None = None
    ratio: float | None = None
    goal: str = ""
    note: str = ""
    benchmark: str = ""
    file: str = ""
    status: str = "measured"

    def __post_init__(self) -> None:
        if self.ratio is None and _number(self.value) and _number(self.baseline_value) and self.baseline_value:
            self.ratio = self.value / self.baseline_value
        for name in ("value", "baseline_value", "ratio"):
            number = getattr(self, name)
            if _number(number):
                setattr(self, name, float(f"{number:.4g}"))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Missing(KeyError):
    """A key an extractor needs is not in the results file."""


def dig(data: Any, path: str) -> Any:
    """``data["a"]["b"][0]`` for path "a.b.0"; raises :class:`Missing` naming the path."""
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise Missing(path)
    return node


# ------------------------------------------------------------------------------ extractors


def _embed(data: dict) -> list[Figure]:
    return [
        Figure("embedding end to end (decode + model)", dig(data, "end_to_end.images_per_s"), "images/s",
               "model alone", dig(data, "model_only.images_per_s"), goal="ratio near 1",
               note=f"{data.get('encoder', '')}, {dig(data, 'end_to_end.images')} images"),
        Figure("embedding cache cold read", dig(data, "cache.cold_read_seconds_median"), "s",
               "cache write", dig(data, "cache.write_seconds"),
               note=f"{dig(data, 'cache.n_vectors')} vectors x {dig(data, 'cache.dim')}"),
    ]


def _decode(data: dict) -> list[Figure]:
    figures = []
    for name, one in dig(data, "sets").items():
        figures.append(Figure(f"load_pixels time, {name}", dig(one, "seconds.load_pixels"), "s",
                              "the decoder alone", dig(one, "seconds.decoder"), goal="ratio <= 1.3",
                              ratio=one.get("load_over_decoder"),  # from the unrounded times
                              note=f"{dig(one, 'images')} images"))
        for mode, ratio in one.get("end_to_end_over_limit", {}).items():
            figures.append(Figure(f"embedding end to end ({mode.replace('_', ' ')}), {name}",
                                  dig(one, f"images_per_s.end_to_end_{mode}"), "images/s",
                                  "the sum-of-parts limit (reduced decode over all cores + model)",
                                  dig(one, "images_per_s.limit"), ratio=ratio, goal="ratio >= 0.8",
                                  note=f"decode share of CPU {one.get('decode_share', '?')}"))
        if "end_to_end" in one.get("seconds", {}):
            figures.append(Figure(f"embedding end to end, {name}", dig(one, "images_per_s.end_to_end"), "images/s",
                                  "every step serially", dig(one, "images_per_s.serial"),
                                  goal="ratio >= 0.8 of the parallel limit",
                                  note=f"decode share {one.get('decode_share', '?')}"))
    return figures


def _scale(data: dict) -> list[Figure]:
    figures = []
    for task, entry in dig(data, "tasks").items():
        runs = sorted((r for r in entry.get("runs", []) if _number(r.get("seconds"))), key=lambda r: r["rows"])
        stopped = [r for r in entry.get("runs", []) if _number(r.get("timed_out_after_s"))]
        if not runs and stopped:
            # A run stopped at its time limit is a measurement too: more than the limit.
            run = min(stopped, key=lambda r: r["rows"])
            same_task = dig(data, "tasks").get(run.get("task", ""), {}).get("runs", [])
            baseline = next((r for r in same_task if r.get("rows") == run["rows"] and _number(r.get("seconds"))), None)
            figures.append(Figure(
                f"{task} ({run.get('dim')} dims) at {run['rows']:,} rows", run["timed_out_after_s"], "s (at least)",
                f"{run.get('task')} at {run['rows']:,} rows as shipped" if baseline else "",
                baseline["seconds"] if baseline else None,
                note=f"did not finish: stopped after {run['timed_out_after_s']:.0f} s, so value and ratio are lower "
                     f"bounds; {entry.get('note', '')}".strip("; ")))
            continue
        if not runs:
            figures.append(Figure(f"{task}", None, status=NOT_MEASURED,
                                  note="no run finished: " + "; ".join(
                                      sorted({k for r in entry.get("runs", []) for k in r} - {"task", "rows", "dim"}))))
            continue
        small, large = runs[0], runs[-1]
        unfinished = [r["rows"] for r in entry.get("runs", []) if not _number(r.get("seconds"))]
        note = f"growth exponent {entry.get('growth_exponent')}, peak {large.get('peak_rss_mb')} MB"
        if unfinished:
            note += f"; unfinished at {unfinished} rows"
        figures.append(Figure(f"{task} at {large['rows']:,} rows", large["seconds"], "s",
                              f"{task} at {small['rows']:,} rows", small["seconds"] if large is not small else None,
                              goal=f"ratio <= {large['rows'] / small['rows']:.0f} (linear)" if large is not small else "",
                              note=note))
    return figures


def _audit_speed(data: dict) -> list[Figure]:
    sizes = sorted(dig(data, "sizes"), key=lambda r: r["n"])
    small, large = sizes[0], sizes[-1]
    total = "total_s" if "total_s" in large else None

    def seconds(row: dict) -> float:
        return row[total] if total else sum(v for k, v in row.items() if k.endswith("_s"))

    growth = data.get("growth", {})
    exponent = (growth.get("total_s") or {}).get("exponent")
    note = f"{data.get('source', '')}; growth exponent {exponent}" if exponent is not None else data.get("source", "")
    figures = [Figure(f"audit at {large['n']:,} images", seconds(large), "s", f"audit at {small['n']:,} images",
                      seconds(small), goal=f"ratio <= {large['n'] / small['n']:.0f} (linear)", note=note)]
    if "verify_s" in large:
        figures.append(Figure(f"duplicate pixel match at {large['n']:,} images", large["verify_s"], "s",
                              "the whole audit", seconds(large), note="ratio = its share of the time"))
    embedding = data.get("embedding")
    if isinstance(embedding, dict) and _number(embedding.get("seconds")):
        figures.append(Figure(f"embedding {embedding['images']:,} images ({embedding.get('encoder')}), once",
                              embedding["seconds"], "s", f"the audit at {large['n']:,} images, vectors cached",
                              seconds(large), note=f"{embedding.get('images_per_s')} images/s"))
    if "peak_rss_mb" in large:
        figures.append(Figure(f"audit peak memory at {large['n']:,} images", large["peak_rss_mb"], "MB",
                              f"at {small['n']:,} images", small["peak_rss_mb"]))
    if "candidates" in large:
        figures.append(Figure(f"duplicate candidates per image at {large['n']:,}", large["candidates"] / large["n"],
                              "pairs/image", f"at {small['n']:,} images", small["candidates"] / small["n"],
                              goal="bounded (capped per image)"))
    return figures


def _load(data: dict) -> list[Figure]:
    return [Figure(f"{row['page']} page p95, {row['configuration']}", row["p95_s"], "s",
                   "one session alone (median)", row["single_median_s"], goal="lower",
                   note=f"{row.get('errors', 0)} errors")
            for row in dig(data, "comparison")]


def _first_map(data: dict) -> list[Figure]:
    return [
        Figure("first map after server launch", dig(data, "from_server_launch_s.first_map"), "s",
               goal=f"<= {data.get('goal_s', 60)} s", note=f"{data.get('demo_images', '?')} demo images; "
                                                            "no baseline (the goal is absolute)"),
        Figure("full map after server launch", dig(data, "from_server_launch_s.full_map"), "s",
               "first map", dig(data, "from_server_launch_s.first_map")),
    ]


def _import_embeddings(data: dict) -> list[Figure]:
    return [Figure("import embeddings (Parquet)", dig(data, "import_s"), "s", "loading them back",
                   dig(data, "load_vectors_s"),
                   note=f"{dig(data, 'n'):,} x {dig(data, 'dim')}, {dig(data, 'vectors_per_s')} vectors/s, "
                        f"peak {data.get('peak_rss_mb')} MB")]


def _api_latency(data: dict) -> list[Figure]:
    return [
        Figure("prediction API p50 latency", dig(data, "api_sequential.p50_ms"), "ms", "the model alone p50",
               dig(data, "model_only.p50_ms"), goal="ratio near 1"),
        Figure("prediction API throughput, 4 clients", dig(data, "api_concurrent.requests_per_s"), "requests/s",
               "the model alone", dig(data, "model_only.per_s"), goal="ratio near 1"),
    ]


def _map(data: dict) -> list[Figure]:
    small, large = sorted(dig(data, "map_page"), key=int)
    one, big = dig(data, f"map_page.{small}"), dig(data, f"map_page.{large}")
    return [
        Figure(f"map drawn, {int(large):,} points", dig(big, "drawn_s"), "s",
               f"{int(small):,} points", dig(one, "drawn_s"), goal="ratio <= 3",
               note=f"{dig(big, 'open_bytes') / 1e6:.1f} MB on first load"),
        Figure(f"lasso of ~1k points to the table, {int(large):,} points", dig(big, "lasso_s"), "s",
               f"{int(small):,} points", dig(one, "lasso_s"), goal="ratio <= 2",
               note="headless Chromium, software WebGL"),
        Figure(f"server memory one more session adds, {int(large):,} points", dig(big, "session_rss_mb"), "MB",
               "the 300 MB target", 300.0, goal="ratio < 1"),
    ]


def _gpu_decode(data: dict) -> list[Figure]:
    speeds = dig(data, "images_per_s")
    gpu = speeds.get("gpu_decode")
    figures = [Figure("end to end, CPU decode", dig(speeds, "end_to_end_cpu_decode"), "images/s",
                      "the model alone", dig(speeds, "model"), note=f"device {data.get('device')}")]
    if _number(gpu):
        figures.append(Figure("JPEG decode on the GPU", gpu, "images/s", "decode on the CPU", dig(speeds, "cpu_decode")))
    else:
        figures.append(Figure("JPEG decode on the GPU", None, status=NOT_MEASURED, note=str(gpu)))
    return figures


def _fuzz_ingest(data: dict) -> list[Figure]:
    accounted = dig(data, "inputs") - dig(data, "unaccounted")
    return [
        Figure("hostile inputs accounted for", accounted, "inputs", "inputs", dig(data, "inputs"), goal="ratio 1",
               note=f"{dig(data, 'crashes')} crashes, {dig(data, 'outside_writes')} writes outside"),
    ]


def _propagation(data: dict) -> list[Figure]:
    figures = []
    for result in dig(data, "results"):
        point = next((c for c in result["curve"] if c["fraction"] == 0.1), result["curve"][0])
        figures.append(Figure(f"propagated labels, {result['encoder']} {result['method']}, "
                              f"{point['fraction']:.0%} labelled", point["accuracy"], "accuracy",
                              "majority class", point["majority_accuracy"], goal="higher"))
    return figures


def _report_draft(data: dict) -> list[Figure]:
    return [Figure(f"drafts naming the finding, {r['encoder']} ({r.get('support', '')}, left out: {r.get('left_out', '')})",
                   dig(r, "mean_over_findings.draft"), "share (mean over findings)", "random other patients' notes",
                   dig(r, "mean_over_findings.random"), goal="higher")
            for r in dig(data, "results")]


def _finetune(data: dict) -> list[Figure]:
    rows = {row["modality"]: row for row in dig(data, "comparison")}
    tuned = next(v for k, v in rows.items() if k.startswith("fine-tuned"))
    frozen = next(v for k, v in rows.items() if k.startswith("frozen"))
    return [Figure("fine-tuned CNN AUC", tuned["mean_auc"], "AUC", "frozen encoder + logistic regression",
                   frozen["mean_auc"], goal="higher", note=f"{tuned['n_rows']} rows; s/epoch {data.get('s_per_epoch_mean')}")]


def _finetune_epoch(data: dict) -> list[Figure]:
    return [Figure("one fine-tuning epoch (224 px)", dig(data, "epoch_s"), "s", "decoding its images",
                   dig(data, "decode_s"), note=f"{dig(data, 'train_images')} training images")]


def _audit_covid(data: dict) -> list[Figure]:
    return [Figure("COVID-19 AUC, cross-patient duplicates merged", dig(data, "auc.auc_merged_groups"), "AUC",
                   "patient groups as given", dig(data, "auc.auc_patient_groups"), goal="near 1 (no inflation)",
                   note=f"{dig(data, 'counts.cross_patient_sets')} cross-patient duplicate sets")]


def _ingest(data: dict) -> list[Figure]:
    figures = []
    for name, one in dig(data, "sets").items():
        command = dig(one, "scanatlas_ingest_command")
        baseline = str(data.get("baseline", ""))
        before = ("the command before issue 12 (" + baseline.split(" (")[0] + ")" if baseline.startswith("git archive")
                  else "the full-frame check before")
        figures.append(Figure(f"scanatlas ingest, {name}", dig(command, "new.seconds"), "s",
                              before, dig(command, "old.seconds"),
                              goal=f"ratio <= 1/{command.get('target_speedup', 5)}",
                              note=f"{one.get('files_ingested')} files; CPU ratio {command.get('cpu_ratio')}"))
    return figures


# ------------------------------------------------------------------------------ registry


@dataclass
class Benchmark:
    """script : under benchmarks/; args / quick : its arguments (quick: with ``--quick``, None =
    the same); files : results files it writes (names under the results folder); extract :
    one results file's JSON -> figures (one call per file)."""

    name: str
    script: str
    args: tuple[str, ...]
    files: tuple[str, ...]
    extract: Callable[[dict], list[Figure]]
    quick: tuple[str, ...] | None = None
    slow: bool = False
    needs: dict[str, str] = field(default_factory=dict)


REGISTRY: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("embed", "bench_embed.py", ("--out", "{results}/embed.json"), ("embed.json",), _embed,
              quick=("--images", "32", "--vectors", "20000", "--out", "{results}/embed.json")),
    Benchmark("decode", "bench_decode.py", ("--out", "{results}/decode.json"), ("decode.json",), _decode, slow=True),
    Benchmark("decode_only", "bench_decode.py", ("--decode-only", "--out", "{results}/decode_only.json"),
              ("decode_only.json",), _decode),
    Benchmark("ingest", "bench_ingest.py", ("--out", "{results}/ingest.json"), ("ingest.json",), _ingest,
              quick=("--rounds", "1", "--out", "{results}/ingest.json")),
    Benchmark("map", "bench_map.py", (), ("map.json",), _map, slow=True, quick=("--repeats", "1")),
    Benchmark("gpu_decode", "bench_gpu_decode.py", (), ("gpu_decode.json",), _gpu_decode, quick=("--images", "16")),
    Benchmark("scale", "bench_scale.py", ("--out", "{results}/scale.json"), ("scale.json",), _scale, slow=True,
              quick=("--sizes", "2000,10000", "--tasks", "pca,minibatch-kmeans,hnsw,exact-nn",
                     "--out", "{results}/scale.json")),
    Benchmark("audit_speed", "bench_audit.py", ("--out", "{results}/audit_speed.json"), ("audit_speed.json",),
              _audit_speed, quick=("--sizes", "50,100", "--out", "{results}/audit_speed.json")),
    Benchmark("audit_speed_10k", "bench_audit.py",
              ("--dataset", "{audit_cohort}", "--sizes", "1250,2500,5000,10000", "--encoder", "pixels",
               "--out", "{results}/audit_speed_10k.json"), ("audit_speed_10k.json",), _audit_speed, slow=True,
              quick=("--dataset", "{audit_cohort}", "--sizes", "500,1000", "--encoder", "pixels",
                     "--out", "{results}/audit_speed_10k.json"),
              needs={"audit_cohort": "--audit-cohort DIR: `scanatlas demo --out D --patients 1250 --slices 8 "
                                     "--size 64` then `scanatlas ingest D --layout patient-csv --out DIR`"}),
    Benchmark("audit_covid", "audit_covid.py", (), ("audit_covid.json",), _audit_covid, slow=True),
    Benchmark("import_embeddings", "bench_import.py", (), ("import_embeddings.json",), _import_embeddings,
              quick=("--n", "10000")),
    Benchmark("first_map", "first_map.py", ("--out", "{results}/first_map.json"), ("first_map.json",), _first_map,
              slow=True),
    Benchmark("load", "load_test.py", ("--out", "{results}/load.json"), ("load.json",), _load, slow=True,
              quick=("--sessions", "5", "--pages", "map", "--out", "{results}/load.json")),
    Benchmark("api_latency", "api_latency.py", ("--out", "{results}/api_latency.json"), ("api_latency.json",),
              _api_latency, quick=("--requests", "20", "--out", "{results}/api_latency.json")),
    Benchmark("fuzz_ingest", "fuzz_ingest.py", ("--out", "{results}/fuzz_ingest.json"), ("fuzz_ingest.json",),
              _fuzz_ingest, slow=True, quick=("--n", "500", "--out", "{results}/fuzz_ingest.json")),
    Benchmark("propagation", "propagation_curve.py", ("--out", "{results}/propagation.json"), ("propagation.json",),
              _propagation, slow=True, quick=("--repeats", "2", "--encoders", "pixels",
                                              "--out", "{results}/propagation.json")),
    Benchmark("report_draft", "report_draft.py", ("--out", "{results}/report_draft.json"), ("report_draft.json",),
              _report_draft, slow=True, quick=("--encoders", "pixels", "--repeats", "1", "--supports", "terms",
                                               "--out", "{results}/report_draft.json")),
    Benchmark("finetune", "finetune_covid.py", ("--out", "{results}/finetune.json"), ("finetune.json",), _finetune,
              slow=True, quick=("--one-per-patient", "--patients", "40", "--epochs", "1", "--splits", "2",
                                "--image-size", "64", "--out", "{results}/finetune.json")),
    Benchmark("finetune_epoch", "finetune_epoch_time.py", ("--out", "{results}/finetune_epoch.json"),
              ("finetune_epoch.json",), _finetune_epoch, slow=True,
              needs={"finetune_cache": "--finetune-cache DIR: a SCANATLAS_CACHE with the covid-chestxray dataset"}),
]}
# finetune_epoch_time.py needs --cache; passed from --finetune-cache when given.
REGISTRY["finetune_epoch"].args = ("--cache", "{finetune_cache}", *REGISTRY["finetune_epoch"].args)


# ------------------------------------------------------------------------------ running


def machine() -> dict:
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "system": f"{platform.system()} {platform.machine()}",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _arguments(bench: Benchmark, quick: bool, values: dict[str, str]) -> list[str] | str:
    """The arguments with placeholders filled in, or why the benchmark cannot run."""
    chosen = bench.quick if quick and bench.quick is not None else bench.args
    missing = [hint for key, hint in bench.needs.items() if not values.get(key)]
    if missing:
        return "skipped: needs " + "; ".join(missing)
    try:
        return [part.format(**values) for part in chosen]
    except KeyError as error:
        return f"skipped: no value for {error}"


def _portable(argument: str) -> str:
    """An argument as the results file may show it: no absolute paths of this machine."""
    if not argument.startswith("/"):
        return argument
    path = Path(argument)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else f".../{path.name}"


def run_benchmark(bench: Benchmark, *, quick: bool, values: dict[str, str], timeout: float) -> dict:
    """Run one benchmark script in its own process (``nice`` 10 where available)."""
    script = REPO_ROOT / "benchmarks" / bench.script
    record: dict[str, Any] = {"name": bench.name, "script": f"benchmarks/{bench.script}", "quick": quick}
    if not script.is_file():
        return record | {"status": f"skipped: benchmarks/{bench.script} does not exist"}
    arguments = _arguments(bench, quick, values)
    if isinstance(arguments, str):
        return record | {"status": arguments}
    command = [sys.executable, str(script), *arguments]
    if hasattr(os, "nice"):
        command = ["nice", "-n", "10", *command]
    record["args"] = [_portable(part) for part in arguments]
    record["load_before"] = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        record["status"] = "ran" if done.returncode == 0 else f"failed (exit {done.returncode})"
        if done.returncode != 0:
            record["error_tail"] = done.stderr[-1500:]
    except subprocess.TimeoutExpired:
        record["status"] = f"failed: stopped after {timeout:.0f} s"
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["load_after"] = round(os.getloadavg()[0], 2)
    return record


def _recorded(data: dict) -> dict:
    """When, on how many cores and under what load a results file says it was measured."""
    out: dict[str, Any] = {}
    for key in ("measured_at", "when", "machine.when"):
        try:
            out["measured_at"] = dig(data, key)
            break
        except Missing:
            continue
    for key in ("cores", "cpu_count", "machine.cpus"):
        try:
            out["cores"] = dig(data, key)
            break
        except Missing:
            continue
    for key in ("load_average_1min_before_after", "load_average", "machine.load_average", "machine.load",
                "load_average_start", "configurations.0.load_average_at_start", "sizes.-1.load",
                "load_average_before"):
        try:
            out["load"] = dig(data, key)
            break
        except Missing:
            continue
    return out


def collect(bench: Benchmark, results: Path) -> tuple[list[Figure], list[dict]]:
    """The figures of ``bench`` from its results files under ``results``; a missing or
    unreadable file, or a key its extractor needs, gives one "not measured" row saying why."""
    figures: list[Figure] = []
    files: list[dict] = []
    for name in bench.files:
        path = results / name
        if not path.is_file():
            figures.append(Figure(bench.name, None, benchmark=bench.name, file=name, status=NOT_MEASURED,
                                  note=f"no {name}: run benchmarks/{bench.script}"))
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            figures.append(Figure(bench.name, None, benchmark=bench.name, file=name, status=NOT_MEASURED,
                                  note=f"{name} is unreadable: {type(error).__name__}"))
            continue
        try:
            found = bench.extract(data)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, StopIteration, ZeroDivisionError) as error:
            reason = f"lacks {error}" if isinstance(error, KeyError) else f"has an unexpected shape ({type(error).__name__})"
            figures.append(Figure(bench.name, None, benchmark=bench.name, file=name, status=NOT_MEASURED,
                                  note=f"{name} {reason}; its extractor in run_all.py needs updating"))
            continue
        files.append({"file": name, **_recorded(data)})
        for figure in found:
            figure.benchmark, figure.file = bench.name, name
        figures.extend(found)
    return figures, files


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    if _number(value):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def summary_markdown(report: dict) -> str:
    """The figures of ``report`` (an all.json dict) as a markdown table."""
    when = {f["file"]: f for f in report["files"]}
    now = report["machine"]
    lines = [
        "# Benchmark summary",
        "",
        f"Generated by `benchmarks/run_all.py` at {now['time']} ({now['cores']} cores, load average "
        f"{now['load_average'][0]}). Each ratio is value / baseline, both measured in the same run of "
        "that benchmark; \"measured\" is when that run happened and its recorded load.",
        "",
        "| Benchmark | Figure | Value | Baseline | Ratio | Goal | Measured | Note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in report["figures"]:
        if f["status"] != "measured":
            lines.append(f"| {f['benchmark']} | {_cell(f['figure'])} | {NOT_MEASURED} | | | | | {_cell(f['note'])} |")
            continue
        value = f"{_cell(f['value'])} {f['unit']}".strip()
        baseline = f"{_cell(f['baseline_value'])} ({f['baseline']})" if f["baseline"] else ""
        recorded = when.get(f["file"], {})
        measured = str(recorded.get("measured_at", ""))[:16]
        load = recorded.get("load")
        if isinstance(load, dict):  # load per part of a run done in parts
            measured += ", load " + "; ".join(
                f"{part} {'/'.join(_cell(x) for x in (v if isinstance(v, list) else [v]))}" for part, v in load.items())
        elif load is not None:
            measured += f", load {'/'.join(_cell(x) for x in (load if isinstance(load, list) else [load]))}"
        lines.append(f"| {f['benchmark']} | {_cell(f['figure'])} | {value} | {_cell(baseline)} | {_cell(f['ratio'])} "
                     f"| {_cell(f['goal'])} | {_cell(measured.strip(', '))} | {_cell(f['note'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter arguments for the slow benchmarks")
    parser.add_argument("--only", help=f"comma-separated names: {', '.join(REGISTRY)}")
    parser.add_argument("--collect", action="store_true", help="run nothing; gather the existing results files")
    parser.add_argument("--skip-slow", action="store_true", help="run only benchmarks not marked slow")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results files")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per benchmark")
    parser.add_argument("--audit-cohort", help="ingested 10,000-image scale cohort for audit_speed_10k")
    parser.add_argument("--finetune-cache", help="SCANATLAS_CACHE for finetune_epoch")
    args = parser.parse_args(argv)
    names = list(REGISTRY) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(REGISTRY)}")
    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    values = {"results": str(results), "python": sys.executable, "audit_cohort": args.audit_cohort or "",
              "finetune_cache": args.finetune_cache or ""}
    started = machine()
    runs = []
    if not args.collect:
        for name in names:
            bench = REGISTRY[name]
            if args.skip_slow and bench.slow and not args.quick:
                runs.append({"name": name, "status": "skipped: slow (--skip-slow)"})
                continue
            print(f"running {name} ...", flush=True)
            runs.append(run_benchmark(bench, quick=args.quick, values=values, timeout=args.timeout))
            print(f"  {runs[-1]['status']}" + (f" in {runs[-1]['seconds']} s" if "seconds" in runs[-1] else ""),
                  flush=True)
    figures: list[Figure] = []
    files: list[dict] = []
    for name in names:
        found, recorded = collect(REGISTRY[name], results)
        figures.extend(found)
        files.extend(recorded)
    report = {
        "generated_by": "benchmarks/run_all.py" + (" --collect" if args.collect else "") + (" --quick" if args.quick else ""),
        "machine": started | {"load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "runs": runs,
        "files": files,
        "figures": [asdict(f) for f in figures],
        "not_measured": [f"{f.benchmark}: {f.note}" for f in figures if f.status != "measured"],
    }
    (results / "all.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (results / "SUMMARY.md").write_text(summary_markdown(report), encoding="utf-8")
    measured = sum(f.status == "measured" for f in figures)
    print(f"{measured} figures measured, {len(figures) - measured} not measured; wrote "
          f"{results / 'all.json'} and {results / 'SUMMARY.md'}")
    return 0 if all(not r["status"].startswith("failed") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
