"""ScanAtlas: the router. Shared choices (dataset, encoder) live in the sidebar so they survive
page changes; each page is a short script over ``core``."""

from __future__ import annotations

import streamlit as st

from core.encoders import ENCODERS
from ui import data, state

# An emoji favicon is inlined; a :material: one is fetched from fonts.gstatic.com, which
# offline hospital networks cannot reach.
st.set_page_config(page_title="ScanAtlas", page_icon="🩻", layout="wide")
state.init_state()

pages = [
    st.Page("app_pages/data.py", title="Data", icon=":material/folder_open:", default=True),
    st.Page("app_pages/embeddings.py", title="Embeddings", icon=":material/memory:"),
    st.Page("app_pages/map.py", title="Map", icon=":material/scatter_plot:"),
    st.Page("app_pages/clusters.py", title="Clusters", icon=":material/bubble_chart:"),
    st.Page("app_pages/label.py", title="Label", icon=":material/label:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
    st.Page("app_pages/drift.py", title="Drift", icon=":material/compare_arrows:"),
    st.Page("app_pages/classifiers.py", title="Classifiers", icon=":material/model_training:"),
    st.Page("app_pages/fairness.py", title="Fairness", icon=":material/balance:"),
]
navigation = st.navigation(pages)

with st.sidebar:
    st.markdown("### ScanAtlas")
    names = data.dataset_names()
    state.choice("Dataset", names, "dataset", help="Ingested datasets; add one on the Data page.")
    image_encoders = [name for name, spec in ENCODERS.items() if spec.kind == "image"]
    state.choice("Image encoder", image_encoders, "encoder", help="Pretrained network that turns each scan into a vector.")
    state.choice(
        "Rows", ["patient", "image"], "level",
        format_func=lambda v: {"patient": "Patients (slices averaged)", "image": "Images"}[v],
    )

navigation.run()
state.sync_query_params()
