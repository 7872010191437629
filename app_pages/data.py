"""Data: pick the demo cohort, a folder on the server, or upload scans + a metadata CSV."""

from __future__ import annotations

import streamlit as st

from core import datasets, imports, roots, uploads
from core.ingest import LAYOUTS, summarize
from core.ingest.normalize import CANONICAL_FIELDS, FIELD_NAMES
from ui import auth, data, state, widgets

USER = auth.current_user()
USER_ID, IS_ADMIN = USER.id, USER.is_admin
IMPORT = "Import embeddings"

widgets.page_header("Data")
st.caption("Load scans and patient metadata. Several datasets can live side by side; switch in the sidebar.")
# Only what the role may do is offered: uploads need "ingest", server folders "server_folders".
sources = ["Built-in demo cohort", *(["Folder on the server"] if auth.can("server_folders", USER) else []),
           *(["Upload files", IMPORT] if auth.can("ingest", USER) else [])]
# A widget's own state is dropped when its page is left, so the last choice is kept under a
# plain session key and handed back to the radio on every visit.
if st.session_state.get("data_source_kept") in sources:
    st.session_state["data_source"] = st.session_state["data_source_kept"]
source_kind = st.radio("Add or open a dataset from", sources, horizontal=True, key="data_source",
                       on_change=lambda: st.session_state.update(data_source_kept=st.session_state["data_source"]))
if len(sources) == 1:
    st.caption(f"Your role ({USER.role}) browses datasets; an admin adds them.")


def staged_upload(name: str, scans: list, csv_file):
    """Stage the upload set once per (name, files): reruns reuse the session's copy."""
    memo_key = (USER_ID, name, tuple((f.file_id, f.name, f.size) for f in scans), csv_file and csv_file.file_id)
    memo = st.session_state.get("data_staged")
    if memo is None or memo[0] != memo_key:
        metadata = uploads.Upload(csv_file.name, csv_file.getbuffer()) if csv_file is not None else None
        staged = uploads.stage_uploads(USER_ID, name, [uploads.Upload(f.name, f.getbuffer()) for f in scans], metadata=metadata)
        memo = st.session_state["data_staged"] = (memo_key, staged)
    return memo[1]


def suggest_name_from_upload() -> str:
    """Fill an empty name field once per uploaded ZIP with a name made from the ZIP's name (runs
    before the field is drawn, so the user sees it and can change it); returns the suggestion."""
    scans = st.session_state.get("data_upload") or []
    zips = [f for f in scans if f.name.lower().endswith(".zip")]
    if len(zips) != 1:
        return ""
    suggestion = datasets.suggest_dataset_name(zips[0].name)
    if suggestion and not st.session_state.get("data_name") and st.session_state.get("data_name_from") != zips[0].file_id:
        st.session_state["data_name"] = suggestion
        st.session_state["data_name_from"] = zips[0].file_id
    return suggestion


