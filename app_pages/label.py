"""Label: cluster -> disease name -> ICD-10-CM code, validated against the real code set and
saved (versioned, under the signed-in user) in the label database. Patients can be overridden.

Every save carries the version it was edited from: if someone saved in between, nothing is
overwritten; the page shows both versions side by side with a proposed merge."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.labels import (
    CODE_SET_VERSION,
    ConflictError,
    StoreBusyError,
    search_icd10,
    suggest_default_mapping,
    suggest_icd10,
    validate_icd10,
)
from core.labels.merge import merge_mappings
from core.labels.propagate import (
    accept_proposals,
    propagate_labels,
    reject_proposals,
    rejected_patients,
)
from ui import auth, charts, data, widgets

widgets.page_header("Label")
user = auth.require("label")
st.caption(f"Map each cluster to a disease and an ICD-10-CM code ({CODE_SET_VERSION}). Every save is a new version.")
dataset = data.current_dataset()
cohort = data.session_cohort(dataset)
clustering_key, result = data.current_clustering(cohort)
store = data.label_store()
table = cohort.table
cluster_ids = sorted(int(c) for c in set(result.labels) if c >= 0)
majority = charts.cluster_majority(dataset.token, clustering_key, result.labels, table["label"])
# Per mapping set: the version this session is editing from, and a refused save to merge.
base_key, conflict_key = f"label_base::{dataset.name}::{clustering_key}", f"label_conflict::{dataset.name}::{clustering_key}"


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


def as_dict(frame: pd.DataFrame) -> dict[int, tuple[str, str]]:
    return {int(r.cluster): (text(r.disease), text(r.icd10_code)) for r in frame.itertuples()}


def save(mapping: dict[int, tuple[str, str]], base: int | None) -> None:
    """Save ``mapping`` edited from ``base``; a conflict is kept for the merge view below."""
    try:
        saved = store.save_mapping(dataset.name, clustering_key, {c: (d, k or None) for c, (d, k) in mapping.items()},
                                   user=user, base_version=base)
    except ConflictError:
        st.session_state[conflict_key] = {"yours": mapping, "base": base}
        st.rerun()
    except (ValueError, StoreBusyError) as error:
        st.error(f"Not saved: {error}")
    else:
        st.session_state[base_key] = saved.version
        st.session_state.pop(conflict_key, None)
        st.session_state["label_flash"] = (f"Saved as version {saved.version}." if saved.created
                                           else f"No change: version {saved.version} already holds this mapping.")
        st.rerun()


current_version = store.current_version(dataset.name, clustering_key)
if base_key not in st.session_state:
    st.session_state[base_key] = current_version
base_version = st.session_state[base_key]
if flash := st.session_state.pop("label_flash", None):
    st.success(flash)

conflict = st.session_state.get(conflict_key)
if conflict:
    theirs = store.current_mapping(dataset.name, clustering_key)
    theirs_version, theirs_author = int(theirs["version"].max()), theirs["author"].iloc[0]
    base_map = as_dict(store.mapping_at(dataset.name, clustering_key, conflict["base"])) if conflict["base"] else None
    merged = merge_mappings(base_map, {int(c): v for c, v in conflict["yours"].items()}, as_dict(theirs))
    started = f"version {conflict['base']}" if conflict["base"] else "no saved mapping"
    st.error(f"Not saved: {theirs_author} saved version {theirs_version} after you opened {started}. "
             "Nothing was overwritten. Compare, merge, then save.")
    left, right = st.columns(2)
    left.markdown(f"**Yours** (edited from {started})")
    left.dataframe(merged[["cluster", "yours_disease", "yours_code"]], hide_index=True, width="stretch")
    right.markdown(f"**Version {theirs_version}** by {theirs_author} at "
                   f"{pd.Timestamp(theirs['created_at'].iloc[0]):%Y-%m-%d %H:%M} UTC")
    right.dataframe(merged[["cluster", "theirs_disease", "theirs_code"]], hide_index=True, width="stretch")
    st.markdown("**Merged**: clusters only one of you changed take that change; *both changed* keeps yours. Edit, then save.")
    merge_edit = st.data_editor(merged[["cluster", "resolution", "disease", "icd10_code"]], hide_index=True,
                                width="stretch", disabled=["cluster", "resolution"],
                                key=f"label_merge_{clustering_key}_{theirs_version}")
    m1, m2 = st.columns(2)
    if m1.button(f"Save merged on top of version {theirs_version}", type="primary", key="label_merge_save"):
        save(as_dict(merge_edit), theirs_version)
    if m2.button(f"Discard mine, keep version {theirs_version}", key="label_merge_discard"):
        st.session_state.pop(conflict_key)
        st.session_state[base_key] = theirs_version
        st.rerun()
    st.stop()

if base_version is not None:
    saved = store.mapping_at(dataset.name, clustering_key, base_version)
    start = saved.set_index("cluster")
    st.success(f"Saved mapping, version {base_version}, by {saved['author'].iloc[0]} at "
               f"{pd.Timestamp(saved['created_at'].iloc[0]):%Y-%m-%d %H:%M} UTC")
else:
    suggestion = suggest_default_mapping({c: majority.get(c) for c in cluster_ids})
    start = pd.DataFrame({"disease": {c: m.disease for c, m in suggestion.items()},
                          "icd10_code": {c: m.code for c, m in suggestion.items()}})
    st.info("Suggested from each cluster's majority ground-truth label. Edit, then save.")
if current_version != base_version:
    st.warning(f"Version {current_version} was saved since you opened this mapping; "
               "saving will show both to merge.")

# A code applied from the search below is a draft over the saved (or suggested) mapping; the
# editor is keyed by a generation that grows with each applied code, so it redraws with it
# while keeping the other cells' edits (they are folded into the draft first).
draft_key = f"label_draft::{dataset.name}::{clustering_key}::{base_version}"
draft: dict[int, dict[str, str]] = st.session_state.setdefault(draft_key, {})
generation = st.session_state.get(f"{draft_key}::generation", 0)
editor_key = f"label_editor_{clustering_key}_{base_version}_{generation}"
# The description follows the codes being edited: a keyed editor with fixed rows keeps its
# edits while this read-only column changes.
pending = st.session_state.get(editor_key, {}).get("edited_rows", {})
diseases = [draft.get(c, {}).get("disease", text(start["disease"].get(c))) for c in cluster_ids]
codes = [draft.get(c, {}).get("icd10_code", text(start["icd10_code"].get(c))) for c in cluster_ids]
live_codes = [text((pending.get(i) or pending.get(str(i)) or {}).get("icd10_code", code)) for i, code in enumerate(codes)]
editor_frame = pd.DataFrame({
    "cluster": cluster_ids,
    "size": [int((result.labels == c).sum()) for c in cluster_ids],
    "majority ground truth": [text(majority.get(c)) for c in cluster_ids],
    "disease": diseases,
    "icd10_code": codes,
    "code means": [meaning(code) for code in live_codes],
})
edited = st.data_editor(
    editor_frame, hide_index=True, width="stretch", key=editor_key,
    disabled=["cluster", "size", "majority ground truth", "code means"],
    column_config={"icd10_code": st.column_config.TextColumn("ICD-10-CM code", help="e.g. I42.0; search below")},
)
for r in edited.itertuples():
    if meaning(text(r.icd10_code)).startswith("(not"):
        # Suggest by the meaning of the disease typed in the same row first, then by spelling.
        offered = suggest_icd10(text(r.icd10_code), text(r.disease), limit=3)
        st.warning(f"Cluster {r.cluster}: {text(r.icd10_code)!r} is not an ICD-10-CM code. "
                   + (f"For {text(r.disease)!r} try: " if text(r.disease) else "Close codes: ")
                   + "; ".join(f"{c.code} {c.description}" for c in offered)
                   + ". Search below and apply a code, or leave it empty.")

undo_to = store.undo_target(dataset.name, clustering_key) if base_version == current_version else None
c1, c2 = st.columns(2)
if c1.button("Save mapping", type="primary", key="label_save"):
    save(as_dict(edited), base_version)
if c2.button("Undo last change", key="label_undo", disabled=undo_to is None,
             help="Nothing to undo yet" if undo_to is None else f"Restores version {undo_to}"):
    try:
        undone = store.undo(dataset.name, clustering_key, user=user, base_version=base_version)
    except ConflictError as error:
        st.error(f"Not undone: {error}")
    except (ValueError, StoreBusyError) as error:
        st.error(f"Cannot undo: {error}")
    else:
        st.session_state[base_key] = undone.version
        st.session_state["label_flash"] = f"Restored version {undone.restored_version} (saved as version {undone.version})."
        st.rerun()

with st.expander("Search ICD-10-CM codes", expanded=True):
    query = st.text_input("Code or words", key="label_search", placeholder="e.g. cardiomyopathy, I42, pneumonia")
    if query.strip():
        hits = search_icd10(query, limit=25)
        if not hits:
            st.caption("No ICD-10-CM code matches; try fewer or other words.")
        else:
            st.caption("Click a row to pick its code, choose the cluster, then apply.")
            event = st.dataframe(
                pd.DataFrame([{"code": h.code, "description": h.description, "billable": h.billable} for h in hits]),
                hide_index=True, width="stretch", key="label_search_hits", on_select="rerun", selection_mode="single-row")
            choices = [f"{h.code} {h.description}" for h in hits]
            rows = list(event.selection.rows) if event is not None else []
            # A clicked row picks the code below (once per click, so the box can still be changed).
            if rows and rows[0] < len(choices) and st.session_state.get("label_picked_row") != (query, rows[0]):
                st.session_state["label_picked_row"] = (query, rows[0])
                st.session_state["label_apply_code"] = choices[rows[0]]
            if st.session_state.get("label_apply_code") not in choices:
                st.session_state["label_apply_code"] = choices[0]
            a1, a2, a3 = st.columns([3, 1, 1])
            chosen = a1.selectbox("Code", choices, key="label_apply_code")
            target = a2.selectbox("Apply to cluster", cluster_ids, key="label_apply_cluster")
            if a3.button("Apply", key="label_apply", help="Puts the code into that cluster's row above; save to keep it"):
                hit = hits[choices.index(chosen)]
                # Keep every other edit made in the editor so far, then set this row's code.
                for r in edited.itertuples():
                    draft[int(r.cluster)] = {"disease": text(r.disease), "icd10_code": text(r.icd10_code)}
                row = draft[int(target)]
                row["icd10_code"] = hit.code
                if not row["disease"]:
                    row["disease"] = hit.description
                st.session_state[f"{draft_key}::generation"] = generation + 1
                st.session_state["label_flash"] = f"Applied {hit.code} ({hit.description}) to cluster {target}; save to keep it."
                st.rerun()

with st.expander("Override single patients"):
    ids = table["patient_id"].astype(str).tolist()
    o1, o2, o3 = st.columns(3)
    patient = o1.selectbox("Patient", ids, key="label_override_patient")
    override_base_key = f"label_override_base::{dataset.name}::{patient}"
    if override_base_key not in st.session_state:
        st.session_state[override_base_key] = store.override_version(dataset.name, patient)
    overrides = store.patient_overrides(dataset.name)
    active = overrides[overrides["patient_id"] == patient]
    disease = o2.text_input("Disease", key="label_override_disease")
    code = o3.text_input("ICD-10-CM code", key="label_override_code")
    if len(active):
        row = active.iloc[0]
        st.caption(f"{patient} is overridden as {row['disease']} {text(row['icd10_code'])} (version {row['version']}, by {row['author']}).")
    b1, b2 = st.columns(2)
    action = None
    if b1.button("Save override", key="label_override_save", disabled=not disease.strip()):
        action = "save"
    if b2.button("Clear override", key="label_override_clear", disabled=active.empty):
        action = "clear"
    if action:
        base = st.session_state[override_base_key]
        try:
            if action == "save":
                done = store.set_patient_override(dataset.name, patient, disease.strip(), code.strip() or None,
                                                  user=user, base_version=base)
            else:
                done = store.clear_patient_override(dataset.name, patient, user=user, base_version=base)
        except ConflictError as error:
            st.session_state[override_base_key] = store.override_version(dataset.name, patient)
            st.error(f"Not saved: {error}")
            mine, theirs = st.columns(2)
            mine.markdown(f"**Yours**: {'cleared' if action == 'clear' else f'{disease.strip()} {code.strip()}'}")
            theirs.markdown("**Saved now**: " + (f"{active.iloc[0]['disease']} {text(active.iloc[0]['icd10_code'])} "
                                                 f"by {active.iloc[0]['author']}" if len(active) else "no override"))
            st.caption("Press the button again to replace the saved override with yours, or change the fields.")
        except (ValueError, StoreBusyError) as error:
            st.error(f"Not saved: {error}")
        else:
            st.session_state[override_base_key] = done.version
            verb = "cleared" if action == "clear" else "saved"
            st.success(f"Override {verb} for {patient} (version {done.version})." if done.created
                       else f"No change: {patient} already has this override.")
            overrides = store.patient_overrides(dataset.name)
    if len(overrides):
        st.dataframe(overrides, hide_index=True, width="stretch")

with st.expander("Proposed labels for the rest (label propagation)"):
    st.caption("Spreads the diseases you gave to clusters and patients to the patients nobody labelled, over "
               "their nearest neighbours in embedding space, each with a confidence. Accepted proposals are "
               "saved as patient overrides (versioned, under your name); rejected ones are not offered again.")
    propose_key = f"label_propagation::{dataset.name}::{clustering_key}"
    if st.button("Propose labels", key="label_propose"):
        try:
            st.session_state[propose_key] = propagate_labels(
                table, cohort.masked(), result.labels, store.current_mapping(dataset.name, clustering_key),
                store.patient_overrides(dataset.name), cohort_key=cohort.key, clustering_key=clustering_key,
                dataset=dataset.name)
        except ValueError as error:
            st.info(f"No proposals yet: {error}")
        else:  # the override versions seen now: accepting later must not overwrite a newer edit
            history = store.override_history(dataset.name)
            st.session_state[f"{propose_key}::versions"] = history.groupby("patient_id")["version"].max().to_dict()
    proposed = st.session_state.get(propose_key)
    if proposed is not None:
        hand = set(store.patient_overrides(dataset.name)["patient_id"].astype(str))
        rejected = rejected_patients(auth.access_store(), dataset.name, proposed.key)
        open_ = proposed.open_proposals
        open_ = open_[~open_["patient_id"].astype(str).isin(hand | rejected)].reset_index(drop=True)
        unreached = proposed.proposals["reason"].notna().sum()
        st.caption(f"{len(open_)} proposals from {int(proposed.proposals['seed'].sum())} hand-labelled patients"
                   + (f"; {unreached} patients could not be reached" if unreached else "")
                   + f" (run `{proposed.key}`).")
        if len(open_):
            threshold = st.slider("Tick every proposal with confidence at least", 0.0, 1.0, 0.9, 0.05, key="label_propose_min")
            review = open_[["patient_id", "disease", "icd10_code", "confidence"]].assign(
                accept=open_["confidence"] >= threshold, reject=False)
            decided = st.data_editor(review, hide_index=True, width="stretch", disabled=["patient_id", "disease", "icd10_code", "confidence"],
                                     key=f"label_propose_editor_{proposed.key}_{threshold}",
                                     column_config={"confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0, format="%.2f")})
            p1, p2 = st.columns(2)
            to_accept = decided[decided["accept"] & ~decided["reject"]]
            to_reject = decided[decided["reject"]]
            if p1.button(f"Accept {len(to_accept)} ticked", type="primary", key="label_propose_accept", disabled=to_accept.empty):
                versions = st.session_state.get(f"{propose_key}::versions", {})
                outcome = accept_proposals(store, dataset.name, to_accept.assign(base_version=[versions.get(str(p)) for p in to_accept["patient_id"]]),
                                           user=user, run_key=proposed.key)
                counts = outcome["status"].value_counts().to_dict()
                st.session_state["label_flash"] = "Proposals: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "."
                if counts.get("conflict"):
                    st.session_state["label_flash"] += " Conflicts: a colleague changed those patients since; nothing of theirs was overwritten."
                st.rerun()
            if p2.button(f"Reject {len(to_reject)} ticked", key="label_propose_reject", disabled=to_reject.empty):
                reject_proposals(auth.access_store(), dataset.name, to_reject, user=user, run_key=proposed.key)
                st.rerun()

with st.expander("History"):
    st.dataframe(store.history(dataset.name, clustering_key), hide_index=True, width="stretch")
