"""ScanAtlas: the router. Shared choices (dataset, encoder) live in the sidebar so they survive
page changes; each page is a short script over ``core``."""

from __future__ import annotations

import streamlit as st

from core.finetune.encoder import register_finetuned_encoders
from ui import auth, data, errors, filters, server, state

# An emoji favicon is inlined; a :material: one is fetched from fonts.gstatic.com, which
# offline hospital networks cannot reach.
st.set_page_config(page_title="ScanAtlas", page_icon="🩻", layout="wide")
state.init_state()

# --- Sign-in and roles (issue 9): the gate, the permission each page needs, the sidebar block
# and the error boundary around the page. ---
user = auth.gate()  # refuses an unsafe address; sign-in screen when signed out
pages = [
    (st.Page("app_pages/data.py", title="Data", icon=":material/folder_open:", default=True), "browse"),
    (st.Page("app_pages/embeddings.py", title="Embeddings", icon=":material/memory:"), "browse"),
    (st.Page("app_pages/map.py", title="Map", icon=":material/scatter_plot:"), "browse"),
    (st.Page("app_pages/clusters.py", title="Clusters", icon=":material/bubble_chart:"), "browse"),
    (st.Page("app_pages/label.py", title="Label", icon=":material/label:"), "label"),
    (st.Page("app_pages/export.py", title="Export", icon=":material/download:"), "export_patients"),
    (st.Page("app_pages/drift.py", title="Agreement", icon=":material/compare_arrows:", url_path="drift"), "browse"),
    (st.Page("app_pages/classifiers.py", title="Classifiers", icon=":material/model_training:"), "browse"),
    (st.Page("app_pages/fairness.py", title="Fairness", icon=":material/balance:"), "browse"),
    (st.Page("app_pages/quality.py", title="Quality", icon=":material/rule:"), "browse"),
    (st.Page("app_pages/admin.py", title="Admin", icon=":material/admin_panel_settings:"), "manage_roles"),
    (st.Page("app_pages/audit.py", title="Audit", icon=":material/history:"), "audit"),
]
# Pages a role may not use are not in the navigation at all (a deep link to one opens the
# default page); each page and the core check again.
navigation = st.navigation([page for page, permission in pages if auth.can(permission, user)])
# --- end of sign-in and roles ---

# A fresh cache: the first-start steps and progress in the main area until the demo cohort is made.
data.demo_ready()

with st.sidebar:
    st.markdown("### ScanAtlas")
    names = data.dataset_names()
    state.choice("Dataset", names, "dataset", help="Ingested datasets; add one on the Data page.")
    register_finetuned_encoders()  # encoders made by fine-tuning runs, also ones from the CLI
    state.choice("Image encoder", data.encoder_options(), "encoder",
                 help="Pretrained network that turns each scan into a vector (an imported dataset: its own vectors).")
    state.choice(
        "Rows", ["patient", "image"], "level",
        format_func=lambda v: {"patient": "Patients (slices averaged)", "image": "Images"}[v],
    )
    filters.sidebar(data.whole_dataset())  # cohort filter (core.filters), kept in the URL

with st.sidebar:
    auth.sidebar(user)  # sign-in and roles: who is signed in, sign-out

errors.run_safely(navigation.run)  # a fault shows a short message and an id, never a traceback
state.sync_query_params()
server.freeze_long_lived_objects()  # torch & co. out of the full GC's walk (ui/server.py)
