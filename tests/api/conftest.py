"""A small real classifier study to serve: 40 covid-chestxray X-rays (20 COVID-19, 20 other
findings) copied into a temp folder, ingested, embedded with efficientnet-lite0 and studied
image-only (logistic regression, 3 patient-grouped folds), saved in a private run store."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


def copy_covid_subset(covid_dir: Path, out: Path, *, n_per_class: int = 20) -> pd.DataFrame:
    """``out/metadata.csv`` + ``out/images/``: X-ray PA/AP rows whose file exists, the first
    ``n_per_class`` COVID-19 and ``n_per_class`` other findings. Returns the rows."""
    meta = pd.read_csv(covid_dir / "metadata.csv", dtype=str, keep_default_na=False)
    meta = meta[(meta["modality"] == "X-ray") & meta["view"].isin(["PA", "AP"]) & (meta["folder"] == "images")]
    meta = meta[[(covid_dir / "images" / name).is_file() for name in meta["filename"]]]
    meta = meta.drop_duplicates("filename")
    covid = meta[meta["finding"] == "COVID-19"].head(n_per_class)
    other = meta[meta["finding"] != "COVID-19"].head(n_per_class)
    rows = pd.concat([covid, other])
    (out / "images").mkdir(parents=True, exist_ok=True)
    for name in rows["filename"]:
        shutil.copyfile(covid_dir / "images" / name, out / "images" / name)
    rows.to_csv(out / "metadata.csv", index=False)
    return rows


@pytest.fixture(scope="session")
def served_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving-cache")


@pytest.fixture(scope="session")
def covid_subset(covid_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("covid-subset")
    copy_covid_subset(covid_dir, source)
    return source


@pytest.fixture(scope="session")
def served_study(covid_subset: Path, served_cache: Path):
    """(run key, dataset) of a saved image-only binary study, COVID-19 vs the rest."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(served_cache))
        from core.classify.study import classifier_study
        from core.ingest import ingest

        dataset = ingest(covid_subset, served_cache / "datasets" / "covid40").dataset
        study = classifier_study(dataset, positive="COVID-19", encoder="efficientnet-lite0", use_text=False,
                                 metadata=(), n_splits=3, n_bootstrap=50)
        assert study.key and study.final_model is not None
        return study.key, dataset


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``scanatlas serve`` in a child process on 127.0.0.1 and a free port; stopped by PID."""

    def __init__(self, key: str, cache: Path, *extra: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cache / f"serve-{self.port}.log"
        environment = {**os.environ, "SCANATLAS_CACHE": str(cache), "OMP_NUM_THREADS": "2", **(env or {})}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve", "--run", key, "--port", str(self.port), *extra],
                cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 240) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"server did not answer /health in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def api_server(served_study, served_cache: Path):
    """A real uvicorn server serving the study, with a 3 MiB request limit."""
    key, _dataset = served_study
    server = Server(key, served_cache, "--max-request-mb", "3")
    try:
        server.wait()
        yield server
    finally:
        server.stop()
