"""The fast raster path of core.pixels.load_pixels (issue 12, goal 1): the grey check on 8-bit
values and no float passes for integer images give the same arrays as the float path."""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.pixels import load_pixels


def _save(tmp_path, array: np.ndarray, mode: str, name: str) -> str:
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def test_grey_saved_as_rgb_comes_back_grey_as_the_channel_mean(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (67, 45), dtype=np.uint8)
    rgb = np.stack([grey, grey, np.clip(grey.astype(int) + 2, 0, 255).astype(np.uint8)], axis=2)
    values = load_pixels(_save(tmp_path, rgb, "RGB", "grey.png"))
    assert values.shape == (67, 45) and values.dtype == np.float32
    expected = rgb.astype(np.float32).mean(axis=2) / 255
    assert np.abs(values - expected).max() < 1e-6


def test_one_coloured_pixel_off_the_sample_grid_keeps_the_image_colour(tmp_path):
    grey = np.full((40, 40), 100, np.uint8)
    rgb = np.stack([grey, grey, grey], axis=2)
    rgb[13, 21] = (100, 100, 103)  # 3 levels: beyond the tolerance; not on the 1/8 grid
    values = load_pixels(_save(tmp_path, rgb, "RGB", "colour.png"))
    assert values.shape == (40, 40, 3)
    assert np.array_equal(values, rgb.astype(np.float32) / np.float32(255))


def test_opaque_rgba_is_read_as_rgb_and_transparent_rgba_is_composited(tmp_path):
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (30, 30), dtype=np.uint8)
    opaque = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=2)
    values = load_pixels(_save(tmp_path, opaque, "RGBA", "opaque.png"))
    assert values.shape == (30, 30)
    assert np.abs(values - grey / 255).max() < 1e-6
    half = opaque.copy()
    half[..., 3] = 0
    half[:15, :, 3] = 255
    composited = load_pixels(_save(tmp_path, half, "RGBA", "half.png"))
    assert np.all(composited[15:] == 0)
    assert np.abs(composited[:15] - grey[:15] / 255).max() < 1e-6


def test_sixteen_bit_png_is_scaled_by_its_full_range(tmp_path):
    values16 = (np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 31).astype(np.uint16)
    path = tmp_path / "sixteen.png"
    Image.fromarray(values16).save(path)
    values = load_pixels(str(path))
    assert values.dtype == np.float32 and values.shape == (64, 32)
    assert np.abs(values - values16 / 65535).max() < 1e-6
