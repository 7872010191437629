"""Embeddings: the encoder recommended for this dataset first, the others after; weight files,
the cache folder, device and batch size under "Advanced". Computes in the background with
progress; cache hits shown. An unavailable encoder says what an administrator must do."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.encoders import admin_action, encoder_availability, get_spec, recommended_encoder
from core.ingest.imported import imported_encoders
from core.settings import embeddings_root
from ui import data, widgets

widgets.page_header("Embeddings")
st.caption("Each scan becomes a vector from a pretrained network. Vectors are cached: nothing is computed twice.")

dataset = data.current_dataset()
imported = imported_encoders(dataset)
if imported:
    st.info(f"**{dataset.name}** was imported as vectors, not images: there is nothing to embed. "
            "Pick its encoder in the sidebar; every page then uses these vectors.")
    st.dataframe(pd.DataFrame([{"encoder": name, "dim": entry.get("dim"), "vectors": entry.get("n"),
                                "from file": entry.get("source"), "metadata": entry.get("metadata")}
                               for name, entry in imported.items()]), hide_index=True, width="stretch")
    st.stop()
availability = encoder_availability()
usable = availability.loc[availability["weights_available"], "name"].tolist()
recommended = recommended_encoder(dataset, set(usable))
# The recommendation first, then the other encoders that can run here.
options = [recommended.encoder, *(n for n in usable if n != recommended.encoder)]
st.markdown(f"**Recommended for this dataset: {recommended.encoder}.** {recommended.reason}")
# Preselect the recommendation, again whenever the dataset (or what is recommended) changes
# and on a new visit (a widget's state is dropped when its page is left).
if (st.session_state.get("embeddings_recommended_for") != (dataset.name, recommended.encoder)
        or "embeddings_encoders" not in st.session_state):
    st.session_state["embeddings_recommended_for"] = (dataset.name, recommended.encoder)
    st.session_state["embeddings_encoders"] = [recommended.encoder]
chosen = st.multiselect(
    "Encoders to run", options, key="embeddings_encoders",
    format_func=lambda n: f"{n} (recommended for this dataset)" if n == recommended.encoder else n)
described = availability.assign(
    description=[get_spec(n).description for n in availability["name"]])
st.dataframe(described[["name", "kind", "dim", "description", "weights_available"]], width="stretch", hide_index=True,
             column_config={"weights_available": st.column_config.CheckboxColumn("available here")})
for name in availability.loc[~availability["weights_available"], "name"]:
    st.caption(f"**{name}** is not available here. {admin_action(name, detail=False)} (Where to get it: Advanced.)")

with st.expander("Advanced: weight files, cache folder, device, batch size"):
    st.dataframe(availability[["name", "version", "input", "message"]].rename(columns={"message": "weights"}).assign(
        **{"to make it available": [("" if ok else admin_action(n)) for n, ok in
                                    zip(availability["name"], availability["weights_available"], strict=True)]}),
        width="stretch", hide_index=True)
    st.caption(f"Embeddings are cached in {embeddings_root()}; a scan is never embedded twice by one encoder.")
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
