"""The sidebar's cohort filter: conditions (column, operator, values) combined with AND, kept in
``st.session_state["where"]`` and in the URL (one ``?where=`` per condition), applied by
``ui.data.current_dataset`` before every page's projection, clustering, drift, classifiers and
fairness. Parsing, checking and applying are ``core.filters``; this module only draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.columns import column_role
from core.filters import (
    FilterError,
    filter_table,
    filterable_columns,
    parse_where,
    quote_value,
    select_dataset,
)
from core.ingest import Dataset

KEY = "where"
MAX_CHOICES = 200  # values offered in the multiselect, most frequent first


def _conditions() -> list[str]:
    if KEY not in st.session_state:  # first run of the session: the URL's filter
        st.session_state[KEY] = [t for t in st.query_params.get_all(KEY) if t.strip()]
    return list(st.session_state[KEY])


def _set(texts: list[str]) -> None:
    st.session_state[KEY] = list(texts)
    _sync(texts)


def _sync(texts: list[str]) -> None:
    if st.query_params.get_all(KEY) != list(texts):
        if texts:
            st.query_params[KEY] = list(texts)
        elif KEY in st.query_params:
            del st.query_params[KEY]


def _remove(index: int) -> None:
    texts = _conditions()
    if 0 <= index < len(texts):
        texts.pop(index)
    _set(texts)


def columns_to_filter(table: pd.DataFrame) -> list[str]:
    """Columns worth filtering on: metadata and the label (no ids, paths or free text), with a
    value in some row, and numbers or at most ``MAX_CHOICES`` distinct values (not URLs, DOIs)."""
    def useful(column: str) -> bool:
        values = table[column]
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        return values.notna().any() and (numeric or values.nunique() <= MAX_CHOICES)

    return [c for c in filterable_columns(table) if column_role(c) in ("metadata", "target") and useful(c)]


def _new_condition(table: pd.DataFrame) -> str | None:
    """The add-a-condition form; the condition's text once it is complete, else None."""
    options = columns_to_filter(table)
    column = st.selectbox("Column", options, index=None, key="filter_column", placeholder="Add a condition...")
    if column is None:
        return None
    values = table[column]
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric:
        op = st.selectbox("Operator", [">=", "<=", ">", "<", "==", "!="], key="filter_op_number")
        finite = values.to_numpy(dtype=float, na_value=np.nan)
        finite = finite[np.isfinite(finite)]
        start = float(np.median(finite)) if len(finite) else 0.0
        number = st.number_input("Value", value=start, key=f"filter_number_{column}")
        return f"{column} {op} {number:g}"
    op = st.selectbox("Operator", ["in", "not in"], key="filter_op_text")
    counts = values.dropna().astype(str).value_counts()
    chosen = st.multiselect("Values", counts.index[:MAX_CHOICES].tolist(), key=f"filter_values_{column}",
                            format_func=lambda v: f"{v} ({counts[v]})")
    if not chosen:
        return None
    return f"{column} {op} [{', '.join(quote_value(v) for v in chosen)}]"


def sidebar(whole: Dataset) -> None:
    """The filter block: current conditions (each removable), how many rows they keep, and a
    form to add one. A condition that is invalid for this dataset (unknown column, wrong type,
    no rows left) is refused with the reason and changes nothing; a filter from the URL that
    does not fit the dataset is shown with its error and not applied."""
    texts = _conditions()
    _sync(texts)  # a page switch drops the query string; put the filter back
    table = filter_table(whole)
    error = None
    try:
        selected = select_dataset(whole, parse_where(texts))
    except FilterError as problem:
        selected, error = whole, str(problem)
    title = "Cohort filter" + (f" ({len(texts)} condition{'s' if len(texts) > 1 else ''})" if texts else "")
    with st.expander(title, expanded=bool(texts) or error is not None):
        if error is not None:
            st.error(f"Filter not applied: {error}")
        for i, text in enumerate(texts):
            left, right = st.columns([5, 1])
            left.markdown(f"`{text}`" + (" and" if i < len(texts) - 1 else ""))
            right.button("✕", key=f"filter_remove_{i}", on_click=_remove, args=(i,), help=f"Remove '{text}'")
        if texts and error is None:
            st.caption(f"{len(selected.images)} of {len(whole.images)} images, "
                       f"{len(selected.patients)} of {len(whole.patients)} patients. Every page uses these rows.")
        elif not texts:
            st.caption("Every row. Restrict the study, e.g. to PA views or adults.")
        text = _new_condition(table)
        if st.button("Add condition", key="filter_add", disabled=text is None):
            try:
                select_dataset(whole, parse_where([*texts, text]))
            except FilterError as problem:
                st.error(f"Not added: {problem}")
            else:
                _set([*texts, text])
                st.rerun()
        if texts and st.button("Clear filter", key="filter_clear"):
            _set([])
            st.rerun()
