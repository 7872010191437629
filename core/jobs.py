"""Background jobs for long work (embeddings, drift studies, classifier runs) with progress.

A job runs in a worker thread; callers poll ``Job.fraction`` / ``Job.message`` and collect
``Job.result()``. Jobs are keyed, so asking twice for the same key returns the running (or
finished) job rather than starting the work again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    key: str
    future: Future | None = None
    fraction: float = 0.0
    message: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def report(self, fraction: float, message: str) -> None:
        with self._lock:
            self.fraction, self.message = fraction, message

    @property
    def done(self) -> bool:
        return self.future is not None and self.future.done()

    @property
    def error(self) -> BaseException | None:
        return self.future.exception() if self.done else None

    def result(self) -> Any:
        return self.future.result()

    @property
    def seconds(self) -> float | None:
        """Wall time from start to finish (None until finished)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class JobRunner:
    """A small pool of worker threads (one by default: the CPU is the bottleneck)."""

    def __init__(self, max_workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="scanatlas-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, key: str, work: Callable[..., Any], /, *args: Any, rerun: bool = False, **kwargs: Any) -> Job:
        """Start ``work(*args, progress=job.report, **kwargs)`` unless job ``key`` is running, or
        finished without error (and ``rerun`` is False); returns the job."""
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not job.done:
                return job
            if job is not None and job.error is None and not rerun:
                return job
            job = Job(key)

            def timed() -> Any:
                job.started_at = time.monotonic()
                try:
                    return work(*args, progress=job.report, **kwargs)
                finally:
                    job.finished_at = time.monotonic()

            job.future = self._pool.submit(timed)
            self._jobs[key] = job
            return job

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)
