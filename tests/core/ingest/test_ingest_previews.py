"""Issue 12.1, ingest half: frame 0 is decoded once at reduced scale, verified by that decode,
and kept as a 256 px preview that galleries use; the full-frame check stays available.

Real files only: full-size radiographs from ../shared/data/covid-chestxray-fullsize and the
pydicom-data radiographs (JPEG 2000 lossless and lossy, uncompressed).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from core.ingest import ingest, load_dataset
from core.pixels import PixelError, load_pixels, verify_pixels
from core.previews import (
    INDEX_NAME,
    PREVIEW_FOLDER,
    PREVIEW_SIZE,
    PreviewStore,
    PreviewWriter,
    decode_preview,
    encode_preview,
    preview_pixels,
    valid_image_id,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")

FULLSIZE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "covid-chestxray-fullsize" / "images"
# One of each kind in the full-size set: grey JPEG, colour JPEG at 1/8, RGB PNG, RGBA PNG.
RASTERS = ["00870a9c.jpg", "446B2CB6-B572-40AB-B01F-1910CA07086A.jpeg", "aqaa062i0002-b.png", "16654_1_1.png"]
DICOMS = ["RG3_J2KR.dcm", "RG1_J2KI.dcm", "RG3_UNCR.dcm", "MR2_J2KI.dcm"]


def _dicom(name: str) -> Path:
    found = get_testdata_file(name)
    if not found:
        pytest.fail(f"pydicom-data file {name} missing (pip install -r requirements-dev.txt)")
    return Path(found)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Class-folder layout of real full-size files (copied: links out of a source are refused)."""
    root = tmp_path_factory.mktemp("fullsize-source")
    (root / "xray").mkdir()
    (root / "dicom").mkdir()
    for name in RASTERS:
        shutil.copy(FULLSIZE / name, root / "xray" / name)
    for name in DICOMS:
        shutil.copy(_dicom(name), root / "dicom" / name)
    return root


@pytest.fixture(scope="module")
def raster_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raster-source")
    (root / "xray").mkdir()
    for name in RASTERS:
        shutil.copy(FULLSIZE / name, root / "xray" / name)
    return root


@pytest.fixture(scope="module")
def ingested(source: Path, tmp_path_factory: pytest.TempPathFactory):
    return ingest(source, tmp_path_factory.mktemp("with-previews"), layout="class-folders")


@pytest.fixture(scope="module")
def embedded(ingested, tmp_path_factory: pytest.TempPathFactory):
    """``ingested`` after its first embedding: the PNGs' previews come from that decode."""
    from core.embed import embed_dataset

    png_ids = {i for i, p in zip(ingested.dataset.images["image_id"], ingested.dataset.images["path"], strict=True)
               if p.endswith(".png")}
    before = PreviewStore.open(ingested.dataset.root)
    assert png_ids and len(before) == len(ingested.dataset.images) - len(png_ids)
    assert not any(image_id in before for image_id in png_ids)
    result = embed_dataset(ingested.dataset, "pixels", cache_root=tmp_path_factory.mktemp("cache"))
    assert result.n_failed == 0
    return ingested


def _grey(values: np.ndarray) -> np.ndarray:
    return values.mean(axis=2) if values.ndim == 3 else values


def test_every_image_gets_a_256_px_preview_that_looks_like_its_full_decode(embedded):
    ingested = embedded
    dataset = ingested.dataset
    assert ingested.n_images == len(RASTERS) + len(DICOMS) and ingested.n_reported == 0
    store = PreviewStore.open(dataset.root)
    assert store is not None and len(store) == len(dataset.images)
    for row in dataset.images.itertuples():
        jpeg = store.jpeg(row.image_id)
        assert jpeg is not None, row.path
        preview = preview_pixels(jpeg)
        assert max(preview.shape[:2]) == PREVIEW_SIZE, (row.path, preview.shape)
        # Same aspect as the scan (within a pixel of rounding).
        assert abs(preview.shape[0] / preview.shape[1] - row.rows / row.columns) < 0.02, row.path
        full = load_pixels(row.path)
        size = (preview.shape[1], preview.shape[0])
        reference = Image.fromarray((_grey(full) * 255).astype(np.uint8)).resize(size, Image.Resampling.BOX)
        correlation = np.corrcoef(_grey(preview).ravel(), np.asarray(reference, float).ravel())[0, 1]
        assert correlation > 0.9, (row.path, correlation)
    decodes = set(ingested.decodes)
    assert {"jpeg 1/4", "jpeg 1/8", "png structure", "j2k 1/4", "dicom full"} <= decodes, decodes
    assert {"hash", "header", "decode", "preview_encode", "preview_write"} <= set(ingested.stage_seconds)
    n_png = sum(name.endswith(".png") for name in RASTERS)
    assert dataset.manifest["previews"]["count"] == len(dataset.images) - n_png  # at ingest
    assert dataset.manifest["previews"]["deferred"] == n_png


