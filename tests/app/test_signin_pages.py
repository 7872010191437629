"""AppTest of sign-in and roles: what a signed-out visitor, a viewer, a labeler and an admin
see and can do; single-user mode and its address guard; label saves that conflict; Undo and
no-change saves; and that a fault shows an error id, never a traceback.

``st.user`` is seeded through ``AppTest.user`` with the claims an identity provider would send
(tests/browser/test_signin.py signs in through a real OpenID provider instead).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit import config
from streamlit.testing.v1 import AppTest

from core.auth import AccessStore, User, local_user
from core.datasets import DEMO_NAME, ensure_demo_dataset
from core.labels import LabelStore

APP = Path(__file__).resolve().parents[2] / "app.py"
TIMEOUT_S = 900  # the first run makes the demo cohort on a busy 2-core machine
AUTH = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a-test-secret-that-is-long-enough-0123456789",
    "client_id": "scanatlas", "client_secret": "test",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}
ISSUER = "https://idp.example"
VIEW = {"encoder": "pixels", "k": "3"}


def claims(name: str, roles: list[str] | None = None) -> dict:
    found = {"is_logged_in": True, "iss": ISSUER, "sub": f"sub-{name}", "email": f"{name}@example.org",
             "name": name.title()}
    if roles is not None:
        found["roles"] = roles
    return found


@pytest.fixture(scope="module")
def app_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The same folder as tests/test_app.py's, so a full run makes the demo cohort once.
    path = tmp_path_factory.getbasetemp() / "scanatlas-app-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def label_db(tmp_path: Path, app_cache: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    monkeypatch.setenv("SCANATLAS_CACHE", str(app_cache))
    monkeypatch.setenv("SCANATLAS_DB_URL", url)
    monkeypatch.delenv("SCANATLAS_ALLOW_ANONYMOUS", raising=False)
    ensure_demo_dataset()  # made here, or a fresh cache's first run shows the first-start steps
    st.cache_data.clear()
    st.cache_resource.clear()
    yield url
    st.cache_data.clear()
    st.cache_resource.clear()


def open_app(user: dict | None, page: str | None = None, *, signed_in_mode: bool = True) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    if signed_in_mode:
        at.secrets["auth"] = AUTH
        at.user = user if user is not None else {"is_logged_in": False}
    at.query_params.update(VIEW)
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def sidebar_text(at: AppTest) -> str:
    return " ".join(c.value for c in at.sidebar.caption)


def test_signed_out_visitors_see_only_the_sign_in_screen(label_db: str):
    at = open_app(None)
    assert [t.value for t in at.title] == ["ScanAtlas"]
    assert at.button(key="auth_sign_in").label == "Sign in"
    assert not at.sidebar.selectbox  # no dataset, no pages
    # A deep link to a page does not get past the gate either.
    at.switch_page("app_pages/label.py").run()
    assert [t.value for t in at.title] == ["ScanAtlas"] and not at.data_editor


def test_a_user_without_a_role_is_told_to_ask_an_admin(label_db: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SCANATLAS_DEFAULT_ROLE", "none")
    at = open_app(claims("nobody"))
    assert "nobody@example.org" in at.warning[0].value and "no role" in at.warning[0].value
    assert at.button(key="auth_sign_out")


def test_viewer_browses_but_cannot_label_or_administer(label_db: str):
    at = open_app(claims("vic", ["viewer"]))
    assert "Signed in as **vic@example.org** (viewer)" in sidebar_text(at)
    assert at.title[0].value == "Data"
    for page in ("label", "admin", "audit", "export"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):  # not registered
            at.switch_page(f"app_pages/{page}.py")
    at.switch_page("app_pages/clusters.py").run()
    assert at.title[0].value == "Clusters" and not at.exception
    assert LabelStore(label_db).mapping_sets().empty


def test_labeler_saves_under_their_signed_in_identity(label_db: str):
    at = open_app(claims("ann", ["labeler"]), "label")
    assert at.title[0].value == "Label"
    assert not [t for t in at.text_input if t.key == "label_author"]  # no typed names any more
    assert at.button(key="label_undo").disabled  # nothing saved, nothing to undo
    at.button(key="label_save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Saved as version 1." in s.value for s in at.success)
    assert any("Saved mapping, version 1, by ann@example.org" in s.value for s in at.success)
    # Regression (issue 10): Undo right after the first save is disabled, not a red error.
    assert at.button(key="label_undo").disabled
    # Saving again without a change adds no version.
    at.button(key="label_save").click().run()
    assert any("No change: version 1" in s.value for s in at.success)
    with LabelStore(label_db) as store:
        (key,) = store.mapping_sets(DEMO_NAME)["clustering_key"]
        history = store.history(DEMO_NAME, key)
    assert history["version"].unique().tolist() == [1]
    assert set(history["author_id"]) == {f"{ISSUER}|sub-ann"}
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("app_pages/admin.py")


def test_a_second_labeler_gets_a_conflict_and_merges(label_db: str):
    ann = open_app(claims("ann", ["labeler"]), "label")
    ann.button(key="label_save").click().run()  # version 1
    bob = open_app(claims("bob", ["labeler"]), "label")  # opens version 1
    # Ann changes cluster 0 and saves version 2 while Bob is still on version 1.
    with LabelStore(label_db) as store:
        (key,) = store.mapping_sets(DEMO_NAME)["clustering_key"]
        current = store.current_mapping(DEMO_NAME, key)
        mapping = {int(r.cluster): (r.disease, r.icd10_code) for r in current.itertuples()}
        mapping[0] = ("Ann's disease", None)
        ann_user = User(id=f"{ISSUER}|sub-ann", email="ann@example.org", name="Ann", role="labeler", source="claim")
        assert store.save_mapping(DEMO_NAME, key, mapping, user=ann_user, base_version=1).version == 2
    bob.button(key="label_save").click().run()
    errors = [e.value for e in bob.error]
    assert any("ann@example.org saved version 2 after you opened version 1" in e for e in errors), errors
    assert not bob.exception
    assert bob.button(key="label_merge_save").label == "Save merged on top of version 2"
    merged = bob.data_editor[0].value
    assert merged.loc[merged["cluster"] == 0, "disease"].item() == "Ann's disease"  # only Ann changed it
    bob.button(key="label_merge_save").click().run()
    assert any("Saved as version 3." in s.value or "No change" in s.value for s in bob.success), [s.value for s in bob.success]
    with LabelStore(label_db) as store:
        assert store.current_mapping(DEMO_NAME, key).set_index("cluster").loc[0, "disease"] == "Ann's disease"


def test_admin_changes_a_role_and_sees_it_in_the_audit_log(label_db: str):
    at = open_app(claims("root", ["admin"]), "admin")
    assert at.title[0].value == "Admin"
    at.text_input(key="admin_email").input("Vic@Example.org")
    at.selectbox(key="admin_role").set_value("labeler")
    at.button[0].click().run()  # the form's submit button
    assert any("vic@example.org is now labeler" in s.value for s in at.success), [s.value for s in at.success]
    assert AccessStore(label_db).role_for("vic@example.org") == "labeler"
    # Vic, whose token carries no role claim, is now a labeler through the table.
    vic = open_app(claims("vic"), "label")
    assert vic.title[0].value == "Label"
    at.switch_page("app_pages/audit.py").run()
    events = at.dataframe[0].value
    assert events[["email", "action", "target", "detail"]].values.tolist() == [
        ["root@example.org", "role.set", "vic@example.org", "none -> labeler"]
    ]


def test_single_user_mode_is_admin_on_loopback(label_db: str):
    at = open_app(None, "admin", signed_in_mode=False)
    assert "Single-user mode" in sidebar_text(at)
    assert at.title[0].value == "Admin"
    at.switch_page("app_pages/label.py").run()
    at.button(key="label_save").click().run()
    assert any(f"by {local_user().label}" in s.value for s in at.success)


@pytest.mark.parametrize(("address", "allowed"), [("0.0.0.0", False), ("", False), ("10.1.2.3", False),
                                                  ("127.0.0.1", True), ("localhost", True), ("::1", True)])
def test_single_user_mode_refuses_other_addresses(label_db: str, monkeypatch: pytest.MonkeyPatch,
                                                  address: str, allowed: bool):
    previous = config.get_option("server.address")
    config.set_option("server.address", address or None)
    try:
        at = open_app(None, signed_in_mode=False)
        refused = any("without sign-in" in e.value for e in at.error)
        assert refused is not allowed
        if refused:
            assert not at.title  # nothing else is served
            monkeypatch.setenv("SCANATLAS_ALLOW_ANONYMOUS", "1")
            assert not any("without sign-in" in e.value for e in open_app(None, signed_in_mode=False).error)
            # With sign-in configured any address is fine.
            assert not any("without sign-in" in e.value for e in open_app(claims("vic", ["viewer"])).error)
    finally:
        config.set_option("server.address", previous)


def test_a_fault_shows_an_error_id_and_logs_the_traceback(capfd: pytest.CaptureFixture):
    def page():
        from ui import errors

        def broken():
            raise RuntimeError("secret internal detail")

        errors.run_safely(broken)

    at = AppTest.from_function(page, default_timeout=60).run()
    assert not at.exception
    (shown,) = [e.value for e in at.error]
    assert "error id" in shown and "secret internal detail" not in shown and "Traceback" not in shown
    error_id = shown.split("error id ")[1].split(")")[0]
    logged = capfd.readouterr().err
    assert f"error id {error_id}: secret internal detail" in logged and "Traceback" in logged
