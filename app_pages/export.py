"""Export: the labeled patient table (metadata + cluster + disease + ICD-10-CM code) as CSV
and Parquet. Spreadsheet formulas in text cells are escaped; server paths are left out."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.export import export_columns, private_columns, to_csv_bytes, to_parquet_bytes
from core.labels import LABEL_COLUMNS, labeled_patients
from ui import data

st.title("Export")
dataset = data.current_dataset()
cohort = data.session_cohort(dataset)
clustering_key, result = data.current_clustering(cohort)
store = data.label_store()
mapping = store.current_mapping(dataset.name, clustering_key)
overrides = store.patient_overrides(dataset.name)

# Image-level clusterings give each patient the cluster most of their images fall in.
labels = pd.Series(result.labels, index=cohort.table["patient_id"].values)
clusters = labels[labels >= 0].groupby(level=0).agg(lambda s: s.mode().iloc[0])
table = labeled_patients(dataset.patients, clusters, mapping, overrides)
if mapping.empty:
    st.warning("No saved mapping for this clustering yet: disease and code columns are empty. Save one on **Label**.")
else:
    st.success(f"Using mapping version {int(mapping['version'].max())} ({len(mapping)} clusters).")

exported = export_columns(table)
left_out = private_columns(table)
st.caption(f"{len(exported)} patients, {exported.shape[1]} columns."
           + (f" Left out (server paths): {', '.join(left_out)}." if left_out else ""))
first = [c for c in ("patient_id", *LABEL_COLUMNS, "label", "age", "sex") if c in exported.columns]
st.dataframe(exported, hide_index=True, width="stretch", height=420,
             column_order=[*first, *[c for c in exported.columns if c not in first]],
             column_config={"label": "ground truth (label)", "disease": "disease (assigned)"})
stem = f"{dataset.name}_labeled_patients_with_icd_10"
c1, c2 = st.columns(2)
c1.download_button("Download CSV", to_csv_bytes(exported), file_name=f"{stem}.csv", mime="text/csv",
                   type="primary", key="export_csv")
c2.download_button("Download Parquet", to_parquet_bytes(exported), file_name=f"{stem}.parquet",
                   mime="application/octet-stream", key="export_parquet")
