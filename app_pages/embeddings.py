"""Embeddings: choose encoders, device and batch size; compute in the background with progress;
cache hits shown."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.encoders import encoder_availability
from ui import data, widgets

widgets.page_header("Embeddings")
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
batch_size = int(c2.number_input("Batch size", 1, 1024, 32, key="embeddings_batch"))

if st.button("Compute embeddings", type="primary", key="embeddings_run", disabled=not chosen):
    # Runs on the server: closing the tab neither stops nor repeats it.
    st.session_state["embeddings_jobs"] = [
        (encoder, data.start_embedding(dataset, encoder, device=device, batch_size=batch_size, rerun=True).key)
        for encoder in chosen
    ]

jobs = [(encoder, data.job_runner().get(key)) for encoder, key in st.session_state.get("embeddings_jobs", [])]
jobs = [(encoder, job) for encoder, job in jobs if job is not None]
if any(not job.done for _, job in jobs):

    @st.fragment(run_every=2)
    def progress() -> None:
        if all(job.done for _, job in jobs):
            st.rerun()
        for encoder, job in jobs:
            st.progress(1.0 if job.done else job.fraction, text=f"{encoder}: {'done' if job.done else job.message}")

    progress()
    st.stop()

rows = []
for encoder, job in jobs:
    if job.error is not None:
        st.error(f"{encoder}: {job.error}")
        continue
    result = job.result()
    rows.append({"encoder": encoder, "dim": result.dim, "from cache": result.n_cached,
                 "computed": result.n_computed, "failed": result.n_failed, "seconds": round(job.seconds or 0.0, 1)})
    if result.n_failed:
        with st.expander(f"{encoder}: {result.n_failed} images failed"):
            st.dataframe(result.failures, hide_index=True)
if rows:
    st.markdown("**Last run** (cache hits vs computed)")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(f"Dataset **{dataset.name}**: {len(dataset.images)} images. Next: **Map**.")
