"""One module per ``scanatlas`` subcommand; each exposes ``add_parser(subparsers)``.

A subcommand's ``add_parser`` registers its arguments and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code.
"""

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
