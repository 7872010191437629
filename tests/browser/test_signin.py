"""Sign-in through a real OpenID Connect provider, in a real browser.

A local provider (PyPI ``oidc-provider-mock``, on a free loopback port) issues real ID tokens;
a real ``streamlit run app.py`` is configured with an ``[auth]`` section pointing at it; headless
Chromium signs in as a viewer, a labeler and an admin (roles from the ``roles`` claim), checks
what each sees and can do, and that signing out ends the session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import expect

from core.auth import AccessStore
from core.datasets import DEMO_NAME
from core.labels import LabelStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
START_S = 120  # the server itself; a busy 2-core box
FIRST_PAGE_MS = 600_000  # the first page of a fresh cache makes the demo cohort
STEP_MS = 180_000
USERS = {
    "vic@example.org": {"name": "Vic Viewer", "roles": ["viewer"]},
    "ann@example.org": {"name": "Ann Labeler", "roles": ["labeler"]},
    "root@example.org": {"name": "Root Admin", "roles": ["admin"]},
}


@pytest.fixture(scope="module")
def provider(free_port) -> Iterator[str]:
    """The OpenID provider, with one user per role (sub = e-mail)."""
    oidc_provider_mock = pytest.importorskip("oidc_provider_mock", reason="pip install oidc-provider-mock (requirements-dev.txt)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # plain http on loopback, for the test only
        with oidc_provider_mock.run_server_in_thread(port=free_port()) as server:
            base = f"http://127.0.0.1:{server.server_port}"
            for email, claims in USERS.items():
                response = httpx.put(f"{base}/users/{quote(email)}", json={"email": email, **claims}, timeout=30)
                assert response.status_code == 204, response.text
            yield base


@pytest.fixture(scope="module")
def label_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('signin-labels') / 'labels.db'}"


@pytest.fixture(scope="module")
def server(start_server, free_port, provider: str, label_db: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """``streamlit run app.py`` with sign-in configured against ``provider`` (started and
    stopped by tests/browser/conftest.py's ``start_server``)."""
    cache = tmp_path_factory.getbasetemp() / "scanatlas-app-cache"  # shared with the other app tests
    folder = tmp_path_factory.mktemp("signin-server")
    secrets = folder / "secrets.toml"
    port = free_port()  # chosen first: the redirect URI in the secrets names it
    base = f"http://127.0.0.1:{port}"
    secrets.write_text(
        "[auth]\n"
        f'redirect_uri = "{base}/oauth2callback"\n'
        'cookie_secret = "test-cookie-secret-0123456789abcdef"\n'
        'client_id = "scanatlas"\nclient_secret = "test-secret"\n'
        f'server_metadata_url = "{provider}/.well-known/openid-configuration"\n'
        "\n[scanatlas]\nrole_claim = \"roles\"\ndefault_role = \"viewer\"\n"
    )
    started = start_server(cache=cache, db_url=label_db, port=port, health_timeout_s=START_S,
                           env={"AUTHLIB_INSECURE_TRANSPORT": "1"}, unset=["SCANATLAS_ALLOW_ANONYMOUS"],
                           extra_args=["--secrets.files", str(secrets)], log_path=folder / "streamlit.log")
    return started.base


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
