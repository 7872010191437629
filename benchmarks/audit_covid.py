"""What the audit finds on the shared covid-chestxray set, and how the COVID-19-vs-other AUC
changes when patients that share a duplicate are merged into one CV group; writes
benchmarks/results/audit_covid.json.

    .venv/bin/python benchmarks/audit_covid.py [--cache DIR] [--encoder NAME]

Steps: ingest the collection (ingest reports the rows that repeat a file), audit it (kind
``audit`` run), run the README's classifier study (COVID-19 vs other, image level, fused image +
notes + age/sex, logistic regression, patient-grouped 5-fold CV), count the duplicate pairs
that cross a fold boundary, and evaluate the same model with duplicate-sharing patients merged.
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

SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS = REPO_ROOT / "benchmarks" / "results" / "audit_covid.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=None, help="SCANATLAS_CACHE to use (default: a folder under /tmp)")
    parser.add_argument("--encoder", default="efficientnet-lite0")
    args = parser.parse_args()
    cache = Path(args.cache or "/tmp/scanatlas-audit-covid")
    os.environ["SCANATLAS_CACHE"] = str(cache)

    from core.audit.duplicates import Thresholds
    from core.audit.runs import audit_dataset, summary_lines
    from core.classify.duplicates import auc_with_merged_groups, duplicate_leakage
    from core.classify.study import classifier_study
    from core.ingest import ingest, load_dataset

    target = cache / "datasets" / "covid-chestxray"
    if (target / "images.parquet").is_file():
        dataset = load_dataset(target)
    else:
        dataset = ingest(SHARED_DATA / "covid-chestxray", target).dataset
    started = time.perf_counter()
    audit = audit_dataset(dataset, encoder=args.encoder, progress=lambda f, m: print(f"{time.perf_counter() - started:7.1f}s {f:.2f} {m}", file=sys.stderr, flush=True))
    audit_seconds = time.perf_counter() - started
    thresholds = Thresholds()
    pairs, sets = audit.duplicates(thresholds)
    print("\n".join(summary_lines(audit, thresholds)))

    study = classifier_study(dataset, positive="COVID-19", encoder=args.encoder, level="image")
    leakage = duplicate_leakage(study.table, study.report.folds, pairs)
    cross_pairs = pairs[pairs["cross_patient"]]
    cross_leakage = duplicate_leakage(study.table, study.report.folds, cross_pairs)
    merged = auc_with_merged_groups(study, cross_pairs)
    result = {
        "dataset": "covid-chestxray", "images": len(dataset.images), "encoder": args.encoder,
        "audit_run": audit.key, "audit_seconds": round(audit_seconds, 1),
        "thresholds": {"phash_bits": thresholds.phash_bits, "cosine": thresholds.cosine, "match": thresholds.match},
        "counts": audit.counts(thresholds),
        "ingest_repeats": audit.ingest_duplicates.to_dict("records"),
        "cross_patient_sets": sets[sets["cross_patient"]][["set_id", "size", "patient_ids", "kinds"]].to_dict("records"),
        "study": {"run": study.key, "config": {k: study.config.get(k) for k in ("positive", "encoder", "use_text", "metadata", "model", "level", "n_splits")}},
        "pairs_in_study": leakage.n_pairs, "pairs_crossing_folds": leakage.n_crossing,
        "cross_patient_pairs_in_study": cross_leakage.n_pairs, "cross_patient_pairs_crossing_folds": cross_leakage.n_crossing,
        "auc": merged, "notes": audit.notes,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("counts", "pairs_crossing_folds", "cross_patient_pairs_crossing_folds", "auc")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
