"""core.jobs: worker-process jobs with progress, and the journal that reports jobs a restart
interrupted (issue 12)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from core.jobs import JobRunner, WorkerProcessError


def _count(n: int, *, progress) -> int:
    for i in range(n):
        progress((i + 1) / n, f"step {i + 1} of {n}")
    return os.getpid()


def _fail(*, progress) -> None:
    progress(0.5, "half way")
    raise ValueError("bad input row 7")


def _die(*, progress) -> None:
    progress(0.25, "about to be killed")
    os.kill(os.getpid(), signal.SIGKILL)


def test_thread_job_is_journalled_as_done(tmp_path):
    runner = JobRunner(journal=tmp_path)
    job = runner.submit("embed:demo", _count, 4)
    assert job.future.result(timeout=30) == os.getpid()
    assert (job.fraction, job.message) == (1.0, "step 4 of 4")
    record = runner.record("embed:demo")
    assert record.status == "done" and record.ended is not None
    assert runner.interrupted == []


def test_process_job_runs_elsewhere_and_reports_progress(tmp_path):
    runner = JobRunner(journal=tmp_path)
    job = runner.submit("umap:big", _count, 3, process=True)
    child_pid = job.future.result(timeout=120)
    assert child_pid != os.getpid()
    assert (job.fraction, job.message) == (1.0, "step 3 of 3")
    assert runner.record("umap:big").status == "done"


def test_process_job_errors_come_back_with_their_message(tmp_path):
    runner = JobRunner(journal=tmp_path)
    job = runner.submit("bad", _fail, process=True)
    with pytest.raises(WorkerProcessError, match="ValueError: bad input row 7"):
        job.future.result(timeout=120)
    record = runner.record("bad")
    assert record.status == "failed" and "bad input row 7" in record.error


def test_a_killed_worker_process_fails_the_job_instead_of_hanging(tmp_path):
    runner = JobRunner(journal=tmp_path)
    job = runner.submit("killed", _die, process=True)
    with pytest.raises(WorkerProcessError, match="exit code -9 and no result"):
        job.future.result(timeout=120)
    assert job.message == "about to be killed"
    assert runner.record("killed").status == "failed"
    # A failed job can be started again under the same key.
    assert runner.submit("killed", _count, 1).future.result(timeout=30) == os.getpid()


def test_a_restart_reports_running_jobs_as_interrupted(tmp_path):
    release = threading.Event()

    def slow(*, progress):
        progress(0.4, "embedding 40 of 100")
        release.wait(30)
        return "finished"

    first = JobRunner(journal=tmp_path)
    job = first.submit("embed:archive", slow)
    for _ in range(100):  # until the job has reported its progress to the journal
        record = first.record("embed:archive")
        if record is not None and record.fraction == pytest.approx(0.4):
            break
        threading.Event().wait(0.05)
    restarted = JobRunner(journal=tmp_path)  # the server came back while the job ran
    assert [r.key for r in restarted.interrupted] == ["embed:archive"]
    record = restarted.record("embed:archive")
    assert record.status == "interrupted"
    assert "interrupted by a server restart at 40%" in record.message
    assert restarted.get("embed:archive") is None  # not silently presented as running
    release.set()
    assert job.future.result(timeout=30) == "finished"
    # A second restart does not report it again.
    assert JobRunner(journal=tmp_path).interrupted == []


def test_damaged_journal_entries_are_ignored(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "x.json").write_text('{"key": "k", "status": "exploded"}')
    assert JobRunner(journal=tmp_path).interrupted == []


def test_jobs_of_another_live_server_are_not_interrupted(tmp_path):
    import json

    runner = JobRunner(journal=tmp_path)
    runner.submit("quick", _count, 1).future.result(timeout=30)
    path = next(tmp_path.glob("*.json"))
    entry = json.loads(path.read_text())
    # As if a second server process, still running (our parent), had this job in flight.
    entry.update(status="running", pid=os.getppid())
    path.write_text(json.dumps(entry))
    assert JobRunner(journal=tmp_path).interrupted == []
    entry.update(pid=2**22 + 12345)  # a process that does not exist: its server has gone
    path.write_text(json.dumps(entry))
    assert [r.key for r in JobRunner(journal=tmp_path).interrupted] == ["quick"]


def test_a_page_script_as_main_is_not_run_again_in_the_worker(tmp_path, monkeypatch):
    # Inside Streamlit (and AppTest) __main__ is the page script that submitted the job; spawn
    # would re-run that file in the worker. Here such a script fails if it is ever run.
    import sys
    import types

    page = tmp_path / "page.py"
    page.write_text("raise SystemExit('the page script ran in the worker')\n", encoding="utf-8")
    script = types.ModuleType("__main__")
    script.__file__ = str(page)
    monkeypatch.setitem(sys.modules, "__main__", script)
    job = JobRunner(journal=tmp_path / "jobs").submit("umap:page", _count, 2, process=True)
    assert job.future.result(timeout=120) != os.getpid()
    assert sys.modules["__main__"] is script  # put back after the spawn
