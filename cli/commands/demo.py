"""``scanatlas demo``: write the synthetic cardiac-MRI demo cohort (DICOM + patients.csv)."""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from core.demo import DEMO_GROUPS, DEMO_SEED, make_demo_cohort


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo`` and its options on the ``scanatlas`` subparsers."""
    parser = subparsers.add_parser(
        "demo",
        help="write a synthetic cardiac-MRI cohort (DICOM files + patients.csv)",
        description=(
            "Write a deterministic synthetic cohort of short-axis cardiac MRI series as DICOM "
            f"files, with ground truth in patients.csv ({', '.join(DEMO_GROUPS)})."
        ),
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument("--patients", type=int, default=80, metavar="N",
                        help="number of patients, split evenly over the groups (default 80)")
    parser.add_argument("--slices", type=int, default=8, metavar="N",
                        help="short-axis slices per patient, base to apex (default 8)")
    parser.add_argument("--size", type=int, default=128, metavar="N",
                        help="image height and width in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, metavar="N",
                        help=f"random seed; same seed, same bytes (default {DEMO_SEED})")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), metavar="N",
                        help="processes that write patients; same bytes for any number "
                             "(default: the CPU count, at most 8)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate the cohort and print a one-line summary; ``ValueError`` for bad sizes."""
    started = time.monotonic()
    csv_path = make_demo_cohort(args.out, n_patients=args.patients, n_slices=args.slices,
                                size=args.size, seed=args.seed, workers=args.workers)
    seconds = time.monotonic() - started
    counts = pd.read_csv(csv_path)["diagnosis"].value_counts()
    groups = ", ".join(f"{group} {int(counts.get(group, 0))}" for group in DEMO_GROUPS)
    print(
        f"wrote {args.patients} synthetic patients x {args.slices} slices "
        f"({args.patients * args.slices} DICOM files, {args.size}x{args.size}) to {args.out}; "
        f"ground truth in {csv_path} ({groups}) in {seconds:.1f} s"
    )
    return 0
