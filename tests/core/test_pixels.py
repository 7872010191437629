"""core.pixels: every supported file decodes to float32 [0, 1], or fails with a reason."""

from __future__ import annotations

import collections
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image

from core.dicom import PIXEL_STATUSES, BoundedFile
from core.pixels import (
    DEFAULT_MAX_PIXELS,
    FrameRangeError,
    ImageInfo,
    PixelError,
    load_pixels,
    probe_image,
    to_unit_range,
)

# Many test files are deliberately malformed, and pydicom says so for each one.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*")


def sample(name: str) -> str:
    return pydicom.data.get_testdata_file(name)


def dicomdir_file(*parts: str) -> str:
    return str(Path(sample("DICOMDIR")).parent.joinpath(*parts))


def assert_valid_image(image: np.ndarray) -> None:
    assert image.dtype == np.float32
    assert image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3), image.shape
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0


def expect_error(status: str, path, *args, **kwargs) -> PixelError:
    with pytest.raises(PixelError) as caught:
        load_pixels(path, *args, **kwargs)
    error = caught.value
    assert error.status == status, f"{error.status}: {error.reason}"
    assert error.reason and str(error) == f"{path}: {error.reason}"
    return error


def modified_copy(source: str, target: Path, **changes) -> Path:
    ds = pydicom.dcmread(source)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(target)
    return target


# ------------------------------------------------------------------ every pydicom test file


@pytest.mark.slow
def test_every_pydicom_test_file_loads_or_fails_with_a_reason():
    """pydicom's test files and pydicom-data's (get_testdata_files searches both)."""
    outcomes: dict[str, str] = {}
    for path in pydicom.data.get_testdata_files():
        try:
            image = load_pixels(path)
        except PixelError as error:
            assert error.status in PIXEL_STATUSES and error.reason.strip(), path
            outcomes[path] = error.status
            continue
        assert_valid_image(image)
        info = probe_image(path)
        assert (info.rows, info.columns) == image.shape[:2], path
        assert info.kind == "dicom" and info.n_frames >= 1
        if image.ndim == 3:
            assert info.channels == 3
        outcomes[path] = "ok"
    counts = collections.Counter(outcomes.values())
    by_name = {Path(path).name: status for path, status in outcomes.items()}
    # Measured with pydicom 3.0.2 + pydicom-data 1.0.0 and the pylibjpeg plugins: 156 decode.
    assert counts["ok"] >= 150, counts
    assert by_name["MR_truncated.dcm"] == "truncated"
    assert by_name["rtplan_truncated.dcm"] == "truncated"
    assert by_name["emri_small_jpeg_2k_lossless_too_short.dcm"] == "truncated"
    assert by_name["DICOMDIR"] == "no_pixel_data"
    assert by_name["waveform_ecg.dcm"] == "no_pixel_data"
    assert by_name["README.txt"] == "not_an_image"
    assert by_name["badVR.dcm"] == "unreadable"  # NumberOfFrames '1A'
    for name in ("OT-PAL-8-face.dcm", "image_dfl.dcm", "SC_rgb_jpeg.dcm", "color3d_jpeg_baseline.dcm",
                 "GDCMJ2K_TextGBR.dcm", "SC_rgb_small_odd_big_endian.dcm", "JPEGLSNearLossless_16.dcm"):
        assert by_name[name] == "ok", name  # no preamble, deflated, odd VR, YBR, J2K RCT, ...


# ------------------------------------------------------------------------ DICOM semantics


def test_monochrome1_is_inverted_so_that_bright_means_dense(tmp_path):
    mono1 = dicomdir_file("77654033", "CR1", "6154")
    assert pydicom.dcmread(mono1).PhotometricInterpretation == "MONOCHROME1"
    as_mono2 = modified_copy(mono1, tmp_path / "mono2.dcm", PhotometricInterpretation="MONOCHROME2")
    inverted, plain = load_pixels(mono1), load_pixels(as_mono2)
    assert plain.std() > 0.1
    np.testing.assert_allclose(inverted, 1.0 - plain, atol=1e-6)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_presentation_lut_shape_inverse_inverts_like_monochrome1(tmp_path, name):
    source = sample(name)
    assert pydicom.dcmread(source).PhotometricInterpretation == "MONOCHROME2"
    inverse = modified_copy(source, tmp_path / "inverse.dcm", PresentationLUTShape="INVERSE")
    identity = modified_copy(source, tmp_path / "identity.dcm", PresentationLUTShape="IDENTITY")
    plain = load_pixels(source)
    assert plain.std() > 0.05
    np.testing.assert_allclose(load_pixels(inverse), 1.0 - plain, atol=1e-6)
    np.testing.assert_array_equal(load_pixels(identity), plain)


