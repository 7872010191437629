"""`scanatlas ingest` on full-size radiographs: the command before issue 12's work against this
version (issue 12, goal 1, ingest half: >= 5x faster), as a ratio measured in one sitting.

    nice -n 10 .venv/bin/python benchmarks/bench_ingest.py [--rounds 3] [--out benchmarks/results/ingest.json]

Baseline: the real pre-issue-12 code, ``git archive b79388f`` into a temporary folder and run
from there as ``python -m cli.main ingest SRC --out OUT`` (what a user typed then: a header
probe, then a full-frame decode of every file, a PNG's twice). When this checkout has no such
commit (a shallow clone, an exported tree), the baseline falls back to a reconstruction with
this version's code (``ingest --no-previews`` after the old start-up, which imported torch and
built every subcommand's parser); ``baseline`` in the results says which ran.

New: ``python -m cli.main ingest SRC --out OUT`` of this version: JPEG decoded once at reduced
scale (the preview made by that decode), PNG verified by its chunks without inflating
(``core.png_check``; its preview is made by the embedding's decode), DICOM by its header, pixel
framing and a reduced or full decode.

Old and new alternate, each run a fresh process; the best (lowest) wall time of ``--rounds`` is
kept, with its CPU seconds (user + system, all threads) and peak memory (max RSS, from
``wait4``). Also measured, in the same sitting:

* start-up: ``python -m cli.main ingest --help`` in each tree (imports and parser), and the
  biggest imports by ``-X importtime``;
* per-stage CPU seconds, one thread, this version's functions (hash; old: header probe +
  full-frame check; new: ``ingest_probe`` by format + preview encode + pack write);
* the embedding's extra cost of making PNG previews ("decode once"): ``decode_for_model`` with
  and without ``preview=True`` on every PNG of the set, beside the inflate that ingest no longer
  does.

Two file sets: the shared full-size COVID-19 radiographs (``../shared/data/
covid-chestxray-fullsize``, 58 files named by its metadata.csv, 1.1k-4.3k px JPEG and PNG) and
the pydicom-data radiographs and MR slices (uncompressed, JPEG 2000, JPEG lossless, JPEG-LS).
Run it with ``nice -n 10`` on a shared machine; the load average is recorded. No machine paths
are written. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))
BASELINE_COMMIT = "b79388f"  # main before issue 12's ingest work
TARGET_SPEEDUP = 5.0
PYDICOM_FILES = ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm",
                 "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm", "MR2_UNCR.dcm", "MR2_J2KR.dcm",
                 "MR2_J2KI.dcm", "JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
                 "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm"]
# Imports reported from -X importtime (cumulative, top-level names).
WATCHED_IMPORTS = ("cli.main", "cli.commands.ingest", "core.ingest", "pandas", "pydicom", "PIL.Image",
                   "tqdm", "ftfy", "torch", "requests")

# The reconstruction used when the baseline commit is not in this checkout: the old start-up
# (torch imported by the fine-tuned encoder registration, every subcommand's parser built),
# then the full-frame check.
RECONSTRUCTED_OLD = r"""
import sys
sys.path.insert(0, {repo!r})
from core.finetune.encoder import register_finetuned_encoders
register_finetuned_encoders()
from cli.main import build_parser
args = build_parser().parse_args(["ingest", {source!r}, "--out", {out!r}, "--no-previews"])
raise SystemExit(args.func(args))
"""

# Each stage alone, one thread, in CPU seconds (robust to a loaded machine).
STAGES = r"""
import json, resource, sys, tempfile, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {repo!r})
from pathlib import Path
from core.ingest.pipeline import sha256_file
from core.pixels import probe_image, verify_pixels, PixelError
from core.previews import PreviewWriter, encode_preview, ingest_probe
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
files = [p for p in sorted(Path({source!r}).rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".dcm")]
def kind(p):
    return {{".jpeg": "jpeg", ".jpg": "jpeg", ".png": "png", ".dcm": "dicom"}}[p.suffix.lower()]
def each(fn, name):
    spent = {{}}
    results = []
    for p in files:
        started = cpu()
        try:
            results.append(fn(p))
        except PixelError:
            results.append(None)
        spent[kind(p)] = spent.get(kind(p), 0.0) + cpu() - started
    out[name] = round(sum(spent.values()), 3)
    out[name + "_by_format"] = {{k: round(v, 3) for k, v in sorted(spent.items())}}
    return results
