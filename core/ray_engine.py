"""Embedding beyond one machine: decode + encoder through Ray Data, vectors into the same cache.

``embed_dataset_ray`` is ``core.embed.embed_dataset`` with one step swapped: the images the
cache lacks go through a Ray Data pipeline instead of the local decode threads. Everything
else is the local engine's: the same cache lookup and keying (image id, encoder name +
version, preprocessing), the same dedup of repeated keys, the same failure reasons, the same
shard writing. The pipeline is ``ray.data.from_items`` of ``(image_id, path, frame)`` rows,
``map_batches`` over an actor pool of ``EncoderActor`` (each actor builds the registry
encoder once, ``num_gpus=1`` per actor when the cluster has GPUs), and the vectors come back
to the driver, which writes them into its cache. So:

- the cache folder needs to be reachable by the driver only;
- the image files must be readable by every worker at the same path (shared storage, e.g. an
  NFS mount of the archive), since the actors decode them;
- every worker needs this project's code and dependencies (the same container image, or
  ``pip install -e .`` on each node); a local instance started here gets it via PYTHONPATH.

An actor that dies (out of memory, a node lost) is restarted and its batch retried
(``max_restarts`` / ``max_task_retries``); a batch is written only once it comes back, so a
run that is stopped keeps every vector written so far and the next run computes the rest.

Ray is an optional extra: ``pip install -e .[ray]``. Importing this module does not import
Ray; calling it without Ray raises ``RayUnavailableError`` with that command.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.embed import EmbeddingSet, embed_dataset

INSTALL_HINT = 'pip install -e ".[ray]"'
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Local instance: this machine is shared, keep Ray small (2 CPUs, no dashboard, small store).
LOCAL_NUM_CPUS = 2
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
DEFAULT_MAX_RESTARTS = 3


class RayUnavailableError(RuntimeError):
    """Ray (with Ray Data) is not installed here."""


class RayEngineError(RuntimeError):
    """The Ray pipeline failed (e.g. an actor died more often than ``max_restarts``). The
    vectors that came back before are in the cache; running again computes only the rest."""


def require_ray() -> Any:
    """The ``ray`` module with ``ray.data`` loaded; raises RayUnavailableError naming the
    install command when it is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise RayUnavailableError(
            f"the Ray engine needs Ray Data, which is not installed ({error}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return ray


def connect(address: str | None = None, *, num_cpus: int = LOCAL_NUM_CPUS) -> bool:
    """Make sure this process is connected to Ray.

    address : None starts a small local instance (``num_cpus`` CPUs, no dashboard); "auto"
        joins the cluster started on this machine with ``ray start --head``;
        "ray://host:10001" joins a remote cluster through Ray Client; "host:6379" joins as a
        driver on a cluster node.
    Returns True when this call connected (the caller then calls ``ray.shutdown()``), False
    when Ray was already initialised. Raises RayUnavailableError without Ray, and
    ConnectionError naming the address when the cluster cannot be reached.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address is None:
        existing = os.environ.get("PYTHONPATH", "")
        pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), existing) if p)
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            log_to_driver=False,
        )
        return True
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ConnectionError(f"cannot connect to the Ray cluster at {address!r}: {error}") from None
    return True


class EncoderActor:
    """One Ray Data actor: builds the registry encoder once, then embeds batches of rows.

    A batch is ``{"image_id", "path", "frame"}`` arrays; the result has ``image_id``,
    ``vector`` (n, dim) float32 (NaN rows for failures) and ``reason`` ("" when embedded).
    Decoding and failure handling are the local engine's (``iter_image_embeddings``).
    """

    def __init__(self, encoder_name: str, device: str = "auto", weights_path: str | None = None):
        from core.encoders import get_encoder

        self.encoder = get_encoder(encoder_name, device=device, weights_path=weights_path)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from core.encoders import iter_image_embeddings

        ids = [str(i) for i in batch["image_id"]]
        items = list(zip(ids, (str(p) for p in batch["path"]),
                         (int(f) for f in batch["frame"]), strict=True))
        position = {image_id: row for row, image_id in enumerate(ids)}
        vectors = np.full((len(ids), self.encoder.spec.dim), np.nan, np.float32)
        reasons = np.full(len(ids), "encoder returned no result for this image", dtype=object)
        for chunk in iter_image_embeddings(items, self.encoder, batch_size=max(1, len(items)),
                                           num_workers=1):
            for image_id, vector in zip(chunk.image_ids, chunk.vectors, strict=True):
                vectors[position[image_id]] = vector
                reasons[position[image_id]] = ""
            for image_id, _path, reason in chunk.failures:
                reasons[position[image_id]] = str(reason) or "unknown error"
        return {"image_id": np.array(ids, dtype=object), "vector": vectors,
                "reason": reasons.astype(str)}


def _cluster_has_gpus(ray: Any) -> bool:
    return float(ray.cluster_resources().get("GPU", 0)) >= 1


def _map(ray: Any, dataset: Any, actor_class: type, encoder: Any, gpus: bool, actors: int,
         batch_size: int, weights_path: str | os.PathLike | None, max_restarts: int) -> Any:
    return dataset.map_batches(
        actor_class,
        fn_constructor_kwargs={
            "encoder_name": encoder.spec.name,
            "device": "cuda" if gpus else "cpu",
            "weights_path": os.fspath(weights_path) if weights_path is not None else None,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
        num_gpus=1 if gpus else 0,
        max_restarts=max_restarts,
        max_task_retries=max_restarts,
    )


def _batches(ray: Any, mapped: Any) -> Iterator[dict[str, np.ndarray]]:
    try:
        yield from mapped.iter_batches(batch_size=None, batch_format="numpy")
    except ray.exceptions.RayError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RayEngineError(
            f"the Ray pipeline failed ({type(error).__name__}: {first_line}); the vectors "
            "computed before are in the cache, run again to compute the rest"
        ) from None


def ray_image_embedder(
    encoder_name: str,
    *,
    weights_path: str | os.PathLike | None = None,
    num_actors: int | None = None,
    actor_class: type = EncoderActor,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
) -> Callable[..., Iterator[Any]]:
    """An ``image_embedder`` for ``embed_dataset`` that runs through Ray Data.

    Called as ``embedder(items, encoder, batch_size=..., progress=...)`` with the
    ``(image_id, path, frame)`` rows the cache lacks; yields ``EmbeddedChunk`` as batches come
    back (in any order). Needs a connected Ray (``connect``). ``num_actors`` defaults to the
    cluster's GPUs when it has any, else half its CPUs (at least 1). ``actor_class`` is the
    callable class run per actor (``EncoderActor`` or a subclass).
    """

    def embed(items: Sequence[tuple[str, str, int]], encoder: Any, *, batch_size: int = 32,
              progress: Callable[[int, int], None] | None = None) -> Iterator[Any]:
        from core.encoders import EmbeddedChunk

        ray = require_ray()
        gpus = _cluster_has_gpus(ray)
        resources = ray.cluster_resources()
        actors = num_actors or (int(resources.get("GPU", 0)) if gpus
                                else max(1, int(resources.get("CPU", 2)) // 2))
        actors = max(1, min(actors, (len(items) + batch_size - 1) // batch_size))
        rows = [{"image_id": i, "path": p, "frame": int(f)} for i, p, f in items]
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the caller's progress callback reports instead
        context.print_on_execution_start = False
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
        with warnings.catch_warnings():
            # max_restarts / max_task_retries still go through **ray_remote_args (deprecated
            # in Ray 2.60 without a named replacement); Ray Data's own default is unbounded
            # restarts, which would loop forever on an image that crashes its decoder.
            warnings.simplefilter("ignore", DeprecationWarning)
            mapped = _map(ray, dataset, actor_class, encoder, gpus, actors, batch_size,
                          weights_path, max_restarts)
        done = 0
        total = len(items)
        paths = {i: p for i, p, _ in items}
        for batch in _batches(ray, mapped):
            ids = [str(i) for i in batch["image_id"]]
            reasons = [str(r) for r in batch["reason"]]
            vectors = np.asarray(batch["vector"], dtype=np.float32).reshape(len(ids), -1)
            ok = np.array([not r for r in reasons], dtype=bool)
            chunk = EmbeddedChunk(
                image_ids=[i for i, good in zip(ids, ok, strict=True) if good],
                vectors=vectors[ok] if ok.any() else np.zeros((0, encoder.spec.dim), np.float32),
                failures=[(i, paths.get(i, ""), r) for i, r, good in zip(ids, reasons, ok, strict=True)
                          if not good],
            )
            done += len(ids)
            if progress is not None:
                progress(done, total)
            yield chunk

    return embed


def embed_dataset_ray(
    dataset: Any,
    encoder_name: str,
    *,
    address: str | None = None,
    cache_root: str | os.PathLike | None = None,
    batch_size: int = 32,
    num_actors: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    weights_path: str | os.PathLike | None = None,
    actor_class: type = EncoderActor,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
) -> EmbeddingSet:
    """``embed_dataset`` with the images the cache lacks embedded through Ray Data.

    Same arguments and result as ``core.embed.embed_dataset`` (``device`` is chosen per
    actor: CUDA when the cluster has GPUs), plus ``address`` (see ``connect``; a local
    instance is started and stopped when Ray is not initialised and address is None),
    ``num_actors`` and ``actor_class`` (see ``ray_image_embedder``). Text encoders and
    imported vectors need no images decoded: they take the local path unchanged. When every
    vector is cached Ray is not started at all.

    Raises what ``embed_dataset`` raises, plus RayUnavailableError, ConnectionError and
    RayEngineError (the pipeline failed; what came back before is cached).
    """
    require_ray()
    embedder = ray_image_embedder(encoder_name, weights_path=weights_path, num_actors=num_actors,
                                  actor_class=actor_class, max_restarts=max_restarts)
    started = False

    def lazily_connected(*args: Any, **kwargs: Any) -> Iterator[Any]:
        nonlocal started
        started = connect(address) or started
        yield from embedder(*args, **kwargs)

    try:
        # The driver's copy of the encoder only names the cache namespace: keep it on CPU.
        return embed_dataset(dataset, encoder_name, cache_root=cache_root, device="cpu",
                             batch_size=batch_size, progress=progress, weights_path=weights_path,
                             image_embedder=lazily_connected)
    finally:
        if started:
            import ray

            ray.shutdown()
