"""Background jobs for long work (embeddings, drift studies, classifier runs) with progress.

A job runs in a worker thread, or with ``process=True`` in a worker process of its own (so
that CPU-bound work such as a 200,000-row UMAP neither holds the GIL against the pages nor
takes the server down when it runs out of memory); callers poll ``Job.fraction`` /
``Job.message`` and collect ``Job.result()``. Jobs are keyed, so asking twice for the same key
returns the running (or finished) job rather than starting the work again.

Journal. Given a ``journal`` folder, the runner records every job there (one small JSON file
per key: status, progress, start and end) as it starts, progresses (at most once a second)
and ends. A new runner (a restarted server) finds the jobs an earlier one left "running",
marks them "interrupted" and lists them in ``JobRunner.interrupted``, so that a page can say
"this job was interrupted by a restart" and offer to start it again instead of losing it
silently. Results stay where the work itself keeps them (the run store, the embedding cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text

JOURNAL_STATUSES = ("running", "done", "failed", "interrupted")
# Progress reaches the journal (a file write) at most this often.
JOURNAL_EVERY_S = 1.0


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def _plain_main() -> Iterator[None]:
    """A bare ``__main__`` while a worker process is spawned. ``spawn`` re-runs the parent's
    ``__main__`` file in the child; inside Streamlit (and AppTest) ``__main__`` is the page script
    that submitted the job, which must not run again in a worker."""
    with _MAIN_LOCK:
        saved = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if saved is not None:
                sys.modules["__main__"] = saved


class WorkerProcessError(RuntimeError):
    """A job's worker process died (killed, out of memory) or raised; the message says which."""


class WorkerValueError(WorkerProcessError, ValueError):
    """The worker raised a ValueError (a bad parameter or input): still a ValueError here, so
    that a page shows it as a message with a next step, as it would from a thread job."""


@dataclass(frozen=True)
class JobRecord:
    """One job as the journal last saw it."""

    key: str
    status: str  # one of JOURNAL_STATUSES
    fraction: float
    message: str
    started: str  # ISO time
    ended: str | None = None
    error: str | None = None


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Journal:
    """One JSON file per job key under ``folder`` (names are hashes: keys are not paths)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server = f"{os.getpid()}-{time.time_ns()}"  # this runner, not just this process

    def _path(self, key: str) -> Path:
        return self.folder / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.json"

    def write(self, record: JobRecord) -> None:
        entry = {**record.__dict__, "server": self.server, "pid": os.getpid()}
        atomic_write_text(self._path(record.key), json.dumps(entry))

    def read(self, key: str) -> JobRecord | None:
        return self._load(self._path(key))

    @staticmethod
    def _load(path: Path, *, with_pid: bool = False) -> Any:
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            entry.pop("server", None)
            pid = entry.pop("pid", None)
            record = JobRecord(**entry)
        except (OSError, ValueError, TypeError):
            record, pid = None, None  # a damaged entry is not a job
        if record is not None and record.status not in JOURNAL_STATUSES:
            record = None
        return (record, pid) if with_pid else record

    def recover(self) -> list[JobRecord]:
        """Mark jobs an earlier runner left running as interrupted; return them, oldest first.

        A job whose server process is still alive (another server sharing this cache folder)
        is left alone: only a runner of this process or a process that has ended is gone."""
        found = []
        for path in sorted(self.folder.glob("*.json")):
            record, pid = self._load(path, with_pid=True)
            if record is None or record.status != "running":
                continue
            if isinstance(pid, int) and pid != os.getpid() and _process_alive(pid):
                continue
            interrupted = JobRecord(
                record.key, "interrupted", record.fraction,
                f"interrupted by a server restart at {record.fraction:.0%} ({record.message})",
                record.started, _now())
            self.write(interrupted)
            found.append(interrupted)
        return sorted(found, key=lambda r: r.started)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _exit_with_parent(parent: int) -> None:
    """End this worker when the process that started it has gone (a server killed outright
    cannot stop its workers): the journal has reported the job as interrupted, and a worker
    left running would compete for the CPU with the restarted server's jobs."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="scanatlas-parent-watch").start()


def _process_main(pipe: Any, work: Callable[..., Any], args: tuple, kwargs: dict,
                  parent: int | None = None) -> None:
    """Entry point of a job's worker process: runs ``work`` and sends progress and the result
    (or the error, as text: exceptions need not pickle) back through ``pipe``. A pipe, not a
    queue: a send has left the process when it returns, so the last progress of a worker that
    is then killed is still seen."""
    if parent is not None:
        _exit_with_parent(parent)

    def progress(fraction: float, message: str) -> None:
        pipe.send(("progress", float(fraction), str(message)))

    try:
        result = work(*args, progress=progress, **kwargs)
    except BaseException as exc:  # everything goes back to the parent, which re-raises it
        kind = "value-error" if isinstance(exc, ValueError) else "error"
        pipe.send((kind, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=20)))
        return
    pipe.send(("result", result, None))


