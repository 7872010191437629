"""Load test: N concurrent sessions opening Map, Clusters and Label on the demo cohort.

    .venv/bin/python benchmarks/load_test.py [--sessions 20] [--pages map,clusters,label]
        [--workers 0,2] [--app-dir DIR] [--embeddings-from CACHE_DIR] [--browser-sessions N]
        [--out benchmarks/results/load.json]

``--workers`` lists the configurations measured one after another in the same run, on the same
cache: 0 is one ``streamlit run`` process reached directly; N is N Streamlit processes behind
HAProxy exactly as ``scanatlas serve-app --workers N`` runs them (sticky by cookie; the
pre-warm opens every page on every worker, choosing it by its cookie). With several
configurations the JSON holds each report under ``configurations`` and a ``comparison`` table.

Starts a real ``streamlit run app.py`` on 127.0.0.1 (free port, its own SCANATLAS_CACHE and
label database in a temporary folder), pre-warms it (opens Map until the demo cohort is
embedded, projected and clustered, then Clusters and Label once), and measures for each page:

  * one session alone (``--single-repeats`` times, one after another);
  * ``--sessions`` sessions started at the same moment.

A session is a raw Streamlit websocket client (what the browser's JavaScript does): connect to
``/_stcore/stream``, ask for the page, and read ForwardMsgs until the script run finishes. Its
time is connect -> the finished run that holds the page's main element (Map, Clusters: a Plotly
chart; Label: the data editor). An error is an exception or ``st.error`` on the page, a run that
ends without the element, a closed socket or a timeout. Raw sessions measure the server: 20
headless Chromium tabs on a 2-core machine measure the browsers as much as the server.
``--browser-sessions N`` adds that view: each page in one headless Chromium tab alone, then in N
tabs at once (each a new visitor), timed from navigation until the Plotly chart is drawn (Map,
Clusters) or the data editor's grid exists (Label) and the script has finished.

It also reports the server's RSS (from /proc) before the sessions, its peak while they ran, with
all N sessions still open (growth per extra session) and after they closed (the server is run
with ``server.disconnectedSessionTTL`` = ``--session-ttl`` so that closed sessions are dropped),
the CPU seconds of Python's full garbage collections during each batch, and how many times the server computed each shared heavy result: the server runs with counters
around ``core.embed.embed_dataset``, ``core.cohort.build_cohort``, ``core.projection.project`` and
``core.clustering.runs.cluster`` (``--serve`` mode below), so "computed once for all sessions"
is counted rather than assumed.

Bounded: every session has a timeout, the server is stopped by its PID (SIGTERM, then SIGKILL),
everything stays on 127.0.0.1. Writes ``--out`` (JSON) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import CHROMIUM, CHROMIUM_ARGS, IDLE, StreamlitServer, free_port  # noqa: E402 (benchmarks/ on the path first)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results" / "load.json"
COUNTS_ENV = "SCANATLAS_LOAD_COUNTS"
GC_NAME = "gc.full_collection"
# Page (URL name) -> the element whose arrival means the page is drawn (see _element_kind).
PAGE_ELEMENT = {"map": "plotly_chart", "clusters": "plotly_chart", "label": "data_editor"}
# (module, attribute) wrapped with a call counter in --serve mode: each call is one computation.
COUNTED = (
    ("core.embed", "embed_dataset"),
    ("core.cohort", "build_cohort"),
    ("core.projection", "project"),
    ("core.clustering.runs", "cluster"),
)
EMBED_POLL_S = 2.0  # the page's progress fragment reruns every 2 s while embeddings run


# --------------------------------------------------------------------------------------------
# Server side: `load_test.py --serve ARGS...` is `streamlit run ARGS...` with call counters.


def serve_with_counters(streamlit_args: list[str]) -> None:
    """Run Streamlit in this process with counters around the heavy computations; each call
    appends one JSON line ``{"name": ..., "t": ...}`` to the file named by $SCANATLAS_LOAD_COUNTS."""
    import importlib

    counts_path = Path(os.environ[COUNTS_ENV])
    lock = threading.Lock()

    def counted(name: str, function: Callable) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with lock, counts_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"name": name, "t": time.time()}) + "\n")
            return function(*args, **kwargs)

        wrapper.__wrapped__ = function  # type: ignore[attr-defined]
        return wrapper

    # Patched before anything imports ui/ or the pages, so `from core.x import f` binds the wrapper.
    for module_name, attribute in COUNTED:
        module = importlib.import_module(module_name)
        setattr(module, attribute, counted(f"{module_name}.{attribute}", getattr(module, attribute)))

    # Python's full (generation 2) garbage collections: each walks every object the server holds
    # (torch, UMAP, scikit-learn...) and stalls whichever script runs are queued at the time.
    started: list[float] = []

    def full_collection(phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[:] = [time.thread_time()]
        elif started:
            with lock, counts_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"name": GC_NAME, "t": time.time(),
                                         "seconds": time.thread_time() - started[0]}) + "\n")

    gc.callbacks.append(full_collection)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *streamlit_args]
    cli.main()


def read_counts(path: Path) -> dict[str, int]:
    """Calls of each counted computation (full garbage collections are left out: see
    ``read_gc``)."""
    counts = {f"{m}.{a}": 0 for m, a in COUNTED}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            name = json.loads(line)["name"]
            if name != GC_NAME:
                counts[name] = counts.get(name, 0) + 1
    return counts


def read_gc(path: Path, since: float = 0.0) -> dict[str, float]:
    """Full garbage collections in the server(s) after time ``since``: how many, CPU seconds."""
    seconds = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["name"] == GC_NAME and record["t"] >= since:
                seconds.append(record["seconds"])
    return {"full_collections": len(seconds), "cpu_s": round(sum(seconds), 3)}


class Server(StreamlitServer):
    """A ``streamlit run app.py`` on 127.0.0.1 in its own process group, with call counters
    (started by ``benchmarks/_server.py``; launched here, ``wait_healthy()`` waits)."""

    cookies: tuple[str | None, ...] = (None,)  # one process: no proxy, no cookie to pick it

    def __init__(self, app_dir: Path, cache: Path, *, session_ttl: int, log_path: Path) -> None:
        self.counts_path = cache / "load-counts.jsonl"
        super().__init__(
            cache=cache, app_dir=app_dir, log_path=log_path,
            env={COUNTS_ENV: str(self.counts_path),
                 "PYTHONPATH": os.pathsep.join([str(app_dir), os.environ.get("PYTHONPATH", "")])},
            command=[sys.executable, str(Path(__file__).resolve()), "--serve"],
            extra_args=["--server.disconnectedSessionTTL", str(session_ttl)],
        )
        self.launch()

    def rss_mb(self) -> float | None:
        """Resident memory of the server process (MB), from /proc (None when it has exited)."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) the server process has used so far, from /proc."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def counts(self) -> dict[str, int]:
        return read_counts(self.counts_path)


