"""Small display pieces several pages use: the scan gallery and the window/level viewer.

Scans are named by patient id and frame, never by file name (file names are often patient
names). A scan whose ``burned_in_annotation`` column is True (text burned into the pixels) is
shown pixelated unless ``reveal_burned_in`` is True; by default that is the admin's choice on the
Data page (``st.session_state["reveal_burned_in"]``).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from core.columns import DESCRIBING_COLUMNS
from core.deid import obscure_image
from core.ingest import Dataset
from core.ingest.imported import no_images_message
from core.previews import PREVIEW_FOLDER, preview_pixels
from core.windowing import CT_WINDOW_PRESETS, ScanValues, apply_window
from ui import data

REVEAL_KEY = "reveal_burned_in"
# The columns of an images table that ``gallery`` reads.
GALLERY_COLUMNS = tuple(dict.fromkeys(("path", "frame", "image_id", "patient_id", "burned_in_annotation",
                                       *DESCRIBING_COLUMNS)))


def page_header(title: str) -> None:
    """The page title with the dataset every result on the page comes from, in a caption under it
    ("Dataset: `name`"), so that no page can show one cohort while the user thinks of another."""
    st.title(title)
    st.caption(f"Dataset: `{st.session_state['dataset']}`")


def scan_label(row: pd.Series) -> str:
    """How a scan is named on screen: patient id and frame (never the file name)."""
    return f"{row.get('patient_id')} · frame {row.get('frame')}"


def has_burned_in_text(row: pd.Series) -> bool:
    """True when ingest found burned-in annotation in the scan (a missing column means no)."""
    value = row.get("burned_in_annotation")
    return value is not None and value is not pd.NA and not (isinstance(value, float) and np.isnan(value)) and bool(value)


def _revealed(reveal_burned_in: bool | None) -> bool:
    return bool(st.session_state.get(REVEAL_KEY, False)) if reveal_burned_in is None else reveal_burned_in


def caption_for(row: pd.Series) -> str:
    parts = []
    for field in DESCRIBING_COLUMNS:
        value = row.get(field)
        if value is None or (isinstance(value, float) and np.isnan(value)) or value == "unknown":
            continue
        parts.append(f"{value:.0f}y" if field == "age" else str(value))
    return " · ".join(parts)


def gallery(image_rows: pd.DataFrame, *, columns: int = 6, limit: int = 24, key: str = "gallery",
            reveal_burned_in: bool | None = None) -> None:
    """Thumbnails of ``image_rows`` (rows of an images table) with their key metadata; scans with
    burned-in text are pixelated unless ``reveal_burned_in`` (default: the session's choice)."""
    if _without_pixels(image_rows):
        return
    reveal = _revealed(reveal_burned_in)
    shown = image_rows.head(limit)
    if len(image_rows) > limit:
        st.caption(f"Showing {limit} of {len(image_rows)} scans.")
    # Plain dicts of the few columns used: a row as a Series (iterrows) of a wide table was most
    # of a Clusters rerun.
    used = [c for c in GALLERY_COLUMNS if c in shown]
    previews = _previews_root()
    for i, row in enumerate(shown[used].to_dict("records")):
        if i % columns == 0:  # a new row of columns, so that captions of any length stay aligned
            grid = st.columns(columns)
        hidden = has_burned_in_text(row) and not reveal
        picture = thumbnail_jpeg(path=str(row["path"]), frame=int(row["frame"]), obscured=hidden,  # keywords: no inspect per call
                                 image_id=str(row.get("image_id") or ""), previews=previews)
        with grid[i % columns]:
            if picture is None:
                st.warning(f"Cannot display {scan_label(row)}")
            else:
                st.image(picture, caption=caption_for(row) + (" · burned-in text hidden" if hidden else ""),
                         output_format="JPEG", width="stretch")


# At most 2048 JPEGs of a 256 px thumbnail (~30 KB each) for every session together.
@st.cache_resource(show_spinner=False, max_entries=2048)
def thumbnail_jpeg(path: str, frame: int, obscured: bool, image_id: str = "", previews: str = "") -> bytes | None:
    """The gallery's JPEG of one scan (pixelated when ``obscured``), made once for every session.

    The preview ingest stored (``previews``: the dataset folder, ``image_id``) as it is, when
    there is one; otherwise what ``st.image`` would make of the float thumbnail decoded from the
    original (clamped to [0, 1], 8-bit, JPEG quality 100). None when the scan cannot be read."""
    stored = data.preview_jpeg(previews, image_id)
    picture = None
    if stored is not None:
        if not obscured:
            return stored
        with contextlib.suppress(OSError, ValueError):  # a damaged preview: decode the original
            picture = preview_pixels(stored)
    if picture is None:
        picture = data.thumbnail(path, frame)
    if picture is None:
        return None
    if obscured:
        picture = obscure_image(picture)
    pixels = (np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert("RGB" if pixels.ndim == 3 else "L").save(buffer, format="JPEG", quality=100)
    return buffer.getvalue()


def _previews_root() -> str:
    """The sidebar dataset's folder when ingest stored previews there, else ""."""
    try:
        root = data.whole_dataset().root
    except (KeyError, OSError, ValueError):  # no dataset chosen (yet)
        return ""
    return str(root) if (root / PREVIEW_FOLDER).is_dir() else ""


def _without_pixels(image_rows: pd.DataFrame) -> bool:
    """True (and says so, plainly) when the rows have no image files: an imported dataset."""
    if len(image_rows) and ("path" not in image_rows or image_rows["path"].isna().all()):
        st.info(no_images_message(data.whole_dataset()), icon=":material/hide_image:")
        return True
    return False


def scan_viewer(dataset: Dataset, image_rows: pd.DataFrame, *, key: str, reveal_burned_in: bool | None = None) -> None:
    """One scan at a time, with window/level sliders (DICOM-style) and its metadata; a scan with
    burned-in text is pixelated (and has no Grad-CAM) unless ``reveal_burned_in``."""
    if image_rows.empty or _without_pixels(image_rows):
        return
    options = list(range(len(image_rows)))
    index = st.selectbox("Scan", options, key=f"{key}_scan", format_func=lambda i: scan_label(image_rows.iloc[i]))
    row = image_rows.iloc[index]
    scan = data.scan_values(str(row["path"]), int(row["frame"]))
    if scan is None:
        st.warning("This scan cannot be displayed.")
        return
    hidden = has_burned_in_text(row) and not _revealed(reveal_burned_in)
    if hidden:
        st.caption("This scan has text burned into its pixels; it is pixelated. An admin can show it on the Data page.")
    left, right = st.columns([3, 2])
    with right:
        center, width = _window_controls(scan, key=f"{key}_{index}")
        shown = {k: row.get(k) for k in ("patient_id", "label", "age", "sex", "modality", "view", "frame", "rows", "columns")}
        st.dataframe(pd.DataFrame({"field": list(shown), "value": [str(v) for v in shown.values()]}),
                     hide_index=True, width="stretch")
        if isinstance(row.get("text"), str):
            st.markdown("**Notes**")
            st.write(row["text"][:1500])
    with left:
        windowed = apply_window(scan.values, center, width, inverted=scan.inverted)
        st.image(obscure_image(windowed) if hidden else windowed, clamp=True, width="stretch",
                 caption=f"window {center:g} / {width:g} {scan.units}")
        study = _finished_classifier_study()
        if study is not None and not hidden and st.checkbox("Grad-CAM of the last classifier", key=f"{key}_gradcam"):
            result = data.gradcam_for(study.key, study, str(row["path"]), int(row["frame"]))
            if result is None:
                st.info("The last classifier has too few labelled rows for a Grad-CAM head.")
            else:
                st.image(result[1], caption=f"where {study.config['encoder']} + a linear head look for "
                         f"'{study.report.target.classes[-1]}'", width="stretch")


def _window_controls(scan: ScanValues, *, key: str) -> tuple[float, float]:
    """A preset (the file's own windows, CT presets in HU, full range) and centre/width sliders
    in the scan's units; choosing a preset moves the sliders to it. Returns (centre, width)."""
    presets: dict[str, tuple[float, float]] = {}
    for i, window in enumerate(scan.own_windows):
        presets[f"the file's window{f' {i + 1}' if len(scan.own_windows) > 1 else ''} "
                f"({window[0]:g} / {window[1]:g})"] = window
    if scan.is_ct:
        presets.update({f"{name} ({c:g} / {w:g})": (c, w) for name, (c, w) in CT_WINDOW_PRESETS.items()})
    presets["full range"] = scan.full_range()
    preset = st.selectbox("Window preset", list(presets), key=f"{key}_preset")
    preset_center, preset_width = presets[preset]
    low, high = float(scan.values.min()), float(scan.values.max())
    # The sliders span the image's values and every preset; keyed by preset, so picking one resets them.
    c_low, c_high = min(low, *(c for c, _ in presets.values())), max(high, *(c for c, _ in presets.values()))
    w_high = max(high - low, *(w for _, w in presets.values()), 2.0)
    step = 1.0 if w_high > 20 else 0.01
    center = st.slider(f"Level (centre, {scan.units})", float(np.floor(c_low)), float(np.ceil(c_high)),
                       float(preset_center), step, key=f"{key}_level_{preset}")
    width = st.slider(f"Window (width, {scan.units})", 1.0, float(np.ceil(w_high)),
                      float(max(1.0, preset_width)), step, key=f"{key}_width_{preset}")
    return center, width


def _finished_classifier_study():
    """The classifier study open on the Classifiers page (from the run store), when its
    encoder is a CNN."""
    from core.classify.runs import load_study
    from core.explain import SUPPORTED_CAM_ENCODERS

    key = st.session_state.get("classifier_run")
    study = load_study(key) if key else None
    return study if study is not None and study.config["encoder"] in SUPPORTED_CAM_ENCODERS else None