out = {{}}
hashes = each(sha256_file, "hash")
each(probe_image, "old_header_probe")
each(verify_pixels, "old_full_check")
checks = each(ingest_probe, "new_ingest_probe")
started = cpu()
jpegs = [encode_preview(c.picture) for c in checks if c is not None and c.picture is not None]
out["new_preview_encode"] = round(cpu() - started, 3)
started = cpu()
with tempfile.TemporaryDirectory() as folder:
    writer = PreviewWriter(folder)
    for digest, jpeg in zip(hashes, jpegs):
        writer.add(digest + "-0", jpeg)
    writer.close()
out["new_preview_write"] = round(cpu() - started, 3)
out["files"] = len(files)
out["files_by_format"] = {{k: sum(kind(p) == k for p in files) for k in sorted({{kind(p) for p in files}})}}
print(json.dumps(out))
"""

# The embedding's extra cost of making a PNG's preview from its decode, per file, one thread,
# best of rounds; beside it the inflate + preview that ingest used to do (decode_preview).
EMBED_PREVIEW_COST = r"""
import json, resource, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {repo!r})
from pathlib import Path
from core.decode_pool import decode_for_model
from core.previews import decode_preview
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
files = sorted(p for p in Path({source!r}).rglob("*") if p.suffix.lower() == ".png")
best = {{"plain": {{}}, "preview": {{}}, "ingest_inflate": {{}}}}
for _ in range({rounds}):
    for p in files:
        item = ("0" * 64 + "-0", str(p), 0)
        for name, call in (("plain", lambda: decode_for_model(item, 224, 3)),
                           ("preview", lambda: decode_for_model(item, 224, 3, preview=True)),
                           ("ingest_inflate", lambda: decode_preview(p))):
            started = cpu()
            try:
                result = call()
            except Exception:
                result = None
            spent = cpu() - started
            if name != "ingest_inflate" and (result is None or result[0] is None):
                continue  # a file the decode refuses costs nothing here
            best[name][p.name] = min(spent, best[name].get(p.name, float("inf")))
names = sorted(set(best["plain"]) & set(best["preview"]))
plain = sum(best["plain"][n] for n in names)
preview = sum(best["preview"][n] for n in names)
inflate = sum(best["ingest_inflate"].get(n, 0.0) for n in names)
print(json.dumps({{"png_files": len(names), "embed_decode_cpu_s": round(plain, 3),
                  "embed_decode_with_preview_cpu_s": round(preview, 3),
                  "extra_cpu_s": round(preview - plain, 3),
                  "extra_ms_per_png": round(1000 * (preview - plain) / max(1, len(names)), 1),
                  "extra_share_of_embed_decode": round((preview - plain) / plain, 3) if plain else None,
                  "ingest_inflate_no_longer_done_cpu_s": round(inflate, 3)}}))
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