class Workers:
    """``n`` servers (each a ``Server``: its own process, the same cache, label database and
    counters) behind HAProxy, configured exactly as ``scanatlas serve-app`` does
    (``cli/commands/serve_app.py``): sticky by cookie, new sessions to the least busy worker.
    ``rss_mb`` and ``cpu_s`` are the workers' sums (HAProxy's own are not counted)."""

    def __init__(self, app_dir: Path, cache: Path, n: int, *, session_ttl: int, log_dir: Path) -> None:
        sys.path.insert(0, str(REPO_ROOT))
        from cli.commands.serve_app import COOKIE, haproxy_config

        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise SystemExit("--workers N needs HAProxy (apt-get install haproxy)")
        self.workers = [Server(app_dir, cache, session_ttl=session_ttl, log_path=log_dir / f"worker-{i}.log")
                        for i in range(n)]
        self.counts_path = self.workers[0].counts_path
        self.cookies = tuple(f"{COOKIE}=w{i}" for i in range(n))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "haproxy.log"
        config = log_dir / "haproxy.cfg"
        config.write_text(haproxy_config("127.0.0.1", self.port, [w.port for w in self.workers],
                                         log_dir / "haproxy.sock"), encoding="utf-8")
        with open(self.log_path, "wb") as log:
            self.proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout_s: float = 120) -> None:
        for worker in self.workers:
            worker.wait_healthy(timeout_s)
        deadline = time.monotonic() + timeout_s
        while True:  # through the proxy too (its health checks run every 2 s)
            try:
                with urllib.request.urlopen(f"{self.base}/_stcore/health", timeout=2) as response:
                    if response.read() == b"ok":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proxy.poll() is not None:
                raise RuntimeError(f"HAProxy not serving after {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def log_tail(self, n: int = 3000) -> str:
        return "\n".join(w.log_tail(n) for w in self.workers) + "\n" + Server.log_tail(self, n)  # type: ignore[arg-type]

    def rss_mb(self) -> float | None:
        values = [w.rss_mb() for w in self.workers]
        return None if any(v is None for v in values) else sum(values)

    def cpu_s(self) -> float | None:
        values = [w.cpu_s() for w in self.workers]
        return None if any(v is None for v in values) else sum(values)

    def counts(self) -> dict[str, int]:
        return read_counts(self.counts_path)

    def stop(self) -> None:
        if self.proxy.poll() is None:
            os.killpg(self.proxy.pid, signal.SIGTERM)
            try:
                self.proxy.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proxy.pid, signal.SIGKILL)
                self.proxy.wait(timeout=20)
        for worker in self.workers:
            worker.stop()


