"""Image encoders on real scans: preprocessing to each entry's contract, the pretrained
efficientnet-lite0 and the pixels baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom.data
import pytest
import torch

from core.encoders import ImageEncoder, TextEncoder, get_encoder, get_spec
from core.encoders.registry import pixel_features
from core.pixels import load_pixels

XRAY_PA = "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
XRAY_PA_OTHER = "auntminnie-c-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
CT_SLICE = "jkms-35-e79-g001-l-d.jpg"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- efficientnet-lite0 on real images ------------------------------------------------------


def test_efficientnet_embeds_real_scans_with_1280_dims(effnet, images: Path):
    xray = load_pixels(images / XRAY_PA)
    tensor = effnet.preprocess(xray)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    low, high = effnet.spec.value_range
    assert low - 1e-6 <= float(tensor.min()) and float(tensor.max()) <= high + 1e-6
    grey_ct = load_pixels(pydicom.data.get_testdata_file("CT_small.dcm"))
    assert grey_ct.ndim == 2
    vectors = effnet.embed_batch(torch.stack([tensor, effnet.preprocess(grey_ct)]))
    assert vectors.shape == (2, 1280) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all() and not np.allclose(vectors[0], vectors[1])


def test_efficientnet_weights_and_normalisation_are_the_pretrained_ones(effnet):
    """The packaged weights with our preprocessing recognise natural photos (sklearn's bundled
    samples): proof the weights are ImageNet-trained. ImageNet mean/std instead of the TF
    EfficientNet-Lite normalisation halves p(daisy) to ~0.10 and calls the palace a bell cote."""
    from sklearn.datasets import load_sample_image
    from torchvision.models import ResNet18_Weights

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    for file_name, expected in [("flower.jpg", "daisy"), ("china.jpg", "palace")]:
        photo = load_sample_image(file_name).astype(np.float32) / 255.0
        features = torch.from_numpy(effnet.embed_batch(effnet.preprocess(photo)[None]))
        with torch.inference_mode():
            probabilities = effnet.model._fc(features).softmax(dim=1)[0]
        assert categories[int(probabilities.argmax())] == expected
        assert float(probabilities.max()) > 0.15
    assert effnet.preprocess_params()["weights_sha256"].startswith("57934424")


def test_same_image_gives_the_same_vector(effnet, images: Path):
    xray = load_pixels(images / XRAY_PA)
    alone = effnet.embed_batch(effnet.preprocess(xray)[None])[0]
    again = effnet.embed_batch(effnet.preprocess(xray)[None])[0]
    np.testing.assert_array_equal(alone, again)
    other = effnet.preprocess(load_pixels(images / CT_SLICE))
    in_batch = effnet.embed_batch(torch.stack([other, effnet.preprocess(xray), other]))[1]
    np.testing.assert_allclose(in_batch, alone, rtol=1e-4, atol=1e-4)


def test_flipped_copy_is_closer_than_other_scans_and_noise(effnet, images: Path):
    xray = load_pixels(images / XRAY_PA)
    candidates = {
        "flipped": np.ascontiguousarray(xray[:, ::-1]),
        "other_xray": load_pixels(images / XRAY_PA_OTHER),
        "ct": load_pixels(images / CT_SLICE),
        "noise": np.random.default_rng(0).random((512, 512), dtype=np.float32),
    }
    vectors = effnet.embed_batch(torch.stack([effnet.preprocess(xray)]
                                             + [effnet.preprocess(c) for c in candidates.values()]))
    similarity = {name: cosine(vectors[0], vectors[i + 1]) for i, name in enumerate(candidates)}
    assert similarity["flipped"] > 0.9
    assert similarity["flipped"] > similarity["other_xray"] > similarity["ct"]
    assert similarity["other_xray"] > similarity["noise"]


def test_preprocess_rejects_bad_images(effnet):
    with pytest.raises(ValueError, match=r"shape \(H, W\) or \(H, W, 3\)"):
        effnet.preprocess(np.zeros((8, 8, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"values must be in \[0, 1\]"):
        effnet.preprocess(np.full((8, 8), 255.0, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        effnet.preprocess(np.full((8, 8), np.nan, dtype=np.float32))


def test_embed_batch_rejects_a_wrong_shape(effnet):
    with pytest.raises(ValueError, match=r"batch must have shape \(B, \*\(3, 224, 224\)\)"):
        effnet.embed_batch(torch.zeros(2, 1, 224, 224))


# --- pixels ---------------------------------------------------------------------------------


def test_pixels_encoder_is_thumbnail_plus_histogram(images: Path):
    encoder = get_encoder("pixels")
    xray = load_pixels(images / XRAY_PA)
    vector = encoder.embed_batch(encoder.preprocess(xray)[None])[0]
    assert vector.shape == (288,)
    assert vector[256:].sum() == pytest.approx(1.0, abs=1e-5)
    # Hand-computed: left half 0.25, right half 1.0 -> thumbnail columns 0-7 = 0.25, 8-15 = 1;
    # half the pixels in bin floor(0.25 * 32) = 8, half in the top bin 31.
    half = torch.cat([torch.full((1, 1, 64, 32), 0.25), torch.ones(1, 1, 64, 32)], dim=3)
    features = pixel_features(None, half)[0].numpy()
    thumbnail = features[:256].reshape(16, 16)
    np.testing.assert_allclose(thumbnail[:, :8], 0.25)
    np.testing.assert_allclose(thumbnail[:, 8:], 1.0)
    expected_histogram = np.zeros(32)
    expected_histogram[[8, 31]] = 0.5
    np.testing.assert_allclose(features[256:], expected_histogram)


def test_pixels_encoder_has_no_weights():
    with pytest.raises(ValueError, match="no weights"):
        get_encoder("pixels", weights_path="/tmp/weights.pt")




# --- the shared base ------------------------------------------------------------------------


def test_an_encoder_class_refuses_an_entry_of_the_other_kind():
    with pytest.raises(ValueError, match="ImageEncoder takes encoders of kind 'image'; 'minilm' is 'text'"):
        ImageEncoder(get_spec("minilm"), device=torch.device("cpu"), model=None)
    with pytest.raises(ValueError, match="TextEncoder takes encoders of kind 'text'; 'pixels' is 'image'"):
        TextEncoder(get_spec("pixels"), device=torch.device("cpu"), model=None)


def test_a_forward_of_the_wrong_width_is_reported(images: Path):
    """An entry whose forward disagrees with its dim is caught, not cached as a short vector."""
    from dataclasses import replace

    spec = replace(get_spec("pixels"), name="pixels-wrong-dim", dim=100)
    encoder = ImageEncoder(spec, device=torch.device("cpu"), model=None)
    batch = encoder.preprocess(load_pixels(images / XRAY_PA))[None]
    with pytest.raises(ValueError, match=r"forward returned shape \(1, 288\), expected \(1, 100\)"):
        encoder.embed_batch(batch)
