"""The Plotly look every chart shares: axis, legend and colour-bar text dark enough for WCAG AA.

Streamlit's chart theme draws axis text #808495 at 12 px, 3.7:1 on white; AA asks 4.5:1. Its
theme is merged over a figure's *template* in the browser, so a template cannot fix this: the
colours must be set on the figure's own layout, which the theme leaves alone.
"""

from __future__ import annotations

import plotly.graph_objects as go

from core.palette import CHART_TEXT_COLOUR


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