def test_monochrome1_radiograph_is_anti_correlated_with_its_stored_values():
    path = sample("RG1_UNCR.dcm")  # a real 1955 x 1841 MONOCHROME1 chest radiograph
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    shown = load_pixels(path).astype(np.float64)
    assert np.corrcoef(stored.ravel(), shown.ravel())[0, 1] < -0.9


def test_rescale_slope_and_intercept_are_applied(tmp_path):
    path = sample("CT_small.dcm")
    original = load_pixels(path)
    flipped = load_pixels(modified_copy(path, tmp_path / "flip.dcm", RescaleSlope=-1))
    np.testing.assert_allclose(flipped, 1.0 - original, atol=1e-6)


def test_window_is_applied_in_rescaled_units(tmp_path):
    source = sample("CT_small.dcm")  # stored values - 1024 = Hounsfield units
    windowed = load_pixels(
        modified_copy(source, tmp_path / "soft.dcm", WindowCenter=40, WindowWidth=400)
    )
    hounsfield = pydicom.dcmread(source).pixel_array.astype(np.float64) - 1024
    assert (windowed[hounsfield <= -160] == 0).all()  # below the window: black
    assert (windowed[hounsfield >= 240] == 1).all()  # above it: white
    inside = (hounsfield > -150) & (hounsfield < 230)
    assert inside.sum() > 100
    assert ((windowed[inside] > 0) & (windowed[inside] < 1)).all()


def test_enhanced_ct_uses_the_functional_group_rescale_and_window():
    path = sample("eCT_Supplemental.dcm")  # intercept -1024, window 49/102 in shared groups
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array[1].astype(np.float64)
    expected = to_unit_range(np.clip((raw - 1024 - (49 - 0.5)) / (102 - 1) + 0.5, 0, 1))
    np.testing.assert_allclose(load_pixels(path, 1), expected, atol=1e-5)


def test_multiframe_frames_are_decoded_individually():
    path = sample("emri_small.dcm")  # 10 frames, no rescale or window
    stack = pydicom.dcmread(path).pixel_array
    assert probe_image(path) == ImageInfo("dicom", 10, 64, 64, 1)
    for frame in (0, 4, 9):
        np.testing.assert_array_equal(load_pixels(path, frame), to_unit_range(stack[frame]))
    assert not np.array_equal(load_pixels(path, 0), load_pixels(path, 9))
    for frame in (10, -1):
        with pytest.raises(ValueError, match=r"valid frames are 0\.\.9"):
            load_pixels(path, frame)
    with pytest.raises(FrameRangeError, match=r"0\.\.0"):
        load_pixels(sample("CT_small.dcm"), 1)


@pytest.mark.parametrize(
    ("compressed", "reference", "frame"),
    [
        ("MR_small_RLE.dcm", "MR_small.dcm", 0),
        ("SC_rgb_rle.dcm", "SC_rgb.dcm", 0),
        ("SC_rgb_rle_2frame.dcm", "SC_rgb_2frame.dcm", 1),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm", 0),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", 0),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm", 5),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", 7),
        ("emri_small_RLE.dcm", "emri_small.dcm", 3),
        ("JPEG2000.dcm", "JPEG2000_UNC.dcm", 0),
        ("US1_J2KR.dcm", "US1_UNCR.dcm", 0),  # colour J2K, reversible colour transform
        ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm", 0),  # palette colour
        ("MR_small_bigendian.dcm", "MR_small.dcm", 0),
    ],
)
def test_lossless_compression_decodes_to_its_uncompressed_reference(compressed, reference, frame):
    decoded, expected = load_pixels(sample(compressed), frame), load_pixels(sample(reference), frame)
    assert decoded.shape == expected.shape
    np.testing.assert_allclose(decoded, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("compressed", "max_error", "mean_error"),
    [("SC_rgb_jpeg_dcmtk.dcm", 0.05, 0.01),  # JPEG baseline, YBR_FULL
     ("SC_ybr_full_uncompressed.dcm", 0.05, 0.01),  # YBR -> RGB without compression
     ("SC_rgb_jls_lossy_line.dcm", 0.05, 0.01)],  # JPEG-LS near-lossless
)
def test_lossy_colour_decodes_close_to_the_original(compressed, max_error, mean_error):
    decoded, expected = load_pixels(sample(compressed)), load_pixels(sample("SC_rgb.dcm"))
    assert decoded.shape == expected.shape == (100, 100, 3)
    error = np.abs(decoded - expected)
    assert error.max() < max_error and error.mean() < mean_error


