"""Embeddings: choose encoders, device and batch size; compute with progress; cache hits shown."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from core.encoders import WeightsUnavailableError, encoder_availability
from ui import data

st.title("Embeddings")
st.caption("Each scan becomes a vector from a pretrained network. Vectors are cached: nothing is computed twice.")

dataset = data.current_dataset()
availability = encoder_availability()
st.dataframe(
    availability[["name", "kind", "dim", "input", "weights_available", "message"]],
    width="stretch", hide_index=True,
    column_config={"weights_available": st.column_config.CheckboxColumn("available here")},
)
usable = availability.loc[availability["weights_available"], "name"].tolist()
default = [st.session_state["encoder"]] if st.session_state["encoder"] in usable else usable[:1]
chosen = st.multiselect("Encoders to run", usable, default=default, key="embeddings_encoders")
c1, c2 = st.columns(2)
device = c1.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="embeddings_device",
                      help="auto picks CUDA, then Apple MPS, then the CPU")
batch_size = c2.number_input("Batch size", 1, 1024, 32, key="embeddings_batch")

if st.button("Compute embeddings", type="primary", key="embeddings_run", disabled=not chosen):
    rows = []
    for encoder in chosen:
        started = time.monotonic()
        try:
            result = data.run_embeddings(dataset, encoder, device=device, batch_size=int(batch_size))
        except (WeightsUnavailableError, ValueError, RuntimeError) as error:
            st.error(f"{encoder}: {error}")
            continue
        seconds = time.monotonic() - started
        rows.append({"encoder": encoder, "dim": result.dim, "from cache": result.n_cached,
                     "computed": result.n_computed, "failed": result.n_failed, "seconds": round(seconds, 1)})
        if result.n_failed:
            with st.expander(f"{encoder}: {result.n_failed} images failed"):
                st.dataframe(result.failures, hide_index=True)
    st.session_state["embeddings_last"] = rows

if st.session_state.get("embeddings_last"):
    st.markdown("**Last run** (cache hits vs computed)")
    st.dataframe(pd.DataFrame(st.session_state["embeddings_last"]), hide_index=True, width="stretch")
st.caption(f"Dataset **{dataset.name}**: {len(dataset.images)} images. Next: **Map**.")
