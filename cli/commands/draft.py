"""``scanatlas draft DIR --patient ID``: a report draft from the notes of the most similar cases."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from core.cohort import build_cohort
from core.embed import embed_dataset
from core.encoders import DEFAULT_IMAGE_ENCODER
from core.explain.report_draft import draft_report, notes_by_row
from core.ingest import load_dataset


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "draft",
        help="a report draft from the notes of a scan's most similar cases (not a diagnosis)",
        description="Finds the patient's nearest neighbours in embedding space that have notes "
        "(never the patient's own), prints them with distances and labels, and a draft made of "
        "the sentences their notes share most, marked 'draft from similar cases, not a "
        "diagnosis'. Dates, ages, names and hospital names in the notes are replaced by "
        "placeholders; paths and file names are never shown.",
    )
    parser.add_argument("dataset", help="ingested dataset folder")
    parser.add_argument("--patient", required=True, help="patient id")
    parser.add_argument("--encoder", default=DEFAULT_IMAGE_ENCODER)
    parser.add_argument("--level", choices=["patient", "image"], default="patient",
                        help="image: draft for the patient's first image from similar images")
    parser.add_argument("--k", type=int, default=8, help="similar cases to draft from")
    parser.add_argument("--sentences", type=int, default=4, help="at most this many sentences")
    parser.add_argument("--minilm", action="store_true", help="compare sentences by MiniLM meaning, not words")
    parser.add_argument("--out", help="also write draft.txt and neighbours.csv to this folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dataset = load_dataset(args.dataset)
    cohort = build_cohort(dataset, embed_dataset(dataset, args.encoder), level=args.level)
    table = cohort.table.assign(text=notes_by_row(dataset.images, cohort.table, args.level).to_numpy())
    rows = np.flatnonzero(table["patient_id"].astype(str).to_numpy() == str(args.patient))
    if rows.size == 0:
        raise ValueError(f"patient {args.patient!r} is not in {dataset.name}")
    embed = None
    if args.minilm:
        from core.encoders import get_encoder

        text_encoder = get_encoder("minilm")
        embed = text_encoder.embed_texts
    draft = draft_report(table, cohort.masked("image"), int(rows[0]), k=args.k, max_sentences=args.sentences,
                         embed_sentences=embed)
    for note in draft.notes:
        print(f"Note: {note}")
    print(draft.neighbours[["rank", "patient_id", "distance", "label"]].to_string(index=False))
    print()
    print(draft.text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "draft.txt").write_text(draft.text + "\n", encoding="utf-8")
        draft.neighbours.to_csv(out / "neighbours.csv", index=False)
        print(f"\nWrote {out / 'draft.txt'} and {out / 'neighbours.csv'}")
    return 0
