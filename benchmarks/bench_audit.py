"""How the audit's own stages grow with the number of images; writes
benchmarks/results/audit_speed.json.

    .venv/bin/python benchmarks/bench_audit.py [--sizes 150,300,600]
    .venv/bin/python benchmarks/bench_audit.py --dataset DIR --sizes 1250,2500,5000,10000 \
        [--out benchmarks/results/audit_speed_10k.json]

``--dataset`` takes the first n images of an ingested dataset instead, e.g. the scale
generator's cohort (``scanatlas demo --out D --patients 1250 --slices 8 --size 64`` then
``scanatlas ingest D --out DIR``) for 10,000 images.

On real covid-chestxray films (distinct images; the collection has 633), times per stage:
decoding + fingerprints (linear), duplicate candidates + pixel-match verification (the pairwise
hash and neighbour search are n^2 in block-wise numpy, the verification linear in the number of
candidates), kNN + isolation-forest outliers on the centre descriptors. Fits the growth
exponent b of time = a * n^b per stage and extrapolates to 10,000 images. Embedding (the
encoder's own cost, see bench_embed.py), cleanvision and cleanlab are not included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.audit.duplicates import candidate_pairs  # noqa: E402
from core.audit.fingerprints import fingerprint_images  # noqa: E402
from core.audit.outliers import find_outliers  # noqa: E402

SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "audit_speed.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="150,300,600")
    parser.add_argument("--dataset", help="an ingested dataset folder to take the images from")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.dataset:
        from core.ingest import load_dataset

        every = load_dataset(Path(args.dataset)).images[["image_id", "path", "frame"]].reset_index(drop=True)
        source = f"dataset {Path(args.dataset).name} ({len(every)} images)"
    else:
        root = SHARED_DATA / "covid-chestxray"
        names = sorted(p.name for p in (root / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        every = pd.DataFrame({"image_id": names, "path": [str(root / "images" / x) for x in names], "frame": 0})
        source = "covid-chestxray films"
    rows = []
    for n in sizes:
        images = every.iloc[:n].reset_index(drop=True)
        started = time.perf_counter()
        prints = fingerprint_images(images)
        decode = time.perf_counter() - started
        started = time.perf_counter()
        candidates = candidate_pairs(prints.table["pixel_hash"].tolist(), prints.table["phash"].tolist(),
                                     descriptors=prints.descriptors, thumbnails=prints.thumbnails)
        pairs = time.perf_counter() - started
        started = time.perf_counter()
        find_outliers(np.nan_to_num(prints.descriptors))
        outliers = time.perf_counter() - started
        rows.append({"n": n, "decode_s": decode, "duplicates_s": pairs, "outliers_s": outliers,
                     "candidates": len(candidates), "load": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    fits = {}
    for stage in ("decode_s", "duplicates_s", "outliers_s"):
        slope, intercept = np.polyfit(np.log(table["n"]), np.log(table[stage]), 1)
        fits[stage] = {"exponent": round(float(slope), 2),
                       "extrapolated_10k_s": round(float(np.exp(intercept) * 10_000 ** slope), 1)}
    result = {"source": source, "sizes": rows, "growth": fits, "cores": os.cpu_count(),
              "note": "2 cores shared with other work; times are wall clock, ratios within one run"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(fits, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
