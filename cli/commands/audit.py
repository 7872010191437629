"""``scanatlas audit DIR``: duplicates, leakage across patients, outliers, likely label errors and
image problems of an ingested dataset.

The audit is a named run (kind ``audit``) in the run store: the same command again loads it;
``--recompute`` replaces it. Thresholds only choose among stored candidates, so changing them
never recomputes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.commands import fraction_bar
from core.audit.duplicates import COSINE, MATCH, NEIGHBOURS, PHASH_BITS, Thresholds
from core.audit.export import write_audit
from core.audit.runs import audit_dataset, summary_lines
from core.encoders import DEFAULT_IMAGE_ENCODER
from core.ingest import load_dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="data-quality audit: duplicates (also across patients), outliers, label errors, image problems",
        description="Audit an ingested dataset. Writes duplicates.csv, label_issues.csv, image_issues.csv, "
        "outliers.csv, summary.txt and audit.json to --out and prints a one-screen summary. The audit is "
        "kept in the run store and reused by later calls with the same options.",
    )
    parser.add_argument("dataset", help="ingested dataset folder")
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER, help="image encoder for embedding checks (default %(default)s)")
    parser.add_argument("--out", help="output folder (default: ./audit-<dataset name>)")
    parser.add_argument("--clusters", type=int, default=4, help="k-means clusters for the per-cluster summary (default %(default)s)")
    parser.add_argument("--phash-bits", type=int, default=PHASH_BITS, help="near duplicate: pHash bits that differ <= this (default %(default)s)")
    parser.add_argument("--cosine", type=float, default=COSINE, help="near duplicate: embedding cosine distance <= this (default %(default)s)")
    parser.add_argument("--match", type=float, default=MATCH, help="near duplicate: crop-aware pixel match >= this (default %(default)s)")
    parser.add_argument("--neighbours", type=int, default=NEIGHBOURS,
                        help="duplicate candidates per image from each of pHash, centre descriptor and embedding "
                        "(default %(default)s)")
    parser.add_argument("--no-cleanvision", action="store_true", help="skip cleanvision's checks (radiograph checks still run)")
    parser.add_argument("--recompute", action="store_true", help="compute again even when the run store holds this audit")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    thresholds = Thresholds(phash_bits=args.phash_bits, cosine=args.cosine, match=args.match).check()
    dataset = load_dataset(args.dataset)
    with fraction_bar("audit") as progress:
        audit = audit_dataset(dataset, encoder=args.encoder, n_clusters=args.clusters,
                              use_cleanvision=not args.no_cleanvision, neighbours=args.neighbours,
                              force=args.recompute, progress=progress)
    print("\n".join(summary_lines(audit, thresholds)))
    out = write_audit(audit, Path(args.out) if args.out else Path(f"audit-{dataset.name}"), thresholds)
    print(f"\nWrote {out} (run {audit.key or 'not saved'})")
    return 0


__all__ = ["add_parser", "run"]