def test_truncated_dicoms_are_reported_as_truncated(tmp_path):
    # (MR_small_jp2klossless.dcm has 138 bytes of elements after its pixel data: cut past them.)
    for name, keep in [("CT_small.dcm", -200), ("MR_small_RLE.dcm", -300),
                       ("MR_small_jp2klossless.dcm", -200), ("CT_small.dcm", 300),
                       ("CT_small.dcm", 3001)]:
        data = Path(sample(name)).read_bytes()
        path = tmp_path / f"{name}.{keep}.dcm"
        path.write_bytes(data[:keep])
        expect_error("truncated", path)
        with pytest.raises(PixelError, match="truncated|cut short|ends|remain"):
            probe_image(path)


def test_dicom_without_pixel_data(tmp_path):
    expect_error("no_pixel_data", sample("rtplan.dcm"))
    assert "DICOMDIR" in expect_error("no_pixel_data", sample("DICOMDIR")).reason
    assert "SR" in expect_error("no_pixel_data", sample("test-SR.dcm")).reason
    stripped = modified_copy(sample("CT_small.dcm"), tmp_path / "stripped.dcm", PixelData=None)
    assert "CT Image Storage" in expect_error("no_pixel_data", stripped).reason


@pytest.mark.parametrize(
    ("uid", "shown"),
    [("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)"),
     ("1.2.3.4.5.6.7", "1.2.3.4.5.6.7")],
)
def test_unsupported_transfer_syntax_names_the_syntax(tmp_path, uid, shown):
    ds = pydicom.dcmread(sample("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = uid
    path = tmp_path / "odd-syntax.dcm"
    ds.save_as(path)
    assert shown in expect_error("unsupported_transfer_syntax", path).reason
    with pytest.raises(PixelError, match="transfer syntax"):
        probe_image(path)


def test_dicom_over_the_pixel_budget_is_refused_from_the_header():
    path = sample("CT_small.dcm")  # 128 x 128
    error = expect_error("too_large", path, max_pixels=128 * 128 - 1)
    assert "128x128 = 16384" in error.reason and "max_pixels=16383" in error.reason
    with pytest.raises(PixelError, match="max_pixels"):
        probe_image(path, max_pixels=100)
    assert load_pixels(path, max_pixels=128 * 128).shape == (128, 128)
    with pytest.raises(ValueError, match="max_pixels=0"):
        load_pixels(path, max_pixels=0)


def test_compressed_frame_bomb_is_refused_before_decoding(tmp_path):
    data = bytearray(Path(sample("MR_small_jp2klossless.dcm")).read_bytes())
    siz = data.find(b"\xff\x4f\xff\x51")
    struct.pack_into(">II", data, siz + 8, 150_000, 150_000)  # the codestream claims 22.5 Gpx
    path = tmp_path / "bomb.dcm"
    path.write_bytes(bytes(data))
    assert "150000x150000" in expect_error("too_large", path).reason


# ----------------------------------------------------------------------- hostile input


def test_decoder_panic_becomes_a_pixel_error(tmp_path):
    # One corrupted byte makes the Rust RLE plugin panic (a BaseException, not an Exception).
    data = bytearray(Path(sample("MR_small_RLE.dcm")).read_bytes())
    data[3002] = 198
    path = tmp_path / "panic.dcm"
    path.write_bytes(bytes(data))
    expect_error("unreadable", path)


def test_bounded_file_never_allocates_a_declared_length():
    # pydicom asks for an element's declared length; a corrupt ~4 GiB one must not be allocated.
    path = sample("CT_small.dcm")
    with BoundedFile(path) as handle:
        assert handle.read(1 << 40) == Path(path).read_bytes()


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "SC_rgb_jpeg_dcmtk.dcm", "CT_small.dcm", "MR_small_implicit.dcm", "image_dfl.dcm"],
)
def test_corrupted_dicoms_only_ever_raise_pixel_errors(tmp_path, name):
    original = Path(sample(name)).read_bytes()
    rng = np.random.default_rng(sum(map(ord, name)))
    statuses = collections.Counter()
    for variant in range(40):
        data = bytearray(original)
        # half the variants hit the header, where lengths and VRs live
        limit = min(len(data), 2048) if variant % 2 else len(data)
        for offset in rng.integers(0, limit, size=int(rng.integers(1, 20))):
            data[offset] = int(rng.integers(0, 256))
        if variant % 5 == 0:
            data = data[: int(rng.integers(1, len(data)))]
        path = tmp_path / f"{variant}.dcm"
        path.write_bytes(bytes(data))
        try:
            assert_valid_image(load_pixels(path))
            statuses["ok"] += 1
        except PixelError as error:
            assert error.reason
            statuses[error.status] += 1
    assert sum(statuses.values()) == 40


