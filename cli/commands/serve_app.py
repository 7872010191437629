"""``scanatlas serve-app --workers N``: the app as N Streamlit processes behind HAProxy.

One Streamlit process runs every session's script under one interpreter lock, so concurrent
sessions queue behind each other however fast a rerun is (benchmarks/load_test.py). Several
processes use several cores. A Streamlit session lives in the process its websocket reached, and
so do its uploads and the images it shows (``/media/...``), so the proxy must be *sticky*: HAProxy
puts a cookie (``scanatlas_worker``) on the first response and sends every later request and the
websocket of that browser to the same process; new browsers go to the process with the fewest
open connections. Shared heavy results (embeddings, cohorts' runs, projections, clusterings) are
in the on-disk cache and run store, so every process reads what another computed.

HAProxy (a packaged, well-kept proxy: ``apt-get install haproxy``) does the proxying; this
command writes its configuration, starts the workers on 127.0.0.1, waits until each answers its
health check, then runs HAProxy in the foreground and stops everything when one of them exits or
on Ctrl-C / SIGTERM (a service manager restarts the whole group). The public address follows the
same rule as the app: without sign-in only a loopback address, unless
``SCANATLAS_ALLOW_ANONYMOUS=1``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

from core.auth import is_loopback

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "app.py"
COOKIE = "scanatlas_worker"
ALLOW_ANONYMOUS_ENV = "SCANATLAS_ALLOW_ANONYMOUS"
MAX_WORKERS = 64


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve-app",
        help="serve the app from N Streamlit processes behind a sticky HAProxy",
        description="Start N Streamlit workers on 127.0.0.1 and HAProxy in front of them on "
        "ADDRESS:PORT, session-affine by cookie, websockets included. Needs the haproxy "
        "program (apt-get install haproxy). One worker per core serves concurrent users best.",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="Streamlit processes (default: one per core)")
    parser.add_argument("--address", default="127.0.0.1", help="address the proxy listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8501, help="port the proxy listens on (default 8501)")
    parser.add_argument("--haproxy", default="haproxy", help="the haproxy program (default: found on PATH)")
    parser.add_argument("--run-dir", help="folder for haproxy.cfg, its stats socket and the worker logs "
                        "(default: a new temporary folder)")
    parser.set_defaults(func=run)



def auth_configured(secrets: Path = REPO / ".streamlit" / "secrets.toml") -> bool:
    """Whether secrets.toml has a non-empty ``[auth]`` section (sign-in configured)."""
    try:
        return bool(tomllib.loads(secrets.read_text(encoding="utf-8")).get("auth"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False


def unsafe_address_message(address: str, *, signed_in: bool) -> str | None:
    """Why the proxy must not listen on ``address``, or None (the rule of ``ui.auth.gate``: the
    workers themselves are on 127.0.0.1, so their own check cannot see the public address)."""
    if signed_in or is_loopback(address) or os.environ.get(ALLOW_ANONYMOUS_ENV) == "1":
        return None
    return (f"the proxy would listen on {address} without sign-in, so anyone who can reach it would be "
            "admin. Configure sign-in ([auth] in .streamlit/secrets.toml), serve on 127.0.0.1, or set "
            f"{ALLOW_ANONYMOUS_ENV}=1 if this network is yours alone")


def haproxy_config(address: str, port: int, worker_ports: list[int], stats_socket: Path) -> str:
    """HAProxy configuration: ``address:port`` -> the workers, sticky by cookie, websockets kept
    open for a working day, each worker health-checked on Streamlit's ``/_stcore/health``."""
    bind = f"[{address}]" if ":" in address and not address.startswith("[") else address
    servers = "\n".join(f"    server w{i} 127.0.0.1:{p} cookie w{i} check inter 2s fall 3 rise 1"
                        for i, p in enumerate(worker_ports))
    return f"""# Written by `scanatlas serve-app`; regenerated on every start.
global
    maxconn 4096
    stats socket {stats_socket} mode 600 level operator

defaults
    mode http
    option forwardfor
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    # An open Streamlit websocket is a tunnel: a session may stay idle for hours.
    timeout tunnel 12h
    timeout http-request 30s

frontend scanatlas
    bind {bind}:{port}
    default_backend streamlit_workers

backend streamlit_workers
    # A new browser goes to the worker with the fewest open connections (websockets); the cookie
    # then keeps its page, websocket, uploads and media on that worker.
    balance leastconn
    cookie {COOKIE} insert indirect nocache httponly attr SameSite=Lax
    option httpchk GET /_stcore/health
    http-check expect string ok
{servers}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
            return response.read() == b"ok"
    except OSError:
        return False


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each process group, then SIGKILL to what is left after 20 s."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.workers <= MAX_WORKERS:
        raise ValueError(f"--workers={args.workers} must be between 1 and {MAX_WORKERS}")
    haproxy = shutil.which(args.haproxy)
    if haproxy is None:
        raise FileNotFoundError(f"{args.haproxy}: HAProxy not found; install it (apt-get install haproxy) "
                                "or run a single process with `make app`")
    refusal = unsafe_address_message(args.address, signed_in=auth_configured())
    if refusal:
        raise PermissionError(refusal)
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="scanatlas-serve-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(args.workers)]
    config = run_dir / "haproxy.cfg"
    config.write_text(haproxy_config(args.address, args.port, ports, run_dir / "haproxy.sock"), encoding="utf-8")
    check = subprocess.run([haproxy, "-c", "-q", "-f", str(config)], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise ValueError(f"HAProxy refused {config}: {(check.stderr or check.stdout).strip()}")

    stopping = False

    def stop_on_signal(signum, frame) -> None:  # noqa: ARG001 - the signal handler's signature
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop_on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    processes: list[subprocess.Popen] = []
    # One cookie secret for every worker (Streamlit's XSRF cookie on uploads): by default each
    # process draws its own. Passed in the environment, not on the command line `ps` shows.
    env = {**os.environ}
    env.setdefault("STREAMLIT_SERVER_COOKIE_SECRET", secrets.token_hex(32))
    try:
        for i, port in enumerate(ports):
            with open(run_dir / f"worker-{i}.log", "ab") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
                     "--server.port", str(port), "--server.headless", "true"],
                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 180
        waiting = dict(enumerate(ports))
        while waiting and not stopping:
            for i, port in list(waiting.items()):
                if processes[i].poll() is not None:
                    raise ValueError(f"worker {i} exited with {processes[i].returncode}; see {run_dir / f'worker-{i}.log'}")
                if _healthy(port):
                    del waiting[i]
            if time.monotonic() > deadline:
                raise ValueError(f"workers {sorted(waiting)} not healthy after 180 s; see their logs in {run_dir}")
            time.sleep(0.25)
        with open(run_dir / "haproxy.log", "ab") as log:
            processes.append(subprocess.Popen([haproxy, "-db", "-f", str(config)], cwd=run_dir, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        print(f"ScanAtlas on http://{args.address}:{args.port} with {args.workers} worker(s); "
              f"configuration, stats socket and logs in {run_dir}", flush=True)
        while not stopping:
            exited = [p for p in processes if p.poll() is not None]
            if exited:
                print(f"scanatlas serve-app: {exited[0].args[0]} (pid {exited[0].pid}) exited with "
                      f"{exited[0].returncode}; stopping the others", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        _stop(processes)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
