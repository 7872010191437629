"""Quality: what the data-quality audit found (duplicates, also across patients; likely label
errors; image problems; outliers; clusters dominated by one problem), each finding with its
scans, and an analyst's decision ("excluded" / "not a problem") that every page's cohort honours."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.audit.duplicates import CANDIDATE_PHASH_BITS, COSINE, MATCH, PHASH_BITS, Thresholds
from core.audit.export import audit_tables
from core.audit.runs import audit_runs, cluster_summary, load_audit, train_audit
from core.exclusions import finding_id
from ui import auth, data, widgets
from ui.jobs import wait_for


@st.cache_resource(show_spinner="Loading the saved audit...", max_entries=8)
def load_run(key: str, created: str):
    return load_audit(key)


widgets.page_header("Quality")
# The whole dataset (cohort filter and exclusions not applied): the audit looks at every scan,
# including the ones an analyst already excluded, so a decision can be reopened.
dataset = data.whole_dataset()
encoder = st.session_state["encoder"]
runs = [run for run in audit_runs(dataset) if run.config.get("encoder") == encoder]
if st.button("Run the audit again" if runs else "Run the audit", type="secondary" if runs else "primary", key="quality_run"):
    st.session_state["quality_job"] = f"audit|{dataset.token}|{encoder}|{runs[0].created if runs else ''}"
    data.job_runner().submit(st.session_state["quality_job"], train_audit, dataset, encoder=encoder, force=bool(runs))
job = wait_for(st.session_state.get("quality_job"))
if job is not None:
    st.session_state["quality_job"] = None
    if job.error is not None:
        st.error(f"The audit failed: {job.error}. Try another encoder in the sidebar.")
        st.stop()
    st.rerun()
if not runs:
    st.info(f"This dataset has no audit with {encoder} yet. **Run the audit** (duplicates, label errors, image "
            "problems, outliers; a few minutes per thousand images), or `scanatlas audit DIR --encoder NAME`.")
    st.stop()
audit = load_run(runs[0].key, runs[0].created)
st.caption(f"Saved audit from {pd.Timestamp(audit.created).tz_convert(None):%Y-%m-%d %H:%M} UTC (`scanatlas runs show {audit.key}`).")

with st.expander("What counts as a near duplicate", expanded=False):
    c1, c2, c3 = st.columns(3)
    thresholds = Thresholds(
        phash_bits=c1.slider("pHash bits that differ (<=)", 0, CANDIDATE_PHASH_BITS, PHASH_BITS, key="quality_phash"),
        cosine=c2.slider("Embedding cosine distance (<=, 0 = off)", 0.0, 0.1, COSINE, 0.005, format="%.3f", key="quality_cosine"),
        match=c3.slider("Crop-aware pixel match (>=)", 0.5, 1.0, MATCH, 0.01, key="quality_match"))
    st.caption("A pair is a near duplicate when any one holds. Chest films look alike to a pHash and to an encoder, "
               "so the hash default is strict and the embedding by default only proposes candidates; the pixel match "
               "finds one picture inside the other (copies, rescales, recompressions, crops).")
counts = audit.counts(thresholds)
pairs, sets = audit.duplicates(thresholds)
metrics = {"Duplicate sets": counts["duplicate_sets"], "Across patients": counts["cross_patient_sets"],
           "Likely label errors": counts["label_issues"], "Image problems": len(audit.image_issues),
           "Outliers": counts["outliers"]}
for column, (label, value) in zip(st.columns(len(metrics)), metrics.items(), strict=True):
    column.metric(label, value)
if counts["cross_patient_sets"]:
    st.warning(f"{counts['cross_patient_sets']} duplicate set(s) span different patient ids: one person entered twice, "
               "or one picture filed under two people. Either way it can sit on both sides of a cross-validation split; "
               "the Classifiers page can merge those patients into one group.")

images = dataset.images.reset_index(drop=True)
user = auth.current_user()
may_decide = auth.can("label")
store = data.decision_store()
decided = store.current(dataset.name).set_index("finding_id")


def finding(kind: str, rows: list[int], detail: str, exclude_rows: list[int], key: str) -> None:
    """The scans of one finding, its decision and (for a labeler) the buttons to change it."""
    ids = images.loc[rows, "image_id"].astype(str).tolist()
    fid = finding_id(kind, ids, detail)
    current = decided.loc[fid, "decision"] if fid in decided.index else "open"
    st.caption(f"Decision: **{current.replace('_', ' ')}**" + (f" by {decided.loc[fid, 'author']}" if fid in decided.index else ""))
    widgets.gallery(images.loc[rows], columns=4, limit=8, key=f"{key}_gallery")
    with st.expander("Scan viewer", expanded=False):
        widgets.scan_viewer(dataset, images.loc[rows].reset_index(drop=True), key=f"{key}_viewer")
    if not may_decide:
        return
    excluded = images.loc[exclude_rows, "image_id"].astype(str).tolist()
    a, b, c = st.columns(3)
    choice = None
    if a.button(f"Exclude {len(excluded)} scan(s)", key=f"{key}_exclude"):
        choice = "excluded"
    if b.button("Not a problem", key=f"{key}_fine"):
        choice = "not_a_problem"
    if current != "open" and c.button("Reopen", key=f"{key}_reopen"):
        choice = "open"
    if choice:
        try:
            store.decide(dataset.name, fid, choice, excluded, user=user, base_version=store.version(dataset.name, fid))
            st.rerun()
        except (ValueError, PermissionError) as error:
            st.error(f"Not saved: {error}")


tables = audit_tables(audit, thresholds)
tab_dup, tab_label, tab_image, tab_outlier, tab_cluster = st.tabs(
    ["Duplicates", "Label errors", "Image problems", "Outliers", "Clusters"])
with tab_dup:
    st.dataframe(sets.drop(columns=["image_ids"]), hide_index=True, width="stretch")
    if len(sets):
        set_id = st.selectbox("Open a duplicate set", sets["set_id"].tolist(), key="quality_set",
                              format_func=lambda s: f"set {s}: {sets.loc[sets['set_id'] == s, 'patient_ids'].iloc[0]}")
        members = sorted(set(pairs.loc[pairs["set_id"] == set_id, "i"]) | set(pairs.loc[pairs["set_id"] == set_id, "j"]))
        st.dataframe(tables["duplicates.csv"][pairs["set_id"] == set_id], hide_index=True, width="stretch")
        finding("duplicate", members, "", members[1:], "quality_dup")
with tab_label:
    st.caption("Ranked by how little the patient-grouped cross-validated model believes the given label (cleanlab).")
    st.dataframe(tables["label_issues.csv"], hide_index=True, width="stretch")
    if len(audit.label_issues):
        pick = st.selectbox("Open", range(len(audit.label_issues)), key="quality_label",
                            format_func=lambda i: f"#{i + 1}: {audit.label_issues.iloc[i]['given_label']} -> {audit.label_issues.iloc[i]['suggested_label']}")
        row = int(audit.label_issues.iloc[pick]["row"])
        finding("label", [row], "", [row], "quality_lab")
with tab_image:
    st.dataframe(tables["image_issues.csv"], hide_index=True, width="stretch")
    if len(audit.image_issues):
        pick = st.selectbox("Open", range(len(audit.image_issues)), key="quality_image",
                            format_func=lambda i: f"{audit.image_issues.iloc[i]['issue']}: {audit.image_issues.iloc[i]['detail']}")
        issue = audit.image_issues.iloc[pick]
        finding("image", [int(issue["row"])], str(issue["issue"]), [int(issue["row"])], "quality_img")
with tab_outlier:
    st.caption("Mean cosine distance to the 5 nearest scans, above the 98th percentile overall or within the scan's cluster.")
    st.dataframe(tables["outliers.csv"], hide_index=True, width="stretch")
    if len(tables["outliers.csv"]):
        flagged = audit.outliers.index[audit.outliers["outlier"] | audit.outliers["cluster_outlier"]].tolist()
        row = st.selectbox("Open", flagged, key="quality_outlier", format_func=lambda r: widgets.scan_label(images.loc[r]))
        finding("outlier", [int(row)], "", [int(row)], "quality_out")
with tab_cluster:
    summary = cluster_summary(audit, thresholds)
    st.dataframe(summary, hide_index=True, width="stretch")
    for row in summary[summary["dominated"]].itertuples():
        st.warning(f"Cluster {row.cluster} ({row.size} scans) is mostly one problem: {row.top_problem} ({row.top_share:.0%}), "
                   f"largest duplicate set {row.largest_set_share:.0%}. It may exist because of it (a confounder).")
    st.caption(f"k-means with k={audit.config['n_clusters']} on the {audit.config['encoder']} embedding of each scan.")
excluded_now = store.excluded_ids(dataset.name)
st.caption(f"{len(excluded_now)} scan(s) of this dataset are excluded by decisions here; every page's cohort leaves them out.")
