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

from dataclasses import dataclass, field
from html import escape
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
    """The cohort's rows with their cluster name, and the columns the map can be coloured by
    (no cluster while ``clustering`` is None: a large cohort's is still being computed).
    The dataset token is part of the key: two ingests of the same files share embeddings (and so
    cohort keys) but not their metadata."""
    return _map_table(token=token, cohort_key=cohort_key, cluster_key=cluster_key, _cohort=cohort, _clustering=clustering)


@st.cache_resource(show_spinner=False, max_entries=32)
def _map_table(token: str, cohort_key: str, cluster_key: str, _cohort, _clustering) -> tuple[pd.DataFrame, list[str]]:
    """See ``map_table``."""
    table = _cohort.table.copy()
    columns = [c for c in metadata_columns(table) if tells_rows_apart(table[c])]
    if _clustering is None:  # still computed: ground truth first, or a column when there is none
        label_first = table["label"].notna().any() or not columns
        return table, ["label", *columns] if label_first else [*columns, "label"]
    table["cluster"] = pd.Series(_clustering.labels).map(lambda c: "noise" if c < 0 else f"C{c}").values
    return table, ["cluster", "label", *columns]


# Above this many points the hover shows the point's colour group only, not who it is: a text per
# point is most of a large map's bytes (about 60 of them a point), and the selection table below
# the map lists who the selected points are.
HOVER_TEXT_MAX_POINTS = 20_000

# A map above HOVER_TEXT_MAX_POINTS is drawn at one WebGL pixel per CSS pixel (Plotly's
# ``plotGlPixelRatio``; its default 2 draws a 2x canvas and lets the browser scale it down, four
# times the fragments a point). Every change of the selection redraws every point (the unselected
# ones dimmed), and Streamlit sends the selection to the server only after that redraw reached the
# screen (its widget updates wait for a ``setTimeout(0)``, which runs after the frame): in
# headless Chromium's software WebGL the redraw of 200k points at ratio 2 held the selection in the
# page for 1.8 s (benchmarks/bench_map.py, README "The 200k map"). Smaller maps keep ratio 2:
# crisp markers on a high-DPI screen cost little there.
LARGE_MAP_GL_PIXEL_RATIO = 1


@dataclass(frozen=True)
class MapView:
    """One drawn map: ``figure`` (shared, read-only) and, per trace, the table rows of its points
    (``trace_rows[curve_number][point_index]``), so a selection comes back as table rows without
    sending a row id with every point."""

    n_plotted: int
    figure: SharedFigure
    trace_rows: tuple[np.ndarray, ...]
    config: dict[str, Any] = field(default_factory=dict)  # Plotly's config: ``st.plotly_chart(config=...)``

    def selected_rows(self, points: list[dict[str, Any]]) -> list[int]:
        """The sorted table rows of the selected ``points`` (Streamlit's Plotly selection: each
        with ``curve_number`` and ``point_index``). What the browser sends is not trusted: a
        point whose trace or index is not in this map is ignored."""
        rows = set()
        for point in points:
            curve, index = point.get("curve_number"), point.get("point_index")
            if (isinstance(curve, int) and isinstance(index, int) and 0 <= curve < len(self.trace_rows)
                    and 0 <= index < len(self.trace_rows[curve])):
                rows.add(int(self.trace_rows[curve][index]))
        return sorted(rows)


