"""Admin: who has which role. Roles from the identity provider's claim win; this table gives a
role to everyone the claim does not cover. Every change is in the audit log."""

from __future__ import annotations

import streamlit as st

from core.auth import NO_ROLE, ROLES
from ui import auth

st.title("Admin")
user = auth.require("manage_roles")
store = auth.access_store()
role_claim = auth.setting("role_claim", "roles")
st.caption(f"A role in the sign-in claim `{role_claim}` wins over this table; without either, a new user is "
           f"`{auth.setting('default_role', 'viewer')}`. You are {user.label} ({user.role}, from {user.source}).")
if not auth.auth_configured():
    st.info("Single-user mode: nobody signs in, so this table takes effect once sign-in is configured.")

st.subheader("Give a role")
with st.form("admin_role_form", clear_on_submit=True):
    c1, c2 = st.columns([3, 1])
    email = c1.text_input("E-mail", key="admin_email", placeholder="name@hospital.org")
    role = c2.selectbox("Role", [*ROLES, NO_ROLE], key="admin_role",
                        format_func=lambda r: "remove (no role)" if r == NO_ROLE else r)
    submitted = st.form_submit_button("Save role", type="primary")
if submitted:
    try:
        store.set_role(email, role, actor=user)
    except (ValueError, PermissionError) as error:
        st.error(f"Not saved: {error}")
    else:
        st.success(f"{email.strip().lower()} is now {role if role != NO_ROLE else 'without a role'}.")

st.subheader("Roles table")
roles = store.roles()
if roles.empty:
    st.info("Nobody is in the roles table yet.")
else:
    st.dataframe(roles, hide_index=True, width="stretch")
