"""Labels are never lost: two writer processes x 200 saves on one database, plus a third writer
SIGKILLed mid-loop. Every acknowledged save must be there, versions must be gap-free, every
refused save must have been reported as a conflict (never an unhandled error), and SQLite's
``PRAGMA integrity_check`` must be ok. Runs on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sqlalchemy.engine import make_url

from core.auth import AccessStore
from core.labels import LabelStore

REPO = Path(__file__).resolve().parents[3]
SAVES_PER_WRITER = 200
START_TIMEOUT_S = 300  # importing pandas and SQLAlchemy on a busy 2-core box

WRITER = textwrap.dedent("""
    import json, os, sys, time
    from core.auth import User
    from core.labels import ConflictError, LabelStore

    url, name, count, acks, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    user = User(id=f"test|{name}", email=f"{name}@example.org", name=name, role="labeler", source="claim")
    store = LabelStore(url)
    store.current_version("ds", "k")  # connect and create tables before the start line
    open(acks + ".ready", "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
    saved = conflicts = 0
    with open(acks, "a") as log:
        while count < 0 or saved < count:
            base = store.current_version("ds", "k")
            marker = f"{name}-{saved}"
            try:
                result = store.save_mapping("ds", "k", {0: (marker, None), 1: ("fixed", None)},
                                            user=user, base_version=base)
            except ConflictError as conflict:
                conflicts += 1
                assert conflict.current_version is not None and conflict.current_version != base
                continue
            # Acknowledged only once the save call returned: write it down durably.
            log.write(json.dumps({"marker": marker, "version": result.version}) + "\\n")
            log.flush()
            os.fsync(log.fileno())
            saved += 1
    print(json.dumps({"saved": saved, "conflicts": conflicts}))
""")


def _start(url: str, name: str, count: int, tmp_path: Path, go: Path) -> tuple[subprocess.Popen, Path]:
    acks = tmp_path / f"{name}.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, name, str(count), str(acks), str(go)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return process, acks


def _acks(path: Path) -> list[dict]:
    if not path.exists():
        return []
    # A writer killed mid-write can leave a partial last line; it was never acknowledged.
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


def test_two_writers_and_a_killed_one_lose_nothing(label_db_url: str, tmp_path: Path):
    go = tmp_path / "go"
    writers = {name: _start(label_db_url, name, SAVES_PER_WRITER, tmp_path, go) for name in ("a", "b")}
    victim, victim_acks = _start(label_db_url, "killed", -1, tmp_path, go)
    everyone = [*writers.values(), (victim, victim_acks)]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(Path(f"{acks}.ready").exists() for _, acks in everyone):
            assert all(p.poll() is None for p, _ in everyone), [p.communicate() for p, _ in everyone if p.poll() is not None]
            assert time.monotonic() < deadline, "writers did not start"
            time.sleep(0.05)
        go.touch()
        # Kill the third writer once it has acknowledged some saves, while the others write on.
        while len(_acks(victim_acks)) < 20:
            assert victim.poll() is None, victim.communicate()
            assert time.monotonic() < deadline + START_TIMEOUT_S, "the third writer never saved"
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
        reports = {}
        for name, (process, _acks_path) in writers.items():
            out, err = process.communicate(timeout=600)
            assert process.returncode == 0, f"writer {name} failed:\n{err[-3000:]}"
            reports[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        for process, _ in everyone:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert victim.returncode == -signal.SIGKILL
    acked = [ack for _, path in everyone for ack in _acks(path)]
    assert [reports[n]["saved"] for n in writers] == [SAVES_PER_WRITER, SAVES_PER_WRITER]
    assert len(acked) >= 2 * SAVES_PER_WRITER + 20

    with LabelStore(label_db_url) as store:
        history = store.history("ds", "k")
    saved = history[history["cluster"] == 0].set_index("version")["disease"]
    # Every acknowledged save is there, under the version it was acknowledged with.
    missing = [a for a in acked if saved.get(a["version"]) != a["marker"]]
    assert missing == []
    # Versions are gap-free and nothing unacknowledged got in, except at most the one save the
    # killed writer committed but did not live to write down.
    assert saved.index.tolist() == list(range(1, len(saved) + 1))
    assert len(acked) <= len(saved) <= len(acked) + 1
    assert len(set(saved)) == len(saved)  # no save was applied twice
    with AccessStore(label_db_url) as access:
        assert len(access.events(limit=10_000, action="mapping.save")) == len(saved)

    total_conflicts = sum(r["conflicts"] for r in reports.values())
    print(f"\n{make_url(label_db_url).get_backend_name()}: acknowledged {len(acked)} saves "
          f"({len(_acks(victim_acks))} by the killed writer), {len(saved)} versions, "
          f"{total_conflicts} conflicts reported to the two surviving writers")
    if label_db_url.startswith("sqlite"):
        with sqlite3.connect(make_url(label_db_url).database) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