def test_a_colour_scan_keeps_colour_and_a_grey_one_stays_grey(embedded):
    ingested = embedded
    store = PreviewStore.open(ingested.dataset.root)
    by_name = {Path(p).name: i for p, i in zip(ingested.dataset.images["path"], ingested.dataset.images["image_id"],
                                               strict=True)}
    assert preview_pixels(store.jpeg(by_name["00870a9c.jpg"])).ndim == 2
    # aqaa062i0002-b.png is a colour figure; load_pixels keeps it colour, so does its preview.
    assert load_pixels(FULLSIZE / "aqaa062i0002-b.png").ndim == preview_pixels(store.jpeg(by_name["aqaa062i0002-b.png"])).ndim


def test_the_full_frame_check_is_still_there_and_ingests_the_same_rows(source, ingested, tmp_path):
    old = ingest(source, tmp_path / "full-check", layout="class-folders", previews=False)
    assert not (tmp_path / "full-check" / PREVIEW_FOLDER).exists()
    assert old.dataset.manifest["previews"] is None
    assert set(old.decodes) == {"full check"}
    columns = ["image_id", "rows", "columns", "n_frames", "label", "modality", "patient_id"]
    order = ingested.dataset.images.sort_values("image_id")[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(old.dataset.images.sort_values("image_id")[columns].reset_index(drop=True), order)


def test_reingest_without_previews_removes_the_old_ones_and_a_loaded_old_dataset_has_none(raster_source, tmp_path):
    out = tmp_path / "ds"
    ingest(raster_source, out, layout="class-folders")
    packs = list((out / PREVIEW_FOLDER).glob("pack-*.bin"))
    assert packs and (out / PREVIEW_FOLDER / INDEX_NAME).is_file()
    ingest(raster_source, out, layout="class-folders", previews=False)
    assert PreviewStore.open(out) is None  # an older dataset: galleries decode the originals
    assert not list((out / PREVIEW_FOLDER).glob("pack-*.bin"))
    assert len(load_dataset(out).images) == len(RASTERS)


def test_reingest_replaces_packs_and_keeps_only_current_images(source, raster_source, tmp_path):
    out = tmp_path / "ds"
    first = ingest(source, out, layout="class-folders")
    old_packs = {p.name for p in (out / PREVIEW_FOLDER).glob("pack-*.bin")}
    second = ingest(raster_source, out, layout="class-folders")
    new_packs = {p.name for p in (out / PREVIEW_FOLDER).glob("pack-*.bin")}
    assert new_packs and not new_packs & old_packs
    store = PreviewStore.open(out)
    n_png = sum(name.endswith(".png") for name in RASTERS)  # theirs come from the first embedding
    assert len(store) == len(second.dataset.images) - n_png == len(RASTERS) - n_png
    gone = set(first.dataset.images["image_id"]) - set(second.dataset.images["image_id"])
    assert gone and all(store.jpeg(image_id) is None for image_id in gone)


# -- bad files: refused at ingest as the full check refused them, or cleanly at embed -----------


def _truncated(path: Path, out: Path, keep: float) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def _flipped(path: Path, out: Path, at: float) -> Path:
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start:start + 64] = bytes(b ^ 0x5A for b in data[start:start + 64])
    out.write_bytes(bytes(data))
    return out


