"""core.audit.duplicates and core.audit.xray on real radiographs: hand-checked set building,
thresholds, the crop-aware match, and the radiograph checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from skimage.feature import match_template

from core.audit.duplicates import (
    Thresholds,
    best_correlation,
    candidate_pairs,
    duplicate_sets,
    duplicates_report,
    match_score,
    select_pairs,
)
from core.audit.fingerprints import (
    centre_descriptor,
    match_thumbnail,
    perceptual_hashes,
    pixel_hash,
)
from core.audit.xray import grey_thumbnail, xray_checks
from core.pixels import load_pixels


@pytest.fixture(scope="module")
def xrays(covid_dir) -> list[np.ndarray]:
    """Six real frontal chest films from different patients."""
    metadata = pd.read_csv(covid_dir / "metadata.csv")
    chosen = metadata[(metadata["modality"] == "X-ray") & metadata["view"].isin(["PA", "AP"])]
    chosen = chosen.drop_duplicates("patientid")
    frames = []
    for name in chosen["filename"]:
        path = covid_dir / "images" / name
        if path.is_file():
            frame = load_pixels(path)
            if frame.ndim == 2:  # grey films only: the checks below build grey variants
                frames.append(frame)
        if len(frames) == 6:
            break
    return frames


def test_duplicate_sets_are_connected_components():
    pairs = pd.DataFrame({"i": [0, 1, 4], "j": [1, 2, 5]})
    assert duplicate_sets(7, pairs).tolist() == [0, 0, 0, -1, 1, 1, -1]
    assert duplicate_sets(3, pairs.iloc[0:0]).tolist() == [-1, -1, -1]


def test_select_pairs_applies_each_threshold_and_names_the_evidence():
    candidates = pd.DataFrame({"i": [0, 0, 1, 2], "j": [1, 2, 3, 3], "exact": [True, False, False, False],
                               "phash_distance": [0.0, 6.0, 12.0, 14.0], "cosine_distance": [0.0, 0.3, 0.01, 0.3],
                               "match_score": [1.0, 0.5, 0.4, 0.85]})
    assert select_pairs(candidates)[["i", "j"]].values.tolist() == [[0, 1], [2, 3]]  # defaults: cosine off
    chosen = select_pairs(candidates, Thresholds(phash_bits=8, cosine=0.02, match=0.8))
    assert chosen[["i", "j"]].values.tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]
    assert chosen["evidence"].tolist() == ["pixel hash", "phash", "embedding", "pixel match"]
    assert chosen["kind"].tolist() == ["exact", "near", "near", "near"]
    strict = select_pairs(candidates, Thresholds(phash_bits=4, cosine=0.005, match=0.9))
    assert strict[["i", "j"]].values.tolist() == [[0, 1]]
    for bad in (Thresholds(phash_bits=40), Thresholds(cosine=1.5), Thresholds(match=0.0)):
        with pytest.raises(ValueError, match="must be in"):
            bad.check()


def test_report_flags_sets_across_patients_with_both_ids():
    images = pd.DataFrame({"image_id": ["a", "b", "c", "d"], "patient_id": ["p1", "p1", "p2", "p3"]})
    candidates = pd.DataFrame({"i": [0, 1], "j": [1, 2], "exact": [True, False], "phash_distance": [0.0, 3.0],
                               "cosine_distance": [np.nan, np.nan], "match_score": [1.0, 0.95]})
    pairs, sets = duplicates_report(images, candidates)
    assert sets.loc[0, ["size", "n_patients", "patient_ids", "cross_patient"]].tolist() == [3, 2, "p1 | p2", True]
    assert pairs["cross_patient"].tolist() == [False, True]
    assert pairs.loc[1, ["patient_id_a", "patient_id_b"]].tolist() == ["p1", "p2"]


def test_own_correlation_equals_scikit_image():
    rng = np.random.default_rng(0)
    image = rng.random((40, 44))
    template = image[5:30, 7:35] + 0.05 * rng.random((25, 28))
    assert best_correlation(image, template) == pytest.approx(float(match_template(image, template).max()), abs=1e-5)


def test_copies_and_crops_match_and_different_films_do_not(xrays):
    original = xrays[0]
    grey = grey_thumbnail(original)
    h, w = original.shape[:2]
    crop = original[int(0.08 * h): int(0.9 * h), int(0.1 * w): int(0.93 * w)]
    half = np.asarray(Image.fromarray((original * 255).astype(np.uint8)).resize((w // 2, h // 2))) / 255.0
    thumb = match_thumbnail(grey)
    assert match_score(thumb, match_thumbnail(grey_thumbnail(half))) > 0.9
    assert match_score(thumb, match_thumbnail(grey_thumbnail(crop))) > 0.8
    for other in xrays[1:]:
        assert match_score(thumb, match_thumbnail(grey_thumbnail(other))) < 0.7
    # Exact: same picture, other container (a colour copy of a grey film decodes grey again).
    assert pixel_hash(original) == pixel_hash(original.copy())
    assert pixel_hash(original) != pixel_hash(half)
    assert perceptual_hashes(original)[0] == perceptual_hashes(original.copy())[0]


def test_candidate_pairs_find_planted_copies_among_real_films(xrays):
    frames = [*xrays, xrays[2].copy(), xrays[3][10:-12, 14:-9]]
    greys = [grey_thumbnail(f) for f in frames]
    hashes = [pixel_hash(f) for f in frames]
    phashes = [perceptual_hashes(f)[0] for f in frames]
    candidates = candidate_pairs(hashes, phashes, descriptors=np.stack([centre_descriptor(g) for g in greys]),
                                 thumbnails=[match_thumbnail(g) for g in greys])
    chosen = select_pairs(candidates)
    assert chosen[["i", "j"]].values.tolist() == [[2, 6], [3, 7]]
    assert chosen["kind"].tolist() == ["exact", "near"]


def test_radiograph_checks(xrays):
    film = xrays[0]
    checks = xray_checks(film)
    assert not (checks.is_blank or checks.is_inverted or checks.has_black_border)
    assert xray_checks(1.0 - film).is_inverted
    assert xray_checks(np.full((300, 200), 0.4, dtype=np.float32)).is_blank
    canvas = np.zeros((film.shape[0] * 2, film.shape[1] * 2), dtype=np.float32)
    canvas[: film.shape[0], : film.shape[1]] = film
    assert xray_checks(canvas).has_black_border
    picture = Image.fromarray((film * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for line in range(3):
        draw.text((8, 8 + 14 * line), "PORTABLE AP 12/03 L", fill=255)
    texted = np.asarray(picture, dtype=np.float32) / 255.0
    assert xray_checks(texted).text_blobs > checks.text_blobs
    assert xray_checks(texted).has_text
