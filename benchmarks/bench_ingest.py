"""Ingest on full-size radiographs: the full-frame check of earlier versions against the
reduced-scale decode with stored previews (issue 12, goal 1, ingest half).

    nice -n 10 .venv/bin/python benchmarks/bench_ingest.py [--rounds 2] [--out benchmarks/results/ingest.json]

Two real file sets: the shared full-size COVID-19 radiographs (``../shared/data/
covid-chestxray-fullsize``: 58 files named by its metadata.csv, 1.1k-4.3k px JPEG and PNG) and
the pydicom-data radiographs and MR slices (RG1, RG3, MR2: uncompressed, JPEG 2000 lossless and
lossy; plus the JPEG lossless and the JPEG-LS samples pydicom ships, the largest JPEG-LS there is
100 px). Every run is a fresh process, old and new alternating, so peak memory (max RSS) is the
run's own and the ratios come from one sitting:

  * ``ingest()``: ``core.ingest.ingest`` in-process, ``previews=False`` (old: header probe, then
    a full-frame decode to verify; a PNG was decoded twice, once for EXIF) against the default
    (new: one open, frame 0 decoded at reduced scale, preview encoded and packed). Time per stage
    comes from ``IngestResult.stage_seconds`` (summed over the worker threads).
  * ``scanatlas ingest``: the command as a user runs it. Old = what ``cli.main.main`` did before
    (register fine-tuned encoders, which imports torch, build every subcommand's parser) then
    ``ingest --no-previews``; new = ``python -m cli.main ingest`` of this version.

The best (lowest) time of ``--rounds`` runs is reported for each (the machine is shared), with
the process's CPU seconds (user + system, all threads) beside wall time: on a loaded machine the
new path, which is CPU-bound, loses more wall time to other processes than the old one, whose
start-up was mostly imports.
Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))
PYDICOM_FILES = ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm",
                 "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm", "MR2_UNCR.dcm", "MR2_J2KR.dcm",
                 "MR2_J2KI.dcm", "JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm"]

# A child run: ingest SOURCE into OUT, print one JSON line (times, stages, peak memory).
CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
sys.path.insert(0, {repo!r})
from core.ingest import ingest
imported = time.perf_counter()
result = ingest({source!r}, {out!r}, previews={previews!r})
done = time.perf_counter()
print(json.dumps({{
    "images": result.n_images, "reported": result.n_reported,
    "ingest_s": done - imported, "process_s": done - started,
    "stage_thread_s": result.stage_seconds, "decodes": dict(__import__("collections").Counter(result.decodes)),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
}}))
"""

# Each stage alone, one thread, in CPU seconds (robust to a loaded machine): old = header probe
# + full-frame check, new = the one reduced decode (header included) + preview encode + pack write.
STAGES = r"""
import json, resource, sys, tempfile
sys.path.insert(0, {repo!r})
from pathlib import Path
from core.ingest.pipeline import sha256_file
from core.pixels import probe_image, verify_pixels
from core.previews import PreviewWriter, decode_preview, encode_preview
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
files = [p for p in sorted(Path({source!r}).rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".dcm")]
out, mark = {{}}, cpu()
def stage(name):
    global mark
    now = cpu(); out[name] = round(now - mark, 3); mark = now
hashes = [sha256_file(p) for p in files]; stage("hash")
[probe_image(p) for p in files]; stage("old_header_probe")
[verify_pixels(p) for p in files]; stage("old_full_check")
previews = [decode_preview(p) for p in files]; stage("new_header_and_reduced_decode")
jpegs = [encode_preview(p.picture) for p in previews]; stage("new_preview_encode")
with tempfile.TemporaryDirectory() as folder:
    writer = PreviewWriter(folder)
    for digest, jpeg in zip(hashes, jpegs):
        writer.add(digest + "-0", jpeg)
    writer.close()
stage("new_preview_write")
out["files"] = len(files)
print(json.dumps(out))
"""

# The command as cli.main.main ran it before this version: torch imported by the fine-tuned
# encoder registration, every subcommand's module imported for the parser.
OLD_CLI = r"""
import resource, sys
sys.path.insert(0, {repo!r})
from core.finetune.encoder import register_finetuned_encoders
register_finetuned_encoders()
from cli.main import build_parser
args = build_parser().parse_args(["ingest", {source!r}, "--out", {out!r}, "--no-previews"])
code = args.func(args)
usage = resource.getrusage(resource.RUSAGE_SELF)
print("PEAK_RSS_MB", usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, file=sys.stderr)
"""

NEW_CLI = r"""
import resource, runpy, sys
sys.path.insert(0, {repo!r})
sys.argv = ["scanatlas", "ingest", {source!r}, "--out", {out!r}]
try:
    runpy.run_module("cli.main", run_name="__main__")
finally:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print("PEAK_RSS_MB", usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, file=sys.stderr)
"""


def pydicom_set(folder: Path) -> int:
    """Copy the pydicom-data files into ``folder`` (a source's links may not lead out of it)."""
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True)
    found = 0
    for name in PYDICOM_FILES:
        path = get_testdata_file(name)
        if path:
            shutil.copy(path, folder / name)
            found += 1
    return found


