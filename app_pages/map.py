"""Map: the cohort as a UMAP / PCA / t-SNE scatter; colour by cluster, ground truth or any
column; box or lasso points to see the scans behind them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from core.columns import column_role, metadata_columns, tells_rows_apart
from ui import data, jobs, state, widgets


# The table and the figure are built once per view for the whole server and shared read-only by
# every session: a rerun only looks them up and sends the figure (building it with Plotly Express
# was most of a warm rerun's CPU, and 20 sessions queue behind each other for the GIL).
@st.cache_resource(show_spinner=False, max_entries=32)
def map_table(token: str, cohort_key: str, cluster_key: str, _cohort, _clustering) -> tuple[pd.DataFrame, list[str]]:
    """The cohort's rows with their cluster name, and the columns the map can be coloured by."""
    table = _cohort.table.copy()
    table["cluster"] = pd.Series(_clustering.labels).map(lambda c: "noise" if c < 0 else f"C{c}").values
    options = ["cluster", "label", *[c for c in metadata_columns(table) if tells_rows_apart(table[c])]]
    return table, options


@st.cache_resource(show_spinner=False, max_entries=64)
def map_figure(token: str, cohort_key: str, cluster_key: str, projection_key: str | None, colour: str,
               dims: int, _table: pd.DataFrame, _coords: np.ndarray):
    """``(plotted rows, figure)`` of one view; the figure is shared, so it is never changed."""
    plot = _table.assign(**{f"dim{i + 1}": _coords[:, i] for i in range(dims)}, row=np.arange(len(_table)))
    plot = plot[np.isfinite(_coords).all(axis=1)]
    hover = [c for c in ("patient_id", "label", "age", "sex", "modality", "view", "cluster") if c in plot.columns]
    numeric = pd.api.types.is_numeric_dtype(plot[colour]) and plot[colour].nunique() > 8
    colour_values = plot[colour] if numeric else plot[colour].astype(str).fillna("(none)")
    common = {"color": colour_values, "hover_data": hover, "custom_data": ["row"], "height": 620}
    if numeric:
        common["color_continuous_scale"] = "Viridis"
    else:
        # C2 before C10; a palette whose neighbours are easy to tell apart.
        order = sorted(colour_values.dropna().unique(), key=lambda v: (len(v), v) if colour == "cluster" else (0, v))
        common.update(category_orders={colour: order}, color_discrete_sequence=px.colors.qualitative.Bold)
    if dims == 2:
        figure = px.scatter(plot, x="dim1", y="dim2", render_mode="webgl", **common)
        figure.update_layout(dragmode="lasso")
    else:
        figure = px.scatter_3d(plot, x="dim1", y="dim2", z="dim3", **common)
    figure.update_traces(marker={"size": 7 if dims == 2 else 4, "opacity": 0.85})
    figure.update_layout(legend_title_text=colour, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return len(plot), figure


widgets.page_header("Map")
dataset = data.current_dataset()
encoder, level = st.session_state["encoder"], st.session_state["level"]

c1, c2, c3 = st.columns([2, 1, 2])
method = state.choice("Projection", ["umap", "pca", "tsne"], "method", where=c1,
                      format_func={"umap": "UMAP", "pca": "PCA", "tsne": "t-SNE"}.get)
dims = c2.radio("Dimensions", [2, 3], horizontal=True, key="map_dims")

cohort = data.session_cohort(dataset)
algorithm = st.session_state["algorithm"]
cluster_key, clustering = data.current_clustering(cohort)

# The dataset token is part of the keys: two ingests of the same files share embeddings (and so
# cohort keys) but not their metadata.
token = dataset.token
table, colour_options = map_table(token, cohort.key, cluster_key, cohort, clustering)
colour = c3.selectbox("Colour by", colour_options, key="map_colour",
                      help="cluster (current clustering), label (ground truth) or any metadata column")

# PCA first: a UMAP / t-SNE map not stored yet is computed in the background while the PCA map
# (a second) is drawn with a note; the page reruns when the job ends and the map switches.
projection, pending = data.map_projection(cohort, method, dims)
# One slot, there in every run: the chart keeps its place in the page when the note goes (a chart
# that moved up after the switch stopped answering lasso selections in the browser).
with st.container(key="map_pending"):
    if pending:
        st.info(pending, icon=":material/hourglass_top:")
        jobs.rerun_when_done(data.projection_job_key(cohort, method, dims))
n_plotted, figure = map_figure(token, cohort.key, cluster_key, projection.key, colour, dims, table, projection.coords)
st.caption(
    f"{n_plotted} {level}s · {encoder} · {data.METHOD_NAMES[projection.method]} · clusters: {algorithm} "
    f"({clustering.n_clusters}). Drag a lasso or box around points to see their scans."
)
event = st.plotly_chart(figure, on_select="rerun", selection_mode=("points", "box", "lasso"), key="map_chart")

selected_rows = sorted({int(p["customdata"][0]) for p in event.selection.points}) if dims == 2 and event and event.selection.points else []
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
    with st.expander("Find patients like this", expanded=len(chosen) == 1):
        anchor = st.selectbox("Like", selected_rows, key="map_like",
                              format_func=lambda i: f"{table.iloc[i]['patient_id']} · {table.iloc[i].get('label') or ''}")
        similar = data.similar_cases(cohort, anchor, k=8)
        neighbours = table.iloc[similar["row"]].assign(distance=similar["distance"].round(3).values)
        keep = [c for c in ("patient_id", "distance", "cluster", "label", "age", "sex", "modality", "view", "text") if c in neighbours]
        st.dataframe(neighbours[keep], hide_index=True, width="stretch")
        widgets.gallery(data.representative_images(dataset, neighbours, level), columns=8, limit=8, key="map_similar")
else:
    st.info("Select points with the lasso or box tool to open their scans.")