def _bad_files(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        _truncated(FULLSIZE / "00870a9c.jpg", folder / "cut.jpg", 0.5),
        _truncated(FULLSIZE / "aqaa062i0002-b.png", folder / "cut.png", 0.6),
        _flipped(FULLSIZE / "aqaa062i0002-b.png", folder / "flipped.png", 0.5),
        _truncated(_dicom("RG3_J2KR.dcm"), folder / "cut_j2k.dcm", 0.7),
        _truncated(_dicom("RG3_UNCR.dcm"), folder / "cut_native.dcm", 0.7),
    ]


def test_a_damaged_file_is_refused_by_the_cheap_decode_as_by_the_full_check(tmp_path):
    from core.previews import ingest_probe

    for path in _bad_files(tmp_path / "bad"):
        with pytest.raises(PixelError) as full:
            verify_pixels(path)
        with pytest.raises(PixelError) as cheap:
            decode_preview(path)
        assert cheap.value.status == full.value.status, (path.name, cheap.value.reason, full.value.reason)
        assert cheap.value.path == str(path)
        with pytest.raises(PixelError) as ingest_check:  # a PNG by its chunks, not inflated
            ingest_probe(path)
        assert ingest_check.value.status == full.value.status, (path.name, ingest_check.value.reason)
        assert ingest_check.value.path == str(path)


def test_damaged_files_are_reported_at_ingest_and_the_batch_goes_on(tmp_path):
    source = tmp_path / "src"
    _bad_files(source / "bad")
    (source / "good").mkdir()
    shutil.copy(FULLSIZE / "00cfd1c1.jpg", source / "good" / "00cfd1c1.jpg")
    result = ingest(source, tmp_path / "out", layout="class-folders")
    assert result.n_images == 1
    report = dict(zip(result.dataset.report["path"].map(lambda p: Path(p).name), result.dataset.report["status"],
                      strict=True))
    assert report == {"cut.jpg": "truncated", "cut.png": "truncated", "flipped.png": report["flipped.png"],
                      "cut_j2k.dcm": "truncated", "cut_native.dcm": "truncated"}
    assert report["flipped.png"] in {"unreadable", "truncated"}
    assert len(PreviewStore.open(result.dataset.root)) == 1


def test_a_file_that_breaks_after_ingest_fails_at_embed_with_its_name(tmp_path):
    """What the reduced decode cannot see (a JPEG 2000 frame damaged only in its finest levels)
    meets the full decode at embed time: one failure row naming the file, the rest embedded."""
    from core.encoders import get_encoder, iter_image_embeddings

    source = tmp_path / "src" / "dicom"
    source.mkdir(parents=True)
    for name in ("RG3_J2KR.dcm", "MR2_J2KI.dcm"):
        shutil.copy(_dicom(name), source / name)
    dataset = ingest(source.parent, tmp_path / "out", layout="class-folders").dataset
    assert len(dataset.images) == 2
    victim = source / "RG3_J2KR.dcm"
    _truncated(_dicom("RG3_J2KR.dcm"), victim, 0.7)
    items = list(zip(dataset.images["image_id"], dataset.images["path"], dataset.images["frame"], strict=True))
    chunks = list(iter_image_embeddings(items, get_encoder("pixels"), batch_size=2, num_workers=1))
    failures = [failure for chunk in chunks for failure in chunk.failures]
    embedded = [image_id for chunk in chunks for image_id in chunk.image_ids]
    assert len(embedded) == 1 and len(failures) == 1
    image_id, path, reason = failures[0]
    assert Path(path) == victim.resolve() and "truncated" in reason


# -- path safety of the store --------------------------------------------------------------------