def run_child(code: str, env: dict) -> tuple[float, str, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, done.stdout, done.stderr


def usage_from(stderr: str) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds) the child printed last."""
    lines = [line for line in stderr.splitlines() if line.startswith("PEAK_RSS_MB")]
    _, peak, cpu = lines[-1].split()
    return round(float(peak), 1), float(cpu)


def measure_set(source: Path, work: Path, rounds: int, env: dict) -> dict:
    best: dict[str, dict] = {}
    for round_number in range(rounds):
        for mode in ("old", "new"):
            out = work / f"ingest-{mode}-{round_number}"
            code = CHILD.format(repo=str(REPO), source=str(source), out=str(out), previews=mode == "new")
            _, stdout, _ = run_child(code, env)
            run = json.loads(stdout.strip().splitlines()[-1])
            if mode not in best or run["ingest_s"] < best[mode]["ingest_s"]:
                best[mode] = run
            shutil.rmtree(out, ignore_errors=True)
        for mode, template in (("old_cli", OLD_CLI), ("new_cli", NEW_CLI)):
            out = work / f"cli-{mode}-{round_number}"
            wall, _, stderr = run_child(template.format(repo=str(REPO), source=str(source), out=str(out)), env)
            peak, cpu = usage_from(stderr)
            run = {"wall_s": wall, "peak_rss_mb": peak, "cpu_s": cpu}
            if mode not in best or wall < best[mode]["wall_s"]:
                best[mode] = run
            shutil.rmtree(out, ignore_errors=True)
    _, stdout, _ = run_child(STAGES.format(repo=str(REPO), source=str(source)), env)
    stage_cpu = json.loads(stdout.strip().splitlines()[-1])
    old_cpu = stage_cpu["old_header_probe"] + stage_cpu["old_full_check"]
    new_cpu = sum(stage_cpu[k] for k in ("new_header_and_reduced_decode", "new_preview_encode", "new_preview_write"))
    files = best["new"]["images"]
    old, new = best["old"], best["new"]

    def stages(run: dict) -> dict:
        return {stage: round(seconds, 2) for stage, seconds in run["stage_thread_s"].items()}

    return {
        "files_ingested": files,
        "files_reported": new["reported"],
        "ingest_function": {
            "old_full_check": {"seconds": round(old["ingest_s"], 2), "files_per_s": round(files / old["ingest_s"], 1),
                               "peak_rss_mb": round(old["peak_rss_mb"], 1), "process_cpu_s": round(old["cpu_s"], 2),
                               "stage_thread_seconds": stages(old), "decodes": old["decodes"]},
            "new_reduced_decode_and_previews": {
                "seconds": round(new["ingest_s"], 2), "files_per_s": round(files / new["ingest_s"], 1),
                "peak_rss_mb": round(new["peak_rss_mb"], 1), "process_cpu_s": round(new["cpu_s"], 2),
                "stage_thread_seconds": stages(new), "decodes": new["decodes"]},
            "speedup": round(old["ingest_s"] / new["ingest_s"], 2),
        },
        "stage_cpu_seconds_one_thread": {**stage_cpu, "old_verify_total": round(old_cpu, 3),
                                         "new_verify_and_preview_total": round(new_cpu, 3),
                                         "verify_cpu_ratio": round(old_cpu / new_cpu, 2)},
        "scanatlas_ingest_command": {
            "old": {"seconds": round(best["old_cli"]["wall_s"], 2),
                    "files_per_s": round(files / best["old_cli"]["wall_s"], 1),
                    "peak_rss_mb": best["old_cli"]["peak_rss_mb"], "cpu_s": round(best["old_cli"]["cpu_s"], 2)},
            "new": {"seconds": round(best["new_cli"]["wall_s"], 2),
                    "files_per_s": round(files / best["new_cli"]["wall_s"], 1),
                    "peak_rss_mb": best["new_cli"]["peak_rss_mb"], "cpu_s": round(best["new_cli"]["cpu_s"], 2)},
            "speedup": round(best["old_cli"]["wall_s"] / best["new_cli"]["wall_s"], 2),
            # CPU seconds are what a shared machine's load does not inflate as much as wall time.
            "cpu_ratio": round(best["old_cli"]["cpu_s"] / best["new_cli"]["cpu_s"], 2),
            "target_speedup": 5.0,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant; the best is kept")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ingest.json"))
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    load_before = os.getloadavg()[0]
    report: dict = {"sets": {}}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as temp:
        work = Path(temp)
        env["SCANATLAS_CACHE"] = str(work / "cache")  # fine-tuned encoder registry etc.: empty
        dicom = work / "pydicom-data"
        n_dicom = pydicom_set(dicom)
        sets = {"covid-chestxray-fullsize": SHARED / "covid-chestxray-fullsize",
                f"pydicom-data radiographs ({n_dicom} files)": dicom}
        for name, source in sets.items():
            report["sets"][name] = measure_set(source, work, args.rounds, env)
            print(name, json.dumps(report["sets"][name]), flush=True)
    report.update({
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
