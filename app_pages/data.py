"""Data: pick the demo cohort, a folder on the server, or upload scans + a metadata CSV."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import streamlit as st

from core.datasets import dataset_path
from core.ingest import LAYOUTS, ingest, summarize
from core.ingest.layouts import read_csv
from core.ingest.normalize import CANONICAL_FIELDS, canonical_column_map
from core.settings import cache_root
from ui import data, state, widgets

st.title("Data")
st.caption("Load scans and patient metadata. Several datasets can live side by side; switch in the sidebar.")

source_kind = st.radio(
    "Add or open a dataset from", ["Built-in demo cohort", "Folder on the server", "Upload files"], horizontal=True, key="data_source"
)

if source_kind == "Built-in demo cohort":
    on_demo = st.session_state["dataset"] == data.demo_ready()
    st.info(
        ("You are looking at the demo cohort. It is " if on_demo else "The demo cohort is ")
        + "**synthetic**: generated cardiac-MRI short-axis slices (80 patients x 8 slices) "
        "with four planted groups (normal, dilated / hypertrophic cardiomyopathy, myocardial infarction)."
    )
    if not on_demo and st.button("Use the demo cohort", key="data_use_demo", type="primary"):
        state.remember("dataset", data.demo_ready())
        st.rerun()
else:
    name = st.text_input("Dataset name", key="data_name", placeholder="e.g. covid-xray-2020")
    layout = st.selectbox("Layout", ["auto", *LAYOUTS], key="data_layout",
                          help="auto detects the layout when it is unambiguous")
    staging = None
    metadata_path = None
    if source_kind == "Folder on the server":
        folder = st.text_input("Folder (or CSV / ZIP) on the server", key="data_folder")
        staging = Path(folder).expanduser() if folder else None
        metadata_text = st.text_input("Metadata CSV on the server (optional)", key="data_metadata_path")
        metadata_path = Path(metadata_text).expanduser() if metadata_text else None
    else:
        scans = st.file_uploader(
            "Scans: DICOM, PNG/JPEG, or a ZIP of folders", accept_multiple_files=True, key="data_upload",
            type=["dcm", "dicom", "png", "jpg", "jpeg", "tif", "tiff", "zip"],
        )
        csv_file = st.file_uploader("Metadata CSV (optional)", type=["csv"], key="data_upload_csv")
        if scans and name:
            staging = cache_root() / "uploads" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
            if staging.exists():
                shutil.rmtree(staging)
            staging.mkdir(parents=True)
            for upload in scans:
                (staging / Path(upload.name).name).write_bytes(upload.getbuffer())
            zips = [p for p in staging.iterdir() if p.suffix.lower() == ".zip"]
            if len(scans) == 1 and zips:
                staging = zips[0]
            if csv_file is not None:
                metadata_path = (staging if staging.is_dir() else staging.parent) / "metadata_upload.csv"
                metadata_path.write_bytes(csv_file.getbuffer())

    column_map: dict[str, str] = {}
    if metadata_path is not None and metadata_path.is_file():
        preview = read_csv(metadata_path)
        st.markdown("**Metadata preview** and column mapping (ScanAtlas field for each CSV column)")
        st.dataframe(preview.head(8), width="stretch")
        guessed = canonical_column_map(list(preview.columns))
        cols = st.columns(4)
        for i, field in enumerate(CANONICAL_FIELDS):
            options = ["(none)", *preview.columns]
            default = next((c for c, f in guessed.items() if f == field), "(none)")
            chosen = cols[i % 4].selectbox(field, options, index=options.index(default), key=f"data_map_{field}")
            if chosen != "(none)":
                column_map[chosen] = field

    ready = bool(name and staging is not None)
    if st.button("Ingest", type="primary", disabled=not ready, key="data_ingest"):
        if re.fullmatch(r"[A-Za-z0-9_.-]+", name) is None:
            st.error("Use only letters, digits, '-', '_' and '.' in the dataset name.")
        else:
            bar = st.progress(0.0, text="Reading files...")
            try:
                result = ingest(
                    staging, dataset_path(name), layout=layout, metadata=metadata_path,
                    column_map=column_map or None, name=name,
                    progress=lambda done, total, _m: bar.progress(done / max(total, 1), text=f"{done}/{total} files"),
                )
            except (ValueError, FileNotFoundError, PermissionError) as error:
                st.error(f"Could not ingest: {error}. Check the folder, the layout and the column mapping.")
            else:
                state.remember("dataset", name)
                st.success(f"Ingested {result.n_images} images as **{name}** ({result.layout} layout).")
            finally:
                bar.empty()

dataset = data.current_dataset()
st.subheader(f"Dataset: {dataset.name}")
images, patients, report = dataset.images, dataset.patients, dataset.report
c1, c2, c3, c4 = st.columns(4)
c1.metric("Images", len(images))
c2.metric("Patients", len(patients))
c3.metric("Not ingested", int((report["status"] != "slice_count_mismatch").sum()) if len(report) else 0)
c4.metric("Images with ground truth", int(images["label"].notna().sum()))
with st.expander("Summary", expanded=False):
    st.code(summarize(dataset), language=None)
labeled = patients["label"].notna().any()
sample = patients.groupby("label", sort=True).head(1).head(6) if labeled else patients.head(6)
st.markdown("**Sample scans**" + (" (one patient per ground-truth label)" if labeled else ""))
widgets.gallery(data.representative_images(dataset, sample, "patient"), columns=6, limit=6, key="data_samples")
filled = patients.dropna(axis=1, how="all")
st.markdown("**Patients**" + (f" ({patients.shape[1] - filled.shape[1]} empty columns hidden)" if filled.shape[1] < patients.shape[1] else ""))
st.dataframe(filled, width="stretch", hide_index=True, height=260)
st.markdown("**Ingest report**: every file or row that was not ingested, and why")
if len(report):
    st.dataframe(report, width="stretch", hide_index=True, height=220)
else:
    st.write("Every file was ingested.")
st.caption("Next: **Embeddings** turns each scan into a vector; **Map** shows the cohort.")
