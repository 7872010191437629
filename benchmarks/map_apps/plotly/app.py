"""bench_map.py's minimal Plotly app: the points of ``SCANATLAS_BENCH_MAP_POINTS`` (an .npz with
x, y, label) drawn as ScanAtlas's Map draws them (``ui.charts.map_figure``: float32 typed
arrays, one cached figure for every session), with a button that reruns the script."""

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from ui import charts  # noqa: E402


@st.cache_resource
def points(path: str) -> tuple[pd.DataFrame, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        table = pd.DataFrame({"patient_id": [f"S{i:06d}" for i in range(len(stored["x"]))],
                              "label": stored["label"].astype(str)})
        return table, np.c_[stored["x"], stored["y"]]


path = os.environ["SCANATLAS_BENCH_MAP_POINTS"]
table, coords = points(path)
st.button("Rerun", key="rerun")
view = charts.map_figure(path, "bench", "bench", "bench", "label", 2, table, coords)
event = st.plotly_chart(view.figure, on_select="rerun", selection_mode=("points", "box", "lasso"), key="map_chart")
st.caption(f"{view.n_plotted} points; selection: {len(view.selected_rows(event.selection.points))}")
