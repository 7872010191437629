"""Images/s per stage, CPU path against the GPU path; writes benchmarks/results/gpu_decode.json.

    .venv/bin/python benchmarks/bench_gpu_decode.py [--images 64] [--encoder NAME] [--folder DIR]

Stages, on real JPEGs (default: the shared covid-chestxray-fullsize set, else covid-chestxray):
  * read: file bytes into memory (pinned when CUDA exists);
  * cpu_decode: ``core.pixels.load_pixels`` + ``preprocess`` (the CPU path's decode, one thread);
  * gpu_decode: torchvision ``decode_jpeg`` on CUDA + torch preprocessing (CUDA only);
  * model: forward passes over preprocessed tensors already on the device;
  * end_to_end_cpu_decode: ``iter_image_embeddings`` (decode threads + model);
  * end_to_end_gpu_decode: ``core.encoders.gpu_decode`` (CUDA only).
Without CUDA the GPU stages are reported as skipped and the rest runs unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from core.encoders import DEFAULT_IMAGE_ENCODER, get_encoder, iter_image_embeddings  # noqa: E402
from core.encoders.gpu_decode import (  # noqa: E402
    _read_jpeg,
    gpu_decode_available,
    iter_image_embeddings_on,
    preprocess_tensor,
)
from core.pixels import DEFAULT_MAX_PIXELS, load_pixels  # noqa: E402

SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "gpu_decode.json"


def _jpegs(folder: Path | None, n: int) -> list[Path]:
    candidates = [folder] if folder else [SHARED_DATA / "covid-chestxray-fullsize",
                                          SHARED_DATA / "covid-chestxray" / "images"]
    for candidate in candidates:
        if candidate and candidate.is_dir():
            files = sorted(p for p in candidate.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"})
            if files:
                return files[:n]
    raise SystemExit(f"no JPEG files found in {[str(c) for c in candidates]}")


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("inf")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER)
    parser.add_argument("--folder", type=Path, default=None, help="folder of JPEGs to use")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*TorchVision are deprecated.*")

    files = _jpegs(args.folder, args.images)
    items = [(p.name, str(p), 0) for p in files]
    cuda = gpu_decode_available("cuda")
    encoder = get_encoder(args.encoder, device="cuda" if cuda else "cpu")
    device = encoder.device
    size = encoder.spec.input_size
    stages: dict[str, object] = {}

    for path in files:  # every stage then reads from the OS page cache, as on a second run
        path.read_bytes()
    _read_jpeg(str(files[0]), DEFAULT_MAX_PIXELS)  # first call imports torchvision.io
    start = time.perf_counter()
    data = [_read_jpeg(str(p), DEFAULT_MAX_PIXELS) for p in files]
    stages["read"] = _rate(len(files), time.perf_counter() - start)

    start = time.perf_counter()
    tensors = [encoder.preprocess(load_pixels(str(p), 0, min_size=size)) for p in files]
    stages["cpu_decode"] = _rate(len(files), time.perf_counter() - start)

    if cuda:
        from torchvision.io import ImageReadMode, decode_jpeg

        decode_jpeg(data[:1], mode=ImageReadMode.UNCHANGED, device=device)  # warm up nvJPEG
        _sync(device)
        start = time.perf_counter()
        for first in range(0, len(data), args.batch_size):
            decoded = decode_jpeg(data[first : first + args.batch_size],
                                  mode=ImageReadMode.UNCHANGED, device=device)
            [preprocess_tensor(image, encoder.preprocessing) for image in decoded]
        _sync(device)
        stages["gpu_decode"] = _rate(len(files), time.perf_counter() - start)
    else:
        stages["gpu_decode"] = "skipped: CUDA not available"

    batches = [torch.stack(tensors[i : i + args.batch_size])
               for i in range(0, len(tensors), args.batch_size)]
    encoder.embed_batch(batches[0][:2])  # warm up
    start = time.perf_counter()
    for batch in batches:
        encoder.embed_batch(batch)
    stages["model"] = _rate(len(files), time.perf_counter() - start)

    start = time.perf_counter()
    for _ in iter_image_embeddings(items, encoder, batch_size=args.batch_size):
        pass
    stages["end_to_end_cpu_decode"] = _rate(len(files), time.perf_counter() - start)

    if cuda:
        start = time.perf_counter()
        for _ in iter_image_embeddings_on(items, encoder, decode_device=device,
                                          batch_size=args.batch_size):
            pass
        _sync(device)
        stages["end_to_end_gpu_decode"] = _rate(len(files), time.perf_counter() - start)
    else:
        stages["end_to_end_gpu_decode"] = "skipped: CUDA not available"

    result = {
        "images": len(files), "folder": "/".join(files[0].parent.parts[-2:]),  # no machine path "encoder": encoder.spec.name,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "torch": torch.__version__, "batch_size": args.batch_size, "images_per_s": stages,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