def test_only_image_ids_are_accepted(tmp_path):
    good = "a" * 64 + "-0"
    assert valid_image_id(good)
    for bad in ["../../etc/passwd", "a" * 64, "A" * 64 + "-0", "a" * 64 + "-0/../x", "a" * 63 + "-0", None, 7,
                "a" * 64 + "-0\n", "a" * 64 + "-1234567"]:
        assert not valid_image_id(bad), bad
    writer = PreviewWriter(tmp_path)
    picture = np.zeros((16, 16), np.uint8)
    with pytest.raises(ValueError, match="is not an image id"):
        writer.add("../../evil", encode_preview(picture))
    with pytest.raises(ValueError, match="longer side"):
        encode_preview(np.zeros((PREVIEW_SIZE + 1, 8), np.uint8))
    writer.add(good, encode_preview(picture))
    assert writer.close() == 1
    store = PreviewStore.open(tmp_path)
    assert store.jpeg(good)[:2] == b"\xff\xd8"
    assert store.jpeg("../../etc/passwd") is None and store.jpeg("b" * 64 + "-0") is None


def test_a_hostile_index_reads_nothing_outside_the_preview_folder(tmp_path):
    secret = tmp_path / "secret.jpg"
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="JPEG")
    secret.write_bytes(buffer.getvalue())
    folder = tmp_path / "ds" / PREVIEW_FOLDER
    folder.mkdir(parents=True)
    ids = ["a" * 64 + "-0", "b" * 64 + "-0", "c" * 64 + "-0"]
    pd.DataFrame({"image_id": ids, "pack": ["../../secret.jpg", "pack-000000000000-00000.bin", "x.bin"],
                  "offset": [0, 0, 0], "length": [len(secret.read_bytes()), 10**9, 10]}).to_parquet(folder / INDEX_NAME)
    store = PreviewStore.open(tmp_path / "ds")
    assert all(store.jpeg(image_id) is None for image_id in ids)


def test_reingest_never_deletes_what_is_not_a_pack_it_wrote(raster_source, tmp_path):
    out = tmp_path / "ds"
    ingest(raster_source, out, layout="class-folders")
    folder = out / PREVIEW_FOLDER
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"keep")
    (folder / "pack-111111111111-00000.bin").symlink_to(outside)  # named like a pack, a link
    (folder / "notes.txt").write_text("keep")
    ingest(raster_source, out, layout="class-folders", previews=False)
    assert outside.read_bytes() == b"keep" and (folder / "notes.txt").read_text() == "keep"


# -- what the header says and what the preview shows agree with the full path -------------------


def test_exif_rotation_16_bit_and_palette_rasters_match_the_full_path(tmp_path):
    from core.pixels import probe_image

    base = np.asarray(Image.open(FULLSIZE / "00870a9c.jpg").convert("L").resize((600, 300)))
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees: 300 wide, 600 high
    Image.fromarray(base).save(rotated, exif=exif)
    sixteen = tmp_path / "sixteen.png"
    Image.fromarray(base.astype(np.uint16) * 200).save(sixteen)
    palette = tmp_path / "palette.png"
    Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    for path in (rotated, sixteen, palette):
        preview = decode_preview(path)
        probed = probe_image(path)
        assert (preview.info.rows, preview.info.columns) == (probed.rows, probed.columns), path.name
        full = _grey(load_pixels(path))
        assert abs(preview.picture.shape[0] / preview.picture.shape[1] - full.shape[0] / full.shape[1]) < 0.02
        size = (preview.picture.shape[1], preview.picture.shape[0])
        reference = np.asarray(Image.fromarray((full * 255).astype(np.uint8)).resize(size, Image.Resampling.BOX), float)
        assert np.corrcoef(_grey(preview.picture.astype(float)).ravel(), reference.ravel())[0, 1] > 0.9, path.name
    assert decode_preview(rotated).info.rows == 600


def test_removing_previews_never_follows_a_link_out_of_the_folder(tmp_path):
    from core.previews import PREVIEW_FOLDER, remove_previews

    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "pack-0123456789ab-00000.bin"
    victim.write_bytes(b"keep me")
    folder = tmp_path / "ds" / PREVIEW_FOLDER
    folder.mkdir(parents=True)
    (folder / "pack-0123456789ab-00001.bin").symlink_to(victim)
    remove_previews(tmp_path / "ds")
    assert victim.read_bytes() == b"keep me"
    linked = tmp_path / "ds2"
    linked.mkdir()
    (linked / PREVIEW_FOLDER).symlink_to(outside, target_is_directory=True)
    remove_previews(linked)
    assert victim.read_bytes() == b"keep me"
