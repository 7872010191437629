"""A synthetic cardiac-MRI cohort written as real DICOM files, for demos and tests.

The cohort uses the "patient-csv" layout: ``OUT/patients.csv`` (one row per patient, with
the ground-truth ``diagnosis``) and one folder of short-axis DICOM slices per patient,
``OUT/DEMO-001/slice_00.dcm`` ... ordered from the base of the left ventricle to its apex.

Every image is drawn from a simple anatomical model (bright LV blood pool, darker myocardial
ring, right-ventricular crescent, lungs, chest wall, aorta, spine) whose shape depends on the
patient's group, so the four groups really are separable from pixels:

* Normal: normal cavity radius and wall thickness.
* Dilated cardiomyopathy: large cavity, thin wall.
* Hypertrophic cardiomyopathy: small cavity, thick wall, thickest at the septum.
* Myocardial infarction: a thinned, bright (late-enhancement-like) wall segment spanning
  60-120 degrees at a random angle.

Per-patient nuisance (centre offset, size jitter, intensity scale and offset, smooth bias
field, Rician noise, blur) keeps the problem from being trivial. Identifying DICOM fields
(name, birth date, address, institution ...) carry obviously fake values so that tests can
prove an allow-list keeps them out. Nothing here comes from a real person.

Output is byte-for-byte deterministic for given parameters: all randomness, dates and UIDs
derive from the seed.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import operator
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy.ndimage import gaussian_filter

from core.atomic import atomic_write_text

DEMO_SEED = 0
DEMO_PATIENTS = 80  # the default demo cohort: 80 patients x 4 slices = 320 images (issue 10:
# 640 took ~65 s to embed on 2 busy cores, more than the whole first-map budget of 60 s)
DEMO_SLICES = 4
# Up to 100,000 patients x 64 slices: large enough for archive-scale tests (issue 12 goal 6:
# 25,000 patients x 8 slices = 200,000 images).
MAX_PATIENTS = 100_000
# The DICOM elements that differ between the slices of one patient; every other element is
# encoded once per patient and its bytes reused (pydicom's writer costs ~4 ms a file otherwise).
_SLICE_KEYWORDS = ("SOPInstanceUID", "InstanceNumber", "ImagePositionPatient", "SliceLocation",
                   "PixelData")
DEMO_GROUPS: tuple[str, ...] = (
    "Normal",
    "Dilated cardiomyopathy",
    "Hypertrophic cardiomyopathy",
    "Myocardial infarction",
)
CSV_NAME = "patients.csv"
CSV_COLUMNS: tuple[str, ...] = (
    "patient_id", "age", "gender", "modality", "num_slices", "folder_path", "diagnosis",
)

FIELD_OF_VIEW_MM = 110.0
LV_LENGTH_MM = 88.0  # base-to-apex distance covered by the slice stack
MAX_STORED_VALUE = 4095  # 12 bits stored

# Relative bSSFP-cine-like signal, blood pool = 1. Scar is brighter than blood, as on
# late-enhancement images, so the infarct is visible on the same slices.
_SIGNAL = {
    "air": 0.0, "fat": 0.8, "tissue": 0.36, "lung": 0.05, "liver": 0.46, "bone": 0.45,
    "cortex": 0.12, "blood": 1.0, "myocardium": 0.3, "scar": 1.35,
}

_UID_NAMESPACE = "ScanAtlas synthetic cardiac demo v1"
# Fixed so the file meta (hence the bytes) does not change with the installed pydicom.
_IMPLEMENTATION_UID = generate_uid(entropy_srcs=[_UID_NAMESPACE, "implementation"])
_IMPLEMENTATION_NAME = "SCANATLAS_DEMO1"


@dataclass(frozen=True)
class GroupModel:
    """Anatomy and demographics of one diagnostic group (lengths in mm at the LV base)."""

    cavity_radius_mm: float
    wall_mm: float
    septal_excess: float  # fractional extra wall thickness at the septum
    infarct: bool
    age_mean: float
    age_sd: float
    male_fraction: float


GROUP_MODELS: dict[str, GroupModel] = {
    "Normal": GroupModel(24.0, 9.0, 0.05, False, 47.0, 14.0, 0.50),
    "Dilated cardiomyopathy": GroupModel(40.0, 5.5, 0.0, False, 54.0, 12.0, 0.65),
    "Hypertrophic cardiomyopathy": GroupModel(13.0, 19.0, 0.4, False, 38.0, 14.0, 0.62),
    "Myocardial infarction": GroupModel(31.0, 9.0, 0.05, True, 64.0, 10.0, 0.75),
}


@dataclass(frozen=True)
class _Patient:
    """Everything drawn at random for one patient; slices are rendered from it."""

    index: int
    patient_id: str
    group: str
    age: int
    male: bool
    study_date: dt.date
    study_time: str
    birth_date: dt.date
    centre: tuple[float, float]
    apex_drift: tuple[float, float]
    size_jitter: float
    wall_jitter: float
    rv_scale: float
    ellipticity: float
    ellipse_angle: float
    septum_angle: float
    fat_angle: float
    body_scale: float
    fat_mm: float
    lung_shift: tuple[float, float]
    scar_angle: float
    scar_half_width: float
    scar_start: float
    intensity_scale: float
    intensity_offset: float
    noise: float
    blur_mm: float
    bias: tuple[float, float, float, float]


def _as_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be an integer in [{low}, {high}]")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}={value!r} must be an integer in [{low}, {high}]") from None
    if not low <= number <= high:
        raise ValueError(f"{name}={number} must be in [{low}, {high}]")
    return number


def group_counts(n_patients: int) -> dict[str, int]:
    """Patients per group: as equal as possible, earlier groups take the remainder."""
    base, extra = divmod(n_patients, len(DEMO_GROUPS))
    return {group: base + (i < extra) for i, group in enumerate(DEMO_GROUPS)}


def _draw_patient(index: int, patient_id: str, group: str, seed: int) -> _Patient:
    # One generator per patient, so a patient's images do not depend on cohort size.
    rng = np.random.default_rng([seed, index, DEMO_GROUPS.index(group)])
    model = GROUP_MODELS[group]
    age = int(round(np.clip(rng.normal(model.age_mean, model.age_sd), 18, 88)))
    male = bool(rng.random() < model.male_fraction)
    study_date = dt.date(2021, 1, 4) + dt.timedelta(days=int(rng.integers(0, 730)))
    minutes = int(rng.integers(8 * 60, 18 * 60))
    study_time = f"{minutes // 60:02d}{minutes % 60:02d}00"
    # Day clamped to 28 and 1..360 days back keeps the age at the study exactly `age`.
    birth_date = dt.date(study_date.year - age, study_date.month, min(study_date.day, 28))
    birth_date -= dt.timedelta(days=int(rng.integers(1, 361)))
    return _Patient(
        index=index, patient_id=patient_id, group=group, age=age, male=male,
        study_date=study_date, study_time=study_time, birth_date=birth_date,
        centre=tuple(np.clip(rng.normal(0.0, 2.5, 2), -6.0, 6.0)),
        apex_drift=tuple(rng.normal(0.0, 4.0, 2)),
        size_jitter=float(np.exp(rng.normal(0.0, 0.06))),
        wall_jitter=float(np.exp(rng.normal(0.0, 0.08))),
        rv_scale=float(np.exp(rng.normal(0.0, 0.1))),
        ellipticity=float(rng.uniform(0.0, 0.07)),
        ellipse_angle=float(rng.uniform(0.0, np.pi)),
        septum_angle=float(np.deg2rad(200.0 + rng.normal(0.0, 8.0))),
        fat_angle=float(rng.uniform(0.0, 2 * np.pi)),
        body_scale=float(np.exp(rng.normal(0.0, 0.06))),
        fat_mm=float(rng.uniform(6.0, 16.0)),
        lung_shift=tuple(rng.normal(0.0, 4.0, 2)),
        scar_angle=float(rng.uniform(0.0, 2 * np.pi)),
        scar_half_width=float(np.deg2rad(rng.uniform(50.0, 80.0))),
        scar_start=float(rng.uniform(0.0, 0.35)),
        intensity_scale=float(rng.uniform(1100.0, 1900.0)),
        intensity_offset=float(rng.uniform(0.0, 60.0)),
        noise=float(rng.uniform(0.015, 0.03)),
        blur_mm=float(rng.uniform(0.8, 1.8)),
        bias=tuple(np.clip(rng.normal(0.0, 0.12, 4), -0.25, 0.25)),
    )


class _Canvas:
    """A float image in blood-pool units, painted with anti-aliased shapes (mm coordinates)."""

    def __init__(self, size: int) -> None:
        self.spacing = FIELD_OF_VIEW_MM / size
        coords = (np.arange(size) + 0.5 - size / 2) * self.spacing
        self.x = coords[None, :]
        self.y = coords[:, None]
        self.image = np.zeros((size, size))

    def coverage(self, signed_distance: np.ndarray) -> np.ndarray:
        """Fraction of each pixel inside a shape, from its signed distance (negative inside)."""
        return np.clip(0.5 - signed_distance / self.spacing, 0.0, 1.0)

    def ellipse(self, cx: float, cy: float, a: float, b: float, angle: float = 0.0) -> np.ndarray:
        cos, sin = np.cos(angle), np.sin(angle)
        u = (self.x - cx) * cos + (self.y - cy) * sin
        v = -(self.x - cx) * sin + (self.y - cy) * cos
        # First-order signed distance: exact for circles, close enough for mild ellipses.
        return self.coverage((np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b))

    def paint(self, coverage: np.ndarray, value: float | np.ndarray) -> None:
        self.image = self.image * (1.0 - coverage) + value * coverage


def _angular_distance(theta: np.ndarray, centre: float) -> np.ndarray:
    return np.abs(np.angle(np.exp(1j * (theta - centre))))


def _paint_body(canvas: _Canvas, p: _Patient, t: float) -> None:
    s = p.body_scale
    # A real chest (~300 x 210 mm) is wider than the field of view, as on cropped cine scans.
    a, b, cy = 150.0 * s, 105.0 * s, 12.0
    canvas.paint(canvas.ellipse(0.0, cy, a, b), _SIGNAL["fat"])
    canvas.paint(canvas.ellipse(0.0, cy, a - p.fat_mm, b - p.fat_mm), _SIGNAL["tissue"])
    lx, ly = p.lung_shift
    # Lungs hug the heart laterally and shrink toward the apex, where the slice leaves them.
    lung = 1.0 - 0.25 * t
    canvas.paint(canvas.ellipse(-80 + lx, 8 + ly, 38 * lung, 68 * lung, 0.2), _SIGNAL["lung"])
    canvas.paint(canvas.ellipse(50 + lx, 10 + ly, 34 * lung, 62 * lung, -0.2), _SIGNAL["lung"])
    if t > 0.4:
        grow = (t - 0.4) / 0.6
        canvas.paint(canvas.ellipse(-50, 82, 30 + 45 * grow, 18 + 22 * grow, -0.2),
                     _SIGNAL["liver"])
    canvas.paint(canvas.ellipse(4, 90 * s, 17, 15), _SIGNAL["cortex"])
    canvas.paint(canvas.ellipse(4, 90 * s, 14, 12), _SIGNAL["bone"])
    canvas.paint(canvas.ellipse(26, 62 * s, 11, 11), _SIGNAL["blood"])


def _paint_heart(canvas: _Canvas, p: _Patient, t: float) -> None:
    model = GROUP_MODELS[p.group]
    cx = p.centre[0] + p.apex_drift[0] * t
    cy = p.centre[1] + p.apex_drift[1] * t
    # The LV is roughly half an ellipsoid: the cavity narrows fast near the apex, the wall less.
    cavity = model.cavity_radius_mm * p.size_jitter * np.sqrt(max(1.0 - (0.95 * t) ** 2, 0.04))
    wall = model.wall_mm * p.wall_jitter * (1.0 - 0.25 * t)
    dx, dy = canvas.x - cx, canvas.y - cy
    radius = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    endo = cavity * (1.0 + p.ellipticity * np.cos(2.0 * (theta - p.ellipse_angle)))
    wall_map = wall * (1.0 + model.septal_excess * np.cos(theta - p.septum_angle))
    epi = endo + wall_map

    myocardium = np.full_like(radius, _SIGNAL["myocardium"])
    if model.infarct and t >= p.scar_start:
        taper = np.deg2rad(12.0)
        scar = np.clip((p.scar_half_width - _angular_distance(theta, p.scar_angle)) / taper + 0.5,
                       0.0, 1.0)
        # Remodelling: the cavity bulges into the thinned segment; the epicardium stays put.
        endo = endo + 0.5 * wall_map * scar
        myocardium = myocardium + (_SIGNAL["scar"] - _SIGNAL["myocardium"]) * scar

    mean_epi = cavity + wall
    rv = p.rv_scale * np.sqrt(max(1.0 - (1.05 * t) ** 2, 0.0))
    rv_radial, rv_tangential = (0.6 * mean_epi + 10.0) * rv, (1.15 * mean_epi + 8.0) * rv
    if rv_radial > 2.0:
        rx = cx + 0.75 * mean_epi * np.cos(p.septum_angle)
        ry = cy + 0.75 * mean_epi * np.sin(p.septum_angle)
        canvas.paint(canvas.ellipse(rx, ry, rv_radial + 3.5, rv_tangential + 3.5, p.septum_angle),
                     _SIGNAL["myocardium"])
        canvas.paint(canvas.ellipse(rx, ry, rv_radial, rv_tangential, p.septum_angle),
                     _SIGNAL["blood"])
    fat = 1.0 + 3.0 * np.clip(np.cos(theta - p.fat_angle), 0.0, None)
    canvas.paint(canvas.coverage(radius - epi - fat), _SIGNAL["fat"])
    canvas.paint(canvas.coverage(radius - epi), myocardium)
    canvas.paint(canvas.coverage(radius - endo), _SIGNAL["blood"])
    if 0.2 <= t <= 0.8:
        for offset in (np.deg2rad(130.0), np.deg2rad(260.0)):
            angle = p.septum_angle + offset
            r = 0.62 * cavity
            canvas.paint(canvas.ellipse(cx + r * np.cos(angle), cy + r * np.sin(angle),
                                        0.2 * cavity, 0.2 * cavity), _SIGNAL["myocardium"])


def _render_slice(p: _Patient, t: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """One short-axis slice at fraction ``t`` from base (0) to apex (1).

    Returns an ndarray of shape (size, size), dtype uint16, values in [0, 4095].
    """
    canvas = _Canvas(size)
    _paint_body(canvas, p, t)
    _paint_heart(canvas, p, t)
    signal = gaussian_filter(canvas.image, sigma=p.blur_mm / canvas.spacing, mode="nearest")
    half = FIELD_OF_VIEW_MM / 2
    xn, yn = canvas.x / half, canvas.y / half
    a, b, c, d = p.bias
    # A smooth coil-sensitivity field, constant across the patient's slices.
    signal = signal * np.exp(a * xn + b * yn + c * (xn**2 + yn**2) + d * xn * yn)
    scale = p.intensity_scale * (1.0 + 0.02 * rng.standard_normal())
    signal = signal * scale + p.intensity_offset
    sigma = p.noise * p.intensity_scale
    # Magnitude of a complex signal with Gaussian noise in both channels: Rician.
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imaginary = rng.normal(0.0, sigma, signal.shape)
    magnitude = np.hypot(real, imaginary)
    return np.clip(np.rint(magnitude), 0, MAX_STORED_VALUE).astype(np.uint16)


def _uid(seed: int, n_slices: int, size: int, *parts: object) -> str:
    return generate_uid(entropy_srcs=[_UID_NAMESPACE, str(seed), str(n_slices), str(size),
                                      *map(str, parts)])


def _ds(value: float) -> str:
    return f"{value:.6g}"


def _slice_fields(p: _Patient, pixels: np.ndarray, *, slice_index: int, n_slices: int,
                  seed: int) -> dict[str, object]:
    """The values of ``_SLICE_KEYWORDS`` for one slice (all other fields are per patient)."""
    size = pixels.shape[0]
    spacing = FIELD_OF_VIEW_MM / size
    gap = LV_LENGTH_MM / n_slices
    location = 20.0 - slice_index * gap
    corner = -FIELD_OF_VIEW_MM / 2 + spacing / 2
    return {
        "SOPInstanceUID": _uid(seed, n_slices, size, p.patient_id, "sop", slice_index),
        "InstanceNumber": slice_index + 1,
        "ImagePositionPatient": [_ds(corner), _ds(corner), _ds(location)],
        "SliceLocation": _ds(location),
        "PixelData": pixels.astype("<u2").tobytes(),
    }


def _slice_dataset(p: _Patient, pixels: np.ndarray, *, slice_index: int, n_slices: int,
                   seed: int, window: tuple[float, float]) -> Dataset:
    size = pixels.shape[0]
    spacing = FIELD_OF_VIEW_MM / size
    gap = LV_LENGTH_MM / n_slices
    fields = _slice_fields(p, pixels, slice_index=slice_index, n_slices=n_slices, seed=seed)
    sop_uid = fields["SOPInstanceUID"]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_NAME

    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "M", "SYNTHETIC"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    date = p.study_date.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = p.study_time
    ds.AccessionNumber = f"SYN{seed % 10000:04d}{p.index + 1:06d}"  # SH: <= 16 chars
    ds.Modality = "MR"
    ds.Manufacturer = "ScanAtlas synthetic"
    ds.ManufacturerModelName = "Synthetic cine generator"
    ds.InstitutionName = "ScanAtlas Demo Hospital"
    ds.InstitutionAddress = "1 Synthetic Way, Nowhere, XX 00000"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.StationName = "SYNTHETIC-MR1"
    ds.StudyDescription = "Cardiac MRI (synthetic)"
    ds.SeriesDescription = "SAX cine (synthetic)"
    ds.OperatorsName = "SYNTHETIC^OPERATOR"
    ds.PatientName = f"SYNTHETIC^PATIENT{p.index + 1:03d}"
    ds.PatientID = p.patient_id
    ds.PatientBirthDate = p.birth_date.strftime("%Y%m%d")
    ds.PatientSex = "M" if p.male else "F"
    ds.PatientAge = f"{p.age:03d}Y"
    ds.PatientAddress = f"{p.index + 1} Synthetic Street, Nowhere, XX 00000"
    ds.ImageComments = "Synthetic image generated by ScanAtlas; not from a real person."
    ds.BodyPartExamined = "HEART"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SS"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = _ds(gap)
    ds.SpacingBetweenSlices = _ds(gap)
    ds.RepetitionTime = "3.2"
    ds.EchoTime = "1.6"
    ds.MagneticFieldStrength = "1.5"
    ds.FlipAngle = "50"
    ds.StudyInstanceUID = _uid(seed, n_slices, size, p.patient_id, "study")
    ds.SeriesInstanceUID = _uid(seed, n_slices, size, p.patient_id, "series")
    ds.StudyID = "1"
    ds.SeriesNumber = 5
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = fields["InstanceNumber"]
    ds.ImagePositionPatient = fields["ImagePositionPatient"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = _uid(seed, n_slices, size, p.patient_id, "frame-of-reference")
    ds.SliceLocation = fields["SliceLocation"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = size
    ds.Columns = size
    ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = _ds(window[0])
    ds.WindowWidth = _ds(window[1])
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PixelData = fields["PixelData"]
    return ds


def _element_bytes(element: object) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    write_data_element(buffer, element)
    return buffer.getvalue()


def _encode_file(meta: FileMetaDataset, elements: dict[object, bytes]) -> bytes:
    """The bytes ``Dataset.save_as(enforce_file_format=True)`` writes: preamble, "DICM", the
    file meta group, then the (explicit VR little endian) elements in ascending tag order."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    buffer.write(b"".join(elements[tag] for tag in sorted(elements)))
    return buffer.getvalue()


