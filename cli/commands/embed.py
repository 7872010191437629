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
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when this machine has it, else the CPU), cpu, cuda, cuda:N or mps; on "
        "CUDA, JPEGs are decoded on the GPU (see --decode)",
    )
    parser.add_argument(
        "--decode",
        choices=["auto", "gpu", "cpu"],
        default="auto",
        help="auto (default): JPEGs decoded on the GPU when the encoder runs on CUDA, else in "
        "CPU worker processes; gpu: insist on the GPU path (refused without CUDA); cpu: CPU "
        "worker processes only (the GPU path's vectors differ slightly and are cached apart)",
    )
    parser.add_argument(
        "--decode-processes",
        type=int,
        default=None,
        metavar="N",
        help="CPU decode worker processes (default: $SCANATLAS_DECODE_PROCESSES, else one per "
        "core; 0 = decode in threads)",
    )
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


def _decode_plan(args: argparse.Namespace) -> tuple[object | None, str]:
    """(image_embedder for embed_dataset or None for the default, a line saying how images are
    decoded). Raises ValueError, before anything is loaded, when the options ask for CUDA and
    this machine has none."""
    from functools import partial

    import torch

    from core.decode_pool import PROCESS_MIN_ITEMS, decode_processes
    from core.encoders import ENCODERS, iter_image_embeddings
    from core.encoders.gpu_decode import gpu_image_embedder

    cuda = torch.cuda.is_available()
    wants_cuda = args.device.startswith("cuda")
    if (wants_cuda or args.decode == "gpu") and not cuda:
        asked = f"--device {args.device}" if wants_cuda else "--decode gpu"
        raise ValueError(
            f"{asked}: CUDA is not available on this machine (torch {torch.__version__} sees no "
            "CUDA device); use --device cpu, or --device auto to run on whatever is here"
        )
    if args.decode == "gpu" and args.device not in ("auto",) and not wants_cuda:
        raise ValueError(f"--decode gpu needs the encoder on CUDA, not --device {args.device}")
    if args.decode_processes is not None and args.decode_processes < 0:
        raise ValueError(f"--decode-processes {args.decode_processes} must be >= 0")
    spec = ENCODERS.get(args.encoder)
    # An entry with a fixed device (e.g. "pixels" on the CPU) runs there whatever --device says.
    fixed = None if spec is None else spec.device
    on_cuda = cuda and (wants_cuda or args.device == "auto") and (
        fixed is None or str(fixed).startswith("cuda"))
    if spec is not None and spec.kind != "image":
        return None, ""  # texts: nothing to decode
    if args.decode == "gpu" and not on_cuda:
        raise ValueError(f"--decode gpu: encoder {args.encoder!r} always runs on {fixed}")
    if on_cuda and args.decode != "cpu" and spec is not None:
        return gpu_image_embedder(), "decode:   JPEGs on the GPU (nvJPEG), other files on the CPU"
    processes = (args.decode_processes if args.decode_processes is not None
                 else decode_processes("cuda" if on_cuda else "cpu"))
    where = f"{processes} worker process(es)" if processes else "threads"
    note = "" if cuda else " (CUDA is not available here)"
    line = (f"decode:   on the CPU{note}, {where}; fewer than {PROCESS_MIN_ITEMS} images "
            "decode in threads")
    if args.decode_processes is None:
        return None, line
    return partial(iter_image_embeddings, processes=args.decode_processes), line


def run(args: argparse.Namespace) -> int:
    if args.engine != "ray" and (args.address is not None or args.actors is not None):
        print("error: --address and --actors need --engine ray")
        return 2
    if args.actors is not None and args.actors < 1:
        print(f"error: --actors {args.actors} must be >= 1")
        return 2
    image_embedder, decode_line = (None, "") if args.engine == "ray" else _decode_plan(args)
    dataset = load_filtered(args.dataset, args.where)
    if decode_line:
        print(decode_line)
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
                image_embedder=image_embedder,
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
