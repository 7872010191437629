"""One module per ``scanatlas`` subcommand; each exposes ``add_parser(subparsers)``.

A subcommand's ``add_parser`` registers its arguments and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code.
"""

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def fraction_bar(desc: str) -> Iterator[Callable[[float, str], None]]:
    """A tqdm bar in percent, as the ``progress(fraction, message)`` callback that long
    ``core`` jobs (drift and classifier studies) report to."""
    from tqdm import tqdm

    with tqdm(total=100, desc=desc, unit="%") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message[:40])
            bar.update(round(fraction * 100) - bar.n)

        yield progress


def add_where_argument(parser: argparse.ArgumentParser) -> None:
    """``--where "view in [PA, AP]" --where "age >= 18"``: a cohort filter (``core.filters``)."""
    parser.add_argument("--where", action="append", default=[], metavar="CONDITION",
                        help='restrict to rows that meet CONDITION, e.g. "view in [PA, AP]" or "age >= 18" '
                        "(COLUMN in/not in [V, ...], or COLUMN ==, !=, >=, <=, >, < VALUE); repeat to "
                        "combine with AND. Runs are keyed by the filter.")


def load_filtered(path: str, where: list[str]):
    """The dataset folder ``path``, restricted by the ``--where`` conditions; says how many rows
    the filter kept. Raises ``core.filters.FilterError`` (a ValueError) for an invalid filter."""
    from core.filters import parse_where, select_dataset
    from core.ingest import load_dataset

    dataset = load_dataset(path)
    conditions = parse_where(where)
    if not conditions:
        return dataset
    selected = select_dataset(dataset, conditions)
    print(f"Filter {selected.selection}: {len(selected.images)} of {len(dataset.images)} images, "
          f"{len(selected.patients)} of {len(dataset.patients)} patients")
    return selected
