"""iter_image_embeddings: decode-ahead batching on real scans, failures reported per image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from core.encoders import EmbeddedChunk, get_encoder, iter_image_embeddings
from core.pixels import load_pixels

XRAY_PA = "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
XRAY_PA_OTHER = "auntminnie-c-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
CT_SLICE = "jkms-35-e79-g001-l-d.jpg"


# --- batched embedding ----------------------------------------------------------------------


def test_failing_images_are_reported_and_the_rest_embedded(effnet, images: Path, tmp_path: Path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is a text file, not a scan")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes((images / XRAY_PA).read_bytes()[:3000])
    good = [XRAY_PA, XRAY_PA_OTHER, CT_SLICE]
    items = [
        ("good-0", str(images / good[0]), 0),
        ("bad-text", str(not_an_image), 0),
        ("good-1", str(images / good[1]), 0),
        ("bad-empty", str(empty), 0),
        ("bad-missing", str(tmp_path / "gone.png"), 0),
        ("bad-truncated", str(truncated), 0),
        ("good-2", str(images / good[2]), 0),
    ]
    calls: list[tuple[int, int]] = []
    chunks = list(iter_image_embeddings(items, effnet, batch_size=3, num_workers=2,
                                        progress=lambda done, total: calls.append((done, total))))
    assert all(isinstance(chunk, EmbeddedChunk) for chunk in chunks)
    ids = [image_id for chunk in chunks for image_id in chunk.image_ids]
    assert ids == ["good-0", "good-1", "good-2"]
    vectors = np.concatenate([chunk.vectors for chunk in chunks])
    assert vectors.shape == (3, 1280)
    failures = {image_id: (path, reason) for chunk in chunks for image_id, path, reason in chunk.failures}
    assert set(failures) == {"bad-text", "bad-empty", "bad-missing", "bad-truncated"}
    assert failures["bad-text"][0] == str(not_an_image)
    assert failures["bad-text"][1].startswith("not_an_image")
    assert failures["bad-empty"][1].startswith("empty_file")
    assert failures["bad-missing"][1].startswith("unreadable")
    assert failures["bad-truncated"][1].split(":")[0] in {"truncated", "unreadable"}
    assert calls == [(3, 7), (6, 7), (7, 7)]
    # Rows equal embedding each image on its own.
    alone = effnet.embed_batch(effnet.preprocess(load_pixels(images / CT_SLICE))[None])[0]
    np.testing.assert_allclose(vectors[2], alone, rtol=1e-4, atol=1e-4)


def test_each_frame_of_a_multiframe_file_is_one_image():
    encoder = get_encoder("pixels")
    path = pydicom.data.get_testdata_file("emri_small.dcm")  # 10-frame MR
    items = [(f"mr-{frame}", path, frame) for frame in range(4)]
    chunks = list(iter_image_embeddings(items, encoder, batch_size=8))
    assert [chunk.image_ids for chunk in chunks] == [["mr-0", "mr-1", "mr-2", "mr-3"]]
    vectors = chunks[0].vectors
    assert vectors.shape == (4, 288)
    assert not np.allclose(vectors[0], vectors[3])
    expected = encoder.embed_batch(encoder.preprocess(load_pixels(path, 3))[None])[0]
    np.testing.assert_allclose(vectors[3], expected, atol=1e-6)


def test_batch_of_only_failures_still_yields_a_chunk(tmp_path: Path):
    encoder = get_encoder("pixels")
    (tmp_path / "a.png").write_text("nope")
    chunks = list(iter_image_embeddings([("a", str(tmp_path / "a.png"), 0)], encoder))
    assert len(chunks) == 1 and chunks[0].image_ids == []
    assert chunks[0].vectors.shape == (0, 288)
    assert chunks[0].failures[0][:2] == ("a", str(tmp_path / "a.png"))


def test_iter_image_embeddings_validates_arguments():
    encoder = get_encoder("pixels")
    with pytest.raises(ValueError, match="batch_size=0"):
        next(iter_image_embeddings([], encoder, batch_size=0))
    with pytest.raises(ValueError, match=r"items\[0\] must be \(image_id, path, frame\)"):
        next(iter_image_embeddings([("only-an-id",)], encoder))
    assert list(iter_image_embeddings([], encoder)) == []


