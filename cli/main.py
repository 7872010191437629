"""The ``scanatlas`` command line: headless batch work over ``core``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules under cli.commands, in the order `scanatlas --help` lists them.
COMMANDS = ["demo", "ingest", "encoders", "embed", "cache", "drift", "classify", "explain", "runs",
            "roles", "serve", "serve_app", "propagate", "draft", "import_embeddings", "finetune",
            "audit"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scanatlas",
        description="Map, cluster, label and classify cohorts of medical scans.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"cli.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.finetune.encoder import register_finetuned_encoders

    register_finetuned_encoders()  # fine-tuned encoders from earlier runs work like any other
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as error:
        # Expected user errors (bad input, a missing or unreadable file, a refused permission,
        # which is an OSError too): one clear line, no traceback.
        print(f"scanatlas {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
