"""Shared app state: lives in ``st.session_state`` and mirrors into the URL query parameters,
so that a copied link reopens the same view (dataset, encoder, level, clustering, projection)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.datasets import DEMO_NAME
from core.encoders import DEFAULT_ENCODER

DEFAULTS: dict[str, Any] = {
    "dataset": DEMO_NAME,
    "encoder": DEFAULT_ENCODER,
    "level": "patient",
    "algorithm": "kmeans",
    "k": 4,
    "method": "umap",
    "metadata": "",  # comma-separated metadata columns fused into the features
}


def init_state() -> None:
    """Fill ``st.session_state`` from the query parameters (first run) or the defaults."""
    for key, default in DEFAULTS.items():
        if key in st.session_state:
            continue
        raw = st.query_params.get(key)
        value = default
        if raw is not None:
            try:
                value = type(default)(raw)
            except (TypeError, ValueError):
                value = default
        st.session_state[key] = value


def remember(key: str, value: Any) -> None:
    """Store a shared choice in the session and the URL."""
    st.session_state[key] = value
    st.query_params[key] = str(value)


def sync_query_params() -> None:
    for key in DEFAULTS:
        st.query_params[key] = str(st.session_state[key])


def choice(label: str, options: list, key: str, *, where=st, help: str | None = None, format_func=str) -> Any:
    """A selectbox bound to shared state ``key``; an unknown stored value falls back to the first."""
    current = st.session_state.get(key)
    index = options.index(current) if current in options else 0
    value = where.selectbox(label, options, index=index, key=f"widget_{key}", help=help, format_func=format_func)
    if value != current:
        remember(key, value)
    return value
