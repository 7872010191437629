"""The ``scanatlas`` command line: headless batch work over ``core``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules under cli.commands, in the order `scanatlas --help` lists them.
COMMANDS = ["demo", "ingest", "encoders", "embed", "cache", "drift", "classify", "explain", "runs",
            "roles", "serve", "serve_app", "propagate", "draft", "import_embeddings", "finetune",
            "audit"]


# Commands that never name an encoder: they start without importing torch (about 9 s and
# 850 MB before a 58-file ingest could begin).
NO_ENCODER_COMMANDS = frozenset({"demo", "ingest", "roles", "serve_app"})


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``only`` (a name in ``COMMANDS``) when that is the
    command being run, so that its start-up imports nothing the others need."""
    parser = argparse.ArgumentParser(
        prog="scanatlas",
        description="Map, cluster, label and classify cohorts of medical scans.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in [only] if only in COMMANDS else COMMANDS:
        importlib.import_module(f"cli.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The command module named first on the line (``serve-app`` -> serve_app); None for --help.
    requested = next((a.replace("-", "_") for a in argv if not a.startswith("-")), None)
    requested = requested if requested in COMMANDS else None
    if requested not in NO_ENCODER_COMMANDS:
        from core.finetune.encoder import register_finetuned_encoders

        register_finetuned_encoders()  # fine-tuned encoders from earlier runs work like any other
    parser = build_parser(only=requested)
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
