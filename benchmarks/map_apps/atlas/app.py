"""bench_map.py's minimal Embedding Atlas app: the points of ``SCANATLAS_BENCH_MAP_POINTS`` (an
.npz with x, y, label) in Apple's ``embedding_atlas.streamlit.embedding_atlas`` widget, with a
button that reruns the script (to count what a rerun sends). Not part of ScanAtlas."""

import os

import numpy as np
import pandas as pd
import streamlit as st
from embedding_atlas.streamlit import embedding_atlas


@st.cache_resource
def points(path: str) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as stored:
        return pd.DataFrame({"x": stored["x"], "y": stored["y"], "label": stored["label"].astype(str)})


frame = points(os.environ["SCANATLAS_BENCH_MAP_POINTS"])
st.button("Rerun", key="rerun")
selection = embedding_atlas(frame, x="x", y="y", text="label", key="atlas")
st.caption(f"{len(frame)} points; selection: {selection.get('predicate') if selection else None}")
