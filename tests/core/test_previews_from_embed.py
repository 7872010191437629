"""Issue 12.1, "decode once": a PNG's stored preview is made by its first full decode, the
embedding's (threads or worker processes), and appended to the dataset's preview packs
atomically, never touching the packs already there.

Real files: PNGs and a JPEG of ../shared/data/covid-chestxray-fullsize.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import core.decode_pool as decode_pool
from core.decode_pool import decode_for_model
from core.ingest import ingest
from core.pixels import load_pixels
from core.previews import (
    INDEX_NAME,
    PREVIEW_FOLDER,
    PreviewStore,
    add_previews,
    decode_preview,
    encode_preview,
    load_with_preview,
)

FULLSIZE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "covid-chestxray-fullsize" / "images"
# RGB grey-looking, RGBA, 16-bit RGBA, colour figure.
PNGS = ["aqaa062i0002-b.png", "16654_1_1.png", "23E99E2E-447C-46E5-8EB2-D35D12473C39.png",
        "article_river_de7471906e0011eabe5f9363acaf45c4-covid-cxr-2.png"]


def test_the_embeddings_decode_gives_the_model_the_same_pixels_and_the_ingest_preview():
    for name in PNGS:
        path = FULLSIZE / name
        pixels, jpeg = load_with_preview(path, 0, min_size=224)
        np.testing.assert_array_equal(pixels, load_pixels(path, 0, min_size=224))
        # The same decoded image through decode_preview's steps: the same preview, byte for byte.
        assert jpeg == encode_preview(decode_preview(path).picture), name
    # A JPEG drafted to the model's size: a preview close to the ingest one.
    path = FULLSIZE / "00870a9c.jpg"
    pixels, jpeg = load_with_preview(path, 0, min_size=224)
    np.testing.assert_array_equal(pixels, load_pixels(path, 0, min_size=224))
    from PIL import Image

    from core.previews import preview_pixels

    made, reference = preview_pixels(jpeg), preview_pixels(encode_preview(decode_preview(path).picture))
    assert made.ndim == reference.ndim == 2 and 224 <= max(made.shape) <= 256
    size = (reference.shape[1], reference.shape[0])
    resized = np.asarray(Image.fromarray(made).resize(size, Image.Resampling.BILINEAR))
    assert np.corrcoef(resized.ravel(), reference.ravel())[0, 1] > 0.98


def test_decode_for_model_with_a_preview_gives_the_same_planes():
    item = ("a" * 64 + "-0", str(FULLSIZE / PNGS[0]), 0)
    plain = decode_for_model(item, 224, 3)
    with_preview = decode_for_model(item, 224, 3, preview=True)
    assert len(plain) == 2 and len(with_preview) == 3
    np.testing.assert_array_equal(plain[0], with_preview[0])
    assert with_preview[1] is None and with_preview[2][:2] == b"\xff\xd8"
    missing = decode_for_model(("b" * 64 + "-0", "/nonexistent/x.png", 0), 224, 3, preview=True)
    assert missing[0] is None and "unreadable" in missing[1]


@pytest.fixture()
def dataset(tmp_path: Path):
    source = tmp_path / "src" / "xray"
    source.mkdir(parents=True)
    for name in [*PNGS, "00870a9c.jpg", "00cfd1c1.jpg"]:
        shutil.copy(FULLSIZE / name, source / name)
    return ingest(source.parent, tmp_path / "ds", layout="class-folders").dataset


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_embedding_adds_the_png_previews_in_a_new_pack_leaving_the_old_ones_alone(dataset, tmp_path, kind,
                                                                                   monkeypatch):
    from core.embed import embed_dataset

    folder = dataset.root / PREVIEW_FOLDER
    packs_before = {p.name: p.read_bytes() for p in folder.glob("pack-*.bin")}
    store = PreviewStore.open(dataset.root)
    png_ids = [i for i, p in zip(dataset.images["image_id"], dataset.images["path"], strict=True) if p.endswith(".png")]
    assert len(store) == 2 and not any(i in store for i in png_ids)
    if kind == "process":  # a process pool for 6 files (normally 24 or more)
        monkeypatch.setattr(decode_pool, "PROCESS_MIN_ITEMS", 1)
        monkeypatch.setenv(decode_pool.DECODE_PROCESSES_ENV, "1")
    else:
        monkeypatch.setenv(decode_pool.DECODE_PROCESSES_ENV, "0")
    result = embed_dataset(dataset, "pixels", cache_root=tmp_path / "cache")
    assert result.n_failed == 0 and result.n_computed == len(dataset.images)
    after = PreviewStore.open(dataset.root)
    assert len(after) == len(dataset.images)
    for image_id, path in zip(dataset.images["image_id"], dataset.images["path"], strict=True):
        if path.endswith(".png"):
            assert after.jpeg(image_id) == encode_preview(decode_preview(path).picture)
    # Old packs byte for byte, one new pack beside them.
    packs_after = {p.name: p.read_bytes() for p in folder.glob("pack-*.bin")}
    assert {n: packs_after[n] for n in packs_before} == packs_before
    assert len(packs_after) == len(packs_before) + 1
    # From the cache: nothing decoded, nothing written.
    index_bytes = (folder / INDEX_NAME).read_bytes()
    again = embed_dataset(dataset, "pixels", cache_root=tmp_path / "cache")
    assert again.n_cached == len(dataset.images) and (folder / INDEX_NAME).read_bytes() == index_bytes


def test_appending_keeps_the_index_rows_and_skips_ids_it_has(dataset):
    store = PreviewStore.open(dataset.root)
    known = next(i for i in dataset.images["image_id"] if i in store)
    old_jpeg = store.jpeg(known)
    picture = np.full((32, 48), 128, np.uint8)
    new_id = "f" * 64 + "-0"
    assert add_previews(dataset.root, {known: encode_preview(picture), new_id: encode_preview(picture)}) == 1
    after = PreviewStore.open(dataset.root)
    assert after.jpeg(known) == old_jpeg and after.jpeg(new_id) == encode_preview(picture)
    assert len(after) == len(store) + 1
    with pytest.raises(ValueError, match="is not an image id"):
        add_previews(dataset.root, {"../../x": encode_preview(picture)})


def test_no_index_or_a_linked_folder_gets_nothing_written(tmp_path):
    picture = encode_preview(np.zeros((8, 8), np.uint8))
    bare = tmp_path / "bare"
    bare.mkdir()
    assert add_previews(bare, {"a" * 64 + "-0": picture}) == 0
    assert not (bare / PREVIEW_FOLDER).exists()
    outside = tmp_path / "outside"
    outside.mkdir()
    pd.DataFrame({"image_id": [], "pack": [], "offset": [], "length": []}).to_parquet(outside / INDEX_NAME)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / PREVIEW_FOLDER).symlink_to(outside, target_is_directory=True)
    assert add_previews(linked, {"a" * 64 + "-0": picture}) == 0
    assert sorted(p.name for p in outside.iterdir()) == [INDEX_NAME]


def test_a_dataset_ingested_without_previews_gets_none_from_the_embedding(tmp_path):
    from core.embed import embed_dataset

    source = tmp_path / "src" / "xray"
    source.mkdir(parents=True)
    shutil.copy(FULLSIZE / PNGS[0], source / PNGS[0])
    dataset = ingest(source.parent, tmp_path / "ds", layout="class-folders", previews=False).dataset
    assert embed_dataset(dataset, "pixels", cache_root=tmp_path / "cache").n_computed == 1
    assert PreviewStore.open(dataset.root) is None and not (dataset.root / PREVIEW_FOLDER).exists()


def test_the_middle_slices_first_pass_makes_its_previews_too(dataset, tmp_path, monkeypatch):
    """The app embeds each patient's middle image first; those decodes make their previews as
    well (pass 2 reads them from the cache and decodes nothing)."""
    from core.embed import embed_middle_slices_first

    monkeypatch.setenv(decode_pool.DECODE_PROCESSES_ENV, "0")
    images = dataset.images.copy()
    images["patient_id"] = ["p1", "p1", "p1", "p2", "p2", "p2"][: len(images)]
    dataset.images = images
    first_rows = []
    result = embed_middle_slices_first(dataset, "pixels", cache_root=tmp_path / "cache",
                                       on_first_pass=lambda rows, _set: first_rows.extend(rows))
    assert first_rows and len(first_rows) < len(images) and result.n_failed == 0
    store = PreviewStore.open(dataset.root)
    assert all(image_id in store for image_id in images["image_id"])


def test_two_embeddings_appending_at_once_keep_each_others_previews(tmp_path, monkeypatch):
    import hashlib
    import threading

    import core.previews as previews
    from core.previews import PreviewWriter

    def image_id(name: str) -> str:
        return hashlib.sha256(name.encode()).hexdigest() + "-0"

    first = PreviewWriter(tmp_path)
    first.add(image_id("ingested"), b"\xff\xd8ingested")
    assert first.close() == 1
    monkeypatch.setattr(previews, "PACK_PREVIEWS", 3)  # many read-modify-write rounds each
    start = threading.Barrier(2)
    added: dict[str, int] = {}

    def embed(who: str) -> None:
        writer = PreviewWriter(tmp_path, append=True)
        start.wait()
        for i in range(60):
            writer.add(image_id(f"{who}{i}"), b"\xff\xd8" + f"{who}{i}".encode())
        added[who] = writer.close()

    threads = [threading.Thread(target=embed, args=(who,)) for who in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert added == {"a": 60, "b": 60}
    store = PreviewStore.open(tmp_path)
    assert len(store) == 121
    assert all(store.jpeg(image_id(f"{who}{i}")) == b"\xff\xd8" + f"{who}{i}".encode() for who in "ab" for i in range(60))
