"""The one atomic-write protocol: temp file, fsync before rename, nothing partial ever visible."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core import atomic


@pytest.fixture
def calls(monkeypatch):
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(("fsync", "")), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(("replace", Path(b).name)), real_replace(a, b))[1])
    return seen


def test_fsync_of_the_temp_file_comes_before_the_rename(tmp_path, calls):
    atomic.atomic_write_text(tmp_path / "a.json", "{}")
    assert calls[0] == ("fsync", "")
    assert calls[1] == ("replace", "a.json")
    assert (tmp_path / "a.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("stage", ["written", "synced"])
def test_a_failure_inside_the_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, stage):
    target = tmp_path / "shard.bin"
    target.write_bytes(b"old")

    def fail(at: str, path: Path) -> None:
        if at == stage:
            assert path.name != target.name and path.exists()  # the data sits under a temp name
            raise RuntimeError("power cut")

    monkeypatch.setattr(atomic, "fault_hook", fail)
    with pytest.raises(RuntimeError):
        atomic.atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.bin"]


def test_a_process_killed_inside_the_write_never_exposes_a_partial_file(tmp_path):
    """SIGKILL lands after the bytes are written but before the rename: the final name holds
    the previous complete content; only a temp file is left, which readers ignore."""
    target = tmp_path / "data.bin"
    target.write_bytes(b"complete-old")
    script = textwrap.dedent(f"""
        import os, signal
        from core import atomic
        def kill(stage, path):
            if stage == "synced":
                os.kill(os.getpid(), signal.SIGKILL)
        atomic.fault_hook = kill
        atomic.atomic_write_bytes({str(target)!r}, b"x" * 1_000_000)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(atomic.__file__).parents[1])
    assert result.returncode == -9
    assert target.read_bytes() == b"complete-old"
    leftovers = [p for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and atomic.is_temp(leftovers[0])
    assert leftovers[0].stat().st_size == 1_000_000