# ---------------------------------------------------------------------- bad files, any kind


def test_empty_text_missing_and_folder_paths(tmp_path):
    for name in ("empty.png", "empty.dcm"):
        (tmp_path / name).write_bytes(b"")
        expect_error("empty_file", tmp_path / name)
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    expect_error("not_an_image", text)
    expect_error("unreadable", tmp_path / "missing.png")
    assert "directory" in expect_error("unreadable", tmp_path).reason
    for path, status in [(text, "not_an_image"), (tmp_path / "empty.png", "empty_file")]:
        with pytest.raises(PixelError) as caught:
            probe_image(path)
        assert caught.value.status == status


def _png_with_header(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR claims width x height (the pixel data is tiny)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("width", "height"), [(9000, 9000), (100_000, 100_000)])
def test_png_claiming_huge_dimensions_is_too_large(tmp_path, width, height):
    # 81 Mpx is over our 64 Mpx budget; 10 Gpx also trips Pillow's own bomb guard at open().
    path = tmp_path / "claims-huge.png"
    path.write_bytes(_png_with_header(width, height))
    error = expect_error("too_large", path)
    assert "bomb" in error.reason or f"max_pixels={DEFAULT_MAX_PIXELS}" in error.reason
    with pytest.raises(PixelError, match="bomb|max_pixels"):
        probe_image(path)


