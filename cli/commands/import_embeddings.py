"""``scanatlas import-embeddings VECTORS --metadata CSV --out DIR``: vectors made elsewhere (a
foundation model, a PACS vendor's export, a notebook) + their metadata -> a dataset folder that
every other command and the app open like an ingested one, under the encoder name given."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from cli.commands.ingest import _parse_map
from core.ingest import summarize
from core.ingest.imported import import_embeddings
from core.ingest.vector_files import SUFFIXES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-embeddings",
        help="import your own embedding vectors + a metadata CSV as a dataset (no images needed)",
        description="Import vectors from Parquet (a list column, or one numeric column per dimension), "
        ".npy + --ids, .npz (ids and vectors inside, or + --ids) or CSV (id column + one column per "
        "dimension), joined with a metadata CSV on an id column. Writes DIR like `scanatlas ingest` "
        "plus DIR/embeddings/ENCODER.npy; `scanatlas classify DIR --encoder ENCODER` (and the app) then "
        "use these vectors. Ragged or non-numeric vectors, NaN/inf rows, duplicate ids, ids missing from "
        "either file and a dimension that differs from vectors already stored under the same encoder "
        "name are refused with counts and example ids; nothing is written then.",
    )
    parser.add_argument("vectors", metavar="VECTORS", help=f"vectors file ({', '.join(SUFFIXES)})")
    parser.add_argument("--metadata", required=True, metavar="CSV",
                        help="metadata CSV with the id column (patient id, sex, age, label, report text...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output dataset folder (new or empty)")
    parser.add_argument("--encoder", default="imported", metavar="NAME",
                        help="name these vectors go by, e.g. cxr-foundation (default %(default)s)")
    parser.add_argument("--id-column", metavar="C",
                        help="id column in both files (default: image_id, id, dicom_id or sample_id)")
    parser.add_argument("--ids", metavar="FILE", help="id list, one per line, for .npy (or .npz without ids)")
    parser.add_argument("--name", help="dataset name shown in the app (default: the folder name)")
    parser.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                        help="map a metadata column to a field (patient_id, modality, view, age, sex, label, text)")
    parser.add_argument("--allow-unmatched", action="store_true",
                        help="keep vectors without a metadata row and ignore metadata rows without a vector "
                        "(both listed in DIR/ingest_report.csv) instead of refusing")
    parser.add_argument("--replace", action="store_true", help="replace DIR when it already holds a dataset")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bar = tqdm(total=0, unit="vec", desc="import", leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        result = import_embeddings(
            args.vectors, args.metadata, args.out, encoder=args.encoder, id_column=args.id_column,
            ids_path=args.ids, name=args.name, column_map=_parse_map(args.map),
            allow_unmatched=args.allow_unmatched, replace=args.replace, progress=progress)
    finally:
        bar.close()
    print(f"Imported {result.n_vectors} vectors of dimension {result.dim} as encoder {result.encoder!r} "
          f"in {result.seconds:.1f} s")
    for warning in result.warnings:
        print(f"WARNING {warning} (see {args.out}/ingest_report.csv)")
    print(summarize(result.dataset))
    print(f"\nWrote {args.out}; next: scanatlas classify {args.out} --encoder {result.encoder} --positive LABEL --out OUT")
    return 0
