"""``scanatlas runs list|show|rm``: the named runs in the run store (projections, clusterings,
k sweeps, cluster drivers, drift and classifier studies, explanations)."""

from __future__ import annotations

import argparse
import json

from core.runs import RunStore


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "runs",
        help="list, show or remove saved runs",
        description="list: one line per saved run, newest first (filter with --kind, --dataset). "
        "show KEY: its config, inputs, summary and files. rm KEY: delete it.",
    )
    parser.add_argument("action", choices=["list", "show", "rm"])
    parser.add_argument("key", nargs="?", help="run key (for show and rm), e.g. clustering-1a2b...")
    parser.add_argument("--kind", help="only runs of this kind (list)")
    parser.add_argument("--dataset", help="only runs of this dataset name (list)")
    parser.add_argument("--runs", default=None, help="run store folder (default: $SCANATLAS_CACHE/runs)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = RunStore(args.runs)
    if args.action == "list":
        table = store.list(kind=args.kind, dataset=args.dataset)
        if table.empty:
            print("no saved runs" + (f" of kind {args.kind}" if args.kind else "")
                  + (f" for dataset {args.dataset}" if args.dataset else ""))
            return 0
        print(table[["key", "kind", "dataset", "created", "summary"]].to_string(index=False))
        return 0
    if not args.key:
        raise ValueError(f"runs {args.action} needs a run KEY (see `scanatlas runs list`)")
    found = store.find(args.key)
    if found is None:
        raise ValueError(f"no saved run {args.key!r} (see `scanatlas runs list`)")
    if args.action == "show":
        print(json.dumps({"key": found.key, "kind": found.kind, "dataset": found.dataset,
                          "created": found.created, "version": found.version, "config": found.config,
                          "inputs": found.inputs, "summary": found.summary, "files": sorted(found.files)},
                         indent=2))
        return 0
    store.delete(found.key)
    print(f"removed {found.key}")
    return 0