def baseline_tree(work: Path) -> tuple[Path | None, str]:
    """The baseline commit's files under ``work``, or (None, why not) when this checkout lacks it."""
    try:
        subprocess.run(["git", "cat-file", "-e", f"{BASELINE_COMMIT}^{{commit}}"], cwd=REPO, check=True,
                       capture_output=True)
        archive = subprocess.run(["git", "archive", "--format=tar", BASELINE_COMMIT], cwd=REPO, check=True,
                                 capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, f"commit {BASELINE_COMMIT} is not in this checkout"
    tree = work / "baseline-tree"
    tree.mkdir()
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree, ""


def run_process(argv: list[str], cwd: Path, env: dict, work: Path) -> dict:
    """Run ``argv``; wall seconds, CPU seconds (user + system, all threads) and peak RSS (MB)
    of that process, from ``wait4``. Raises RuntimeError when it fails."""
    log = work / "child.log"
    with open(log, "wb") as output:
        started = time.perf_counter()
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{argv[1:4]} failed ({child.returncode}): {log.read_text(errors='replace')[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def import_breakdown(cwd: Path, env: dict) -> dict:
    """Cumulative import seconds of ``WATCHED_IMPORTS`` when ``cli.main ingest --help`` starts."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli.main", "ingest", "--help"], cwd=cwd,
                          env=env, capture_output=True, text=True)
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)$", line)
        if match and match[3] in WATCHED_IMPORTS and match[3] not in found:
            found[match[3]] = round(int(match[1]) / 1e6, 3)
    return found


def run_child_json(code: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def count_images(out: Path) -> tuple[int, int]:
    manifest = json.loads((out / "manifest.json").read_text())
    return int(manifest["n_images"]), int(manifest["n_reported"])


def measure_set(source: Path, work: Path, rounds: int, env: dict, old_tree: Path | None, *,
                png_cost: bool) -> dict:
    best: dict[str, dict] = {}
    loads = []
    ingested = reported = None
    for round_number in range(rounds):
        loads.append(round(os.getloadavg()[0], 2))
        for mode in ("old", "new"):
            out = work / f"{mode}-{round_number}"
            if mode == "new" or old_tree is not None:
                tree = REPO if mode == "new" else old_tree
                argv = [sys.executable, "-m", "cli.main", "ingest", str(source), "--out", str(out)]
            else:
                tree = REPO
                argv = [sys.executable, "-c", RECONSTRUCTED_OLD.format(repo=str(REPO), source=str(source),
                                                                     out=str(out))]
            run = run_process(argv, tree, env, work)
            run["images"], run["reported"] = count_images(out)
            if mode == "new":
                ingested, reported = run["images"], run["reported"]
            if mode not in best or run["wall_s"] < best[mode]["wall_s"]:
                best[mode] = run
            shutil.rmtree(out, ignore_errors=True)
    old, new = best["old"], best["new"]
    result = {
        "files_ingested": ingested,
        "files_reported": reported,
        "same_rows_as_baseline": old["images"] == new["images"] and old["reported"] == new["reported"],
        "scanatlas_ingest_command": {
            "old": {"seconds": round(old["wall_s"], 2), "files_per_s": round(old["images"] / old["wall_s"], 1),
                    "cpu_s": round(old["cpu_s"], 2), "peak_rss_mb": round(old["peak_rss_mb"], 1)},
            "new": {"seconds": round(new["wall_s"], 2), "files_per_s": round(new["images"] / new["wall_s"], 1),
                    "cpu_s": round(new["cpu_s"], 2), "peak_rss_mb": round(new["peak_rss_mb"], 1)},
            "speedup": round(old["wall_s"] / new["wall_s"], 2),
            # CPU seconds are what a shared machine's load inflates least.
            "cpu_ratio": round(old["cpu_s"] / new["cpu_s"], 2),
            "target_speedup": TARGET_SPEEDUP,
            "meets_target": old["wall_s"] / new["wall_s"] >= TARGET_SPEEDUP,
        },
        "load_average_1min_per_round": loads,
        "stage_cpu_seconds_one_thread": run_child_json(STAGES.format(repo=str(REPO), source=str(source)), env),
    }
    if png_cost:
        result["embed_png_preview_cost"] = run_child_json(
            EMBED_PREVIEW_COST.format(repo=str(REPO), source=str(source), rounds=rounds), env)
    return result


def measure_startup(work: Path, rounds: int, env: dict, old_tree: Path | None) -> dict:
    """``python -m cli.main ingest --help``: imports and parser, old tree against this one."""
    trees = {"new": REPO, **({"old": old_tree} if old_tree is not None else {})}
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, tree in trees.items():
            run = run_process([sys.executable, "-m", "cli.main", "ingest", "--help"], tree, env, work)
            best[name] = min(run["wall_s"], best.get(name, float("inf")))
    return {name: {"seconds": round(seconds, 3), "imports_cumulative_s": import_breakdown(trees[name], env)}
            for name, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant; the best is kept")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ingest.json"))
    parser.add_argument("--no-dicom", action="store_true", help="only the full-size COVID-19 set")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    load_before = os.getloadavg()
    report: dict = {"sets": {}}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as temp:
        work = Path(temp)
        env["SCANATLAS_CACHE"] = str(work / "cache")  # fine-tuned encoder registry etc.: empty
        old_tree, missing = baseline_tree(work)
        report["baseline"] = (
            f"git archive {BASELINE_COMMIT} (before issue 12's ingest work), run as "
            "`python -m cli.main ingest SRC --out OUT` from that tree" if old_tree is not None else
            f"reconstruction ({missing}): this version's `ingest --no-previews` (full-frame check) after "
            "the old start-up (torch imported, every subcommand's parser built)")
        report["new"] = "`python -m cli.main ingest SRC --out OUT` of this version"
        sets = {"covid-chestxray-fullsize": SHARED / "covid-chestxray-fullsize"}
        if not args.no_dicom:
            dicom = work / "pydicom-data"
            sets[f"pydicom-data radiographs ({pydicom_set(dicom)} files)"] = dicom
        report["startup_ingest_help"] = measure_startup(work, args.rounds, env, old_tree)
        print("start-up", json.dumps(report["startup_ingest_help"]), flush=True)
        for name, source in sets.items():
            report["sets"][name] = measure_set(source, work, args.rounds, env, old_tree,
                                               png_cost=name == "covid-chestxray-fullsize")
            print(name, json.dumps(report["sets"][name]), flush=True)
    report.update({
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "niceness": os.nice(0),
        "python": platform.python_version(),
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    text = json.dumps(report, indent=2) + "\n"
    for private in {str(REPO), str(SHARED), tempfile.gettempdir()}:
        if private and private in text:
            raise RuntimeError("a machine path would be written to the results; refusing")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
