"""Label propagation on the demo cohort (issue 11.4): accuracy vs the fraction hand-labelled.

    .venv/bin/python benchmarks/propagation_curve.py [--out benchmarks/results/propagation.json]
        [--encoders efficientnet-lite0,pixels] [--repeats 10]

Writes the default demo cohort (80 patients x 4 slices, four planted groups, answer known) into
a temporary cache, embeds it, and for each encoder and method (LabelSpreading on a kNN graph,
self-training logistic regression) runs ``core.labels.propagate.propagation_curve``: a
stratified random fraction of patients is hand-labelled with its ground truth, the rest are
propagated, and accuracy is measured on the patients not hand-labelled, next to the
majority-class baseline. Not a test: it measures and writes JSON.
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
FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "propagation.json"))
    parser.add_argument("--encoders", default="efficientnet-lite0,pixels")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scanatlas-propagation-") as cache:
        os.environ["SCANATLAS_CACHE"] = cache
        from core.cohort import build_cohort
        from core.demo import DEMO_PATIENTS, DEMO_SLICES, make_demo_cohort
        from core.embed import embed_dataset
        from core.ingest import ingest
        from core.labels.propagate import propagation_curve

        make_demo_cohort(Path(cache) / "demo-source")
        dataset = ingest(Path(cache) / "demo-source", Path(cache) / "datasets" / "demo").dataset
        results = []
        for encoder in [e.strip() for e in args.encoders.split(",") if e.strip()]:
            cohort = build_cohort(dataset, embed_dataset(dataset, encoder), level="patient")
            for method in ("spreading", "self-training"):
                started = time.perf_counter()
                curve = propagation_curve(cohort.masked(), cohort.table["label"], fractions=FRACTIONS,
                                          repeats=args.repeats, method=method)
                seconds = time.perf_counter() - started
                summary = curve.groupby("fraction").agg(
                    n_labelled=("n_labelled", "mean"), accuracy=("accuracy", "mean"),
                    accuracy_sd=("accuracy", "std"), majority_accuracy=("majority_accuracy", "mean"),
                    unreached=("unreached", "mean")).reset_index()
                results.append({"encoder": encoder, "method": method, "seconds": round(seconds, 2),
                                "curve": summary.round(4).to_dict(orient="records")})
                print(encoder, method, f"{seconds:.1f} s")
                print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    record = {
        "what": "accuracy of propagated labels on patients not hand-labelled, demo cohort",
        "cohort": {"patients": DEMO_PATIENTS, "slices": DEMO_SLICES, "classes": 4, "level": "patient"},
        "repeats": args.repeats, "fractions": list(FRACTIONS),
        "params": {"n_neighbors": 7, "alpha": 0.2, "components": 50},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "load": os.getloadavg()[0]},
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
