"""Audit: every write (mappings, overrides, role changes, and ingest, imports and deletions
where they are recorded) with the signed-in user's stable id and e-mail, newest first."""

from __future__ import annotations

import streamlit as st

from ui import auth

st.title("Audit")
auth.require("audit")
store = auth.access_store()
c1, c2, c3 = st.columns(3)
action = c1.selectbox("Action", ["all", "mapping.", "override.", "role.", "dataset."], key="audit_action",
                      format_func=lambda a: {"all": "everything", "mapping.": "mappings", "override.": "overrides",
                                             "role.": "role changes", "dataset.": "datasets"}.get(a, a))
who = c2.text_input("User (e-mail or id)", key="audit_user")
limit = c3.number_input("Rows", min_value=10, max_value=100_000, value=500, step=100, key="audit_limit")
events = store.events(limit=int(limit), action=None if action == "all" else action, user=who.strip() or None)
st.caption(f"{len(events)} events, newest first. Times are UTC.")
st.dataframe(events, hide_index=True, width="stretch")
