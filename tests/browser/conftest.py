"""Fixtures for the browser tests: a real ``streamlit run app.py`` and headless Chromium.

The server and browser start code lives once, in ``benchmarks/_server.py`` (the benchmarks use
it too); here it becomes fixtures:

  * ``start_server(**options)``: starts a server on a free 127.0.0.1 port with its own
    ``SCANATLAS_CACHE`` (a fresh temporary folder unless ``cache=`` is given) and label
    database, waits until it is healthy, and stops it by its PID (process group) at the end of
    the module; options as ``StreamlitServer``'s (``env``, ``unset``, ``extra_args``, ...);
  * ``browser``: one headless Chromium (Debian's ``/usr/bin/chromium``) for the session;
    the tests are skipped with the reason when it is absent;
  * ``new_tab()``: a context manager giving a fresh context (own cookies, downloads allowed) and page that
    records page errors and console errors (``tab.problems``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _benchmark_module(name: str, file: str):
    """``benchmarks/FILE`` as module ``name`` (benchmarks/ is not a package on the import path)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_server = _benchmark_module("scanatlas_bench_server", "_server.py")


@pytest.fixture(scope="session")
def map_tools():
    """``benchmarks/_map_browser.py``: opening, counting and lassoing the Map in a tab."""
    return _benchmark_module("scanatlas_map_browser", "_map_browser.py")
CHROMIUM, CHROMIUM_ARGS, IDLE = _server.CHROMIUM, _server.CHROMIUM_ARGS, _server.IDLE
VIEWPORT = {"width": 1400, "height": 900}
HARMLESS_CONSOLE = ("/_stcore/health", "/_stcore/host-config", "GPU stall due to ReadPixels")


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path: Path):
    """One headless Chromium per browser test module. Not per session: Playwright's sync API
    keeps an asyncio loop running in the main thread while it is open, and later tests that call
    ``asyncio.run`` (the load and serve-app tests) would fail."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()``: a TCP port free on 127.0.0.1 now (for a server whose settings name it)."""
    return _server.free_port


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., object]]:
    """``start_server(cache=None, **options) -> StreamlitServer`` (started and healthy); every
    server started through it is stopped (SIGTERM to its process group, then SIGKILL) when the
    module's tests are done, and its log's tail is printed for the test report."""
    started = []

    def start(*, cache: Path | None = None, health_timeout_s: float = 120, **options):
        server = _server.StreamlitServer(cache=cache or tmp_path_factory.mktemp("scanatlas-cache"), **options)
        started.append(server)
        try:
            return server.start(health_timeout_s=health_timeout_s)
        except _server.ServerError as error:
            pytest.fail(str(error))

    yield start
    for server in reversed(started):
        server.stop()
        print(f"--- {server.log_path} (tail)\n{server.log_tail(2000)}")


@contextlib.contextmanager
def _tab(browser, *, timeout_ms: float = 120_000, **context_options):
    """A page in a fresh browser context; ``tab.problems`` lists page errors and console
    errors (less ``HARMLESS_CONSOLE``) seen while it was open."""
    context = browser.new_context(**{"viewport": VIEWPORT, "accept_downloads": True, **context_options})
    tab = context.new_page()
    tab.set_default_timeout(timeout_ms)
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on("console", lambda message: problems.append(f"console: {message.text} {message.location}")
           if message.type == "error"
           and not any(h in message.text + str(message.location) for h in HARMLESS_CONSOLE) else None)
    tab.problems = problems
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture(scope="module")
def new_tab(browser) -> Callable:
    """``with new_tab(**context_options) as tab:`` a page in a fresh context of ``browser``."""
    return lambda **options: _tab(browser, **options)
