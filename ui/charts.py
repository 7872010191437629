"""Charts and the shared, cached pieces of the Map and Clusters pages.

**Readable text.** Streamlit's chart theme draws axis text #808495 at 12 px, 3.7:1 on white; AA
asks 4.5:1. Its theme is merged over a figure's *template* in the browser, so a template cannot
fix this: the colours must be set on the figure's own layout, which the theme leaves alone
(``readable``).

**Built once for every session.** What a page shows that does not depend on the session (the
map's table and figure, the cluster-mix figure, the most central scans) is built here, in
``st.cache_resource`` functions of an imported module: one object per key for the whole server,
shared read-only. (Decorated inside a page script, a cached function is re-created on every
rerun, and Streamlit then reads its source again to key it; here that happens once.) A shared
figure is a ``SharedFigure``: its Plotly dict is made once, so showing it costs a rerun only the
JSON encoding, not a deep copy of every point. Each public function calls its cached twin with
keyword arguments: Streamlit names a positional argument with ``inspect.signature`` on every
call, a keyword one it reads as given.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.clustering import cluster_medoids
from core.columns import DESCRIBING_COLUMNS, metadata_columns, tells_rows_apart
from core.labels import majority_labels
from core.palette import CHART_TEXT_COLOUR, category_styles, group_rare, hover_text
from ui import data
from ui.widgets import GALLERY_COLUMNS


def readable(figure: go.Figure) -> go.Figure:
    """``figure`` with its axis, legend, title and colour-bar text in ``CHART_TEXT_COLOUR``
    (7:1 on white); changed in place and returned, so a call can wrap the figure argument.
    A figure cached for every session (``st.cache_resource``) must be styled inside the cached
    builder, never at the call site: concurrent sessions would mutate the shared object."""
    text = {"color": CHART_TEXT_COLOUR}
    axis = {"tickfont": text, "title_font": text}
    figure.update_layout(font=text, legend_font=text, legend_title_font=text, title_font=text,
                         coloraxis_colorbar={"tickfont": text, "title_font": text})
    figure.update_xaxes(**axis)
    figure.update_yaxes(**axis)
    if any(trace.type == "scatter3d" for trace in figure.data):
        figure.update_scenes(xaxis=axis, yaxis=axis, zaxis=axis)
    return figure


class SharedFigure(go.Figure):
    """A finished figure shown by many sessions: ``to_dict()`` (what ``st.plotly_chart`` sends,
    a deep copy with every array packed) is computed once and the same dict returned after.

    Read-only once made: nothing may change it (``update_*`` would not reach the dict sent)."""

    def __init__(self, figure: go.Figure) -> None:
        super().__init__(figure)
        self._shared_dict = figure.to_dict()  # the original's: same keys in the same order

    def to_dict(self) -> dict[str, Any]:
        return self._shared_dict


def map_table(token: str, cohort_key: str, cluster_key: str, cohort, clustering) -> tuple[pd.DataFrame, list[str]]:
    """The cohort's rows with their cluster name, and the columns the map can be coloured by.
    The dataset token is part of the key: two ingests of the same files share embeddings (and so
    cohort keys) but not their metadata."""
    return _map_table(token=token, cohort_key=cohort_key, cluster_key=cluster_key, _cohort=cohort, _clustering=clustering)


@st.cache_resource(show_spinner=False, max_entries=32)
def _map_table(token: str, cohort_key: str, cluster_key: str, _cohort, _clustering) -> tuple[pd.DataFrame, list[str]]:
    """See ``map_table``."""
    table = _cohort.table.copy()
    table["cluster"] = pd.Series(_clustering.labels).map(lambda c: "noise" if c < 0 else f"C{c}").values
    options = ["cluster", "label", *[c for c in metadata_columns(table) if tells_rows_apart(table[c])]]
    return table, options


def map_figure(token: str, cohort_key: str, cluster_key: str, projection_key: str | None, colour: str,
               dims: int, table: pd.DataFrame, coords: np.ndarray) -> tuple[int, SharedFigure]:
    """``(plotted rows, figure)`` of one map view, shared by every session.

    A category column colours its 10 commonest values (each with its own marker shape too) and
    draws the rest grey as "other"; a numeric column gets a colour bar titled with its name.
    Hover shows who the point is (``DESCRIBING_COLUMNS``), never its coordinates."""
    return _map_figure(token=token, cohort_key=cohort_key, cluster_key=cluster_key, projection_key=projection_key,
                       colour=colour, dims=dims, _table=table, _coords=coords)


@st.cache_resource(show_spinner=False, max_entries=64)
def _map_figure(token: str, cohort_key: str, cluster_key: str, projection_key: str | None, colour: str,
               dims: int, _table: pd.DataFrame, _coords: np.ndarray) -> tuple[int, SharedFigure]:
    """See ``map_figure``."""
    keep = np.isfinite(_coords[:, :dims]).all(axis=1)
    plot = _table.assign(row=np.arange(len(_table)))[keep]
    coords = _coords[keep]
    shown = [*DESCRIBING_COLUMNS, "cluster", colour]
    hover = hover_text(plot, shown).to_numpy()
    # Lists, not a numpy array: Plotly ships arrays base64-packed, and a selected point's
    # customdata then does not come back as [row].
    rows = [[int(r)] for r in plot["row"]]
    axes = {"x": coords[:, 0], "y": coords[:, 1], **({"z": coords[:, 2]} if dims == 3 else {})}
    scatter = go.Scattergl if dims == 2 else go.Scatter3d
    size = 7 if dims == 2 else 4
    template = "%{text}<extra></extra>"
    numeric = pd.api.types.is_numeric_dtype(plot[colour]) and plot[colour].nunique() > 8
    if numeric:
        traces = [scatter(
            **axes, mode="markers", text=hover, hovertemplate=template, customdata=rows,
            name=colour, showlegend=False,
            marker={"size": size, "opacity": 0.85, "color": plot[colour].astype("Float64").to_numpy(dtype=float, na_value=np.nan),
                    "colorscale": "Viridis", "colorbar": {"title": {"text": colour}}},
        )]
    else:
        grouped = group_rare(plot[colour])
        traces = []
        for style in category_styles(grouped, three_d=dims == 3):
            inside = (grouped == style.name).to_numpy()
            traces.append(scatter(
                x=axes["x"][inside], y=axes["y"][inside], **({"z": axes["z"][inside]} if dims == 3 else {}),
                mode="markers", name=style.name, text=hover[inside], hovertemplate=template,
                customdata=[rows[i] for i in np.flatnonzero(inside)],
                marker={"size": size, "opacity": 0.85, "color": style.colour, "symbol": style.symbol},
            ))
    figure = go.Figure(traces)
    figure.update_layout(legend_title_text=colour, height=620, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         **({"dragmode": "lasso", "xaxis_title": "dim1", "yaxis_title": "dim2"} if dims == 2 else {}))
    return len(plot), SharedFigure(readable(figure))


def cluster_mix_figure(token: str, cluster_key: str, labels: np.ndarray, truth: pd.Series) -> SharedFigure:
    """Clusters x ground-truth counts as a heat map, shared by every session."""
    return _cluster_mix_figure(token=token, cluster_key=cluster_key, _labels=labels, _truth=truth)


@st.cache_resource(show_spinner=False, max_entries=32)
def _cluster_mix_figure(token: str, cluster_key: str, _labels: np.ndarray, _truth: pd.Series) -> SharedFigure:
    """See ``cluster_mix_figure``."""
    mix = pd.crosstab(pd.Series(_labels, name="cluster"), _truth.fillna("(none)").values)
    return SharedFigure(readable(px.imshow(mix, text_auto=True, aspect="auto", color_continuous_scale="Blues",
                                           labels={"x": "ground truth", "y": "cluster", "color": "count"},
                                           height=360)))


def central_scans(token: str, cluster_key: str, dataset, cohort, labels: np.ndarray) -> dict[int, pd.DataFrame]:
    """Per cluster, the image rows of its 5 most central members (most central first)."""
    return _central_scans(token=token, cluster_key=cluster_key, _dataset=dataset, _cohort=cohort, _labels=labels)


@st.cache_resource(show_spinner=False, max_entries=32)
def _central_scans(token: str, cluster_key: str, _dataset, _cohort, _labels: np.ndarray) -> dict[int, pd.DataFrame]:
    """See ``central_scans``."""
    medoids = cluster_medoids(_cohort.X, _labels, n=5)
    rows = [row for cluster_id in sorted(medoids) for row in medoids[cluster_id]]
    images = data.representative_images(_dataset, _cohort.table.iloc[rows], _cohort.level)
    images = images[[c for c in GALLERY_COLUMNS if c in images]]  # narrow: cheap to show on every rerun
    scans, start = {}, 0
    for cluster_id in sorted(medoids):
        scans[cluster_id] = images.iloc[start:start + len(medoids[cluster_id])]
        start += len(medoids[cluster_id])
    return scans


def cluster_majority(token: str, cluster_key: str, labels: np.ndarray, truth: pd.Series) -> dict:
    """Each cluster's majority ground-truth label (``core.labels.majority_labels``), shared."""
    return _cluster_majority(token=token, cluster_key=cluster_key, _labels=labels, _truth=truth)


@st.cache_resource(show_spinner=False, max_entries=32)
def _cluster_majority(token: str, cluster_key: str, _labels: np.ndarray, _truth: pd.Series) -> dict:
    """See ``cluster_majority``."""
    return majority_labels(pd.Series(_labels), _truth.reset_index(drop=True))
