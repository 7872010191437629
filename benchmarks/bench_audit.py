"""How the audit's own stages grow with the number of images; writes
benchmarks/results/audit_speed.json.

    .venv/bin/python benchmarks/bench_audit.py [--sizes 150,300,600]

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
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = SHARED_DATA / "covid-chestxray"
    names = sorted(p.name for p in (root / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rows = []
    for n in sizes:
        images = pd.DataFrame({"image_id": names[:n], "path": [str(root / "images" / x) for x in names[:n]], "frame": 0})
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
    result = {"sizes": rows, "growth": fits, "cores": os.cpu_count(),
              "note": "2 cores shared with other work; times are wall clock, ratios within one run"}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(fits, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
