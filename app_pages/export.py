"""Export: the labeled patient table (metadata + cluster + disease + ICD-10-CM code) as CSV
and Parquet. De-identified by default; spreadsheet formulas are escaped; server paths are left out."""

from __future__ import annotations

import streamlit as st

from core.exclusions import excluded_per_patient
from core.export import (
    EXPORT_FIRST_COLUMNS,
    export_file_name,
    labeled_export,
    mappings_elsewhere,
    to_csv_bytes,
    to_parquet_bytes,
)
from ui import auth, data, widgets

USER = auth.require("export_patients")
USER_ID, IS_ADMIN = USER.id, USER.is_admin

widgets.page_header("Export")
dataset = data.current_dataset()
cohort = data.session_cohort(dataset)
clustering_key, result = data.current_clustering(cohort)
store = data.label_store()
mapping = store.current_mapping(dataset.name, clustering_key)
overrides = store.patient_overrides(dataset.name)
if mapping.empty:
    elsewhere = mappings_elsewhere(store.mapping_sets(dataset.name), clustering_key, cohort_key=cohort.key)
    if elsewhere:
        st.warning("No saved mapping for this clustering, so disease and code columns are empty. "
                   f"A mapping is saved for {'; '.join(elsewhere)}: switch to it on **Clusters** "
                   "(algorithm and k; encoder and rows in the sidebar), or save one for this clustering on **Label**.")
    else:
        st.warning("No saved mapping for this clustering yet: disease and code columns are empty. Save one on **Label**.")
else:
    st.success(f"Using mapping version {int(mapping['version'].max())} ({len(mapping)} clusters).")

left, right = st.columns(2)
deidentify = left.toggle("De-identify (recommended)", value=True, key="export_deidentify", disabled=not IS_ADMIN,
                         help="Patient ids and UIDs become salted pseudonyms, dates become years, file names and "
                              "identifying columns are dropped. Only an admin can switch it off.")
keep_free_text = right.checkbox("Keep free-text notes", value=False, key="export_free_text",
                                disabled=not (IS_ADMIN and deidentify),
                                help="Notes often name people and places; only an admin can keep them.")
try:
    export = labeled_export(dataset.patients, cohort.table["patient_id"].values, result.labels, mapping, overrides,
                            deidentify=deidentify, keep_free_text=keep_free_text and deidentify, is_admin=IS_ADMIN,
                            excluded_images=excluded_per_patient(data.whole_dataset().images, data.decision_store().excluded_ids(dataset.name)))
except (ValueError, PermissionError, OSError) as error:
    st.error(f"Cannot build the export: {error}.")
    st.stop()

table = export.table
st.caption(f"{len(table)} patients, {table.shape[1]} columns, "
           + ("de-identified." if export.deidentified else "**identifiable** (de-identification is off).")
           + (f" Left out: {', '.join(f'{c} ({why})' for c, why in export.left_out.items())}." if export.left_out else ""))
if export.changed:
    st.caption("Changed: " + ", ".join(f"{c} ({what})" for c, what in export.changed.items()) + ".")
first = [c for c in (*EXPORT_FIRST_COLUMNS, "label_source", "label", "age", "sex") if c in table.columns]
st.dataframe(table, hide_index=True, width="stretch", height=420,
             column_order=[*first, *[c for c in table.columns if c not in first]],
             column_config={"label": "ground truth (label)", "disease": "disease (assigned)"})
c1, c2 = st.columns(2)
# With a byte-order mark, so that Excel reads the file as UTF-8 (a degree sign stays one).
c1.download_button("Download CSV", to_csv_bytes(table, bom=True), file_name=export_file_name(dataset.name, "csv"),
                   mime="text/csv", type="primary", key="export_csv")
c2.download_button("Download Parquet", to_parquet_bytes(table), file_name=export_file_name(dataset.name, "parquet"),
                   mime="application/octet-stream", key="export_parquet")
