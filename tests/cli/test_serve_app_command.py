"""``scanatlas serve-app``: the HAProxy configuration it writes, the address rule it shares with
the app, and (slow) two real Streamlit workers behind a real HAProxy: new browsers are spread
over the workers, a browser's cookie keeps its websocket on its worker, and stopping the command
stops every process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cli.commands import serve_app
from cli.main import main

REPO = Path(__file__).resolve().parents[2]
needs_haproxy = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")


@needs_haproxy
def test_the_configuration_is_sticky_by_cookie_keeps_websockets_open_and_haproxy_accepts_it(tmp_path):
    text = serve_app.haproxy_config("127.0.0.1", 8501, [41001, 41002], tmp_path / "haproxy.sock")
    assert "cookie scanatlas_worker insert indirect nocache httponly" in text
    assert "server w0 127.0.0.1:41001 cookie w0 check" in text
    assert "server w1 127.0.0.1:41002 cookie w1 check" in text
    assert "balance leastconn" in text and "timeout tunnel 12h" in text
    assert "bind 127.0.0.1:8501" in text
    assert "bind [::1]:8501" in serve_app.haproxy_config("::1", 8501, [41001], tmp_path / "s")
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_a_public_address_without_sign_in_is_refused_before_anything_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(serve_app.ALLOW_ANONYMOUS_ENV, raising=False)
    monkeypatch.setattr(serve_app, "auth_configured", lambda: False)
    monkeypatch.setattr(serve_app.shutil, "which", lambda name: "/usr/sbin/haproxy")
    run_dir = tmp_path / "run"
    assert main(["serve-app", "--address", "0.0.0.0", "--run-dir", str(run_dir)]) == 2
    assert "without sign-in" in capsys.readouterr().err
    assert not run_dir.exists()
    # The same rule as the app: loopback, sign-in or the explicit opt-out.
    assert serve_app.unsafe_address_message("127.0.0.1", signed_in=False) is None
    assert serve_app.unsafe_address_message("localhost", signed_in=False) is None
    assert serve_app.unsafe_address_message("0.0.0.0", signed_in=True) is None
    monkeypatch.setenv(serve_app.ALLOW_ANONYMOUS_ENV, "1")
    assert serve_app.unsafe_address_message("0.0.0.0", signed_in=False) is None


def test_sign_in_is_configured_only_by_a_non_empty_auth_section(tmp_path):
    secrets = tmp_path / "secrets.toml"
    assert not serve_app.auth_configured(secrets)  # no file
    secrets.write_text('[scanatlas]\ndefault_role = "viewer"\n')
    assert not serve_app.auth_configured(secrets)
    secrets.write_text("[auth\nbroken")
    assert not serve_app.auth_configured(secrets)
    secrets.write_text('[auth]\nclient_id = "scanatlas"\n')
    assert serve_app.auth_configured(secrets)


def test_workers_out_of_range_and_a_missing_haproxy_are_clear_errors(capsys):
    assert main(["serve-app", "--workers", "0"]) == 2
    assert "between 1 and" in capsys.readouterr().err
    assert main(["serve-app", "--haproxy", "/nonexistent/haproxy"]) == 2
    assert "apt-get install haproxy" in capsys.readouterr().err


def _stats(sock: Path) -> dict[str, int]:
    """Open connections (``scur``) per worker, from HAProxy's stats socket."""
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(sock))
        client.sendall(b"show stat\n")
        raw = b""
        while chunk := client.recv(65536):
            raw += chunk
    lines = raw.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    return {r["svname"]: int(r["scur"] or 0) for r in rows if r["svname"].startswith("w")}


async def _session_on(port: int, cookie: str, hold: asyncio.Event, opened: asyncio.Event) -> str:
    """A Streamlit session through the proxy with ``cookie``: asks for a run and returns the type
    of the first message the worker sends, staying connected until ``hold`` is set."""
    import websockets
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    async with websockets.connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"],
                                  additional_headers={"Cookie": cookie}, max_size=None) as ws:
        message = BackMsg()
        message.rerun_script.query_string = ""
        await ws.send(message.SerializeToString())
        first = ForwardMsg()
        first.ParseFromString(await asyncio.wait_for(ws.recv(), 120))
        opened.set()
        await hold.wait()
        return first.WhichOneof("type")


@pytest.mark.slow
@pytest.mark.timeout(600)
@needs_haproxy
def test_two_workers_behind_haproxy_spread_new_browsers_and_keep_a_session_on_its_worker(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run_dir = tmp_path / "run"
    env = {**os.environ, "SCANATLAS_CACHE": str(tmp_path / "cache"),
           "SCANATLAS_DB_URL": f"sqlite:///{tmp_path / 'labels.db'}"}
    env.pop(serve_app.ALLOW_ANONYMOUS_ENV, None)
    command = subprocess.Popen([sys.executable, "-m", "cli.main", "serve-app", "--workers", "2", "--port", str(port),
                                "--run-dir", str(run_dir)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = command.stdout.readline()  # printed once every worker is healthy and HAProxy started
        assert line.startswith(f"ScanAtlas on http://127.0.0.1:{port} with 2 worker(s)"), line
        config = (run_dir / "haproxy.cfg").read_text()
        worker_ports = [int(w.split()[2].split(":")[1]) for w in config.splitlines() if w.strip().startswith("server w")]
        deadline = time.monotonic() + 30
        while not (run_dir / "haproxy.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)

        cookies = []
        for _ in range(4):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
                assert response.status == 200 and b"<html" in response.read().lower()
                cookies.append(response.headers["Set-Cookie"].split(";")[0])
        assert set(cookies) == {"scanatlas_worker=w0", "scanatlas_worker=w1"}  # new browsers spread
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Cookie": "scanatlas_worker=w1"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.headers["Set-Cookie"] is None  # a known browser keeps its worker

        async def hold_two_sessions_on_w1() -> tuple[list[str], dict[str, int]]:
            hold = asyncio.Event()
            opened = [asyncio.Event(), asyncio.Event()]
            tasks = [asyncio.create_task(_session_on(port, "scanatlas_worker=w1", hold, event)) for event in opened]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in opened)), 120)
            stats = _stats(run_dir / "haproxy.sock")
            hold.set()
            return list(await asyncio.gather(*tasks)), stats

        first_messages, open_connections = asyncio.run(hold_two_sessions_on_w1())
        assert first_messages == ["new_session", "new_session"]  # Streamlit sessions through the proxy
        assert open_connections == {"w0": 0, "w1": 2}
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGTERM)
        returncode = command.wait(timeout=60)
    assert returncode == 0
    for worker_port in worker_ports:  # every worker stopped with the command
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{worker_port}/_stcore/health", timeout=2)
