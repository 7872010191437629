"""``scanatlas encoders``: the encoder registry and whether each one can run here."""

from __future__ import annotations

import argparse

from core.encoders import encoder_availability


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encoders",
        help="list the encoders, their input and output, and whether their weights are here",
        description="List every registered encoder (name, kind, dim, input, weights available "
        "here, version). Nothing is loaded or downloaded. For an encoder whose weights are "
        "missing, --verbose says which file goes where.",
    )
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also print where each encoder's weights are, or which file is missing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    table = encoder_availability()
    shown = table.assign(weights_available=table["weights_available"].map({True: "yes", False: "no"}))
    columns = ["name", "kind", "dim", "input", "weights_available", "version"]
    print(shown[columns].rename(columns={"weights_available": "weights here"}).to_string(index=False))
    if args.verbose:
        print()
        for row in table.itertuples(index=False):
            print(f"{row.name}: {row.message.removeprefix(row.name + ': ')}")
    else:
        missing = table.loc[~table["weights_available"], "name"].tolist()
        if missing:
            print(f"\nweights missing for {', '.join(missing)}: run `scanatlas encoders --verbose` "
                  "for which file goes where")
    return 0
