"""One module per ``scanatlas`` subcommand; each exposes ``add_parser(subparsers)``.

A subcommand's ``add_parser`` registers its arguments and sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit code.
"""
