"""core.encoders: registry, real pretrained models on real scans, offline weights handling."""

from __future__ import annotations

import argparse
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom.data
import pytest
import torch

from core.encoders import (
    DEFAULT_ENCODER,
    ENCODERS,
    EmbeddedChunk,
    WeightsUnavailableError,
    clear_model_cache,
    encoder_availability,
    get_encoder,
    iter_image_embeddings,
    resolve_device,
)
from core.encoders.image import pixel_features
from core.encoders.specs import RESNET18_ENV, RESNET18_FILE, XRV_ENV, XRV_FILE
from core.encoders.weights import forget_failed_downloads, xrv_cache_dir
from core.pixels import load_pixels

XRAY_PA = "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
XRAY_PA_OTHER = "auntminnie-c-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
CT_SLICE = "jkms-35-e79-g001-l-d.jpg"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def images(covid_dir: Path) -> Path:
    return covid_dir / "images"


@pytest.fixture(scope="module")
def effnet():
    return get_encoder("efficientnet-lite0", device="cpu")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """No network: every download attempt fails at once and is recorded; caches in tmp_path."""
    attempts: list[str] = []

    def refuse(url: str, dst: str, *args, **kwargs) -> None:
        attempts.append(url)
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(RESNET18_ENV, raising=False)
    monkeypatch.delenv(XRV_ENV, raising=False)
    forget_failed_downloads()
    yield attempts
    forget_failed_downloads()


# --- registry -------------------------------------------------------------------------------


def test_registry_states_each_contract():
    assert DEFAULT_ENCODER == "efficientnet-lite0"
    assert list(ENCODERS) == ["efficientnet-lite0", "resnet18", "densenet121-xrv", "pixels", "minilm"]
    dims = {name: spec.dim for name, spec in ENCODERS.items()}
    assert dims == {"efficientnet-lite0": 1280, "resnet18": 512, "densenet121-xrv": 1024,
                    "pixels": 288, "minilm": 384}
    for name, spec in ENCODERS.items():
        assert spec.name == name and spec.version and spec.weights_source and spec.normalisation
        if spec.kind == "image":
            assert spec.input_size and spec.channels in (1, 3) and spec.value_range
        else:
            assert spec.kind == "text" and spec.input_size is None


def test_unknown_encoder_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown encoder 'vit-huge'") as error:
        get_encoder("vit-huge")
    for name in ENCODERS:
        assert name in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="an accelerator is present; auto picks it")
def test_device_auto_resolves_to_cpu_here():
    assert resolve_device("auto") == torch.device("cpu")
    assert get_encoder("pixels").device.type == "cpu"


def test_unknown_or_absent_device_is_a_value_error():
    with pytest.raises(ValueError, match="device='tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_models_are_loaded_once_per_process():
    first = get_encoder("efficientnet-lite0", device="cpu")
    assert get_encoder("efficientnet-lite0", device="auto") is first
    clear_model_cache()
    assert get_encoder("efficientnet-lite0", device="cpu") is not first


def test_xrv_cache_dir_matches_torchxrayvision():
    import torchxrayvision as xrv

    assert xrv_cache_dir() == Path(xrv.utils.get_cache_dir())


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
    features = pixel_features(half)[0].numpy()
    thumbnail = features[:256].reshape(16, 16)
    np.testing.assert_allclose(thumbnail[:, :8], 0.25)
    np.testing.assert_allclose(thumbnail[:, 8:], 1.0)
    expected_histogram = np.zeros(32)
    expected_histogram[[8, 31]] = 0.5
    np.testing.assert_allclose(features[256:], expected_histogram)


def test_pixels_encoder_has_no_weights():
    with pytest.raises(ValueError, match="no weights"):
        get_encoder("pixels", weights_path="/tmp/weights.pt")


# --- minilm ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_minilm_similar_reports_are_closer_and_missing_text_is_nan():
    encoder = get_encoder("minilm")
    texts = [
        "Bilateral ground-glass opacities in both lower lobes, consistent with viral pneumonia.",
        "Both lungs show ground-glass opacification at the bases, typical of COVID-19 pneumonia.",
        "The patient fractured the left wrist after falling off a bicycle.",
        None,
        "   ",
        float("nan"),
    ]
    vectors = encoder.embed_texts(texts)
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors[:3], axis=1), 1.0, atol=1e-5)
    assert np.isnan(vectors[3:]).all()
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    np.testing.assert_allclose(encoder.embed_texts([texts[0]])[0], vectors[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"texts\[1\] must be str"):
        encoder.embed_texts(["fine", 42])
    with pytest.raises(ValueError, match="iter_image_embeddings needs an image encoder"):
        next(iter_image_embeddings([("a", "x.png", 0)], encoder))


# --- offline weights handling ---------------------------------------------------------------


def test_resnet18_without_weights_names_the_file_and_folder(offline: list[str], tmp_path: Path):
    with pytest.raises(WeightsUnavailableError) as error:
        get_encoder("resnet18")
    message = str(error.value)
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    assert RESNET18_FILE in message and str(folder) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert isinstance(error.value, FileNotFoundError)
    assert offline == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]
    # The download is tried once per process, not on every call.
    with pytest.raises(WeightsUnavailableError, match="download failed earlier"):
        get_encoder("resnet18")
    assert len(offline) == 1
    assert not any(folder.glob("*")), "a failed download must leave no partial file"


