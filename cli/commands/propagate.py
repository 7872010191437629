"""``scanatlas propagate DIR``: propose labels for every patient from the hand labels saved for a
clustering (cluster mapping + patient overrides), or score propagation against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.clustering import get_algorithm
from core.clustering.runs import cluster_cohort
from core.cohort import build_cohort
from core.embed import embed_dataset
from core.encoders import DEFAULT_IMAGE_ENCODER
from core.ingest import load_dataset
from core.labels import LabelStore
from core.labels.propagate import METHODS, propagate_labels, propagation_curve


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "propagate",
        help="propose labels for unlabelled patients from a few labelled clusters / patients",
        description="Spreads the hand labels saved for a clustering (the Label page's cluster "
        "mapping and patient overrides) over the embeddings and proposes a label with a "
        "confidence for every other patient; writes proposals.csv to --out. The proposals are a "
        "named run (`scanatlas runs list --kind label-propagation`); accept them on the Label "
        "page. With --curve, scores propagation against the ground-truth labels instead: "
        "accuracy on the patients not hand-labelled vs the fraction hand-labelled (curve.csv).",
    )
    parser.add_argument("dataset", help="ingested dataset folder")
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER)
    parser.add_argument("--level", choices=["patient", "image"], default="patient")
    parser.add_argument("--algorithm", default="kmeans", help="clustering the mapping was saved for")
    parser.add_argument("--k", type=int, default=4, help="clusters (algorithms that take k)")
    parser.add_argument("--method", choices=list(METHODS), default="spreading")
    parser.add_argument("--neighbors", type=int, default=7, help="neighbours per patient in the graph")
    parser.add_argument("--alpha", type=float, default=0.2, help="how far a seed may move (0-1)")
    parser.add_argument("--curve", action="store_true", help="score against ground truth instead")
    parser.add_argument("--fractions", default="0.05,0.1,0.2,0.3,0.5", help="--curve: fractions hand-labelled")
    parser.add_argument("--repeats", type=int, default=5, help="--curve: random draws per fraction")
    parser.add_argument("--label-column", default="label", help="--curve: ground truth column")
    parser.add_argument("--top", type=int, default=15, help="proposals to print")
    parser.add_argument("--out", help="folder for proposals.csv / curve.csv")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset)
    cohort = build_cohort(dataset, embed_dataset(dataset, args.encoder), level=args.level)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    if args.curve:
        if args.label_column not in cohort.table.columns:
            raise ValueError(f"--label-column {args.label_column!r} is not a column; columns: {list(cohort.table.columns)}")
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
        curve = propagation_curve(cohort.masked(), cohort.table[args.label_column], fractions=fractions,
                                  repeats=args.repeats, method=args.method, n_neighbors=args.neighbors, alpha=args.alpha)
        summary = curve.groupby("fraction").agg(n_labelled=("n_labelled", "mean"), accuracy=("accuracy", "mean"),
                                                accuracy_sd=("accuracy", "std"),
                                                majority_baseline=("majority_accuracy", "mean")).reset_index()
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        if out:
            curve.to_csv(out / "curve.csv", index=False)
            print(f"Wrote {out / 'curve.csv'}")
        return 0
    params = {"k": args.k} if get_algorithm(args.algorithm).takes_k else {}
    clustering_key, clustering = cluster_cohort(cohort, algorithm=args.algorithm, dataset=dataset.name, **params)
    with LabelStore() as store:
        mapping = store.current_mapping(dataset.name, clustering_key)
        overrides = store.patient_overrides(dataset.name)
    if mapping.empty and overrides.empty:
        raise ValueError(f"no hand labels for {dataset.name} ({args.algorithm}, clustering {clustering_key}): map "
                         "clusters or override patients on the Label page first, or use --curve")
    result = propagate_labels(cohort.table, cohort.masked(), clustering.labels, mapping, overrides,
                              cohort_key=cohort.key, clustering_key=clustering_key, dataset=dataset.name,
                              method=args.method, n_neighbors=args.neighbors, alpha=args.alpha)
    proposals = result.open_proposals
    print(f"{int(result.proposals['seed'].sum())} hand-labelled patients, {len(proposals)} proposals "
          f"({', '.join(result.classes)})")
    shown = proposals[["patient_id", "disease", "icd10_code", "confidence"]].head(args.top)
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{'Loaded' if result.from_store else 'Stored'} run {result.key} (scanatlas runs show {result.key})")
    if out:
        result.proposals.to_csv(out / "proposals.csv", index=False)
        print(f"Wrote {out / 'proposals.csv'}")
    return 0
