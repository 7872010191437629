"""Image problems: cleanvision's checks plus radiograph checks, one row per (image, problem).

cleanvision (``Imagelab``) finds dark, light, blurry, low-information, odd-aspect-ratio and
odd-size images, and which are greyscale. It is handed the frames as ``core.pixels`` decodes them
(DICOM included, windowed and MONOCHROME1-corrected, as 8-bit PIL images), through its
torchvision-dataset entry point. Greyscale is turned round for radiographs: where most images
are grey, the *colour* ones are the odd ones out (a photo, a screenshot, an annotated figure),
and the reverse.

The radiograph checks (:mod:`core.audit.xray`) add ``blank``, ``inverted``, ``burned_in_text``
(plus the DICOM ``BurnedInAnnotation`` flag ingest recorded) and ``black_border``; a row that
could not be decoded is a ``decode_error``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd

from core.audit.fingerprints import to_pil
from core.audit.xray import BLANK_STD, BORDER_FLAG, TEXT_BLOBS_FLAG, is_inverted
from core.pixels import PixelError, load_pixels

# Cross-sectional modalities: the chest-film polarity check does not apply.
SECTIONAL_MODALITIES = frozenset({"CT", "MR", "MRI", "PT", "NM", "US"})
CLEANVISION_TYPES = ("dark", "light", "blurry", "low_information", "odd_aspect_ratio", "odd_size", "grayscale")
IMAGE_ISSUE_COLUMNS = ["row", "image_id", "issue", "score", "detail"]
ISSUE_WORDS = {
    "dark": "too dark", "light": "too light", "blurry": "blurry", "low_information": "low information",
    "odd_aspect_ratio": "odd aspect ratio", "odd_size": "odd size", "colour": "colour image among grey ones",
    "grayscale": "grey image among colour ones", "blank": "blank (no signal)",
    "inverted": "inverted polarity (bone dark, air bright)", "burned_in_text": "burned-in text",
    "black_border": "large black border", "decode_error": "cannot be decoded",
}


class _Frames:
    """What cleanvision's torchvision entry point needs: ``len`` and ``[i] -> (PIL image, 0)``."""

    def __init__(self, paths: list[str], frames: list[int]) -> None:
        self.paths, self.frames = paths, frames

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            values = load_pixels(self.paths[index], self.frames[index])
        except PixelError:  # decoded once already; a file changed since is shown as black
            values = np.zeros((8, 8), dtype=np.float32)
        return to_pil(values).convert("RGB"), 0


def cleanvision_issues(paths: list[str], frames: list[int]) -> pd.DataFrame:
    """cleanvision's issues table for these frames (one row per frame, in order)."""
    from cleanvision import Imagelab

    if not paths:
        return pd.DataFrame()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        lab = Imagelab(torchvision_dataset=_Frames(paths, frames), verbose=False)
        lab.find_issues({name: {} for name in CLEANVISION_TYPES}, n_jobs=1, verbose=False)
    return lab.issues.reset_index(drop=True)


def image_issues(images: pd.DataFrame, fingerprints: pd.DataFrame, *, use_cleanvision: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """All image problems (``IMAGE_ISSUE_COLUMNS``; ``row`` indexes ``images``) and notes.

    images : the dataset's images table; fingerprints : :func:`fingerprint_images` table aligned
    with it. ``score`` is higher for a worse image within each issue (cleanvision's scores, where
    lower is worse, are turned round as 1 - score).
    """
    records: list[dict] = []
    notes: list[str] = []
    image_ids = images["image_id"].astype(str).to_numpy()

    def add(row: int, issue: str, score: float, detail: str = "") -> None:
        records.append({"row": int(row), "image_id": image_ids[row], "issue": issue,
                        "score": float(score), "detail": detail or ISSUE_WORDS.get(issue, issue)})

    decoded = fingerprints["error"].isna().to_numpy()
    for row in np.flatnonzero(~decoded):
        add(row, "decode_error", 1.0, str(fingerprints["error"].iloc[row]))
    std = fingerprints["std"].to_numpy(dtype=float)
    modality = (images["modality"].astype(str).str.upper().to_numpy() if "modality" in images
                else np.full(len(images), "", dtype=object))
    sectional = np.isin(modality, list(SECTIONAL_MODALITIES))
    blank = decoded & (std < BLANK_STD)
    for row in np.flatnonzero(blank):
        add(row, "blank", 1.0 - std[row] / BLANK_STD, f"blank: pixel spread {std[row]:.4f} (< {BLANK_STD})")
    polarity = fingerprints["polarity"].to_numpy(dtype=float)
    corners = fingerprints["corner_polarity"].to_numpy(dtype=float)
    inverted = decoded & ~blank & ~sectional & np.array([is_inverted(p, c) for p, c in zip(polarity, corners, strict=True)], dtype=bool)
    for row in np.flatnonzero(inverted):
        add(row, "inverted", polarity[row], f"lung fields brighter than the mediastinum by {polarity[row]:.2f}")
    blobs = fingerprints["text_blobs"].fillna(0).to_numpy(dtype=float)
    header_text = (images["burned_in_annotation"].fillna(False).astype(bool).to_numpy()
                   if "burned_in_annotation" in images else np.zeros(len(images), dtype=bool))
    # On CT and MR slices, vessels and bowel gas near the edge look like glyphs: only the DICOM
    # header's flag counts there.
    for row in np.flatnonzero(decoded & ~blank & (((blobs >= TEXT_BLOBS_FLAG) & ~sectional) | header_text)):
        why = "DICOM header says burned-in annotation" if header_text[row] else f"{int(blobs[row])} glyph-like marks near the edges"
        add(row, "burned_in_text", blobs[row], why)
    border = fingerprints["border_fraction"].to_numpy(dtype=float)
    for row in np.flatnonzero(decoded & ~blank & (border >= BORDER_FLAG)):
        add(row, "black_border", border[row], f"{border[row]:.0%} of the frame is black border")

    channels = fingerprints["channels"].fillna(1).to_numpy(dtype=float)
    usable = np.flatnonzero(decoded & ~blank)
    if use_cleanvision and len(usable):
        issues = cleanvision_issues([str(images["path"].iloc[r]) for r in usable],
                                    [int(images["frame"].iloc[r]) for r in usable])
        grey = issues.get("is_grayscale_issue", pd.Series(channels[usable] == 1)).to_numpy(dtype=bool)
        for name in CLEANVISION_TYPES:
            flag, score = f"is_{name}_issue", f"{name}_score"
            if name == "grayscale" or flag not in issues:
                continue
            for position in np.flatnonzero(issues[flag].to_numpy(dtype=bool)):
                add(usable[position], name, 1.0 - float(issues[score].iloc[position]))
        notes.append("cleanvision " + __import__("cleanvision").__version__ + " checks: " + ", ".join(CLEANVISION_TYPES))
    else:
        grey = channels[usable] == 1
        if use_cleanvision:
            notes.append("no decodable images for cleanvision")
    if len(usable):
        minority_is_colour = grey.mean() >= 0.5
        for position in np.flatnonzero(~grey if minority_is_colour else grey):
            add(usable[position], "colour" if minority_is_colour else "grayscale", 1.0)
    frame = pd.DataFrame.from_records(records, columns=IMAGE_ISSUE_COLUMNS)
    return frame.sort_values(["issue", "score"], ascending=[True, False]).reset_index(drop=True), notes
