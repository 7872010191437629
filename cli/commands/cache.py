"""``scanatlas cache info|prune``: what the embedding cache holds; drop what no dataset uses."""

from __future__ import annotations

import argparse

import pandas as pd

from core.cache import EmbeddingCache, text_key


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="list or prune the embedding cache",
        description="info: one line per namespace (encoder, version, vectors, shards, size). "
        "prune: delete every cached vector that none of the given ingested datasets uses "
        "(image ids, and text keys for text encoders).",
    )
    parser.add_argument("action", choices=["info", "prune"])
    parser.add_argument(
        "--cache",
        default=None,
        help="embedding cache folder (default: $SCANATLAS_CACHE/embeddings)",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=[],
        metavar="DIR",
        help="ingested dataset folders whose vectors prune keeps",
    )
    parser.set_defaults(func=run)


def keep_ids_of(dataset_dirs: list[str]) -> set[str]:
    """Image ids, and text keys of the ``text`` column, of the datasets' images.parquet."""
    keep: set[str] = set()
    for directory in dataset_dirs:
        from core.ingest import load_dataset

        images = load_dataset(directory).images
        keep.update(images["image_id"].astype(str))
        if "text" in images.columns:
            keep.update(text_key(t) for t in images["text"] if isinstance(t, str) and t.strip())
    return keep


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:
    from core.settings import embeddings_root

    cache = EmbeddingCache(args.cache if args.cache is not None else embeddings_root())
    if args.action == "info":
        info = cache.info()
        if info.empty:
            print(f"{cache.root}: empty")
            return 0
        shown = info.drop(columns=["created"]).assign(bytes=info["bytes"].map(_size))
        with pd.option_context("display.width", 200, "display.max_columns", None):
            print(shown.to_string(index=False))
        print(
            f"\n{len(info)} namespaces, {int(info['n_vectors'].sum())} vectors, "
            f"{_size(int(info['bytes'].sum()))} in {cache.root}"
        )
        return 0
    if not args.datasets:
        raise ValueError(
            "cache prune needs --datasets DIR [DIR ...]: the datasets whose vectors "
            "to keep (prune with none would delete everything)"
        )
    stats = cache.prune(keep_ids_of(args.datasets))
    print(
        f"kept {stats['vectors_kept']} vectors, removed {stats['vectors_removed']}; "
        f"shards rewritten {stats['shards_rewritten']}, deleted {stats['shards_deleted']}; "
        f"namespaces removed {stats['namespaces_removed']} of {stats['namespaces']}; "
        f"{_size(stats['bytes_before'])} -> {_size(stats['bytes_after'])}"
    )
    return 0
