"""Sign-in and roles on the Streamlit side, over ``core.auth``.

Sign-in is Streamlit's own ``st.login()`` / ``st.user`` (OpenID Connect through Authlib),
configured by an ``[auth]`` section in ``.streamlit/secrets.toml``. Without one the app runs in
single-user mode: the local user is admin and the app only serves on a loopback address unless
``SCANATLAS_ALLOW_ANONYMOUS=1`` says otherwise.

Optional ``[scanatlas]`` settings in the same file (or environment variables):
``role_claim`` (``SCANATLAS_ROLE_CLAIM``, default ``roles``), ``default_role``
(``SCANATLAS_DEFAULT_ROLE``: ``viewer`` or ``none``), ``provider`` (a named ``[auth.NAME]``
provider to sign in with).

For pages and buttons: ``current_user()``, ``can(permission)`` (hide a button) and
``require(permission)`` (stop a page with a message). The core refuses too
(``core.auth.require``), so a hidden button is never the only guard.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import streamlit as st

from core.auth import (
    DEFAULT_ROLE_CLAIM,
    NO_ROLE,
    PERMISSIONS,
    AccessStore,
    User,
    is_loopback,
    local_user,
    user_from_claims,
)
from core.auth import can as _can

ALLOW_ANONYMOUS_ENV = "SCANATLAS_ALLOW_ANONYMOUS"
_LOG = logging.getLogger("scanatlas.auth")


def _secrets_section(name: str) -> dict[str, Any]:
    try:
        if not st.secrets.load_if_toml_exists():
            return {}
        section = st.secrets.get(name)
    except Exception:  # a malformed secrets file must not take the app down
        _LOG.exception("could not read the [%s] section of secrets.toml", name)
        return {}
    return dict(section) if section else {}


def auth_configured() -> bool:
    """Whether an ``[auth]`` section (OpenID Connect) is configured in secrets.toml."""
    return bool(_secrets_section("auth"))


def setting(name: str, default: str) -> str:
    """A ``[scanatlas]`` setting from secrets.toml, else ``SCANATLAS_<NAME>``, else ``default``."""
    value = _secrets_section("scanatlas").get(name)
    if value is None:
        value = os.environ.get(f"SCANATLAS_{name.upper()}", default)
    return str(value)


@st.cache_resource
def access_store() -> AccessStore:
    return AccessStore()


def current_user() -> User | None:
    """The signed-in user with their role, the local admin in single-user mode, or ``None``
    when sign-in is configured and nobody is signed in."""
    if not auth_configured():
        return local_user()
    if not st.user.is_logged_in:
        return None
    try:
        return user_from_claims(
            st.user.to_dict(), role_claim=setting("role_claim", DEFAULT_ROLE_CLAIM),
            roles_table=access_store(), default_role=setting("default_role", "viewer"),
        )
    except ValueError:
        _LOG.exception("sign-in rejected")
        return None


_CURRENT: Any = object()


def can(permission: str, user: User | None = _CURRENT) -> bool:
    """Whether ``user`` (by default the current user) may do ``permission`` (a key of
    ``core.auth.PERMISSIONS``): use it to hide a button the role may not use."""
    return _can(current_user() if user is _CURRENT else user, permission)


def require(permission: str) -> User:
    """The current user if they may do ``permission``; otherwise a short message and st.stop()."""
    user = current_user()
    if not _can(user, permission):
        needed, what = PERMISSIONS[permission]
        role = user.role if user else "signed out"
        st.warning(f"Your role ({role}) cannot {what}; that needs {needed}. Ask an admin if you need it.")
        st.stop()
    assert user is not None
    return user


def record(action: str, target: str, detail: str = "") -> None:
    """Add an audit row for a write done outside the label database (``dataset.ingest``,
    ``dataset.import``, ``dataset.delete``, ``run.delete``), under the current user."""
    user = current_user()
    if user is None:
        raise PermissionError("nobody is signed in")
    access_store().record(user, action, target, detail)



def unsafe_address_message() -> str | None:
    """Why this server must not serve, or ``None``: without sign-in, only a loopback address
    is allowed, unless ``SCANATLAS_ALLOW_ANONYMOUS=1``."""
    address = st.get_option("server.address")
    if auth_configured() or is_loopback(address) or os.environ.get(ALLOW_ANONYMOUS_ENV) == "1":
        return None
    where = address or "every network interface"
    return (f"ScanAtlas is listening on {where} without sign-in, so anyone who can reach it would be "
            "admin. Configure sign-in ([auth] in .streamlit/secrets.toml), serve on 127.0.0.1, or set "
            f"{ALLOW_ANONYMOUS_ENV}=1 if this network is yours alone.")


def gate() -> User:
    """Run before any page: refuse an unsafe address, show the sign-in screen to a signed-out
    visitor and a "no role" screen to a user without one; otherwise return the user."""
    refusal = unsafe_address_message()
    if refusal:
        st.error(refusal)
        st.stop()
    user = current_user()
    if user is None:
        st.title("ScanAtlas")
        st.write("Sign in with your organisation's account to continue.")
        if st.button("Sign in", type="primary", key="auth_sign_in"):
            provider = setting("provider", "")
            st.login(provider or None)
        st.stop()
    if user.role == NO_ROLE:
        st.title("ScanAtlas")
        st.warning(f"You are signed in as {user.label}, but have no role in ScanAtlas yet. "
                   "Ask an admin to give you one on the Admin page.")
        if st.button("Sign out", key="auth_sign_out"):
            st.logout()
        st.stop()
    return user


def sidebar(user: User) -> None:
    """Who is signed in (and a sign-out button), or that this is single-user mode."""
    if user.source == "single-user":
        st.caption("Single-user mode: no sign-in configured, you are admin. "
                   "Serving this computer only unless SCANATLAS_ALLOW_ANONYMOUS=1.")
        return
    st.caption(f"Signed in as **{user.label}** ({user.role})")
    if st.button("Sign out", key="auth_sign_out"):
        st.logout()