class RssSampler:
    """Samples the server's RSS every ``interval_s`` in a thread; ``peak`` is the largest seen."""

    def __init__(self, server: Server, interval_s: float = 0.1) -> None:
        self.server, self.interval_s = server, interval_s
        self.peak = server.rss_mb() or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.server.rss_mb() or 0.0)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------------------------
# Client side: one raw websocket session = one browser tab's traffic, without the browser.


def _rerun_message(page: str, query: str) -> bytes:
    from streamlit.proto.BackMsg_pb2 import BackMsg

    message = BackMsg()
    message.rerun_script.query_string = query
    message.rerun_script.page_name = page
    return message.SerializeToString()


def _element_kind(element) -> str:
    """The element's type; an editable dataframe is a ``data_editor``."""
    kind = element.WhichOneof("type")
    if kind == "dataframe" and element.dataframe.editing_mode != 0:  # Dataframe.EditingMode.READ_ONLY
        return "data_editor"
    return kind


def _element_problem(element) -> str | None:
    kind = element.WhichOneof("type")
    if kind == "exception":
        return f"exception: {element.exception.type}: {element.exception.message[:300]}"
    if kind == "alert" and element.alert.format == 1:  # Alert.Format.ERROR
        return f"st.error: {element.alert.body[:300]}"
    return None


