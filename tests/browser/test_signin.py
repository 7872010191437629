"""Sign-in through a real OpenID Connect provider, in a real browser.

A local provider (PyPI ``oidc-provider-mock``, on a free loopback port) issues real ID tokens;
a real ``streamlit run app.py`` is configured with an ``[auth]`` section pointing at it; headless
Chromium signs in as a viewer, a labeler and an admin (roles from the ``roles`` claim), checks
what each sees and can do, and that signing out ends the session.
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
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from core.auth import AccessStore
from core.datasets import DEMO_NAME
from core.labels import LabelStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
START_S = 120  # the server itself; a busy 2-core box
FIRST_PAGE_MS = 600_000  # the first page of a fresh cache makes the demo cohort
STEP_MS = 180_000
USERS = {
    "vic@example.org": {"name": "Vic Viewer", "roles": ["viewer"]},
    "ann@example.org": {"name": "Ann Labeler", "roles": ["labeler"]},
    "root@example.org": {"name": "Root Admin", "roles": ["admin"]},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """The OpenID provider, with one user per role (sub = e-mail)."""
    oidc_provider_mock = pytest.importorskip("oidc_provider_mock", reason="pip install oidc-provider-mock (requirements-dev.txt)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback, for the test only
        with oidc_provider_mock.run_server_in_thread(port=_free_port()) as server:
            base = f"http://127.0.0.1:{server.server_port}"
            for email, claims in USERS.items():
                response = httpx.put(f"{base}/users/{quote(email)}", json={"email": email, **claims}, timeout=30)
                assert response.status_code == 204, response.text
            yield base


@pytest.fixture(scope="module")
def label_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('signin-labels') / 'labels.db'}"


@pytest.fixture(scope="module")
def server(chromium_path: Path, provider: str, label_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``streamlit run app.py`` with sign-in configured against ``provider``."""
    cache = tmp_path_factory.getbasetemp() / "scanatlas-app-cache"  # shared with the other app tests
    cache.mkdir(exist_ok=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("signin-server")
    secrets = folder / "secrets.toml"
    secrets.write_text(
        "[auth]\n"
        f'redirect_uri = "{base}/oauth2callback"\n'
        'cookie_secret = "test-cookie-secret-0123456789abcdef"\n'
        'client_id = "scanatlas"\nclient_secret = "test-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
        "\n[scanatlas]\nrole_claim = \"roles\"\ndefault_role = \"viewer\"\n"
    )
    log_path = folder / "streamlit.log"
    env = {**os.environ, "SCANATLAS_CACHE": str(cache), "SCANATLAS_DB_URL": label_db,
           "AUTHLIB_INSECURE_TRANSPORT": "1"}
    env.pop("SCANATLAS_ALLOW_ANONYMOUS", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
             "--secrets.files", str(secrets)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit not healthy after {START_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        print(log_path.read_text()[-2000:])


@pytest.fixture(scope="module")
def browser(chromium_path: Path):
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@contextlib.contextmanager
def signed_in(browser, server: str, email: str):
    """A fresh browser (own cookies) signed in as ``email`` through the provider's form."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(STEP_MS)
    try:
        page.goto(server + "/")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_placeholder("sub").fill(email)  # the provider's own login form
        page.get_by_role("button", name="Authorize").click()
        page.get_by_text(f"Signed in as {email}").wait_for(timeout=FIRST_PAGE_MS)
        wait_idle(page)
        yield page
    finally:
        context.close()


def wait_idle(page) -> None:
    page.locator(IDLE).wait_for(timeout=STEP_MS)


def nav_links(page) -> set[str]:
    nav = page.get_by_test_id("stSidebarNav")
    nav.wait_for()
    # Each link reads "<material icon name>\n\n<title>".
    return {text.strip().splitlines()[-1] for text in nav.get_by_role("link").all_inner_texts()}


def assert_no_traceback(page) -> None:
    assert page.get_by_test_id("stException").count() == 0


def test_viewer_labeler_admin_and_sign_out(browser, server: str, label_db: str):
    browse = {"Data", "Embeddings", "Map", "Clusters", "Agreement", "Classifiers", "Fairness", "Quality"}

    with signed_in(browser, server, "vic@example.org") as page:
        expect(page.get_by_text("Signed in as vic@example.org (viewer)")).to_be_visible()
        assert nav_links(page) == browse  # no Label, Export, Admin or Audit
        # A deep link to a page the role may not use does not open it.
        page.goto(server + "/label?encoder=pixels")
        page.get_by_text("Signed in as vic@example.org").wait_for()
        wait_idle(page)
        assert page.get_by_role("button", name="Save mapping").count() == 0
        assert page.get_by_role("heading", name="Label", exact=True).count() == 0
        assert_no_traceback(page)

    with signed_in(browser, server, "ann@example.org") as page:
        assert nav_links(page) == browse | {"Label", "Export"}
        page.goto(server + "/label?encoder=pixels&k=3")
        page.get_by_role("heading", name="Label", exact=True).wait_for(timeout=FIRST_PAGE_MS)
        save = page.get_by_role("button", name="Save mapping")
        save.wait_for(timeout=FIRST_PAGE_MS)
        wait_idle(page)
        expect(page.get_by_role("button", name="Undo last change")).to_be_disabled()
        save.click()
        page.get_by_text("Saved as version 1.").wait_for()
        page.get_by_text("Saved mapping, version 1, by ann@example.org").wait_for()
        wait_idle(page)
        expect(page.get_by_role("button", name="Undo last change")).to_be_disabled()  # nothing before version 1
        assert_no_traceback(page)

    with LabelStore(label_db) as store:
        (key,) = store.mapping_sets(DEMO_NAME)["clustering_key"]
        history = store.history(DEMO_NAME, key)
    assert set(history["author"]) == {"ann@example.org"}
    assert len(set(history["author_id"])) == 1 and history["author_id"].iloc[0].endswith("|ann@example.org")

    with signed_in(browser, server, "root@example.org") as page:
        assert nav_links(page) == browse | {"Label", "Export", "Admin", "Audit"}
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Admin").click()
        page.get_by_role("heading", name="Admin", exact=True).wait_for()
        wait_idle(page)
        page.get_by_label("E-mail").fill("Vic@Example.org")
        page.get_by_role("button", name="Save role").click()
        page.get_by_text("vic@example.org is now viewer").wait_for()
        wait_idle(page)
        page.get_by_test_id("stSidebarNav").get_by_role("link", name="Audit").click()
        page.get_by_role("heading", name="Audit", exact=True).wait_for()
        wait_idle(page)
        grid = page.get_by_test_id("stDataFrame")
        grid.wait_for()
        assert_no_traceback(page)

        # Sign out: the session ends, and a reload does not bring it back.
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("button", name="End session").click()  # the provider's own logout form
        page.get_by_role("button", name="Sign in").wait_for()
        page.goto(server + "/admin")
        page.get_by_role("button", name="Sign in").wait_for()
        assert page.get_by_text("Signed in as").count() == 0
        assert page.get_by_role("heading", name="Admin", exact=True).count() == 0

    with AccessStore(label_db) as access:
        events = access.events()
    assert events[["email", "action", "target"]].values.tolist() == [
        ["root@example.org", "role.set", "vic@example.org"],
        ["ann@example.org", "mapping.save", f"{DEMO_NAME}/{key}"],
    ]
