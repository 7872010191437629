"""Decode versus model on full-size radiographs, stage by stage (issue 12, goal 1).

    .venv/bin/python benchmarks/bench_decode.py [--encoder efficientnet-lite0] [--repeat 2]
        [--limit N] [--decode-only] [--out benchmarks/results/decode.json]

Two real file sets: the shared full-size COVID-19 radiographs (``../shared/data/
covid-chestxray-fullsize``: 1.1k-4.3k px JPEG and PNG) and pydicom-data radiographs and MR of
1,024 px and more: uncompressed, JPEG 2000 lossless and lossy, and JPEG-LS lossless copies of
the uncompressed radiographs made here (pydicom-data has no JPEG-LS radiograph; needs
``pyjpegls``), 13 files each listed twice. For each set, in one process (ratios within one run are what count):

  * ``decoder``: the decoder alone at the scale ``load_pixels`` asks of it (Pillow with JPEG
    draft to the encoder's input size, Pillow's full decode for PNG; pydicom's
    ``pixel_array``);
  * ``load_pixels``: ``core.pixels.load_pixels(path, min_size=input size)``, the decoder plus
    LUTs, scaling and the grey check. The two are timed file by file, interleaved, best of
    ``--repeat`` rounds, so that the machine's load hits both alike; ``load_over_decoder`` is
    the ratio (goal: <= 1.3);
  * ``reduced_decode``: what a decode worker does per file (``core.decode_pool.
    decode_for_model``): load_pixels at reduced scale plus centre crop and resize to the
    model's input, one thread;
  * ``model``: normalisation and the forward pass over those inputs in memory, every core;
  * ``limit``: the sum-of-parts limit over all cores, ``reduced_decode / cores + model`` (the
    decode spread over every core, the model already on every core), from wall times of this
    run; ``limit_cpu`` is the same from CPU times (for a machine shared with other work);
  * ``end_to_end``: ``iter_image_embeddings`` with decoding in threads (``processes=0``), in
    the default number of worker processes, in one, and in one per core;
    ``end_to_end_over_limit`` for each (goal: >= 0.8). These stages run ``--rounds`` times,
    each round in another order, best per stage;
  * ``decode_share``: the decode's share of the CPU time (reduced_decode / (reduced_decode +
    model CPU time)).

Images/s for every stage, cores and the load average. ``--decode-only`` times the decoder and
load_pixels only. ``--limit N`` takes the first N files of each set. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402

from core.decode_pool import (  # noqa: E402
    PROCESS_MIN_ITEMS,
    decode_for_model,
    decode_processes,
    use_processes,
)
from core.dicom import is_dicom  # noqa: E402
from core.encoders import get_encoder, iter_image_embeddings  # noqa: E402
from core.encoders.image import planes_to_input  # noqa: E402
from core.pixels import load_pixels  # noqa: E402

SHARED = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))


def covid_fullsize() -> list[Path]:
    folder = SHARED / "covid-chestxray-fullsize" / "images"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def pydicom_large(scratch: Path | None = None) -> list[Path]:
    """The pydicom-data radiographs; with ``scratch``, JPEG-LS lossless copies of the two
    uncompressed radiographs are written there and added (when pyjpegls is installed)."""
    from pydicom.data import get_testdata_file

    names = ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm",
             "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm", "MR2_UNCR.dcm", "MR2_J2KR.dcm",
             "MR2_J2KI.dcm"]
    found = [Path(p) for p in (get_testdata_file(name) for name in names) if p]
    if scratch is not None:
        for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm"):
            source = next((p for p in found if p.name == name), None)
            if source is None:
                continue
            try:
                dataset = pydicom.dcmread(source)
                dataset.compress(pydicom.uid.JPEGLSLossless)
            except (RuntimeError, ValueError, ImportError) as error:  # no JPEG-LS encoder here
                print(f"no JPEG-LS copies: {error}", file=sys.stderr)
                break
            copy = scratch / name.replace("_UNCR", "_JLSL")
            dataset.save_as(copy)
            found.append(copy)
    return found


def decoder_only(path: Path, min_size: int) -> None:
    if is_dicom(path):
        pydicom.dcmread(path).pixel_array  # noqa: B018 - the decode is the point
        return
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft(image.mode, (min_size, min_size))
        image.load()


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def decode_stages(paths: list[Path], size: int, repeat: int) -> dict[str, float]:
    """Decoder and load_pixels, file by file and interleaved, best of ``repeat`` per file."""
    best = {"decoder": [np.inf] * len(paths), "load_pixels": [np.inf] * len(paths)}
    for round_ in range(repeat):
        for index, path in enumerate(paths):
            stages = [("decoder", lambda p=path: decoder_only(p, size)),
                      ("load_pixels", lambda p=path: load_pixels(p, min_size=size))]
            for name, stage in stages if round_ % 2 == 0 else stages[::-1]:
                started = time.perf_counter()
                stage()
                best[name][index] = min(best[name][index], time.perf_counter() - started)
    return {name: float(np.sum(times)) for name, times in best.items()}


def end_to_end(items, encoder, batch_size: int, processes: int) -> tuple[float, int]:
    started = time.perf_counter()
    done = sum(len(chunk.image_ids) for chunk in iter_image_embeddings(
        items, encoder, batch_size=batch_size, processes=processes))
    return time.perf_counter() - started, done


def measure(paths: list[Path], encoder, batch_size: int, repeat: int, *,
            model: bool = True, rounds: int = 2) -> dict:
    import torch

    size = encoder.spec.input_size
    preprocessing = encoder.preprocessing
    n = len(paths)
    cores = os.cpu_count() or 1
    decode = decode_stages(paths, size, repeat)
    report = {"images": n, "seconds": {k: round(v, 2) for k, v in decode.items()},
              "images_per_s": {k: round(n / v, 2) for k, v in decode.items()},
              "load_over_decoder": round(decode["load_pixels"] / decode["decoder"], 2)}
    if not model:
        return report

    items = [(f"img{i}", str(p), 0) for i, p in enumerate(paths)]
    default_processes = decode_processes(encoder.device.type)
    modes = {"threads": 0, f"processes_{default_processes}_default": default_processes}
    for processes in sorted({1, cores} - {default_processes}):
        modes[f"processes_{processes}"] = processes
    # Rounds, each in a different order, best per stage: other work on the machine comes and
    # goes, and hits every stage and mode alike only on average.
    best: dict[str, float] = {}

    def keep(name: str, value: float) -> None:
        best[name] = min(best.get(name, np.inf), value)

    for round_ in range(rounds):
        started = _clock()
        planes = [decode_for_model((str(i), str(p), 0), size, preprocessing.channels)[0]
                  for i, p in enumerate(paths)]
        wall, cpu = _since(started)
        keep("reduced_decode", wall)
        keep("reduced_decode_cpu", cpu)
        started = _clock()
        for start in range(0, n, batch_size):
            batch = torch.stack([planes_to_input(p, preprocessing)
                                 for p in planes[start:start + batch_size]])
            encoder.embed_batch(batch)
        wall, cpu = _since(started)
        keep("model", wall)
        keep("model_cpu", cpu)
        names = list(modes)
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, done = end_to_end(items, encoder, batch_size, modes[name])
            if done != n:
                raise RuntimeError(f"{name}: embedded {done} of {n} images")
            keep(f"e2e_{name}", seconds)
    reduced_wall, reduced_cpu = best["reduced_decode"], best["reduced_decode_cpu"]
    model_wall, model_cpu = best["model"], best["model_cpu"]
    limit_s = reduced_wall / cores + model_wall
    limit_cpu_s = (reduced_cpu + model_cpu) / cores
    e2e = {name: best[f"e2e_{name}"] for name in modes}
    report["end_to_end_decodes_in"] = {
        name: "processes" if use_processes(n, processes) else
        f"threads (fewer than {PROCESS_MIN_ITEMS} images)" if processes else "threads"
        for name, processes in modes.items()}

    def rate(seconds: float) -> float:
        return round(n / seconds, 2)

    report["seconds"].update({"reduced_decode": round(reduced_wall, 2),
                              "model": round(model_wall, 2), "limit": round(limit_s, 2),
                              "limit_cpu": round(limit_cpu_s, 2)})
    report["seconds"].update({f"end_to_end_{k}": round(v, 2) for k, v in e2e.items()})
    report["images_per_s"].update({"reduced_decode": rate(reduced_wall), "model": rate(model_wall),
                                   "limit": rate(limit_s), "limit_cpu": rate(limit_cpu_s)})
    report["images_per_s"].update({f"end_to_end_{k}": rate(v) for k, v in e2e.items()})
    report["cpu_seconds"] = {"reduced_decode": round(reduced_cpu, 2), "model": round(model_cpu, 2)}
    report["end_to_end_over_limit"] = {k: round(limit_s / v, 2) for k, v in e2e.items()}
    report["decode_share"] = round(reduced_cpu / (reduced_cpu + model_cpu), 2)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2,
                        help="rounds of the decoder / load_pixels timing (best per file)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds of reduced decode, model and end to end (best per stage)")
    parser.add_argument("--limit", type=int, default=None, help="first N files of each set")
    parser.add_argument("--decode-only", action="store_true",
                        help="time the decoder and load_pixels only (no model, no end to end)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "decode.json"))
    args = parser.parse_args(argv)
    encoder = get_encoder(args.encoder, device="cpu")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as scratch:
        # Each DICOM twice: 13 files are fewer than PROCESS_MIN_ITEMS, and the point is how
        # an archive of such files goes through worker processes.
        sets = {"covid-chestxray-fullsize": covid_fullsize(),
                "pydicom-data radiographs": pydicom_large(Path(scratch)) * 2}
        if args.limit:
            sets = {name: paths[: args.limit] for name, paths in sets.items()}
        # Warm-up: model weights, Pillow plugins, pydicom decoders.
        measure(sets["covid-chestxray-fullsize"][:2], encoder, args.batch_size, 1, model=False)
        report = {"encoder": args.encoder, "sets": {}}
        for name, paths in sets.items():
            report["sets"][name] = measure(paths, encoder, args.batch_size, args.repeat,
                                           model=not args.decode_only, rounds=args.rounds)
            report["sets"][name]["files"] = len(set(paths))
            print(name, json.dumps(report["sets"][name]), flush=True)
    report.update({
        "rounds": args.rounds, "repeat": args.repeat,
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