async def _one_run(ws, page: str, query: str, timeout_s: float) -> dict[str, Any]:
    """Ask for ``page`` and read until its script run finishes; what the run drew."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    await ws.send(_rerun_message(page, query))
    elements: set[str] = set()
    problems: list[str] = []
    n_bytes = 0
    async with asyncio.timeout(timeout_s):
        while True:
            frame = await ws.recv()
            n_bytes += len(frame)
            message = ForwardMsg()
            message.ParseFromString(frame)
            kind = message.WhichOneof("type")
            if kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                element = message.delta.new_element
                elements.add(_element_kind(element))
                problem = _element_problem(element)
                if problem:
                    problems.append(problem)
            elif kind == "script_finished":
                if message.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    continue  # a rerun the script asked for (st.rerun): keep reading
                status = ForwardMsg.ScriptFinishedStatus.Name(message.script_finished)
                return {"status": status, "elements": elements, "problems": problems, "bytes": n_bytes}


async def open_page(ws_url: str, page: str, *, query: str = "", timeout_s: float = 120.0,
                    poll_embedding: bool = False, settled: asyncio.Event | None = None,
                    release: asyncio.Event | None = None, cookie: str | None = None) -> dict[str, Any]:
    """One session: connect, open ``page``, time it until the page's main element is drawn.

    With ``poll_embedding``, a run that only shows the embedding progress bar is repeated every
    2 s (as the page's progress fragment does in a browser) until the page draws. Once drawn
    (or failed) the session sets ``settled`` and stays connected until ``release`` is set.
    Returns page, seconds (None on error), runs, bytes received and error (None when drawn).
    """
    import websockets

    expected = PAGE_ELEMENT[page]
    started = time.perf_counter()
    result: dict[str, Any] = {"page": page, "seconds": None, "runs": 0, "bytes": 0, "error": None}
    try:
        async with websockets.connect(ws_url, subprotocols=["streamlit"], max_size=None,
                                      open_timeout=timeout_s, ping_interval=None,
                                      additional_headers={"Cookie": cookie} if cookie else None) as ws:
            try:
                async with asyncio.timeout(timeout_s):
                    while True:
                        run = await _one_run(ws, page, query, timeout_s)
                        result["runs"] += 1
                        result["bytes"] += run["bytes"]
                        if run["problems"]:
                            result["error"] = "; ".join(run["problems"])
                        elif run["status"] != "FINISHED_SUCCESSFULLY":
                            result["error"] = f"script run ended {run['status']}"
                        elif expected in run["elements"]:
                            result["seconds"] = time.perf_counter() - started
                        elif poll_embedding and "progress" in run["elements"]:
                            await asyncio.sleep(EMBED_POLL_S)
                            continue
                        else:
                            result["error"] = f"run finished without a {expected} (drew {sorted(run['elements'])})"
                        break
            finally:
                if settled is not None:
                    settled.set()
            if release is not None:
                await release.wait()
    except TimeoutError:
        result["error"] = f"timed out after {timeout_s:.0f} s"
    except Exception as error:  # noqa: BLE001 - any failure of one session is that session's error
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        if settled is not None:
            settled.set()
    return result


async def open_together(ws_url: str, page: str, n: int, *, query: str = "", timeout_s: float = 180.0,
                        poll_embedding: bool = False,
                        while_open: Callable[[], Any] | None = None) -> tuple[list[dict[str, Any]], Any]:
    """``n`` sessions open ``page`` at the same moment and stay connected until every one has
    drawn it (or failed); then ``while_open()`` runs (e.g. an RSS reading) and they all close.
    Returns the sessions' results and what ``while_open`` returned."""
    release = asyncio.Event()
    settled = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(open_page(ws_url, page, query=query, timeout_s=timeout_s,
                                           poll_embedding=poll_embedding, settled=event, release=release))
             for event in settled]
    await asyncio.gather(*(event.wait() for event in settled))
    reading = while_open() if while_open else None
    release.set()
    return list(await asyncio.gather(*tasks)), reading


# --------------------------------------------------------------------------------------------
# Browser side (--browser-sessions): the same pages in headless Chromium tabs, timed from
# navigation to the drawn page, as a person sees it (JavaScript bundle, websocket, Plotly).

# Page -> a JavaScript predicate that is true once the page's main element is really drawn.
BROWSER_DRAWN = {
    "map": "() => document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot')?._fullData?.length > 0",
    "clusters": "() => document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot')?._fullData?.length > 0",
    "label": "() => document.querySelector('[data-testid=\"data-grid-canvas\"]') !== null",
}


