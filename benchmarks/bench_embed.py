"""Embedding throughput and cache read speed; writes benchmarks/results/embed.json.

    .venv/bin/python benchmarks/bench_embed.py [--images 128] [--encoder NAME]

Measures, on this machine:
  * model-only images/s: forward passes over preprocessed tensors already in memory;
  * end-to-end images/s: ``iter_image_embeddings`` on real covid-chestxray files (decode,
    preprocess and forward, with its prefetching), and the ratio of the two;
  * cache: writing 100,000 synthetic 512-d vectors through the chunked writer, then reading
    all of them back in a fresh ``EmbeddingCache`` (new process-level index; the files are in
    the OS page cache, as they are on a second run), before and after ``compact``;
  * peak RSS of this process, device, torch version, cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.cache import EmbeddingCache  # noqa: E402
from core.encoders import DEFAULT_IMAGE_ENCODER, get_encoder, iter_image_embeddings  # noqa: E402
from core.encoders.device import available_cores  # noqa: E402
from core.pixels import load_pixels  # noqa: E402

SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "embed.json"


def covid_images(n: int) -> list[Path]:
    folder = SHARED_DATA / "covid-chestxray" / "images"
    if not folder.is_dir():
        raise SystemExit(f"real images not found in {folder} (set SCANATLAS_SHARED_DATA)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return files[:n]


def bench_model(encoder, files: list[Path], batch_size: int) -> dict:
    tensors = []
    for path in files:
        try:
            tensors.append(encoder.preprocess(load_pixels(path)))
        except Exception:  # noqa: BLE001 - a bad file only shrinks the sample
            continue
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    encoder.embed_batch(batches[0])  # warm-up: first-call allocations and kernel selection
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches:
        encoder.embed_batch(batch)  # returns numpy, so the device work is finished
    seconds = time.perf_counter() - started
    return {
        "images": len(tensors),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(tensors) / seconds, 1),
    }


def bench_end_to_end(encoder, files: list[Path], batch_size: int) -> dict:
    items = [(f"bench-{i}", str(path), 0) for i, path in enumerate(files)]
    started = time.perf_counter()
    embedded = failed = 0
    for chunk in iter_image_embeddings(items, encoder, batch_size=batch_size):
        embedded += len(chunk.image_ids)
        failed += len(chunk.failures)
    seconds = time.perf_counter() - started
    return {
        "images": len(items),
        "embedded": embedded,
        "failed": failed,
        "seconds": round(seconds, 3),
        "images_per_s": round(len(items) / seconds, 1),
    }


def cold_read(
    root: Path, namespace: str, ids: list[str], expected: np.ndarray, repeats: int = 3
) -> list[float]:
    times = []
    for _ in range(repeats):
        cache = EmbeddingCache(root)  # fresh instance: index rebuilt from the shard files
        started = time.perf_counter()
        vectors, hit = cache.get(namespace, ids)
        times.append(time.perf_counter() - started)
        if not hit.all() or not np.array_equal(vectors, expected):
            raise SystemExit("cache read returned wrong vectors")
        del vectors, cache
    return times


def bench_cache(n_vectors: int, dim: int) -> dict:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n_vectors, dim), dtype=np.float32)
    ids = [f"{i:064x}-0" for i in range(n_vectors)]
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        root = Path(tmp)
        cache = EmbeddingCache(root)
        namespace = cache.namespace("bench", "1", {"dim": dim}, dim=dim)
        started = time.perf_counter()
        with cache.writer(namespace) as writer:
            for start in range(0, n_vectors, 1000):  # arrives in batches, as from an encoder
                writer.add(ids[start : start + 1000], vectors[start : start + 1000])
        write_seconds = time.perf_counter() - started
        n_shards = cache.shard_count(namespace)
        sharded = cold_read(root, namespace, ids, vectors)
        started = time.perf_counter()
        cache.compact(namespace)
        compact_seconds = time.perf_counter() - started
        compacted = cold_read(root, namespace, ids, vectors)
        size = sum(p.stat().st_size for p in (root / namespace).iterdir())
    return {
        "n_vectors": n_vectors,
        "dim": dim,
        "bytes_on_disk": size,
        "write_seconds": round(write_seconds, 3),
        "shards_before_compact": n_shards,
        "cold_read_seconds_sharded": [round(t, 3) for t in sharded],
        "compact_seconds": round(compact_seconds, 3),
        "cold_read_seconds_compacted": [round(t, 3) for t in compacted],
        "cold_read_seconds_median": round(statistics.median(sharded + compacted), 3),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    files = covid_images(args.images)
    encoder = get_encoder(args.encoder, device=args.device)
    model = bench_model(encoder, files, args.batch_size)
    end_to_end = bench_end_to_end(encoder, files, args.batch_size)
    cache = bench_cache(args.vectors, 512)
    result = {
        "encoder": args.encoder,
        "batch_size": args.batch_size,
        "model_only": model,
        "end_to_end": end_to_end,
        "end_to_end_over_model_only": round(end_to_end["images_per_s"] / model["images_per_s"], 3),
        "cache": cache,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device": str(encoder.device),
        "device_name": torch.cuda.get_device_name(encoder.device)
        if encoder.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cores": available_cores(),
        # Other processes on the machine slow the CPU numbers; a 1-min load above the core
        # count means the timings are pessimistic.
        "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "python": platform.python_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
