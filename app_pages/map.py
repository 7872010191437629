"""Map: the cohort as a UMAP / PCA / t-SNE scatter; colour by cluster, ground truth or any
column; box or lasso points to see the scans behind them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.columns import column_role
from core.explain.report_draft import SentenceSpace, draft_report, notes_by_row
from core.export import export_file_name, labeled_export, to_csv_bytes
from ui import auth, charts, data, jobs, state, widgets


@st.cache_resource(show_spinner="Reading the notes...", max_entries=8)
def draft_notes(token: str, cohort_key: str, level: str, _images: pd.DataFrame, _table: pd.DataFrame):
    """``(table with each row's note, SentenceSpace over every note)``, or None without notes."""
    notes = notes_by_row(_images, _table, level)
    if not notes.map(lambda t: isinstance(t, str) and bool(t.strip())).any():
        return None
    return _table.assign(text=notes.to_numpy()), SentenceSpace(notes.to_numpy(dtype=object))


def report_draft_section(anchor: int) -> None:
    """The notes of the anchor's most similar cases and a draft from the sentences they share:
    editable, never a diagnosis, downloadable with the patient's row (de-identified)."""
    found = draft_notes(token, cohort.key, level, dataset.images, table)
    st.markdown("**Report draft from similar cases**")
    if found is None:
        st.caption("This dataset has no reports or notes to draft from.")
        return
    noted, space = found
    try:
        draft = draft_report(noted, cohort.masked("image"), int(anchor), k=8, embed_sentences=space)
    except ValueError as error:
        st.info(f"No draft: {error}")
        return
    for note in draft.notes:
        st.caption(note)
    st.dataframe(draft.neighbours, hide_index=True, width="stretch", height=220,
                 column_config={"note": st.column_config.TextColumn("note (dates, ages, names, places removed)")})
    st.warning("Draft from similar cases, not a diagnosis: sentences the notes of the most similar scans share. "
               "Read the scan; edit or discard the draft.", icon=":material/edit_note:")
    patient = str(table.iloc[int(anchor)]["patient_id"])
    edited = st.text_area("Draft (editable)", draft.text, height=200, key=f"map_draft_{cohort.key}_{anchor}")
    if auth.can("export_patients") and clustering is None:
        st.caption("The download of this row with the draft appears when the clustering is ready.")
    elif auth.can("export_patients"):
        store = data.label_store()
        try:
            row = labeled_export(dataset.patients[dataset.patients["patient_id"].astype(str) == patient],
                                 cohort.table["patient_id"].values, clustering.labels,
                                 store.current_mapping(dataset.name, cluster_key), store.patient_overrides(dataset.name),
                                 drafts={patient: edited})
        except (ValueError, PermissionError, OSError) as error:
            st.error(f"Cannot export this row: {error}.")
            return
        st.download_button("Download this patient's row with the draft (CSV, de-identified)", to_csv_bytes(row.table, bom=True),
                           file_name=export_file_name(dataset.name, "csv"), mime="text/csv", key=f"map_draft_csv_{anchor}")


def similar_cases_section(selected_rows: list[int]) -> None:
    """The cases most like one selected row, and a report draft from their notes."""
    anchor = st.selectbox("Like", selected_rows, key="map_like",
                          format_func=lambda i: f"{table.iloc[i]['patient_id']} · {table.iloc[i].get('label') or ''}")
    similar = data.similar_cases_when_ready(cohort, anchor, k=8)
    if similar is None:  # a large cohort's neighbour index, built once in the background
        st.info(f"Building the similar-cases index over {len(table):,} {level}s (once for this cohort); "
                "the similar cases appear here when it is ready.", icon=":material/hourglass_top:")
        jobs.rerun_when_done(data.similar_index_job_key(cohort))
        return
    neighbours = table.iloc[similar["row"]].assign(distance=similar["distance"].round(3).values)
    keep = [c for c in ("patient_id", "distance", "cluster", "label", "age", "sex", "modality", "view") if c in neighbours]
    st.dataframe(neighbours[keep], hide_index=True, width="stretch")
    widgets.gallery(data.representative_images(dataset, neighbours, level), columns=8, limit=8, key="map_similar")
    report_draft_section(anchor)


widgets.page_header("Map")
dataset = data.current_dataset()
encoder, level = st.session_state["encoder"], st.session_state["level"]

c1, c2, c3 = st.columns([2, 1, 2])
method = state.choice("Projection", ["umap", "pca", "tsne"], "method", where=c1,
                      format_func={"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}.get)
dims = c2.radio("Dimensions", [2, 3], horizontal=True, key="map_dims")

# While the dataset is being embedded: a first map of each patient's middle slice (see there).
cohort, filling = data.map_cohort(dataset)
# A large cohort's clustering runs in a background worker process; the map does not wait for it:
# it is drawn at once, coloured by what there is, and the colours switch when the clustering is in.
found = data.current_clustering_when_ready(cohort)
algorithm = st.session_state["algorithm"]
waiting = found if isinstance(found, data.ClusteringWait) else None
cluster_key, clustering = ("", None) if waiting else found

# The table and the figure are built once per view for the whole server and shared read-only by
# every session (ui/charts.py): a rerun only looks them up and sends the figure.
token = dataset.token
table, colour_options = charts.map_table(token, cohort.key, cluster_key, cohort, clustering)
# Its own key while the clustering is computed: "Colour by" comes back on "cluster" when it is in.
colour = c3.selectbox("Colour by", colour_options, key="map_colour" if clustering is not None else "map_colour_waiting",
                      help="cluster (current clustering), label (ground truth) or any metadata column")

# PCA first: a UMAP / t-SNE map not stored yet is computed in the background while the PCA map
# (a second) is drawn with a note; the page reruns when the job ends and the map switches.
if filling:
    projection, pending = data.projection(cohort, "pca", dims), filling
    pending_job = data.embedding_job_key(dataset, encoder)
else:
    projection, pending = data.map_projection(cohort, method, dims)
    pending_job = data.projection_job_key(cohort, method, dims)
# One slot, there in every run: the chart keeps its place in the page when the note goes (a chart
# that moved up after the switch stopped answering lasso selections in the browser).
with st.container(key="map_pending"):
    if waiting:
        jobs.show_clustering_wait(waiting, button_key="map_cluster_restart")
        if waiting.status == "running":
            st.caption(f"Meanwhile coloured by {colour}.")
    if pending:
        st.info(pending, icon=":material/hourglass_top:")
        jobs.rerun_when_done(pending_job, shown_while_running=True)
        if not filling:  # a map a server restart interrupted: said, and offered again
            jobs.offer_restart(pending_job, lambda: data.start_projection(cohort, method, dims),
                               what=f"The {data.METHOD_NAMES[method]} map", button_key="map_restart")
view = charts.map_figure(token, cohort.key, cluster_key, projection.key, colour, dims, table, projection.coords)
st.caption(
    f"{view.n_plotted:,} {level}s · {encoder} · {data.METHOD_NAMES[projection.method]} · clusters: {algorithm} "
    f"({clustering.n_clusters if clustering is not None else 'being computed'}). Drag a lasso or box around points to see their scans."
)
event = st.plotly_chart(view.figure, on_select="rerun", selection_mode=("points", "box", "lasso"), key="map_chart",
                        config=view.config)

selected_rows = view.selected_rows(event.selection.points) if dims == 2 and event and event.selection.points else []
if selected_rows:
    chosen = table.iloc[selected_rows]
    st.subheader(f"{len(chosen)} {level}s selected")
    shown = [c for c in chosen.columns if c == "patient_id" or column_role(c) not in ("identifier", "text")]
    st.dataframe(chosen[shown].dropna(axis=1, how="all"),
                 hide_index=True, width="stretch", height=200)
    rows = data.representative_images(dataset, chosen, level)
    widgets.gallery(rows, key="map_gallery")
    with st.expander("Scan viewer (window / level)", expanded=False):
        scans = dataset.images[dataset.images["patient_id"].isin(chosen["patient_id"])] if level == "patient" else rows
        widgets.scan_viewer(dataset, scans.reset_index(drop=True), key="map_viewer")
    # Runs only while open (a lasso of thousands opens it closed: no neighbour search for it).
    like_this = st.expander("Find patients like this", expanded=len(chosen) == 1, on_change="rerun",
                            key=f"map_like_open_{len(chosen) == 1}")
    with like_this:
        if like_this.open:
            similar_cases_section(selected_rows)
else:
    st.info("Select points with the lasso or box tool to open their scans.")