async def _browser_session(browser, url: str, page_name: str, timeout_s: float) -> dict[str, Any]:
    """One new browser context (a new visitor: no cookies, no cached JavaScript) opens ``url``."""
    result: dict[str, Any] = {"page": page_name, "seconds": None, "runs": 1, "bytes": 0, "error": None}
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = await context.new_page()
        started = time.perf_counter()
        await page.goto(url, timeout=timeout_s * 1000)
        await page.wait_for_function(BROWSER_DRAWN[page_name], timeout=timeout_s * 1000)
        await page.wait_for_selector(IDLE, timeout=timeout_s * 1000)
        elapsed = time.perf_counter() - started
        exceptions = await page.locator('[data-testid="stException"]').count()
        if exceptions:
            result["error"] = f"{exceptions} exception(s) on the page"
        else:
            result["seconds"] = elapsed
    except Exception as error:  # noqa: BLE001 - a timeout or crash is this session's error
        result["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    finally:
        await context.close()
    return result


async def browser_measure(server: Server, pages: list[str], n: int, repeats: int, timeout_s: float) -> dict[str, Any]:
    """Per page: ``repeats`` single tabs one after another, then ``n`` tabs at the same moment;
    with the server's CPU seconds per tab (page, JavaScript bundle and websocket together)."""
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is absent: apt-get install chromium, or leave out --browser-sessions")
    measured: dict[str, Any] = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for page_name in pages:
                url = f"{server.base}/{page_name}"
                cpu_start = server.cpu_s()
                singles = [await _browser_session(browser, url, page_name, timeout_s) for _ in range(repeats)]
                cpu_single = (server.cpu_s() - cpu_start) / repeats
                cpu_start = server.cpu_s()
                together = await asyncio.gather(*(_browser_session(browser, url, page_name, timeout_s)
                                                  for _ in range(n)))
                cpu_together = (server.cpu_s() - cpu_start) / n
                single, concurrent = summarise(singles), summarise(list(together))
                single_s = statistics.median(single["seconds"]) if single["seconds"] else None
                measured[page_name] = {
                    "single": single, "concurrent": concurrent,
                    "single_median_s": None if single_s is None else round(single_s, 3),
                    "p50_over_single": _ratio(concurrent["p50_s"], single_s),
                    "p95_over_single": _ratio(concurrent["p95_s"], single_s),
                    "server_cpu_s_per_single_session": round(cpu_single, 3),
                    "server_cpu_s_per_concurrent_session": round(cpu_together, 3),
                }
        finally:
            await browser.close()
    return measured


# --------------------------------------------------------------------------------------------
# The measurement.


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["seconds"] for r in results if r["seconds"] is not None]
    errors = [r["error"] for r in results if r["error"] is not None]

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "sessions": len(results), "errors": len(errors), "error_messages": sorted(set(errors))[:5],
        "p50_s": rounded(percentile(times, 50)), "p95_s": rounded(percentile(times, 95)),
        "min_s": rounded(min(times, default=None)), "max_s": rounded(max(times, default=None)),
        "seconds": [round(t, 3) for t in times],
        "mb_received_per_session": round(statistics.mean(r["bytes"] for r in results) / 1e6, 3) if results else None,
    }


