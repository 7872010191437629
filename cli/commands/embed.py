"""``scanatlas embed DIR --encoder NAME``: embed an ingested dataset, reusing cached vectors."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tqdm import tqdm

from cli.commands import add_where_argument, load_filtered
from core.embed import embed_dataset
from core.encoders import DEFAULT_IMAGE_ENCODER, encoder_names


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="embed an ingested dataset's images (or texts) with one encoder",
        description="Embed every image of an ingested dataset folder, computing only the vectors "
        "the cache lacks. Prints images, cached, computed, failed and images/s; failures go to "
        "DIR/embed_failures_<encoder>.csv (they are not cached, so the next run retries them).",
    )
    parser.add_argument("dataset", metavar="DIR", help="ingested dataset folder")
    parser.add_argument(
        "--encoder",
        default=DEFAULT_IMAGE_ENCODER,
        help=f"encoder name (default %(default)s; one of {', '.join(encoder_names('image'))}, "
        f"or {', '.join(encoder_names('text'))} for the text column)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument(
        "--cache",
        default=None,
        help="embedding cache folder (default: $SCANATLAS_CACHE/embeddings)",
    )
    parser.add_argument(
        "--weights", default=None, metavar="PATH", help="weights file for encoders that take one"
    )
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local (this process, default) or ray: decode + encoder through Ray Data actors "
        '(needs pip install -e ".[ray]"); vectors come back here and go into the same cache',
    )
    parser.add_argument(
        "--address",
        default=None,
        help="with --engine ray: 'auto' (cluster started here by `ray start --head`), "
        "'ray://HOST:10001' (remote cluster); default: a small local Ray instance",
    )
    parser.add_argument(
        "--actors", type=int, default=None, help="with --engine ray: encoder actors (default: "
        "one per GPU, else half the CPUs)"
    )
    add_where_argument(parser)
    parser.set_defaults(func=run)


def _embed_with_ray(args: argparse.Namespace, dataset, progress):
    """embed_dataset_ray, or None after printing why Ray cannot be used."""
    import logging

    from core.ray_engine import RayEngineError, RayUnavailableError, embed_dataset_ray

    logging.getLogger("ray").setLevel(logging.WARNING)  # the progress bar says what Ray Data would
    try:
        return embed_dataset_ray(
            dataset,
            args.encoder,
            address=args.address,
            cache_root=args.cache,
            batch_size=args.batch_size,
            num_actors=args.actors,
            progress=progress,
            weights_path=args.weights,
        )
    except (RayUnavailableError, RayEngineError, ConnectionError) as error:
        print(f"error: {error}")
        return None


def run(args: argparse.Namespace) -> int:
    if args.engine != "ray" and (args.address is not None or args.actors is not None):
        print("error: --address and --actors need --engine ray")
        return 2
    if args.actors is not None and args.actors < 1:
        print(f"error: --actors {args.actors} must be >= 1")
        return 2
    dataset = load_filtered(args.dataset, args.where)
    bar = tqdm(total=len(dataset.images), unit="img", desc=f"embed {args.encoder}", leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    started = time.perf_counter()
    try:
        if args.engine == "ray":
            result = _embed_with_ray(args, dataset, progress)
            if result is None:
                return 2
        else:
            result = embed_dataset(
                dataset,
                args.encoder,
                cache_root=args.cache,
                device=args.device,
                batch_size=args.batch_size,
                progress=progress,
                weights_path=args.weights,
            )
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    failures_path = Path(args.dataset) / f"embed_failures_{args.encoder}.csv"
    # Written even when empty, so a stale file from an earlier run never misleads.
    result.failures.to_csv(failures_path, index=False)
    n_images = len(result.image_ids)
    worked = result.n_computed + result.n_failed
    print(f"images:   {n_images}")
    print(f"cached:   {result.n_cached}")
    print(f"computed: {result.n_computed}")
    print(
        f"failed:   {result.n_failed}"
        + (f"  (reasons in {failures_path})" if result.n_failed else "")
    )
    print(
        f"images/s: {n_images / seconds:.1f} overall ({seconds:.1f} s, model load included); "
        f"{worked} embedded or attempted"
    )
    print(f"key:      {result.key}")
    return 1 if n_images and result.n_failed == n_images else 0
