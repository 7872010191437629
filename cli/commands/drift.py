"""``scanatlas drift DIR``: encoders x clustering algorithms scored against ground truth."""

from __future__ import annotations

import argparse

from cli.commands import add_where_argument, fraction_bar, load_filtered
from core.drift.study import STUDY_ALGORITHMS, drift_study, write_drift_study
from core.encoders import DEFAULT_DRIFT_ENCODERS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "drift",
        help="how far clusters fall from ground truth: encoders x algorithms grid",
        description="Cluster an ingested dataset with every encoder x algorithm and score each "
        "against the ground-truth labels (label-change %%, ARI, NMI, ...). Writes grid.csv, one "
        "labels_<encoder>__<algorithm>.csv per combination, contingency.csv and confounders.csv.",
    )
    parser.add_argument("dataset", help="ingested dataset folder (from `scanatlas ingest`)")
    parser.add_argument("--encoder", action="append", dest="encoders", metavar="NAME",
                        help=f"encoder (repeatable; default {', '.join(DEFAULT_DRIFT_ENCODERS)})")
    parser.add_argument("--algorithms", default=",".join(STUDY_ALGORITHMS),
                        help="comma-separated algorithms (default %(default)s)")
    parser.add_argument("--level", choices=["image", "patient"], default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--out", help="also write the study as CSV files to this folder")
    add_where_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset = load_filtered(args.dataset, args.where)
    encoders = args.encoders or list(DEFAULT_DRIFT_ENCODERS)
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    with fraction_bar("drift") as progress:
        study = drift_study(dataset, encoders, algorithms=algorithms, level=args.level,
                            label_column=args.label_column, progress=progress)
    columns = [c for c in ("encoder", "algorithm", "n_clusters", "label_change_pct", "ari", "nmi", "error") if c in study.grid]
    print(study.grid[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{'Loaded' if study.from_cache else 'Stored'} run {study.key} (scanatlas runs show {study.key})")
    if args.out:
        written = write_drift_study(study, args.out)
        print(f"Wrote {len(written)} files to {args.out}")
    return 0
