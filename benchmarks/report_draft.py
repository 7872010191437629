"""Report drafts from similar cases on the real covid-chestxray notes (issue 11.7).

    .venv/bin/python benchmarks/report_draft.py [--out benchmarks/results/report_draft.json]
        [--encoders efficientnet-lite0,pixels] [--k 8] [--repeats 3] [--minilm] [--cache DIR]

Ingests ``../shared/data/covid-chestxray`` (never copied into the project), embeds its images,
and for every image whose finding ``core.explain.report_draft.FINDING_TERMS`` knows, drafts a
report from its k most similar other patients' notes (leave-one-patient-out: the scan's own
patient's notes are never used) and checks whether the draft's sentences name the scan's own
finding; the baseline drafts the same way from k random other patients' notes. Reported: the
share of scans whose draft names their finding (all scans, scans not COVID-19, and the mean over
findings), the random baseline, the paired difference with a 95% patient-bootstrap interval, how
often any of the k neighbours' notes names it (the most a draft could do) and how often the
neighbours' majority label is the finding. ``--minilm`` also scores MiniLM sentence similarity.
Not a test: it measures and writes JSON.
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

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
COVID = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "covid-chestxray"


def bootstrap_difference(scores: pd.DataFrame, *, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(draft) - mean(random), resampling patients."""
    per_patient = scores.groupby("patient_id")[["draft_names", "random_names"]].agg(["sum", "count"])
    draft_sum = per_patient[("draft_names", "sum")].to_numpy(dtype=float)
    random_sum = per_patient[("random_names", "sum")].to_numpy(dtype=float)
    counts = per_patient[("draft_names", "count")].to_numpy(dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(n, len(counts)))
    diffs = (draft_sum[picks].sum(1) - random_sum[picks].sum(1)) / counts[picks].sum(1)
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def summarise(scores: pd.DataFrame) -> dict:
    non_covid = scores[scores["finding"] != "COVID-19"]
    per_finding = scores.groupby("finding")[["draft_names", "random_names"]].mean()
    low, high = bootstrap_difference(scores)
    return {
        "scans": len(scores), "patients": int(scores["patient_id"].nunique()),
        "draft_names_finding": round(float(scores["draft_names"].mean()), 4),
        "random_names_finding": round(float(scores["random_names"].mean()), 4),
        "difference_ci95": [round(low, 4), round(high, 4)],
        "not_covid": {"scans": len(non_covid),
                      "draft": round(float(non_covid["draft_names"].mean()), 4),
                      "random": round(float(non_covid["random_names"].mean()), 4)},
        "mean_over_findings": {"findings": len(per_finding),
                               "draft": round(float(per_finding["draft_names"].mean()), 4),
                               "random": round(float(per_finding["random_names"].mean()), 4)},
        "neighbour_notes_name_finding": round(float(scores["neighbours_name"].mean()), 4),
        "neighbour_majority_label_is_finding": round(float((scores["majority_label"] == scores["finding"]).mean()), 4),
        "per_finding": {f: {"scans": int((scores["finding"] == f).sum()), "draft": round(float(r.draft_names), 3),
                            "random": round(float(r.random_names), 3)} for f, r in per_finding.iterrows()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "report_draft.json"))
    parser.add_argument("--encoders", default="efficientnet-lite0,pixels",
                        help="neighbour spaces: image encoders, or 'minilm' for the notes' own text vectors "
                        "(always scored leaving the scan's source publication out)")
    parser.add_argument("--source-out", default="efficientnet-lite0",
                        help="image encoders also scored leaving the scan's source publication out")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--supports", default="terms,note", help="sentence support rules to compare")
    parser.add_argument("--minilm", action="store_true", help="also score MiniLM sentence similarity ('note' support)")
    parser.add_argument("--cache", help="SCANATLAS_CACHE to use (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scanatlas-drafts-") as temporary:
        cache = Path(args.cache or temporary)
        os.environ["SCANATLAS_CACHE"] = str(cache)
        from core.embed import embed_dataset
        from core.explain.report_draft import evaluate_drafts
        from core.ingest import ingest, load_dataset

        target = cache / "datasets" / "covid-chestxray"
        dataset = load_dataset(target) if (target / "images.parquet").exists() else ingest(COVID, target).dataset
        table = dataset.images.reset_index(drop=True)
        # The source publication (DOI, else URL): notes of one paper's patients read alike.
        table["source"] = table["doi"].where(table["doi"].notna(), table["url"]) if "doi" in table else None
        similarities = {"tfidf": None}
        if args.minilm:
            from core.encoders import get_encoder

            text_encoder = get_encoder("minilm")
            similarities["minilm"] = lambda texts: text_encoder.embed_texts(texts)
        results = []
        for encoder in [e.strip() for e in args.encoders.split(",") if e.strip()]:
            vectors = np.asarray(embed_dataset(dataset, encoder).vectors)
            variants = [("tfidf", support, "patient") for support in args.supports.split(",")]
            variants += [("minilm", "note", "patient")] if args.minilm else []
            if encoder == "minilm":  # the notes' own space: leave the whole source publication out
                variants = [(name, support, "source") for name, support, _ in variants]
            elif encoder in args.source_out.split(","):
                variants += [("tfidf", args.supports.split(",")[0], "source")]
            for name, support, left_out in variants:
                started = time.perf_counter()
                scores = evaluate_drafts(table, vectors, k=args.k, repeats=args.repeats, support=support,
                                         embed_sentences=similarities[name],
                                         exclude_same="source" if left_out == "source" else None)
                seconds = time.perf_counter() - started
                summary = {"encoder": encoder, "support": support, "sentence_similarity": name,
                           "left_out": "patient" if left_out == "patient" else "patient and source publication",
                           "seconds": round(seconds, 1), **summarise(scores)}
                results.append(summary)
                print(json.dumps({k: v for k, v in summary.items() if k != "per_finding"}))
    record = {
        "what": "share of covid-chestxray scans whose draft (from k similar other patients' notes) names the "
                "scan's own finding, vs drafts from k random other patients' notes; image level, leaving the scan's "
                "patient (and, where said, its source publication) out of both",
        "k": args.k, "random_repeats": args.repeats, "max_sentences": 4,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()[0]},
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