def _write_patient(out: Path, p: _Patient, volume: list[np.ndarray], *, n_slices: int, seed: int,
                   window: tuple[float, float], name_width: int) -> None:
    """Write one patient's slices; every element but ``_SLICE_KEYWORDS`` is encoded once."""
    template = _slice_dataset(p, volume[0], slice_index=0, n_slices=n_slices, seed=seed,
                              window=window)
    correct_ambiguous_vr(template, is_little_endian=True)  # PixelData: OW for 16-bit pixels
    varying = {template.data_element(keyword).tag for keyword in _SLICE_KEYWORDS}
    shared = {element.tag: _element_bytes(element) for element in template
              if element.tag not in varying}
    folder = out / p.patient_id
    folder.mkdir(exist_ok=True)
    for k, pixels in enumerate(volume):
        elements = dict(shared)
        for keyword, value in _slice_fields(p, pixels, slice_index=k, n_slices=n_slices,
                                            seed=seed).items():
            setattr(template, keyword, value)  # keeps the element (and its corrected VR)
            element = template.data_element(keyword)
            elements[element.tag] = _element_bytes(element)
        meta = FileMetaDataset(template.file_meta)
        meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        (folder / f"slice_{k:0{name_width}d}.dcm").write_bytes(_encode_file(meta, elements))


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    # Written last and atomically: a present CSV means the whole cohort is on disk.
    atomic_write_text(path, buffer.getvalue())


