"""core.auth: roles from claims or the roles table, permission checks, role changes and the
audit log (on SQLite and a real PostgreSQL)."""

from __future__ import annotations

import pytest

from core.auth import (
    PERMISSIONS,
    ROLES,
    AccessStore,
    User,
    can,
    local_user,
    require,
    role_from_claims,
    user_from_claims,
)

ADMIN = User(id="iss|root", email="root@example.org", name="Root", role="admin", source="claim")
LABELER = User(id="iss|ann", email="ann@example.org", name="Ann", role="labeler", source="claim")
VIEWER = User(id="iss|vic", email="vic@example.org", name="Vic", role="viewer", source="claim")


@pytest.fixture
def access(label_db_url: str):
    with AccessStore(label_db_url) as store:
        yield store


def test_each_role_has_everything_the_one_below_has():
    allowed = {role: {p for p in PERMISSIONS if can(User("x", "", "", role, "t"), p)} for role in ROLES}
    assert allowed["viewer"] == {"browse"}
    assert allowed["labeler"] == {"browse", "label", "export_patients", "finetune"}
    assert allowed["admin"] == set(PERMISSIONS)
    assert not any(can(u, "browse") for u in (None, User("x", "", "", "none", "default")))


def test_require_names_the_user_role_and_the_role_needed():
    assert require(LABELER, "label") is LABELER
    with pytest.raises(PermissionError, match="not allowed to change who has which role: ann@example.org has role 'labeler'; this needs role 'admin'"):
        require(LABELER, "manage_roles")
    with pytest.raises(PermissionError, match="nobody is signed in"):
        require(None, "browse")
    with pytest.raises(ValueError, match="permission='lable' is unknown"):
        can(ADMIN, "lable")


@pytest.mark.parametrize(
    ("claims", "claim", "role"),
    [
        ({"roles": ["viewer", "labeler"]}, "roles", "labeler"),
        ({"roles": "admin"}, "roles", "admin"),
        ({"roles": "viewer, Labeler"}, "roles", "labeler"),
        ({"roles": ["ScanAtlas.Admin"]}, "roles", "admin"),  # an Entra ID app role
        ({"groups": ["scanatlas-labeler", "staff"]}, "groups", "labeler"),
        ({"realm_access": {"roles": ["offline_access", "viewer"]}}, "realm_access.roles", "viewer"),  # Keycloak
        ({"roles": ["staff", "doctor"]}, "roles", None),
        ({"roles": 3}, "roles", None),
        ({}, "roles", None),
        ({"roles": ["admin"]}, "groups", None),
    ],
)
def test_role_from_claims(claims: dict, claim: str, role: str | None):
    assert role_from_claims(claims, claim) == role


def test_user_from_claims_prefers_the_claim_then_the_table_then_the_default(access: AccessStore):
    access.set_role("Bea@Example.org", "labeler", actor=ADMIN)
    claims = {"iss": "https://idp.example", "sub": "u-1", "email": "BEA@example.org", "name": "Bea"}
    from_table = user_from_claims(claims, roles_table=access)
    assert from_table == User(id="https://idp.example|u-1", email="bea@example.org", name="Bea",
                              role="labeler", source="table")
    from_claim = user_from_claims({**claims, "roles": ["admin"]}, roles_table=access)
    assert (from_claim.role, from_claim.source) == ("admin", "claim")
    # An address the provider marks unverified could be anyone's: the table is not consulted.
    unverified = user_from_claims({**claims, "email_verified": False}, roles_table=access)
    assert (unverified.role, unverified.source) == ("viewer", "default")
    stranger = {"iss": "https://idp.example", "sub": "u-2", "email": "new@example.org"}
    assert user_from_claims(stranger, roles_table=access).role == "viewer"
    assert user_from_claims(stranger, roles_table=access, default_role="none").role == "none"
    assert user_from_claims({**stranger, "grp": "admin"}, role_claim="grp").role == "admin"


def test_user_from_claims_refuses_tokens_without_a_subject():
    with pytest.raises(ValueError, match="no 'sub' claim"):
        user_from_claims({"email": "a@example.org"})
    with pytest.raises(ValueError, match="default_role='boss'"):
        user_from_claims({"sub": "x"}, default_role="boss")


def test_local_user_is_admin():
    assert local_user().role == "admin" and local_user().id.startswith("local:")
    assert local_user(source="cli").id.startswith("cli:")


def test_only_admins_change_roles_and_every_change_is_audited(access: AccessStore):
    with pytest.raises(PermissionError):
        access.set_role("x@example.org", "admin", actor=LABELER)
    access.set_role("ann@example.org", "labeler", actor=ADMIN)
    access.set_role("ann@example.org", "admin", actor=ADMIN)
    access.set_role("vic@example.org", "viewer", actor=ADMIN)
    access.set_role("vic@example.org", "none", actor=ADMIN)  # removes the row
    roles = access.roles()
    assert roles[["email", "role", "updated_by"]].values.tolist() == [["ann@example.org", "admin", "root@example.org"]]
    assert access.role_for("ANN@example.org ") == "admin" and access.role_for("vic@example.org") is None
    events = access.events(action="role.")
    assert events[["email", "action", "target", "detail"]].values.tolist()[::-1] == [
        ["root@example.org", "role.set", "ann@example.org", "none -> labeler"],
        ["root@example.org", "role.set", "ann@example.org", "labeler -> admin"],
        ["root@example.org", "role.set", "vic@example.org", "none -> viewer"],
        ["root@example.org", "role.set", "vic@example.org", "viewer -> none"],
    ]
    assert set(events["user_id"]) == {"iss|root"}


@pytest.mark.parametrize(
    ("email", "role", "match"),
    [("not-an-email", "viewer", "is not an e-mail"), ("a@example.org", "boss", "role='boss'"),
     ("root@example.org", "viewer", "your own admin role")],
)
def test_set_role_bad_inputs(access: AccessStore, email: str, role: str, match: str):
    with pytest.raises(ValueError, match=match):
        access.set_role(email, role, actor=ADMIN)
    assert access.roles().empty and access.events().empty


def test_record_and_filter_events(access: AccessStore):
    access.record(ADMIN, "dataset.ingest", "covid", "633 images")
    access.record(LABELER, "dataset.delete", "old", "")
    assert access.events(user="ann@example.org")["action"].tolist() == ["dataset.delete"]
    assert access.events(action="dataset.")["action"].tolist() == ["dataset.delete", "dataset.ingest"]
    assert len(access.events(limit=1)) == 1
    with pytest.raises(ValueError, match="limit=0"):
        access.events(limit=0)
    with pytest.raises(ValueError, match="action=''"):
        access.record(ADMIN, "", "x")


def test_only_loopback_addresses_count_as_this_computer_only():
    from core.auth import is_loopback

    assert all(is_loopback(a) for a in ["localhost", "127.0.0.1", "127.9.9.9", "::1", "[::1]", " LOCALHOST "])
    assert not any(is_loopback(a) for a in [None, "", "0.0.0.0", "::", "10.0.0.5", "example.org", "127.0.0.1.evil"])