def add_dataset(source_kind: str) -> None:
    suggested = suggest_name_from_upload() if source_kind == "Upload files" else ""
    text = st.text_input("Dataset name", key="data_name", placeholder="e.g. covid-xray-2020", help=datasets.NAME_RULES)
    st.caption(f"Name rules: {datasets.NAME_RULES}"
               + (f" Suggested from the ZIP: **{suggested}**." if suggested else ""))
    layout = st.selectbox("Layout", ["auto", *LAYOUTS], key="data_layout", help="auto detects the layout when it is unambiguous")
    name = source = metadata = staged = None
    if text:
        try:
            name = datasets.validate_dataset_name(text)
        except ValueError as error:
            st.error(f"{error}.")
    if source_kind == "Folder on the server":
        allowed = roots.allowed_roots(USER_ID)
        if not roots.configured_roots():
            st.info("No server folders are open to the app: only the demo cohort and your own uploads. "
                    "An administrator can list folders in SCANATLAS_DATA_ROOTS.")
        folder = st.text_input("Folder (or CSV / ZIP) on the server", key="data_folder")
        metadata_text = st.text_input("Metadata CSV on the server (optional)", key="data_metadata_path")
        try:
            source = roots.resolve_inside(folder, allowed) if folder else None
            metadata = roots.resolve_inside(metadata_text, allowed) if metadata_text else None
        except roots.OutsideRootsError as error:
            st.error(str(error))
            return
    else:
        csv_file = None
        try:
            limits = uploads.upload_limits()
        except ValueError as error:
            st.error(f"Uploads are switched off until the setting is fixed: {error}.")
            return
        scans = st.file_uploader(f"Scans: DICOM, PNG/JPEG, or a ZIP of folders (at most {limits.max_files} files, "
                                 f"{limits.max_bytes / 1024**3:.1f} GiB)", accept_multiple_files=True,
                                 key="data_upload", type=list(uploads.SCAN_SUFFIXES))
        csv_file = st.file_uploader("Metadata CSV (optional)", type=["csv"], key="data_upload_csv")
        if scans and name:
            try:
                staged = staged_upload(name, scans, csv_file)
            except (uploads.UploadRejected, ValueError, OSError) as error:
                st.error(f"Upload not saved: {error}.")
                return
            source, metadata = staged.source, staged.metadata
            for sent, reason in staged.refused:
                st.warning(f"{sent}: not used ({reason}).")

    column_map: dict[str, str] = {}
    unstaged_csv = csv_file if source_kind == "Upload files" and metadata is None else None
    if metadata is not None or unstaged_csv is not None:
        try:
            # The preview is shown as soon as a CSV is chosen, before a name or scans are given.
            preview = (uploads.metadata_preview_bytes(unstaged_csv.name, unstaged_csv.getbuffer()) if unstaged_csv
                       else uploads.metadata_preview(metadata, roots.allowed_roots(USER_ID)))
        except (ValueError, OSError) as error:
            st.error(f"Cannot read the metadata CSV: {error}.")
            return
        st.markdown("**Metadata preview** and column mapping (ScanAtlas field for each CSV column)")
        st.dataframe(preview.rows, width="stretch")
        cols = st.columns(4)
        for i, field in enumerate(CANONICAL_FIELDS):
            options = ["(none)", *preview.rows.columns]
            default = next((c for c, f in preview.guessed.items() if f == field), "(none)")
            chosen = cols[i % 4].selectbox(FIELD_NAMES[field], options, index=options.index(default),
                                           key=f"data_map_{field}", help=f"ScanAtlas field '{field}'")
            if chosen != "(none)":
                column_map[chosen] = field

    replace, confirmed = False, True
    if name:
        try:
            datasets.check_dataset_target(name, user_id=USER_ID, is_admin=IS_ADMIN)
        except datasets.DatasetExistsError:
            replace = confirmed = st.checkbox(f"Replace the existing dataset **{name}**", key="data_replace")
        except PermissionError as error:
            st.error(f"{error}.")
            return
    ready = bool(name and source is not None and confirmed)
    if not ready:
        missing = [what for what, ok in (
            ("a dataset name" if not text else "a valid dataset name", name),
            ("scans to upload" if source_kind == "Upload files" else "a folder inside the allowed roots",
             source is not None),
            ("the 'Replace' box ticked", confirmed)) if not ok]
        st.caption(f"Ingest is disabled until you give {' and '.join(missing)}.")
    if st.button("Ingest", type="primary", disabled=not ready, key="data_ingest"):
        bar = st.progress(0.0, text="Reading files...")
        options = dict(user=USER, replace=replace, layout=layout, column_map=column_map,
                       progress=lambda done, total, _m: bar.progress(done / max(total, 1), text=f"{done}/{total} files"))
        try:
            if staged is not None:
                result = uploads.ingest_staged(staged, name, **options)
            else:
                result = uploads.ingest_server_source(source, name, metadata=metadata, **options)
        except (ValueError, OSError, PermissionError) as error:
            st.error(f"Could not ingest: {error}. Check the source, the layout and the column mapping.")
        else:
            # Switch to the new dataset and rerun, so that the sidebar (drawn before this page)
            # and every next page show it; the summary is shown after the rerun.
            state.remember("dataset", name)
            label_column = next((c for c, f in column_map.items() if f == "label"), None)
            st.session_state["data_ingest_summary"] = datasets.ingest_summary_status(result, csv_label_column=label_column)
            st.rerun()
        finally:
            bar.empty()


