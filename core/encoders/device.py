"""Picking the torch device and the per-device settings that make inference fast."""

from __future__ import annotations

import contextlib
import os
import threading

import torch

_THREADS_LOCK = threading.Lock()
_threads_configured = False


def available_cores() -> int:
    """CPU cores this process may use (respects affinity masks and container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if present, else Apple MPS, else CPU; other names are checked.

    Accepts "auto", "cpu", "cuda", "cuda:N", "mps" or a torch.device. Raises ValueError for
    an unknown name or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available here; use 'auto'")
    if resolved.type == "cuda" and resolved.index is not None and (
        resolved.index >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here"
        )
    if resolved.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device={device!r} requested but MPS is not available here; use 'auto'")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'mps'")
    return resolved


def configure_cpu_threads() -> None:
    """Let torch use every available core for intra-op work (once per process).

    torch's default can be lower than the cores a container grants; the forward pass is the
    bottleneck on CPU, so it gets them all.
    """
    global _threads_configured
    with _THREADS_LOCK:
        if not _threads_configured:
            torch.set_num_threads(available_cores())
            _threads_configured = True


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op elsewhere."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def default_batch_size(device: torch.device) -> int:
    """A batch size that keeps the device busy: larger on GPUs, 32 on CPU."""
    return 128 if device.type == "cuda" else 32
