"""Label: cluster -> disease name -> ICD-10-CM code, validated against the real code set and
saved (versioned, with who and when) in the label database. Patients can be overridden."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.labels import (
    CODE_SET_VERSION,
    majority_labels,
    search_icd10,
    suggest_default_mapping,
    validate_icd10,
)
from ui import data

st.title("Label")
st.caption(f"Map each cluster to a disease and an ICD-10-CM code ({CODE_SET_VERSION}). Every save is a new version.")
dataset = data.current_dataset()
cohort = data.session_cohort(dataset)
clustering_key, result = data.current_clustering(cohort)
store = data.label_store()
table = cohort.table
cluster_ids = sorted(int(c) for c in set(result.labels) if c >= 0)
majority = majority_labels(pd.Series(result.labels), table["label"].reset_index(drop=True))

def text(value) -> str:
    """A table cell as text: missing (None, NaN, a cleared editor cell) becomes ""."""
    return "" if value is None or pd.isna(value) else str(value).strip()


def meaning(code: str) -> str:
    """What an ICD-10-CM code stands for, so a disease name and its code can be compared."""
    if not code:
        return ""
    try:
        return validate_icd10(code).description
    except ValueError:
        return "(not an ICD-10-CM code)"


author = st.text_input("Your name (saved with each change)", value=st.session_state.get("author", ""), key="label_author")
st.session_state["author"] = author

saved = store.current_mapping(dataset.name, clustering_key)
if len(saved):
    start = saved.set_index("cluster")
    st.success(f"Saved mapping, version {int(saved['version'].max())}, by {saved['author'].iloc[0]} at {pd.Timestamp(saved['created_at'].iloc[0]):%Y-%m-%d %H:%M} UTC")
else:
    suggestion = suggest_default_mapping({c: majority.get(c) for c in cluster_ids})
    start = pd.DataFrame({"disease": {c: m.disease for c, m in suggestion.items()},
                          "icd10_code": {c: m.code for c, m in suggestion.items()}})
    st.info("Suggested from each cluster's majority ground-truth label. Edit, then save.")

# The description follows the codes being edited: a keyed editor with fixed rows keeps its
# edits while this read-only column changes.
editor_key = f"label_editor_{clustering_key}"
pending = st.session_state.get(editor_key, {}).get("edited_rows", {})
codes = [text(start["icd10_code"].get(c)) for c in cluster_ids]
live_codes = [text((pending.get(i) or pending.get(str(i)) or {}).get("icd10_code", code)) for i, code in enumerate(codes)]
editor_frame = pd.DataFrame({
    "cluster": cluster_ids,
    "size": [int((result.labels == c).sum()) for c in cluster_ids],
    "majority ground truth": [text(majority.get(c)) for c in cluster_ids],
    "disease": [text(start["disease"].get(c)) for c in cluster_ids],
    "icd10_code": codes,
    "code means": [meaning(code) for code in live_codes],
})
edited = st.data_editor(
    editor_frame, hide_index=True, width="stretch", key=editor_key,
    disabled=["cluster", "size", "majority ground truth", "code means"],
    column_config={"icd10_code": st.column_config.TextColumn("ICD-10-CM code", help="e.g. I42.0; search below")},
)
invalid = [f"cluster {r.cluster}: {r.icd10_code}" for r in edited.itertuples() if meaning(text(r.icd10_code)).startswith("(not")]
if invalid:
    st.warning(f"Not ICD-10-CM codes: {'; '.join(invalid)}. Search below for the right code, or leave it empty.")

c1, c2 = st.columns(2)
if c1.button("Save mapping", type="primary", key="label_save", disabled=not author.strip()):
    mapping = {int(r.cluster): (text(r.disease), text(r.icd10_code) or None) for r in edited.itertuples()}
    try:
        version = store.save_mapping(dataset.name, clustering_key, mapping, author=author.strip())
    except ValueError as error:
        st.error(f"Not saved: {error}")
    else:
        st.success(f"Saved as version {version}.")
        st.rerun()
if c2.button("Undo last change", key="label_undo", disabled=not (len(saved) and author.strip())):
    try:
        version = store.undo(dataset.name, clustering_key, author=author.strip())
    except ValueError as error:
        st.error(f"Cannot undo: {error}")
    else:
        st.success(f"Restored the previous mapping as version {version}.")
        st.rerun()
if not author.strip():
    st.caption("Enter your name to save.")

with st.expander("Search ICD-10-CM codes", expanded=True):
    query = st.text_input("Code or words", key="label_search", placeholder="e.g. cardiomyopathy, I42, pneumonia")
    if query.strip():
        hits = search_icd10(query, limit=25)
        st.dataframe(pd.DataFrame([{"code": h.code, "description": h.description, "billable": h.billable} for h in hits]),
                     hide_index=True, width="stretch")

with st.expander("Override single patients"):
    ids = table["patient_id"].astype(str).tolist()
    o1, o2, o3 = st.columns(3)
    patient = o1.selectbox("Patient", ids, key="label_override_patient")
    disease = o2.text_input("Disease", key="label_override_disease")
    code = o3.text_input("ICD-10-CM code", key="label_override_code")
    if st.button("Save override", key="label_override_save", disabled=not (author.strip() and disease.strip())):
        try:
            store.set_patient_override(dataset.name, patient, disease.strip(), code.strip() or None, author=author.strip())
        except ValueError as error:
            st.error(f"Not saved: {error}")
        else:
            st.success(f"Override saved for {patient}.")
    overrides = store.patient_overrides(dataset.name)
    if len(overrides):
        st.dataframe(overrides, hide_index=True, width="stretch")

with st.expander("History"):
    st.dataframe(store.history(dataset.name, clustering_key), hide_index=True, width="stretch")
