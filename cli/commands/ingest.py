"""``scanatlas ingest SOURCE --out DIR``: scans + metadata -> images/patients tables + report."""

from __future__ import annotations

import argparse
import sys

from core.ingest import LAYOUTS, ZipLimits, ingest, summarize
from core.ingest.safety import MAX_ZIP_RATIO, MAX_ZIP_TOTAL_BYTES
from core.pixels import DEFAULT_MAX_PIXELS


def _parse_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        column, sep, field = pair.partition("=")
        if not sep or not column or not field:
            raise ValueError(f"--map {pair!r}: expected COLUMN=FIELD, e.g. --map diagnosis=label")
        mapping[column] = field
    return mapping


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="ingest scans (folder, CSV or ZIP) into images.parquet / patients.parquet",
        description="Ingest a folder, metadata CSV or ZIP of scans. Writes DIR/images.parquet, "
        "DIR/patients.parquet, DIR/ingest_report.csv (every file or row not ingested, with the "
        "reason) and prints a summary.",
    )
    parser.add_argument("source", help="folder, metadata CSV or ZIP archive")
    parser.add_argument("--out", required=True, help="output dataset folder")
    parser.add_argument("--layout", default="auto", choices=["auto", *LAYOUTS])
    parser.add_argument("--metadata", help="metadata CSV (the layout's CSV, or extra columns to join)")
    parser.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                        help="map a CSV column to a canonical field (patient_id, path, modality, "
                        "view, age, sex, label, text); repeatable")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="per-frame pixel budget; larger images are refused (default %(default)s)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip decoding each file's first frame (faster, fewer guarantees)")
    parser.add_argument("--no-previews", action="store_true",
                        help="verify each file with a full-frame decode and store no 256 px previews "
                        "(by default frame 0 is decoded once at reduced scale and its preview kept "
                        "for galleries)")
    parser.add_argument("--zip-max-bytes", type=int, default=MAX_ZIP_TOTAL_BYTES,
                        help="a ZIP SOURCE that would expand past this many bytes is refused "
                        "whole (default %(default)s)")
    parser.add_argument("--zip-max-ratio", type=float, default=MAX_ZIP_RATIO,
                        help="a ZIP SOURCE whose uncompressed/compressed ratio (whole archive or "
                        "any member over 64 KiB) passes this is refused as a zip bomb "
                        "(default %(default)s)")
    parser.add_argument("--images-dir", help="image-csv / covid-chestxray: folder where bare file names are "
                        "looked up after the CSV's folder (default: images/ next to the CSV when present)")
    parser.add_argument("--name", help="dataset name shown in the app (default: the folder name)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    bar = progress = None
    if sys.stderr.isatty():  # a bar only where one is drawn (tqdm costs ~40 ms to import)
        from tqdm import tqdm

        bar = tqdm(total=0, unit="file", desc="ingest", leave=False)

        def progress(done: int, total: int, _message: str) -> None:
            bar.total = total
            bar.update(done - bar.n)

    try:
        result = ingest(
            args.source,
            args.out,
            layout=args.layout,
            metadata=args.metadata,
            column_map=_parse_map(args.map),
            max_pixels=args.max_pixels,
            verify=not args.no_verify,
            previews=not args.no_previews,
            name=args.name,
            progress=progress,
            zip_limits=ZipLimits(max_total_bytes=args.zip_max_bytes, max_ratio=args.zip_max_ratio),
            images_dir=args.images_dir,
        )
    finally:
        if bar is not None:
            bar.close()
    print(f"Layout: {result.layout}")
    print(summarize(result.dataset))
    if result.notes:
        print("\nNotes:")
        for note in result.notes:
            print(f"  {note}")
    print(f"\nWrote {args.out}/images.parquet, patients.parquet, ingest_report.csv")
    return 0
