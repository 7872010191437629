"""A real ``streamlit run app.py`` and headless Chromium for the benchmarks (and the browser
tests' fixtures in tests/browser/conftest.py, which import this module).

    with StreamlitServer(cache=folder) as server:   # free 127.0.0.1 port, own cache and label DB
        with chromium() as browser:                 # Debian's /usr/bin/chromium via Playwright
            page = browser.new_page(); page.goto(server.base + "/map")

The server runs in its own process group (``start_new_session``) and is stopped by its PID:
SIGTERM to the group, then SIGKILL after ``stop_timeout_s``. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
# No file watcher: edits elsewhere in the tree would put a "File change" banner in the page and
# cost CPU on a 2-core box.
STREAMLIT_FLAGS = ("--server.headless", "true", "--server.address", "127.0.0.1",
                   "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    """The server exited or did not become healthy; the message holds its log's tail."""


class StreamlitServer:
    """``streamlit run app.py`` on a free 127.0.0.1 port with ``SCANATLAS_CACHE=cache``.

    cache : the app's cache folder (datasets, embeddings, runs); created when missing
    db_url : the label database (default: SQLite in ``cache``)
    env : extra environment variables (they win over the defaults above)
    unset : environment variables to remove (e.g. ``SCANATLAS_DATA_ROOTS``)
    extra_args : more ``streamlit run`` flags (``--secrets.files``, ...)
    command : what to run instead of ``python -m streamlit run`` (it gets ``app.py`` and the
        flags), e.g. the load test's ``[python, load_test.py, "--serve"]``
    app_dir : the folder holding app.py (default: this repository)
    log_path : where stdout and stderr go (default: ``cache/streamlit.log``)
    port : the port (default: a free one)

    ``base`` is the URL, ``process`` the Popen; ``start()`` launches and waits for
    ``/_stcore/health``; as a context manager it starts, and stops on exit.
    """

    def __init__(self, *, cache: Path, db_url: str | None = None, env: Mapping[str, str] | None = None,
                 unset: Sequence[str] = (), extra_args: Sequence[str] = (),
                 command: Sequence[str] | None = None, app_dir: Path = REPO,
                 log_path: Path | None = None, port: int | None = None,
                 stop_timeout_s: float = 20) -> None:
        self.cache = Path(cache)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path) if log_path is not None else self.cache / "streamlit.log"
        self.stop_timeout_s = stop_timeout_s
        self._env = {**os.environ, "SCANATLAS_CACHE": str(self.cache),
                     "SCANATLAS_DB_URL": db_url or f"sqlite:///{self.cache / 'labels.db'}", **(env or {})}
        for name in unset:
            self._env.pop(name, None)
        self._argv = [*(command or [sys.executable, "-m", "streamlit", "run"]), "app.py",
                      "--server.port", str(self.port), *STREAMLIT_FLAGS, *extra_args]
        self._app_dir = Path(app_dir)
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None

    def launch(self) -> None:
        """Start the process (in its own session) and return at once; see ``wait_healthy``."""
        self.started_at = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self._argv, cwd=self._app_dir, env=self._env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, *, health_timeout_s: float = 120) -> StreamlitServer:
        """Launch and wait until ``/_stcore/health`` answers ``ok``."""
        self.launch()
        self.wait_healthy(health_timeout_s)
        return self

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise ServerError(f"streamlit exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(f"{self.base}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return
            if time.monotonic() > deadline:
                raise ServerError(f"streamlit not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the server's process group (the server and anything it started), SIGKILL
        when it is still there after ``stop_timeout_s``."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=self.stop_timeout_s)

    def __enter__(self) -> StreamlitServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def chromium(path: Path = CHROMIUM) -> Iterator:
    """A headless Chromium (Playwright's sync API) on Debian's binary; closed on exit. Raises
    ``FileNotFoundError`` when the binary is absent (apt-get install chromium)."""
    from playwright.sync_api import sync_playwright

    if not Path(path).exists():
        raise FileNotFoundError(f"{path} is absent: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
