"""Decode versus model on full-size radiographs, stage by stage (issue 12, goal 1).

    .venv/bin/python benchmarks/bench_decode.py [--encoder efficientnet-lite0] [--repeat 1]
        [--out benchmarks/results/decode.json]

Two real file sets: the shared full-size COVID-19 radiographs (``../shared/data/
covid-chestxray-fullsize``: 1.1k-4.3k px JPEG and PNG) and the pydicom-data radiographs and MR
slices of 1,024 px and more (uncompressed, JPEG 2000 lossless and lossy). For each set, one
process, stages timed one after the other (ratios within one run):

  * ``decoder``: the decoder alone at the scale ``load_pixels`` asks of it (Pillow with JPEG
    draft to the encoder's input size, Pillow full decode for PNG; pydicom's ``pixel_array``);
  * ``load_pixels``: ``core.pixels.load_pixels(path, min_size=input size)``, the decoder plus
    LUTs, scaling and the grey check; ``load_over_decoder`` is the ratio (goal: <= 1.3);
  * ``model``: the encoder's preprocess and forward pass over the decoded arrays in memory;
  * ``serial``: load_pixels + model, one after the other (their sum);
  * ``end_to_end``: ``iter_image_embeddings`` (decode threads ahead of the forward pass);
    ``end_to_end_over_serial`` is the speed-up from overlapping decode with the model, and
    ``decode_share`` = load_pixels / (load_pixels + model).

Images/s for every stage, cores and the load average. ``--decode-only`` times the first two
stages only (for a quick check of ``load_over_decoder``). Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402

from core.dicom import is_dicom  # noqa: E402
from core.encoders import get_encoder, iter_image_embeddings  # noqa: E402
from core.pixels import load_pixels  # noqa: E402

SHARED = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))


def covid_fullsize() -> list[Path]:
    folder = SHARED / "covid-chestxray-fullsize" / "images"
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})


def pydicom_large() -> list[Path]:
    from pydicom.data import get_testdata_file

    names = ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm",
             "RG3_UNCI.dcm", "RG3_J2KR.dcm", "RG3_J2KI.dcm", "MR2_UNCR.dcm", "MR2_J2KR.dcm",
             "MR2_J2KI.dcm"]
    found = [get_testdata_file(name) for name in names]
    return [Path(p) for p in found if p]


def decoder_only(path: Path, min_size: int) -> None:
    if is_dicom(path):
        pydicom.dcmread(path).pixel_array  # noqa: B018 - the decode is the point
        return
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft(image.mode, (min_size, min_size))
        image.load()


def timed(function, items) -> float:
    started = time.perf_counter()
    for item in items:
        function(item)
    return time.perf_counter() - started


def measure(paths: list[Path], encoder, batch_size: int, *, model: bool = True) -> dict:
    size = encoder.spec.input_size
    n = len(paths)
    decoder_s = timed(lambda p: decoder_only(p, size), paths)
    arrays: list[np.ndarray] = []
    load_s = timed(lambda p: arrays.append(load_pixels(p, min_size=size)), paths)
    if not model:
        return {"images": n, "seconds": {"decoder": round(decoder_s, 2),
                                         "load_pixels": round(load_s, 2)},
                "images_per_s": {"decoder": round(n / decoder_s, 2),
                                 "load_pixels": round(n / load_s, 2)},
                "load_over_decoder": round(load_s / decoder_s, 2)}
    started = time.perf_counter()
    import torch

    for start in range(0, n, batch_size):
        batch = torch.stack([encoder.preprocess(a) for a in arrays[start:start + batch_size]])
        encoder.embed_batch(batch)
    model_s = time.perf_counter() - started
    items = [(f"img{i}", str(p), 0) for i, p in enumerate(paths)]
    started = time.perf_counter()
    n_done = sum(len(chunk.image_ids) for chunk in iter_image_embeddings(items, encoder,
                                                                          batch_size=batch_size))
    end_s = time.perf_counter() - started
    serial_s = load_s + model_s

    def rate(seconds: float) -> float:
        return round(n / seconds, 2)

    return {
        "images": n, "embedded_end_to_end": n_done,
        "seconds": {"decoder": round(decoder_s, 2), "load_pixels": round(load_s, 2),
                    "model": round(model_s, 2), "serial": round(serial_s, 2),
                    "end_to_end": round(end_s, 2)},
        "images_per_s": {"decoder": rate(decoder_s), "load_pixels": rate(load_s),
                         "model": rate(model_s), "serial": rate(serial_s),
                         "end_to_end": rate(end_s)},
        "load_over_decoder": round(load_s / decoder_s, 2),
        "end_to_end_over_serial": round(serial_s / end_s, 2),
        "decode_share": round(load_s / serial_s, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--decode-only", action="store_true",
                        help="time the decoder and load_pixels only (no model, no end to end)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "decode.json"))
    args = parser.parse_args(argv)
    encoder = get_encoder(args.encoder, device="cpu")
    load_before = os.getloadavg()[0]
    sets = {"covid-chestxray-fullsize": covid_fullsize(), "pydicom-data radiographs": pydicom_large()}
    # Warm-up: model weights, Pillow plugins, pydicom decoders.
    measure(sets["covid-chestxray-fullsize"][:2], encoder, args.batch_size,
            model=not args.decode_only)
    report = {"encoder": args.encoder, "sets": {}}
    for name, paths in sets.items():
        report["sets"][name] = measure(paths, encoder, args.batch_size,
                                       model=not args.decode_only)
        print(name, json.dumps(report["sets"][name]), flush=True)
    report.update({
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