class JobRunner:
    """A small pool of worker threads (one by default: the CPU is the bottleneck).

    journal : optional folder that records every job, so that a restarted server reports the
        jobs the last one was running as interrupted (see the module docstring).
    """

    def __init__(self, max_workers: int = 1, *, journal: str | os.PathLike[str] | None = None
                 ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="scanatlas-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._journal = _Journal(journal) if journal is not None else None
        self.interrupted: list[JobRecord] = self._journal.recover() if self._journal else []

    def record(self, key: str) -> JobRecord | None:
        """What the journal holds for ``key`` (None without a journal or for an unknown key)."""
        return self._journal.read(key) if self._journal else None

    def submit(self, key: str, work: Callable[..., Any], /, *args: Any, rerun: bool = False,
               process: bool = False, **kwargs: Any) -> Job:
        """Start ``work(*args, progress=job.report, **kwargs)`` unless job ``key`` is running, or
        finished without error (and ``rerun`` is False); returns the job.

        process : run ``work`` in a worker process of its own (spawned: ``work``, ``args`` and
            ``kwargs`` must pickle, so a module-level function, and the result must pickle).
            ``progress`` then reaches the job through a queue. A process that dies without an
            answer (killed, out of memory) fails the job with :class:`WorkerProcessError`.
        """
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and not job.done:
                return job
            if job is not None and job.error is None and not rerun:
                return job
            job = Job(key)
            started = _now()
            last_write = [0.0]

            def report(fraction: float, message: str) -> None:
                job.report(fraction, message)
                if self._journal is not None and time.monotonic() - last_write[0] >= JOURNAL_EVERY_S:
                    last_write[0] = time.monotonic()
                    self._journal.write(JobRecord(key, "running", float(fraction), str(message),
                                                  started))

            def timed() -> Any:
                job.started_at = time.monotonic()
                job.report(0.0, "started")
                try:
                    if process:
                        result = run_in_process(work, *args, progress=report, **kwargs)
                    else:
                        result = work(*args, progress=report, **kwargs)
                except BaseException as exc:
                    if self._journal is not None:
                        self._journal.write(JobRecord(key, "failed", job.fraction, job.message,
                                                      started, _now(), str(exc)[:2000]))
                    raise
                finally:
                    job.finished_at = time.monotonic()
                if self._journal is not None:
                    self._journal.write(JobRecord(key, "done", 1.0, job.message, started, _now()))
                return result

            if self._journal is not None:
                self._journal.write(JobRecord(key, "running", 0.0, "queued", started))
            job.future = self._pool.submit(timed)
            self._jobs[key] = job
            return job

    def get(self, key: str) -> Job | None:
        return self._jobs.get(key)


def run_in_process(work: Callable[..., Any], /, *args: Any,
                   progress: Callable[[float, str], None], **kwargs: Any) -> Any:
    """``work(*args, progress=..., **kwargs)`` in a worker process of its own; its progress
    reaches ``progress`` here and its result is returned (``work``, the arguments and the result
    must pickle). What ``JobRunner.submit(..., process=True)`` runs; a job can also call it for
    the expensive part of its work and keep the rest (e.g. saving with data the worker does
    not need) in its thread. The worker ends when this process ends.

    Raises :class:`WorkerProcessError` when the worker raises (its message; a
    :class:`WorkerValueError`, also a ValueError, for a ValueError) or dies without an answer
    (killed, out of memory).
    """
    context = multiprocessing.get_context("spawn")  # no fork of a threaded server
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_process_main,
                             args=(sender, work, args, kwargs, os.getpid()),
                             daemon=True, name="scanatlas-job")
    with _plain_main():
        worker.start()
    sender.close()  # the child holds the only sending end: its death ends the pipe
    try:
        while True:
            try:
                kind, value, detail = receiver.recv()
            except EOFError:
                worker.join(timeout=5)
                raise WorkerProcessError(
                    f"the job's worker process ended with exit code {worker.exitcode} "
                    "and no result (killed, or out of memory)") from None
            if kind == "progress":
                progress(value, detail)
            elif kind in ("error", "value-error"):
                error = WorkerValueError if kind == "value-error" else WorkerProcessError
                raise error(f"{value} (in the job's worker process)")
            else:
                return value
    finally:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
        receiver.close()
