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
    """A selectbox bound to shared state ``key``; an unknown stored value falls back to the first.

    The shared value drives the widget: a page that switches it (``remember`` then ``st.rerun()``,
    as the Data page does after an ingest) moves the selectbox too, instead of the widget's old
    value overwriting the new choice. A user's pick reaches the shared value in ``on_change``,
    before the script runs, so it is not overwritten either.
    """
    widget_key = f"widget_{key}"
    current = st.session_state.get(key)
    if current not in options:
        current = options[0]
    st.session_state[widget_key] = current  # set before the widget exists: allowed, and it wins
    value = where.selectbox(label, options, key=widget_key, help=help, format_func=format_func,
                            on_change=_adopt_widget_value, args=(key, widget_key))
    if value != st.session_state.get(key):
        remember(key, value)
    return value


def _adopt_widget_value(key: str, widget_key: str) -> None:
    remember(key, st.session_state[widget_key])