def measure(args: argparse.Namespace, cache: Path, workers: int = 0) -> dict[str, Any]:
    """One configuration: ``workers`` = 0 is one ``streamlit run`` process reached directly;
    N >= 1 is N processes behind HAProxy (``scanatlas serve-app --workers N``)."""
    app_dir = Path(args.app_dir).resolve()
    pages = [p.strip() for p in args.pages.split(",") if p.strip()]
    unknown = sorted(set(pages) - set(PAGE_ELEMENT))
    if unknown:
        raise SystemExit(f"unknown page(s) {unknown}; valid: {sorted(PAGE_ELEMENT)}")
    if workers:
        log_dir = Path(tempfile.mkdtemp(prefix=f"workers-{workers}-", dir=cache))
        server = Workers(app_dir, cache, workers, session_ttl=args.session_ttl, log_dir=log_dir)
    else:
        server = Server(app_dir, cache, session_ttl=args.session_ttl, log_path=cache / "streamlit.log")
    ws_url = f"ws://127.0.0.1:{server.port}/_stcore/stream"
    report: dict[str, Any] = {
        "configuration": f"{workers} Streamlit processes behind HAProxy" if workers else "one Streamlit process",
        "workers": workers or 1, "proxy": "haproxy" if workers else None,
        "app_dir": "this repository" if app_dir == REPO_ROOT else app_dir.name,  # no machine path "git_commit": _git_commit(app_dir), "sessions": args.sessions,
        "single_repeats": args.single_repeats, "client": "raw Streamlit websocket sessions",
        "cpu_count": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
        "python": platform.python_version(), "session_ttl_s": args.session_ttl,
    }
    try:
        server.wait_healthy()
        report["rss_mb_idle_server"] = round(server.rss_mb() or 0, 1)
        measured_from = time.time()
        # Pre-warm: the first Map embeds the demo cohort in the background and computes the
        # projection and clustering; Clusters and Label then find everything shared.
        # Behind the proxy every worker is warmed (a cookie picks it): each has its own memory.
        warm_started = time.perf_counter()
        report["warm_s"] = {}
        for cookie in server.cookies:
            for page in pages:
                result = asyncio.run(open_page(ws_url, page, timeout_s=args.warm_timeout, poll_embedding=True,
                                               cookie=cookie))
                if result["error"]:
                    raise RuntimeError(f"pre-warm of {page} failed: {result['error']}\n{server.log_tail()}")
                report["warm_s"].setdefault(page, round(result["seconds"], 2))
            if "map" in pages:
                # Map draws PCA at once and computes UMAP in the background; measured sessions
                # must not share the CPU with it (nor another worker start its own).
                report["warm_s"].setdefault("umap_stored", round(wait_for_stored_map(cache, args.warm_timeout), 2))
        report["warm_total_s"] = round(time.perf_counter() - warm_started, 1)
        report["computed_during_warm_up"] = server.counts()
        report["rss_mb_before"] = round(server.rss_mb() or 0, 1)
        report["pages"] = {}
        with RssSampler(server) as overall:
            for page in pages:
                cpu_start = server.cpu_s()
                singles = [asyncio.run(open_page(ws_url, page, timeout_s=args.timeout))
                           for _ in range(args.single_repeats)]
                cpu_single = (server.cpu_s() - cpu_start) / args.single_repeats
                time.sleep(1.0)
                rss_start, cpu_start, batch_start = server.rss_mb() or 0.0, server.cpu_s(), time.time()
                with RssSampler(server) as sampler:
                    together, rss_open = asyncio.run(open_together(
                        ws_url, page, args.sessions, timeout_s=args.timeout, while_open=server.rss_mb))
                cpu_together = (server.cpu_s() - cpu_start) / args.sessions
                single, concurrent = summarise(singles), summarise(together)
                single_s = statistics.median(single["seconds"]) if single["seconds"] else None
                entry = {
                    "single": single, "concurrent": concurrent, "single_median_s": None if single_s is None else round(single_s, 3),
                    "p50_over_single": _ratio(concurrent["p50_s"], single_s),
                    "p95_over_single": _ratio(concurrent["p95_s"], single_s),
                    "rss_mb_before_batch": round(rss_start, 1),
                    "rss_mb_all_sessions_open": None if rss_open is None else round(rss_open, 1),
                    "rss_mb_peak": round(sampler.peak, 1),
                    # Server CPU per session: what the load costs regardless of other processes.
                    "server_cpu_s_per_single_session": round(cpu_single, 3),
                    "server_cpu_s_per_concurrent_session": round(cpu_together, 3),
                    "gc_during_concurrent_batch": read_gc(server.counts_path, batch_start),
                }
                if rss_open is not None:
                    entry["rss_mb_per_extra_session"] = round((rss_open - rss_start) / args.sessions, 2)
                report["pages"][page] = entry
                print(_row(page, entry), flush=True)
                time.sleep(1.0)
            report["rss_mb_peak"] = round(overall.peak, 1)
        if args.browser_sessions:
            report["browser"] = asyncio.run(browser_measure(
                server, pages, args.browser_sessions, args.single_repeats, args.timeout))
            report["browser_sessions"] = args.browser_sessions
            for page, entry in report["browser"].items():
                print(_row(f"{page}/tab", entry), flush=True)
        # Closed sessions are kept for reconnects for session_ttl seconds; the next connection
        # lets Streamlit drop the expired ones.
        time.sleep(args.session_ttl + 2)
        asyncio.run(open_page(ws_url, pages[-1], timeout_s=args.timeout))
        time.sleep(2.0)
        report["rss_mb_after_close"] = round(server.rss_mb() or 0, 1)
        report["computed_total"] = server.counts()
        report["gc_whole_run"] = read_gc(server.counts_path, measured_from)
        measured = [*report["pages"].values(), *report.get("browser", {}).values()]
        report["errors_total"] = sum(p["single"]["errors"] + p["concurrent"]["errors"] for p in measured)
    finally:
        server.stop()
    return report