def test_densenet_xrv_without_weights_names_the_file_and_folder(offline: list[str], tmp_path: Path):
    with pytest.raises(WeightsUnavailableError) as error:
        get_encoder("densenet121-xrv")
    message = str(error.value)
    assert XRV_FILE in message
    assert str(tmp_path / "home" / ".torchxrayvision" / "models_data") in message
    assert len(offline) == 1 and offline[0].endswith(XRV_FILE)


def test_availability_table_reports_missing_weights(offline: list[str]):
    table = encoder_availability()
    assert list(table.columns) == ["name", "kind", "dim", "input", "weights_available",
                                   "version", "message"]
    available = dict(zip(table["name"], table["weights_available"], strict=True))
    assert available == {"efficientnet-lite0": True, "resnet18": False, "densenet121-xrv": False,
                         "pixels": True, "minilm": True}
    assert RESNET18_FILE in table.set_index("name").loc["resnet18", "message"]
    assert offline == [], "the availability table must never download"


def test_missing_weights_path_is_not_replaced_by_a_download(offline: list[str], tmp_path: Path):
    absent = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        get_encoder("resnet18", weights_path=absent)
    assert offline == []


def test_resnet18_loads_a_given_state_dict(offline: list[str], tmp_path: Path, images: Path,
                                           monkeypatch: pytest.MonkeyPatch):
    import torchvision

    # Random initialisation is fine here: the point is the loader, not the features.
    reference = torchvision.models.resnet18(weights=None)
    weights = tmp_path / "my-resnet18.pth"
    torch.save(reference.state_dict(), weights)
    encoder = get_encoder("resnet18", weights_path=weights)
    assert torch.equal(encoder.model.conv1.weight, reference.conv1.weight)
    vectors = encoder.embed_batch(encoder.preprocess(load_pixels(images / XRAY_PA))[None])
    assert vectors.shape == (1, 512)
    assert encoder.preprocess_params()["weights_sha256"] != get_encoder(
        "efficientnet-lite0").preprocess_params()["weights_sha256"]
    monkeypatch.setenv(RESNET18_ENV, str(weights))
    assert get_encoder("resnet18") is encoder
    assert offline == []


def test_wrong_or_unsafe_weights_files_are_refused(offline: list[str], tmp_path: Path):
    import torchvision

    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="not torchvision ResNet-18 weights"):
        get_encoder("resnet18", weights_path=wrong)
    unsafe = tmp_path / "pickled-object.pth"
    torch.save({"weight": torch.zeros(1), "payload": argparse.Namespace(x=1)}, unsafe)
    with pytest.raises(ValueError, match="weights_only=True"):
        get_encoder("resnet18", weights_path=unsafe)


@pytest.mark.slow
def test_densenet_xrv_loads_a_pickled_model_file(offline: list[str], tmp_path: Path,
                                                 images: Path):
    """torchxrayvision ships whole pickled models; those load with weights_only=True."""
    import torchxrayvision as xrv

    reference = xrv.models.DenseNet(weights=None)
    weights = tmp_path / XRV_FILE
    torch.save(reference, weights)
    encoder = get_encoder("densenet121-xrv", weights_path=weights)
    xray = encoder.preprocess(load_pixels(images / XRAY_PA))
    assert xray.shape == (1, 224, 224)
    assert float(xray.min()) >= -1024 and float(xray.max()) <= 1024
    assert encoder.embed_batch(xray[None]).shape == (1, 1024)
    assert torch.equal(encoder.model.features.conv0.weight, reference.features.conv0.weight)


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


# --- command line ---------------------------------------------------------------------------


def test_encoders_command_prints_the_table(offline: list[str], capsys: pytest.CaptureFixture):
    from cli.commands import encoders as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["encoders", "--verbose"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:5] == ["name", "kind", "dim", "input", "weights"]
    for name, spec in ENCODERS.items():
        assert name in out and spec.version in out
    assert f"weights file '{RESNET18_FILE}' is not in" in out