def _make_patient(out: Path, job: tuple[int, str, str], *, seed: int, n_slices: int, size: int,
                  name_width: int) -> dict[str, object]:
    """Render and write one patient (job = index, patient id, group); returns its CSV row."""
    index, patient_id, group = job
    patient = _draw_patient(index, patient_id, group, seed)
    noise_rng = np.random.default_rng([seed, index, size, n_slices])
    # Slice centres, so neither end of the stack falls exactly on the apex tip.
    volume = [_render_slice(patient, (k + 0.5) / n_slices, size, noise_rng)
              for k in range(n_slices)]
    top = float(np.percentile(np.stack(volume), 99.5))
    window = (round(top / 2), max(round(top), 1))
    _write_patient(out, patient, volume, n_slices=n_slices, seed=seed, window=window,
                   name_width=name_width)
    return {
        "patient_id": patient_id,
        "age": patient.age,
        "gender": "Male" if patient.male else "Female",
        "modality": "MR",
        "num_slices": n_slices,
        "folder_path": patient_id,
        "diagnosis": patient.group,
    }


def make_demo_cohort(
    out_dir: str | os.PathLike[str],
    *,
    n_patients: int = DEMO_PATIENTS,
    n_slices: int = DEMO_SLICES,
    size: int = 128,
    seed: int = DEMO_SEED,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> Path:
    """Write a synthetic short-axis cardiac-MRI cohort as DICOM files plus a patient CSV.

    Parameters
    ----------
    out_dir : path
        Folder to write into (created if missing). Files of an earlier cohort with the same
        names are overwritten; other files are left alone.
    n_patients : int, default DEMO_PATIENTS (80)
        Number of patients, 1..MAX_PATIENTS (100,000), split as evenly as possible over ``DEMO_GROUPS``
        (20 each by default) in a seed-determined shuffled order.
    n_slices : int, default DEMO_SLICES (4)
        Short-axis slices per patient, base to apex, 1..64.
    size : int, default 128
        Image height and width in pixels, 32..1024; the field of view stays 110 mm (a heart-centred crop).
    seed : int, default DEMO_SEED
        Non-negative seed; the same parameters give byte-identical files.
    progress : callable, optional
        ``progress(patients_done, n_patients)`` after each patient is written.
    workers : int, default 1
        Processes that render and write patients (1..64); the files are the same bytes for any
        number. Measured on this project's 2-core machine, 64 px: 2.5 ms a file with one
        worker, 1.9 ms with two (pydicom's own writer: 7 ms), so 25,000 patients x 8 slices
        (200,000 files, 1.9 GB) take about 6-8 minutes on a quiet machine.

    Returns
    -------
    Path
        ``out_dir/patients.csv`` with columns ``CSV_COLUMNS``; ``folder_path`` is relative to
        ``out_dir`` and holds ``slice_00.dcm`` ... (uint16 arrays of shape (size, size)).

    Raises
    ------
    ValueError
        If a parameter is not an integer in its range (the message names it and the range).
    OSError
        If the folder cannot be written.
    """
    n_patients = _as_int("n_patients", n_patients, 1, MAX_PATIENTS)
    workers = _as_int("workers", workers, 1, 64)
    n_slices = _as_int("n_slices", n_slices, 1, 64)
    size = _as_int("size", size, 32, 1024)
    seed = _as_int("seed", seed, 0, 2**63 - 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    groups = [g for g, count in group_counts(n_patients).items() for _ in range(count)]
    order = np.random.default_rng([seed, n_patients]).permutation(len(groups))
    id_width = max(3, len(str(n_patients)))
    name_width = max(2, len(str(n_slices - 1)))
    jobs = [(index, f"DEMO-{index + 1:0{id_width}d}", groups[group_index])
            for index, group_index in enumerate(order)]
    work = partial(_make_patient, out, seed=seed, n_slices=n_slices, size=size,
                   name_width=name_width)
    rows: list[dict[str, object]] = []
    if workers == 1 or n_patients < 2 * workers:
        results = map(work, jobs)
        pool = None
    else:
        # Each patient has its own generators, so the bytes do not depend on the worker count.
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(work, jobs, chunksize=max(1, min(64, n_patients // (8 * workers))))
    try:
        for row in results:
            rows.append(row)
            if progress is not None:
                progress(len(rows), n_patients)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    csv_path = out / CSV_NAME
    _write_csv(csv_path, rows)
    return csv_path


def ensure_demo_cohort(root: str | os.PathLike[str], **options: Any) -> Path:
    """Return ``root/patients.csv``, generating the cohort into ``root`` only if it is missing
    (``options`` as :func:`make_demo_cohort` takes them: patients, slices, size, seed...).

    The CSV is written last, so its presence means an earlier generation finished; an
    existing cohort is never regenerated or checked against the parameters given here.
    Raises what ``make_demo_cohort`` raises.
    """
    csv_path = Path(root) / CSV_NAME
    if csv_path.is_file():
        return csv_path
    return make_demo_cohort(root, **options)


def synthetic_vectors(
    n_rows: int,
    *,
    dim: int = 512,
    n_groups: int = len(DEMO_GROUPS),
    seed: int = DEMO_SEED,
    chunk_rows: int = 50_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-like vectors with planted groups, for scale tests and benchmarks only.

    Not images and not an encoder's output: each row is its group's centre plus a point on a
    smooth 8-dimensional manifold (random features of 8 latent factors, like the slow
    variation of anatomy within a group) plus isotropic noise, so that projection, clustering
    and neighbour search have real structure to find at any size. Rows are generated in chunks
    of ``chunk_rows``, each from its own generator, so that memory stays at the output and the
    rows of every whole chunk do not depend on ``n_rows``.

    Parameters
    ----------
    n_rows : int, 1..5,000,000
    dim : int, 8..4096
    n_groups : int, 2..64
    seed : int >= 0

    Returns
    -------
    vectors : ndarray of shape (n_rows, dim), float32
    groups : ndarray of shape (n_rows,), int64, the planted group of each row (0..n_groups-1)

    Raises ValueError naming a parameter outside its range.
    """
    n_rows = _as_int("n_rows", n_rows, 1, 5_000_000)
    dim = _as_int("dim", dim, 8, 4096)
    n_groups = _as_int("n_groups", n_groups, 2, 64)
    seed = _as_int("seed", seed, 0, 2**63 - 1)
    chunk_rows = _as_int("chunk_rows", chunk_rows, 1, 5_000_000)
    n_latent = 8
    model_rng = np.random.default_rng([seed, dim, n_groups, 1])
    centres = model_rng.normal(0.0, 0.6, (n_groups, dim))
    mixing = model_rng.normal(0.0, 1.0, (n_groups, n_latent, dim)) / np.sqrt(n_latent)
    vectors = np.empty((n_rows, dim), np.float32)
    groups = np.empty(n_rows, np.int64)
    for chunk, start in enumerate(range(0, n_rows, chunk_rows)):
        stop = min(n_rows, start + chunk_rows)
        rng = np.random.default_rng([seed, dim, n_groups, 2, chunk])
        chunk_groups = rng.integers(0, n_groups, stop - start)
        latent = rng.normal(0.0, 1.0, (stop - start, n_latent))
        block = centres[chunk_groups].astype(np.float32)
        for group in range(n_groups):
            members = chunk_groups == group
            # tanh keeps the manifold curved, so a linear projection alone does not unroll it
            block[members] += np.tanh(latent[members] @ mixing[group]).astype(np.float32)
        block += rng.normal(0.0, 0.3, block.shape).astype(np.float32)
        vectors[start:stop] = block
        groups[start:stop] = chunk_groups
    return vectors, groups
