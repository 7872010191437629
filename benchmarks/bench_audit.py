"""How the audit's own stages grow with the number of images; writes
benchmarks/results/audit_speed.json.

    .venv/bin/python benchmarks/bench_audit.py [--sizes 150,300,600]
    .venv/bin/python benchmarks/bench_audit.py --dataset DIR --sizes 1250,2500,5000,10000 \
        [--encoder pixels] [--out benchmarks/results/audit_speed_10k.json]

``--dataset`` takes the first n images of an ingested dataset instead, e.g. the scale
generator's cohort (``scanatlas demo --out D --patients 1250 --slices 8 --size 64`` then
``scanatlas ingest D --layout patient-csv --out DIR``) for 10,000 images.

Each size runs in its own process, so its peak memory (max RSS) is its own. Stages timed:
decoding + fingerprints (linear); duplicate candidates (each image's nearest by pHash, centre
descriptor and, with ``--encoder``, embedding, through core's neighbour index) and their
pixel-match verification, timed apart; kNN + isolation-forest outliers. Fits the growth
exponent b of time = a * n^b per stage and for the whole. The embedding is a stage of its own:
with ``--encoder`` the largest set is embedded once into a temporary cache before the sizes run
(its time reported as ``embedding``), and each size reads its vectors from that cache (reported
as ``embedding_cached_s``), as a second audit of a dataset does. Without ``--encoder`` the
outliers run on the centre descriptors. cleanvision and cleanlab are not included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "audit_speed.json"
STAGES = ("embedding_cached_s", "decode_s", "candidates_s", "verify_s", "outliers_s", "total_s")


def _images(dataset: str | None) -> tuple[pd.DataFrame, str]:
    if dataset:
        from core.ingest import load_dataset

        every = load_dataset(Path(dataset)).images[["image_id", "path", "frame"]].reset_index(drop=True)
        return every, f"dataset {Path(dataset).name} ({len(every)} images)"
    root = SHARED_DATA / "covid-chestxray"
    names = sorted(p.name for p in (root / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    every = pd.DataFrame({"image_id": names, "path": [str(root / "images" / x) for x in names], "frame": 0})
    return every, "covid-chestxray films"


def _embed(images: pd.DataFrame, encoder: str, cache: str) -> tuple[np.ndarray, dict]:
    from core.embed import embed_dataset

    started = time.perf_counter()
    embedding = embed_dataset(images, encoder, cache_root=cache)
    seconds = time.perf_counter() - started
    return embedding.vectors, {"images": len(images), "seconds": round(seconds, 2), "computed": embedding.n_computed,
                               "cached": embedding.n_cached, "failed": embedding.n_failed}


def one_size(n: int, dataset: str | None, encoder: str | None, cache: str | None) -> dict:
    """Every stage on the first ``n`` images, in this process."""
    from core.audit.duplicates import candidate_pairs
    from core.audit.fingerprints import fingerprint_images
    from core.audit.outliers import find_outliers
    from core.audit.xray import BLANK_STD

    if encoder:
        import core.embed  # noqa: F401  (imports are not a stage)
    every, _ = _images(dataset)
    images = every.iloc[:n].reset_index(drop=True)
    times: dict[str, float] = {}
    vectors = None
    if encoder:
        started = time.perf_counter()
        vectors, _ = _embed(images, encoder, cache)
        times["embedding_cached_s"] = time.perf_counter() - started
    started = time.perf_counter()
    prints = fingerprint_images(images)
    times["decode_s"] = time.perf_counter() - started
    blank = (prints.table["std"] < BLANK_STD).fillna(False).to_numpy(dtype=bool)
    hashes, phashes = prints.table["pixel_hash"].tolist(), prints.table["phash"].tolist()
    started = time.perf_counter()
    found = candidate_pairs(hashes, phashes, descriptors=prints.descriptors, vectors=vectors, skip=blank)
    times["candidates_s"] = time.perf_counter() - started
    started = time.perf_counter()
    # The full call (search + pixel match); the search part is the call above.
    candidates = candidate_pairs(hashes, phashes, descriptors=prints.descriptors, vectors=vectors,
                                 thumbnails=prints.thumbnails, skip=blank)
    times["verify_s"] = max(0.0, time.perf_counter() - started - times["candidates_s"])
    started = time.perf_counter()
    find_outliers(np.nan_to_num(vectors if vectors is not None else prints.descriptors))
    times["outliers_s"] = time.perf_counter() - started
    times["total_s"] = sum(times.values())
    assert len(found) == len(candidates)
    return {"n": n, **{k: round(v, 2) for k, v in times.items()}, "candidates": len(candidates),
            "candidates_per_image": round(len(candidates) / n, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "load": round(os.getloadavg()[0], 2)}


def _fit(table: pd.DataFrame, stage: str) -> dict | None:
    if stage not in table or table[stage].min() <= 0 or len(table) < 2:
        return None
    slope, intercept = np.polyfit(np.log(table["n"]), np.log(table[stage]), 1)
    return {"exponent": round(float(slope), 2), "extrapolated_10k_s": round(float(np.exp(intercept) * 10_000 ** slope), 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="150,300,600")
    parser.add_argument("--dataset", help="an ingested dataset folder to take the images from")
    parser.add_argument("--encoder", help="embed with this encoder first (e.g. pixels, efficientnet-lite0)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size, JSON on stdout
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.dataset, args.encoder, args.cache)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    every, source = _images(args.dataset)
    if max(sizes) > len(every):
        parser.error(f"--sizes asks for {max(sizes)} images; the source has {len(every)}")
    rows = []
    embedding = None
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as cache:
        if args.encoder:
            _, embedding = _embed(every.iloc[:max(sizes)].reset_index(drop=True), args.encoder, cache)
            embedding = {"encoder": args.encoder, **embedding,
                         "images_per_s": round(embedding["images"] / max(embedding["seconds"], 1e-9), 1)}
            print({"embedding": embedding}, flush=True)
        for n in sizes:
            command = [sys.executable, __file__, "--one", str(n), "--cache", cache]
            command += ["--dataset", args.dataset] if args.dataset else []
            command += ["--encoder", args.encoder] if args.encoder else []
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return done.returncode
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    fits = {stage: fit for stage in STAGES if (fit := _fit(table, stage)) is not None}
    memory = _fit(table.rename(columns={"peak_rss_mb": "memory"}), "memory")
    result = {"source": source, "encoder": args.encoder, "embedding": embedding, "sizes": rows, "growth": fits,
              "memory_growth_exponent": memory["exponent"] if memory else None, "cores": os.cpu_count(),
              "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S%z"),
              "note": "2 cores shared with other work; wall clock; each size in its own process "
                      "(peak_rss_mb is that process's max RSS); verify_s = pixel match of the candidates"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(fits, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
