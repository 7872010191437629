"""Issue 12.1, ingest: a PNG is verified by its chunks (CRC of every byte, IHDR, IDAT layout,
zlib header, EXIF orientation) without inflating it. What only a decode can see (a stream whose
CRCs match but whose deflate data is broken) passes ingest and is refused by name at embed.

Real files: the PNGs of ../shared/data/covid-chestxray-fullsize; damaged ones are made from them.
"""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.pixels import PixelError, load_pixels, probe_image
from core.png_check import PNG_SIGNATURE, check_png, is_png
from core.previews import PreviewStore, ingest_probe

FULLSIZE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "covid-chestxray-fullsize" / "images"
RGB_PNG = FULLSIZE / "aqaa062i0002-b.png"  # 2037x1701 RGB, 177 chunks
RGBA16_PNG = FULLSIZE / "23E99E2E-447C-46E5-8EB2-D35D12473C39.png"  # 16-bit RGBA
BUDGET = 64_000_000


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a well-formed PNG."""
    assert data[:8] == PNG_SIGNATURE
    out, at = [], 8
    while at < len(data):
        length, cid = struct.unpack(">I4s", data[at:at + 8])
        out.append((cid, data[at + 8:at + 8 + length]))
        at += 12 + length
        if cid == b"IEND":
            break
    return out


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """Chunks written back with correct lengths and CRCs."""
    parts = [PNG_SIGNATURE]
    for cid, body in chunks:
        parts.append(struct.pack(">I", len(body)) + cid + body + struct.pack(">I", zlib.crc32(cid + body)))
    return b"".join(parts)


def _with_idat(data: bytes, stream: bytes, pieces: int = 4) -> bytes:
    """The PNG's chunks with its image data replaced by ``stream`` (split in ``pieces`` IDATs),
    every CRC consistent."""
    chunks = _chunks(data)
    first = next(i for i, (cid, _) in enumerate(chunks) if cid == b"IDAT")
    others = [c for c in chunks if c[0] != b"IDAT"]
    step = -(-len(stream) // pieces)
    idats = [(b"IDAT", stream[i:i + step]) for i in range(0, len(stream), step)]
    return _png(others[:first] + idats + others[first:])


def _stream(data: bytes) -> bytes:
    return b"".join(body for cid, body in _chunks(data) if cid == b"IDAT")


def test_every_real_png_passes_and_gives_the_geometry_of_probe_image():
    pngs = sorted(FULLSIZE.glob("*.png"))
    assert len(pngs) >= 10
    for path in pngs:
        assert is_png(path)
        structure = check_png(path, max_pixels=BUDGET)
        probed = probe_image(path)
        checked = ingest_probe(path)
        assert checked.picture is None and checked.decode == "png structure"
        assert (checked.info.rows, checked.info.columns, checked.info.channels, checked.info.n_frames) == (
            probed.rows, probed.columns, probed.channels, probed.n_frames), path.name
        assert (structure.height, structure.width) == (probed.rows, probed.columns)
        assert structure.idat_bytes > 0 and structure.orientation == 1
    assert not is_png(FULLSIZE / "00870a9c.jpg")


@pytest.mark.parametrize("keep", [0.02, 0.5, 0.97])
def test_a_truncated_png_is_refused_as_truncated_naming_the_file(tmp_path, keep):
    data = RGB_PNG.read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(PixelError) as error:
        ingest_probe(path)
    assert error.value.status == "truncated" and error.value.path == str(path)


def test_a_png_cut_just_before_iend_is_truncated(tmp_path):
    data = RGB_PNG.read_bytes()
    path = tmp_path / "no_iend.png"
    path.write_bytes(data[:-12])
    with pytest.raises(PixelError, match="before IEND") as error:
        check_png(path, max_pixels=BUDGET)
    assert error.value.status == "truncated"


@pytest.mark.parametrize("at", [0.3, 0.9])
def test_one_flipped_bit_anywhere_in_the_image_data_fails_its_crc(tmp_path, at):
    data = bytearray(RGB_PNG.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path = tmp_path / "rot.png"
    path.write_bytes(bytes(data))
    with pytest.raises(PixelError, match="CRC mismatch in chunk IDAT") as error:
        ingest_probe(path)
    assert error.value.status == "unreadable"


def test_structural_faults_are_each_refused_with_their_reason(tmp_path):
    data = RGB_PNG.read_bytes()
    chunks = _chunks(data)
    ihdr = chunks[0][1]
    idats = [c for c in chunks if c[0] == b"IDAT"]
    rest = [c for c in chunks[1:] if c[0] not in (b"IDAT", b"IEND")]
    cases = {
        "no IDAT": _png([chunks[0], *rest, (b"IEND", b"")]),
        "not consecutive": _png([chunks[0], *rest, idats[0], (b"tEXt", b"a\x00b"), *idats[1:], (b"IEND", b"")]),
        "IHDR bit depth": _png([(b"IHDR", ihdr[:8] + b"\x03" + ihdr[9:]), *chunks[1:]]),
        "not IHDR": _png([(b"tEXt", b"a\x00b"), *chunks]),
        "zlib header": _with_idat(data, b"\x78\x00" + _stream(data)[2:]),
        "deflate stream": _with_idat(data, b"\x79\x9c" + _stream(data)[2:]),
        "chunk type": data[:8] + data[8:12] + b"IH\x00R" + data[16:],
        "a second IHDR": _png([chunks[0], *chunks]),
    }
    for reason, body in cases.items():
        path = tmp_path / f"{reason.replace(' ', '_')}.png"
        path.write_bytes(body)
        with pytest.raises(PixelError) as error:
            check_png(path, max_pixels=BUDGET)
        assert error.value.status == "unreadable", (reason, error.value.reason)
        assert reason.split()[-1] in error.value.reason or reason in error.value.reason, (reason, error.value.reason)


def test_a_crc_consistent_stream_too_short_for_its_size_is_truncated(tmp_path):
    data = RGB_PNG.read_bytes()
    path = tmp_path / "tiny_stream.png"
    path.write_bytes(_with_idat(data, _stream(data)[:600], pieces=1))
    with pytest.raises(PixelError, match="too few") as error:
        check_png(path, max_pixels=BUDGET)
    assert error.value.status == "truncated"


def test_a_png_over_the_budget_is_refused_from_its_header(tmp_path):
    path = tmp_path / "big.png"
    shutil.copy(RGB_PNG, path)
    with pytest.raises(PixelError) as error:
        ingest_probe(path, max_pixels=1_000_000)
    assert error.value.status == "too_large"


def test_16_bit_palette_interlaced_and_animated_pngs_match_probe_image(tmp_path):
    base = Image.open(RGB_PNG).convert("L").resize((640, 512))
    made = {
        "sixteen.png": lambda p: Image.fromarray(np.asarray(base).astype(np.uint16) * 257).save(p),
        "palette.png": lambda p: base.convert("P", palette=Image.Palette.ADAPTIVE).save(p),
        "interlaced.png": lambda p: base.save(p, interlace=1),
        "one_bit.png": lambda p: base.convert("1").save(p),
        "animated.png": lambda p: base.save(p, save_all=True, append_images=[base.rotate(90), base.rotate(180)]),
        "rgba16.png": lambda p: shutil.copy(RGBA16_PNG, p),
    }
    for name, make in made.items():
        path = tmp_path / name
        make(path)
        checked, probed = ingest_probe(path), probe_image(path)
        assert (checked.info.rows, checked.info.columns, checked.info.channels, checked.info.n_frames) == (
            probed.rows, probed.columns, probed.channels, probed.n_frames), name
    assert probe_image(tmp_path / "animated.png").n_frames == 3


def _exif_png(tmp_path: Path, name: str, where: str) -> Path:
    base = Image.open(RGB_PNG).convert("L").resize((600, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 300 wide, 600 high
    buffer = io.BytesIO()
    base.save(buffer, format="PNG", exif=exif)
    chunks = _chunks(buffer.getvalue())
    if where == "after IDAT":  # Pillow finds it only after decoding; so must the chunk walk
        exif_chunk = next(c for c in chunks if c[0] == b"eXIf")
        chunks = [c for c in chunks if c[0] != b"eXIf"]
        chunks.insert(len(chunks) - 1, exif_chunk)
    elif where == "xmp":
        chunks = [c for c in chunks if c[0] != b"eXIf"]
        xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
        chunks.insert(1, (b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp))
    path = tmp_path / name
    path.write_bytes(_png(chunks))
    return path


@pytest.mark.parametrize("where", ["before IDAT", "after IDAT", "xmp"])
def test_exif_orientation_is_read_as_the_full_decode_reads_it(tmp_path, where):
    path = _exif_png(tmp_path, "rotated.png", where)
    assert check_png(path, max_pixels=BUDGET).orientation == 6
    checked, probed = ingest_probe(path), probe_image(path)
    assert (checked.info.rows, checked.info.columns) == (probed.rows, probed.columns) == (600, 300)
    assert load_pixels(path).shape == (600, 300)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_counts_as_none_like_the_decode(tmp_path):
    base = Image.open(RGB_PNG).convert("L").resize((300, 200))
    buffer = io.BytesIO()
    base.save(buffer, format="PNG")
    chunks = _chunks(buffer.getvalue())
    chunks.insert(1, (b"eXIf", b"MM\x00*garbage"))
    path = tmp_path / "bad_exif.png"
    path.write_bytes(_png(chunks))
    checked, probed = ingest_probe(path), probe_image(path)
    assert (checked.info.rows, checked.info.columns) == (probed.rows, probed.columns) == (200, 300)


def test_hostile_chunk_lengths_and_counts_are_refused_without_reading_them(tmp_path):
    data = RGB_PNG.read_bytes()
    huge = tmp_path / "huge_length.png"
    ihdr_end = 8 + 25
    huge.write_bytes(data[:ihdr_end] + struct.pack(">I", 0xFFFFFFF0) + b"tEXt" + b"x" * 100)
    with pytest.raises(PixelError, match="chunk length"):
        check_png(huge, max_pixels=BUDGET)
    big_header = tmp_path / "big_ihdr.png"
    big_header.write_bytes(PNG_SIGNATURE + struct.pack(">I", 2**31 - 1) + b"IHDR" + b"x" * 100)
    with pytest.raises(PixelError, match="IHDR is 2147483647 bytes"):
        check_png(big_header, max_pixels=BUDGET)
    lying = tmp_path / "lying_length.png"
    lying.write_bytes(data[:ihdr_end] + struct.pack(">I", 2**30) + b"tEXt" + b"x" * 100)
    with pytest.raises(PixelError) as error:
        check_png(lying, max_pixels=BUDGET)
    assert error.value.status == "truncated"


def test_crc_consistent_broken_deflate_passes_ingest_and_is_refused_by_name_at_embed(tmp_path):
    """The two halves of the policy: the chunk walk cannot see broken deflate data behind good
    CRCs, so ingest takes the file; the embedding's decode refuses it by name and the batch
    goes on; no preview is made for it, the others get theirs."""
    from core.embed import embed_dataset
    from core.ingest import ingest

    source = tmp_path / "src" / "xray"
    source.mkdir(parents=True)
    data = RGB_PNG.read_bytes()
    stream = bytearray(_stream(data))
    middle = len(stream) // 2
    stream[middle:middle + 4096] = bytes(b ^ 0xA5 for b in stream[middle:middle + 4096])
    victim = source / "broken_deflate.png"
    victim.write_bytes(_with_idat(data, bytes(stream)))
    cut = source / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    for name in ("16654_1_1.png", "00870a9c.jpg"):
        shutil.copy(FULLSIZE / name, source / name)

    result = ingest(source.parent, tmp_path / "out", layout="class-folders")
    report = dict(zip(result.dataset.report["path"].map(lambda p: Path(p).name), result.dataset.report["status"],
                      strict=True))
    assert report == {"cut.png": "truncated"}  # refused at ingest, by name
    names = {Path(p).name: i for p, i in zip(result.dataset.images["path"], result.dataset.images["image_id"],
                                             strict=True)}
    assert set(names) == {"broken_deflate.png", "16654_1_1.png", "00870a9c.jpg"}

    embedded = embed_dataset(result.dataset, "pixels", cache_root=tmp_path / "cache")
    assert embedded.n_failed == 1 and embedded.n_computed == 2
    failure = embedded.failures.iloc[0]
    assert Path(failure["path"]).name == "broken_deflate.png"
    assert failure["image_id"] == names["broken_deflate.png"]
    assert failure["reason"].split(":")[0] in {"unreadable", "truncated"}, failure["reason"]
    store = PreviewStore.open(result.dataset.root)
    assert names["16654_1_1.png"] in store and names["00870a9c.jpg"] in store
    assert names["broken_deflate.png"] not in store


def test_thousands_of_text_chunks_are_refused_before_they_are_held(tmp_path):
    # Each text chunk costs Python objects whatever its size: a million empty tEXt chunks (a
    # 12 MB file) held ~200 MB in the check. A few thousand are refused, by name; a few pass.
    chunks = _chunks(RGB_PNG.read_bytes())
    many = tmp_path / "many_texts.png"
    many.write_bytes(_png([chunks[0], *[(b"tEXt", b"k%d\x00" % i) for i in range(4097)], *chunks[1:]]))
    with pytest.raises(PixelError, match="more than 4,096 text/EXIF chunks") as error:
        ingest_probe(many)
    assert error.value.status == "unreadable" and error.value.path == str(many)
    few = tmp_path / "few_texts.png"
    few.write_bytes(_png([chunks[0], *[(b"tEXt", b"k%d\x00" % i) for i in range(4000)], *chunks[1:]]))
    assert ingest_probe(few).decode == "png structure"
