"""``scanatlas classify DIR``: cross-validated classifier on embeddings (+ metadata, + text).

The study is a named run in the run store: the same command again (or ``scanatlas explain``
with the same options) loads it instead of recomputing; ``--recompute`` replaces it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cli.commands import add_where_argument, fraction_bar, load_filtered
from core.classify.models import MODELS
from core.classify.study import ClassifierStudy, classifier_study, write_study
from core.encoders import DEFAULT_IMAGE_ENCODER
from core.ingest import Dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify",
        help="train and cross-validate a classifier; per-class AUC/F1 with CIs, fairness",
        description="Patient-grouped cross-validation of a classifier on image embeddings, fused "
        "with metadata and report text. Writes per_class.csv, comparison.csv (image vs text vs "
        "metadata vs fused), fairness.csv, leakage.json and config.json to --out. The study is "
        "kept in the run store and reused by later calls with the same options.",
    )
    parser.add_argument("dataset", help="ingested dataset folder")
    add_study_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    add_where_argument(parser)
    parser.set_defaults(func=run)


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that define a classifier study (shared with ``scanatlas explain``)."""
    parser.add_argument("--target", action="append", metavar="COLUMN",
                        help="label column (default: label); repeat for a multi-label target in the "
                        "CheXpert convention (1 positive, 0 negative, -1 uncertain)")
    parser.add_argument("--uncertain", default="ignore", choices=["ignore", "as-positive", "as-negative"],
                        help="multi-label: what -1 (uncertain) means (default %(default)s)")
    parser.add_argument("--calibrate", action="store_true", help="calibrate probabilities (CalibratedClassifierCV)")
    parser.add_argument("--positive", action="append",
                        help="value(s) of the positive class for a binary target, e.g. COVID-19 (repeatable)")
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER)
    parser.add_argument("--no-text", action="store_true", help="leave the report-text block out")
    parser.add_argument("--metadata", default="age,sex", help="comma-separated metadata columns ('' for none)")
    parser.add_argument("--model", default="logreg", choices=list(MODELS))
    parser.add_argument("--level", default="image", choices=["image", "patient"])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--mask-leaks", action="store_true", help="mask label words in the text first")
    parser.add_argument("--recompute", action="store_true", help="compute again even when the run store holds this study")


def study_options(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`core.classify.study.classifier_study` keyword arguments from the parsed options."""
    positive = args.positive[0] if args.positive and len(args.positive) == 1 else args.positive
    target = args.target[0] if args.target and len(args.target) == 1 else (args.target or "label")
    return {"target_column": target, "positive": positive, "uncertain_policy": args.uncertain,
            "calibrate": args.calibrate, "encoder": args.encoder, "use_text": not args.no_text,
            "metadata": [c for c in args.metadata.split(",") if c], "model": args.model, "level": args.level,
            "n_splits": args.splits, "n_bootstrap": args.bootstrap, "mask_leaking_words": args.mask_leaks,
            "force": args.recompute}


def run_study(dataset: Dataset, args: argparse.Namespace) -> ClassifierStudy:
    """The study the options describe, with a progress bar; says when it was a saved run."""
    with fraction_bar("classify") as progress:
        study = classifier_study(dataset, progress=progress, **study_options(args))
    if study.from_store:
        print(f"Reused the saved run {study.key} from {study.created} (--recompute to train again).")
    return study


def run(args: argparse.Namespace) -> int:
    dataset = load_filtered(args.dataset, args.where)
    study = run_study(dataset, args)
    fmt = {"float_format": lambda v: f"{v:.3f}"}
    columns = [c for c in ("class", "support", "auc", "auc_lo", "auc_hi", "f1", "f1_lo", "f1_hi", "precision", "recall") if c in study.report.per_class]
    print(study.report.per_class[columns].to_string(index=False, **fmt))
    print("\nModalities:")
    shown = [c for c in ("modality", "n_features", "n_rows", "mean_auc", "auc_lo", "auc_hi", "mean_f1", "rank") if c in study.comparison]
    print(study.comparison[shown].to_string(index=False, **fmt))
    if study.leakage is not None and study.leakage.flagged:
        print(f"\nWARNING label leakage in the text: {'; '.join(study.leakage.flags)}. Consider --mask-leaks.")
    out = write_study(study, Path(args.out))
    print(f"\nWrote {out} (run {study.key})")
    return 0


__all__ = ["add_parser", "add_study_arguments", "run", "run_study", "study_options"]