def import_embeddings() -> None:
    """Vectors made elsewhere + their metadata CSV -> a dataset without images (core.imports)."""
    st.caption("Already have vectors (a foundation model's, a vendor's export)? Import them with their metadata; "
               "maps, clusters, labels, drift, classifiers and fairness then work without the images.")
    text = st.text_input("Dataset name", key="import_name", placeholder="e.g. mimic-cxr-foundation", help=datasets.NAME_RULES)
    encoder = st.text_input("Encoder name (the model that made the vectors)", key="import_encoder",
                            placeholder="e.g. cxr-foundation", help="Letters, digits, '-', '_' and '.'; pages list it as the encoder.")
    on_server = auth.can("server_folders", USER) and st.toggle("Files on the server", key="import_on_server",
                                                               help="For files over the upload limit: paths inside the allowed folders.")
    if on_server:
        vectors = st.text_input("Vectors file (.parquet, .npy, .npz, .csv)", key="import_vectors_path")
        ids = st.text_input("Id list for .npy, one id per line (optional)", key="import_ids_path")
        metadata = st.text_input("Metadata CSV", key="import_metadata_path")
    else:
        vectors = st.file_uploader("Vectors: Parquet (a list column or one column per dimension), .npy, .npz or CSV",
                                   type=["parquet", "npy", "npz", "csv"], key="import_vectors")
        ids = st.file_uploader("Id list for .npy (one id per line; optional)", type=["txt", "csv"], key="import_ids")
        metadata = st.file_uploader("Metadata CSV: the id column, then patient id, sex, age, label, report...",
                                    type=["csv"], key="import_metadata")
    id_column = st.text_input("Id column in both files (blank: image_id, id, dicom_id or sample_id)", key="import_id_column")
    allow = st.checkbox("Import even when some ids have no metadata row or no vector (listed in the report)",
                        key="import_allow_unmatched")
    name = None
    if text:
        try:
            name = datasets.validate_dataset_name(text)
        except ValueError as error:
            st.error(f"{error}.")
    replace = confirmed = False
    if name:
        try:
            datasets.check_dataset_target(name, user_id=USER_ID, is_admin=IS_ADMIN)
            confirmed = True
        except datasets.DatasetExistsError:
            replace = confirmed = st.checkbox(f"Replace the existing dataset **{name}**", key="import_replace")
        except PermissionError as error:
            st.error(f"{error}.")
            return
    missing = [what for what, ok in (("a valid dataset name", name), ("an encoder name", encoder.strip()),
                                     ("a vectors file", vectors), ("a metadata CSV", metadata),
                                     ("the 'Replace' box ticked", confirmed or not name)) if not ok]
    if missing:
        st.caption(f"Import is disabled until you give {' and '.join(missing)}.")
    if not st.button("Import", type="primary", disabled=bool(missing), key="import_run"):
        return
    bar = st.progress(0.0, text="Reading vectors...")
    try:
        if not on_server:
            vectors, metadata, ids = imports.stage_import(
                USER_ID, name, uploads.Upload(vectors.name, vectors.getbuffer()),
                uploads.Upload(metadata.name, metadata.getbuffer()),
                uploads.Upload(ids.name, ids.getbuffer()) if ids is not None else None)
        result = imports.import_dataset(
            vectors, metadata, name, user=USER, encoder=encoder.strip(), ids=ids or None, id_column=id_column.strip() or None,
            allow_unmatched=allow, replace=replace,
            progress=lambda done, total: bar.progress(done / max(total, 1), text=f"{done}/{total} vectors"))
    except (ValueError, OSError, PermissionError) as error:
        st.error(f"Could not import: {error}")
    else:
        state.remember("dataset", name)
        state.remember("encoder", result.encoder)
        message = (f"Imported {result.n_vectors} vectors of dimension {result.dim} as **{name}** (encoder "
                   f"{result.encoder}, {len(result.dataset.patients)} patients) in {result.seconds:.1f} s.")
        st.session_state["data_ingest_summary"] = (
            ("warning", f"{message} {' '.join(result.warnings)}; see the ingest report below.") if result.warnings
            else ("success", message))
        st.rerun()
    finally:
        bar.empty()


summary = st.session_state.pop("data_ingest_summary", None)
if summary is not None:
    level, message = summary
    getattr(st, level)(message)

if source_kind == "Built-in demo cohort":
    on_demo = st.session_state["dataset"] == data.demo_ready()
    st.info(("You are looking at the demo cohort. It is " if on_demo else "The demo cohort is ")
            + "**synthetic**: generated cardiac-MRI short-axis slices (80 patients x 4 slices) "
            "with four planted groups (normal, dilated / hypertrophic cardiomyopathy, myocardial infarction).")
    if not on_demo and st.button("Use the demo cohort", key="data_use_demo", type="primary"):
        state.remember("dataset", data.demo_ready())
        st.rerun()
elif source_kind == IMPORT:
    import_embeddings()
else:
    add_dataset(source_kind)

dataset = data.current_dataset()
counts = datasets.dataset_counts(dataset)
st.subheader(f"Dataset: {dataset.name}")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Images", counts.n_images)
c2.metric("Patients", counts.n_patients)
c3.metric("Not ingested", counts.n_not_ingested)
c4.metric("Images with ground truth", counts.n_with_label)
with st.expander("Summary", expanded=False):
    st.code(summarize(dataset), language=None)
patients = dataset.patients
labeled = patients["label"].notna().any()
sample = patients.groupby("label", sort=True).head(1).head(6) if labeled else patients.head(6)
st.markdown("**Sample scans**" + (" (one patient per ground-truth label)" if labeled else ""))
if IS_ADMIN:
    st.session_state[widgets.REVEAL_KEY] = st.toggle(
        "Show scans with burned-in annotations unblurred", value=st.session_state.get(widgets.REVEAL_KEY, False),
        key="data_reveal", help="Text burned into the pixels often names the patient; scans with it are pixelated on every page.")
widgets.gallery(data.representative_images(dataset, sample, "patient"), columns=6, limit=6, key="data_samples")
filled = patients.dropna(axis=1, how="all")
st.markdown("**Patients**" + (f" ({patients.shape[1] - filled.shape[1]} empty columns hidden)" if filled.shape[1] < patients.shape[1] else ""))
st.dataframe(filled, width="stretch", hide_index=True, height=260)
st.markdown("**Ingest report**: every file or row that was not ingested, and why")
if len(dataset.report):
    st.dataframe(dataset.report, width="stretch", hide_index=True, height=220)
else:
    st.write("Every file was ingested.")
st.caption("Next: **Embeddings** turns each scan into a vector; **Map** shows the cohort.")