def test_truncated_and_corrupt_rasters(tmp_path, covid_dir):
    source = sorted((covid_dir / "images").glob("*.png"))[0].read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(source[: len(source) // 2])
    expect_error("truncated", cut)
    photo = sorted((covid_dir / "images").glob("*.jpg"))[0].read_bytes()
    cut_jpeg = tmp_path / "cut.jpg"
    cut_jpeg.write_bytes(photo[: len(photo) // 2])
    expect_error("truncated", cut_jpeg)


# --------------------------------------------------------------------------------- rasters


def test_verify_pixels_finds_what_load_pixels_finds_without_the_float_copies(tmp_path, covid_dir):
    from core.pixels import verify_bytes, verify_pixels

    png = sorted((covid_dir / "images").glob("*.png"))[0]
    jpeg = sorted((covid_dir / "images").glob("*.jpg"))[0]
    dicom = sample("CT_small.dcm")
    for good in (png, jpeg, dicom):
        assert verify_pixels(good) is None
        assert verify_bytes(probe_image(good)) > 0
    for source, name in ((png, "cut.png"), (jpeg, "cut.jpg")):
        data = source.read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(PixelError) as caught:
            verify_pixels(tmp_path / name)
        assert caught.value.status == "truncated", caught.value.reason
    big = tmp_path / "big.png"
    big.write_bytes(_png_with_header(9000, 9000))
    with pytest.raises(PixelError) as caught:
        verify_pixels(big)
    assert caught.value.status == "too_large"


def test_sixteen_bit_png_is_scaled_by_bit_depth(tmp_path):
    values = np.array([[0, 1000, 32768], [65535, 4095, 12]], dtype=np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_allclose(load_pixels(path), values / 65535.0, atol=1e-7)
    assert probe_image(path) == ImageInfo("raster", 1, 2, 3, 1)


def test_eight_bit_palette_alpha_and_equal_channel_images(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_allclose(load_pixels(tmp_path / "grey.png"), grey / 255.0, atol=1e-7)

    Image.fromarray(np.stack([grey] * 3, axis=2)).save(tmp_path / "rgb-grey.png")
    assert load_pixels(tmp_path / "rgb-grey.png").shape == (6, 8)  # equal channels -> grey

    colour = np.zeros((6, 8, 3), dtype=np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).convert("P").save(tmp_path / "palette.png")
    loaded = load_pixels(tmp_path / "palette.png")
    assert loaded.shape == (6, 8, 3) and abs(loaded[0, 0, 0] - 200 / 255) < 0.02

    rgba = np.dstack([colour, np.full((6, 8), 255, np.uint8)])
    rgba[:, :4, 3] = 0  # left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = load_pixels(tmp_path / "rgba.png")
    assert loaded.shape == (6, 8, 3)
    assert (loaded[:, :4] == 0).all() and (loaded[:, 4:, 0] > 0.7).all()

    Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
    assert load_pixels(tmp_path / "la.png").shape == (6, 8)


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((40, 80), dtype=np.uint8)  # wide, left half bright
    image[:, :40] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(image).save(path, exif=exif.tobytes(), quality=95)
    loaded = load_pixels(path)
    assert loaded.shape == (80, 40)  # tall after transposition
    assert loaded[:40].mean() > 0.9 and loaded[40:].mean() < 0.1  # old left is the new top
    info = probe_image(path)
    assert (info.rows, info.columns) == (80, 40)


def test_multipage_tiff_frames(tmp_path):
    pages = [Image.fromarray(np.full((5, 7), value, np.uint8)) for value in (10, 200)]
    path = tmp_path / "stack.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    assert probe_image(path) == ImageInfo("raster", 2, 5, 7, 1)
    assert np.allclose(load_pixels(path, 1), 200 / 255)
    with pytest.raises(FrameRangeError, match=r"valid frames are 0\.\.1"):
        load_pixels(path, 2)


def test_raster_over_the_budget_is_refused(covid_dir):
    path = sorted((covid_dir / "images").glob("*.png"))[0]
    width, height = Image.open(path).size
    error = expect_error("too_large", path, max_pixels=width * height - 1)
    assert f"{height}x{width}" in error.reason


def test_real_chest_xrays_load(covid_dir):
    images = covid_dir / "images"
    paths = [sorted(images.glob("*.png"))[0], sorted(images.glob("*.jpg"))[0],
             sorted(images.glob("*.jpeg"))[0]]
    for path in paths:
        image = load_pixels(path)
        assert_valid_image(image)
        width, height = Image.open(path).size
        assert image.shape[:2] == (height, width)
        info = probe_image(path)
        assert (info.kind, info.n_frames, info.rows, info.columns) == ("raster", 1, height, width)
        assert image.std() > 0.05  # a real radiograph, not a blank


@pytest.mark.slow
def test_every_real_chest_xray_loads(covid_dir):
    paths = sorted(p for p in (covid_dir / "images").iterdir() if p.is_file())
    assert len(paths) > 600
    for path in paths:
        assert_valid_image(load_pixels(path))


def test_to_unit_range_edge_cases():
    np.testing.assert_array_equal(to_unit_range(np.full((3, 3), 7.0)), np.zeros((3, 3)))
    np.testing.assert_allclose(to_unit_range(np.array([[-5.0, 0.0, 5.0]])), [[0, 0.5, 1]])
    with_nan = to_unit_range(np.array([[np.nan, 1.0, 3.0, np.inf]]))
    np.testing.assert_allclose(with_nan, [[0.0, 0.0, 1.0, 0.0]])
    assert to_unit_range(np.array([[np.nan]])).tolist() == [[0.0]]


def test_file_paths_may_be_str_or_pathlike(tmp_path):
    path = sample("CT_small.dcm")
    np.testing.assert_array_equal(load_pixels(path), load_pixels(Path(path)))


def test_min_size_decodes_jpeg_at_reduced_scale_but_never_below_it(covid_dir):
    path = max((covid_dir / "images").glob("*.jpg"), key=lambda p: min(Image.open(p).size))
    full = load_pixels(path)
    small = load_pixels(path, min_size=224)
    assert min(small.shape[:2]) >= 224
    assert small.shape[0] < full.shape[0]
    # Same picture: the full decode shrunk to the same size agrees closely.
    resized = Image.fromarray((full * 255).astype(np.uint8)).resize((small.shape[1], small.shape[0]), Image.BILINEAR)
    shrunk = np.asarray(resized, dtype=np.float32) / 255
    assert np.abs(shrunk - small).mean() < 0.05
    # PNGs are unaffected by the hint.
    png = next((covid_dir / "images").glob("*.png"))
    assert load_pixels(png, min_size=224).shape == load_pixels(png).shape