def map_figure(token: str, cohort_key: str, cluster_key: str, projection_key: str | None, colour: str,
               dims: int, table: pd.DataFrame, coords: np.ndarray) -> MapView:
    """The ``MapView`` of one map view, shared by every session.

    Coordinates go as float32 typed arrays (Plotly packs numpy arrays as base64 ``{dtype,
    bdata}``: 8 bytes a point in 2-D, not a JSON number list); no per-point row ids go with
    them (``MapView.selected_rows`` maps a selection back). A category column colours its 10
    commonest values (each with its own marker shape too) and draws the rest grey as "other";
    a numeric column gets a colour bar titled with its name. Hover shows who the point is
    (``DESCRIBING_COLUMNS``), never its coordinates, up to ``HOVER_TEXT_MAX_POINTS`` points;
    above that, the point's colour group, and the map is drawn at ``LARGE_MAP_GL_PIXEL_RATIO``
    (``MapView.config``, to pass to ``st.plotly_chart``)."""
    return _map_figure(token=token, cohort_key=cohort_key, cluster_key=cluster_key, projection_key=projection_key,
                       colour=colour, dims=dims, _table=table, _coords=coords)


@st.cache_resource(show_spinner=False, max_entries=64)
def _map_figure(token: str, cohort_key: str, cluster_key: str, projection_key: str | None, colour: str,
               dims: int, _table: pd.DataFrame, _coords: np.ndarray) -> MapView:
    """See ``map_figure``."""
    keep = np.isfinite(_coords[:, :dims]).all(axis=1)
    rows = np.flatnonzero(keep)
    plot = _table.iloc[rows]
    coords = np.ascontiguousarray(_coords[rows, :dims], dtype=np.float32)
    with_text = len(plot) <= HOVER_TEXT_MAX_POINTS
    hover = hover_text(plot, [*DESCRIBING_COLUMNS, "cluster", colour]).to_numpy() if with_text else None
    scatter = go.Scattergl if dims == 2 else go.Scatter3d
    # Smaller markers on a large map: a dense map reads as well, and every redraw (a lasso drags
    # through several, and the selection leaves the page only after the last one) costs software
    # WebGL its fragments: at 200k points one redraw at 1x took 0.37 s at size 1, 0.49 s at 2,
    # 0.71 s at 3 (README "The Map at 200,000 points").
    large = len(plot) > HOVER_TEXT_MAX_POINTS
    size = (2 if large else 7) if dims == 2 else (2 if large else 4)

    def trace(inside: np.ndarray | None, name: str, marker: dict, **options) -> go.Scatter:
        picked = slice(None) if inside is None else inside
        axes = {axis: coords[picked, i] for i, axis in enumerate("xyz"[:dims])}
        text = {"text": hover[picked], "hovertemplate": "%{text}<extra></extra>"} if with_text else \
            {"hovertemplate": f"{escape(colour)}: {escape(name)}<extra></extra>"}
        return scatter(**axes, mode="markers", name=name, marker={"size": size, "opacity": 0.85, **marker},
                       **text, **options)

    numeric = pd.api.types.is_numeric_dtype(plot[colour]) and plot[colour].nunique() > 8
    if numeric:
        values = plot[colour].astype("Float64").to_numpy(dtype=np.float32, na_value=np.nan)
        traces = [trace(None, colour, {"color": values, "colorscale": "Viridis",
                                       "colorbar": {"title": {"text": colour}}}, showlegend=False)]
        if not with_text:
            traces[0].hovertemplate = f"{escape(colour)}: %{{marker.color:.3g}}<extra></extra>"
        trace_rows = (rows,)
    else:
        grouped = group_rare(plot[colour]).to_numpy()
        traces, trace_rows = [], []
        for style in category_styles(pd.Series(grouped), three_d=dims == 3):
            inside = grouped == style.name
            traces.append(trace(inside, style.name, {"color": style.colour, "symbol": style.symbol}))
            trace_rows.append(rows[inside])
        trace_rows = tuple(trace_rows)
    figure = go.Figure(traces)
    figure.update_layout(legend_title_text=colour, height=620, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         **({"dragmode": "lasso", "xaxis_title": "dim1", "yaxis_title": "dim2"} if dims == 2 else {}))
    for trace_row in trace_rows:
        trace_row.flags.writeable = False
    config = {"plotGlPixelRatio": LARGE_MAP_GL_PIXEL_RATIO} if large else {}
    return MapView(len(plot), SharedFigure(readable(figure)), trace_rows, config)


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
