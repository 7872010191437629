"""Shared fixtures: fixed seeds and small real data (covid-chestxray, pydicom files, demo cohort)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
COVID_DIR = SHARED_DATA / "covid-chestxray"


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    random.seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def covid_dir() -> Path:
    """The real COVID-19 image collection beside the project (never copied into it)."""
    if not (COVID_DIR / "metadata.csv").is_file():
        pytest.fail(f"real test data missing: {COVID_DIR} (set SCANATLAS_SHARED_DATA)")
    return COVID_DIR


@pytest.fixture(scope="session")
def covid_dataset(covid_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """covid-chestxray ingested once per test session."""
    from core.ingest import ingest

    return ingest(covid_dir, tmp_path_factory.mktemp("covid-dataset")).dataset


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo cohort (real DICOM files): 16 patients x 4 slices of 64 px."""
    from core.demo import make_demo_cohort

    root = tmp_path_factory.mktemp("demo-cohort")
    make_demo_cohort(root, n_patients=16, n_slices=4, size=64, seed=0)
    return root


@pytest.fixture(scope="session")
def demo_dataset(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from core.ingest import ingest

    return ingest(demo_dir, tmp_path_factory.mktemp("demo-dataset")).dataset


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private SCANATLAS_CACHE (datasets, embeddings, runs) for one test module."""
    root = tmp_path_factory.mktemp("scanatlas-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def demo40(cache_env: Path, tmp_path_factory: pytest.TempPathFactory):
    """40 patients x 4 slices of 128 px: big enough for clustering to mean something."""
    from core.demo import make_demo_cohort
    from core.ingest import ingest

    cohort = tmp_path_factory.mktemp("demo40")
    make_demo_cohort(cohort, n_patients=40, n_slices=4, size=128, seed=0)
    return ingest(cohort, cache_env / "datasets" / "demo40").dataset


# -- the label database: SQLite and a real PostgreSQL, same tests ------------------------------

def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    import shutil

    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="session")
def postgres_server():
    """A throw-away PostgreSQL on 127.0.0.1 and a free port, in a temp folder (Debian's
    ``postgresql`` package; ``.ci/run`` installs it). Yields its base URL; skipped, with the
    reason, when the server cannot start. Stopped by its postmaster PID."""
    import shutil
    import signal
    import socket
    import subprocess
    import tempfile
    import time

    pg_bin = _postgres_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); PostgreSQL tests skipped")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (requirements-dev.txt); PostgreSQL tests skipped")
    # PostgreSQL refuses to run as root: run it as the 'postgres' user when we are root.
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="scanatlas-pg-"))
    data = root / "data"
    if as_user:
        shutil.chown(root, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = root / "server.log"
    try:
        subprocess.run([*as_user, str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=180)
        subprocess.run([*as_user, str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "180",
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=240)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", b"") or b""
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not start: {error} {detail.decode(errors='replace')[-800:]} {tail}")
    pid = int((data / "postmaster.pid").read_text().split()[0])
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        os.kill(pid, signal.SIGINT)  # "fast" shutdown: roll back and stop
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def label_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty label database: a SQLite file, or a new database on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'labels.db'}"
    import uuid

    from sqlalchemy import create_engine, text

    base = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return f"{base}/{name}"