def wait_for_stored_map(cache: Path, timeout_s: float, method: str = "umap") -> float:
    """Seconds until the run store under ``cache`` holds a ``method`` projection (the app's
    default map); raises after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        for record in (cache / "runs" / "projection").glob("*/run.json"):
            try:
                if json.loads(record.read_text(encoding="utf-8"))["config"]["method"] == method:
                    return time.monotonic() - started
            except (OSError, ValueError, KeyError):
                continue  # being written
        time.sleep(0.5)
    raise RuntimeError(f"no stored {method} map after {timeout_s:.0f} s")


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else round(value / base, 2)


def _git_commit(folder: Path) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


HEADER = (f"{'page':<12} {'single s':>8} {'n':>3} {'p50 s':>7} {'p95 s':>7} {'max s':>7} "
          f"{'p95/single':>10} {'errors':>6} {'CPU s/session':>13} {'RSS open MB':>11} {'MB/session':>10} "
          f"{'full GC s':>9}")


def _row(page: str, entry: dict[str, Any]) -> str:
    c = entry["concurrent"]

    def f(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return (f"{page:<12} {f(entry['single_median_s'], '8.2f')} {c['sessions']:>3} {f(c['p50_s'], '7.2f')} "
            f"{f(c['p95_s'], '7.2f')} {f(c['max_s'], '7.2f')} {f(entry['p95_over_single'], '10.2f')} "
            f"{c['errors'] + entry['single']['errors']:>6} "
            f"{f(entry.get('server_cpu_s_per_concurrent_session'), '13.3f')} "
            f"{f(entry.get('rss_mb_all_sessions_open'), '11.0f')} {f(entry.get('rss_mb_per_extra_session'), '10.2f')} "
            f"{f(entry.get('gc_during_concurrent_batch', {}).get('cpu_s'), '9.3f')}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve_with_counters(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="concurrent sessions per page (default 20)")
    parser.add_argument("--pages", default="map,clusters,label", help="comma-separated: map, clusters, label")
    parser.add_argument("--single-repeats", type=int, default=3, help="one-session runs per page (median is the base)")
    parser.add_argument("--app-dir", default=str(REPO_ROOT), help="checkout whose app.py to serve (e.g. another branch)")
    parser.add_argument("--embeddings-from", help="a SCANATLAS_CACHE folder whose embeddings/ to copy in first")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per measured session")
    parser.add_argument("--warm-timeout", type=float, default=1200.0, help="seconds for the pre-warm (embedding included)")
    parser.add_argument("--session-ttl", type=int, default=5, help="server.disconnectedSessionTTL (s)")
    parser.add_argument("--browser-sessions", type=int, default=0,
                        help="also open each page in this many concurrent headless Chromium tabs (0: off)")
    parser.add_argument("--keep-cache", action="store_true", help="keep the temporary cache folder")
    parser.add_argument("--workers", default="0",
                        help="configurations to measure in this run, comma-separated: 0 = one Streamlit "
                        "process reached directly, N = N processes behind HAProxy as `scanatlas serve-app "
                        "--workers N` runs them (e.g. 0,2)")
    parser.add_argument("--out", default=str(RESULTS), help=f"JSON results (default {RESULTS.relative_to(REPO_ROOT)})")
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= 64:
        parser.error(f"--sessions={args.sessions} must be between 1 and 64 (a bounded load test)")
    if not 0 <= args.browser_sessions <= 32:
        parser.error(f"--browser-sessions={args.browser_sessions} must be between 0 and 32")
    try:
        configurations = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers={args.workers!r}: comma-separated integers, e.g. 0,2")
    if any(not 0 <= w <= 16 for w in configurations):
        parser.error("--workers: each between 0 (one process, no proxy) and 16")
    cache = Path(tempfile.mkdtemp(prefix="scanatlas-load-"))
    if args.embeddings_from:
        # The embedding cache is content-addressed (file bytes + encoder), so vectors computed
        # elsewhere for the same scans are valid here; only saves the first embedding's minutes.
        shutil.copytree(Path(args.embeddings_from) / "embeddings", cache / "embeddings")
    reports = []
    try:
        # One cache for every configuration: the first computes the shared results, the others
        # load them from the run store as a second server process would.
        for workers in configurations:
            print(f"--- {'one process' if not workers else f'{workers} workers behind HAProxy'} "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
            print(HEADER, flush=True)
            report = measure(args, cache, workers)
            report["load_average_at_end"] = list(os.getloadavg())
            reports.append(report)
            print(f"RSS MB: idle {report['rss_mb_idle_server']}, warm {report['rss_mb_before']}, "
                  f"peak {report['rss_mb_peak']}, after close {report['rss_mb_after_close']}")
            print(f"computed (whole run): {report['computed_total']}")
    finally:
        if args.keep_cache:
            print(f"cache kept in {cache}")
        else:
            shutil.rmtree(cache, ignore_errors=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if len(reports) == 1:
        result: dict[str, Any] = reports[0]
    else:
        result = {"configurations": reports, "comparison": compare(reports)}
        print(COMPARE_HEADER)
        for row in result["comparison"]:
            print(_compare_row(row))
    errors = sum(r["errors_total"] for r in reports)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"errors: {errors}; wrote {out}")
    return 0 if errors == 0 else 1


COMPARE_HEADER = (f"{'page':<10} {'configuration':<38} {'single s':>8} {'p50 s':>7} {'p95 s':>7} "
                  f"{'p95/single':>10} {'p95 / 1-process single':>22}")


def compare(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per page and configuration: single, p50, p95 and p95 over the single session of the
    first configuration too (the same user alone on the server as deployed before)."""
    base = reports[0]
    rows = []
    for page in base["pages"]:
        base_single = base["pages"][page]["single_median_s"]
        for report in reports:
            entry = report["pages"][page]
            rows.append({
                "page": page, "configuration": report["configuration"], "workers": report["workers"],
                "single_median_s": entry["single_median_s"], "p50_s": entry["concurrent"]["p50_s"],
                "p95_s": entry["concurrent"]["p95_s"], "p95_over_single": entry["p95_over_single"],
                "p95_over_first_configuration_single": _ratio(entry["concurrent"]["p95_s"], base_single),
                "errors": entry["single"]["errors"] + entry["concurrent"]["errors"],
            })
    return rows


def _compare_row(row: dict[str, Any]) -> str:
    def f(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    return (f"{row['page']:<10} {row['configuration']:<38} {f(row['single_median_s'], '8.3f')} "
            f"{f(row['p50_s'], '7.3f')} {f(row['p95_s'], '7.3f')} {f(row['p95_over_single'], '10.2f')} "
            f"{f(row['p95_over_first_configuration_single'], '22.2f')}")


if __name__ == "__main__":
    raise SystemExit(main())
