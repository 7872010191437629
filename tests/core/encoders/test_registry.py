"""The encoder registry: every entry is a complete contract, versions and cache keys are
stable, and adding an entry is all it takes to add an encoder."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import MISSING, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.cache import namespace_key
from core.encoders import (
    DEFAULT_DRIFT_ENCODERS,
    DEFAULT_ENCODER,
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    ENCODERS,
    DownloadWeights,
    EncoderSpec,
    ImageEncoder,
    PackageWeights,
    Preprocessing,
    TextEncoder,
    TextPreprocessing,
    WeightsUnavailableError,
    cam_encoders,
    clear_model_cache,
    encoder_availability,
    encoder_names,
    get_encoder,
    get_spec,
    register_encoder,
)
from core.encoders.weights import load_state_dict_file, load_strict
from core.pixels import load_pixels

XRAY_PA = "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"

# The embedding cache is keyed by these; changing one silently orphans every cached vector.
VERSIONS = {
    "efficientnet-lite0": "lite0-57934424/pre2",
    "resnet18": "tv-resnet18-f37072fd/pre2",
    "densenet121-xrv": "xrv-densenet121-res224-all/pre2",
    "pixels": "thumb16-hist32/pre2",
    "minilm": "all-MiniLM-L6-v2/gt0.1.0/pre1",
}


# --- the five entries -----------------------------------------------------------------------


def test_registry_states_each_contract():
    assert DEFAULT_ENCODER == DEFAULT_IMAGE_ENCODER == "efficientnet-lite0"
    assert DEFAULT_TEXT_ENCODER == "minilm" and get_spec(DEFAULT_TEXT_ENCODER).kind == "text"
    assert all(name in ENCODERS for name in DEFAULT_DRIFT_ENCODERS)
    assert list(ENCODERS) == ["efficientnet-lite0", "resnet18", "densenet121-xrv", "pixels", "minilm"]
    dims = {name: spec.dim for name, spec in ENCODERS.items()}
    assert dims == {"efficientnet-lite0": 1280, "resnet18": 512, "densenet121-xrv": 1024,
                    "pixels": 288, "minilm": 384}
    assert {name: spec.version for name, spec in ENCODERS.items()} == VERSIONS
    assert encoder_names("image") == ["efficientnet-lite0", "resnet18", "densenet121-xrv", "pixels"]
    assert encoder_names("text") == ["minilm"] and encoder_names() == list(ENCODERS)
    assert cam_encoders() == ("efficientnet-lite0", "resnet18", "densenet121-xrv")
    ranges = {name: spec.value_range for name, spec in ENCODERS.items()}
    assert ranges["efficientnet-lite0"] == pytest.approx((-127 / 128, 1.0))
    assert ranges["resnet18"] == pytest.approx((-0.485 / 0.229, (1 - 0.406) / 0.225))
    assert ranges["densenet121-xrv"] == pytest.approx((-1024.0, 1024.0))
    assert ranges["pixels"] == (0.0, 1.0) and ranges["minilm"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ENCODERS))
def test_every_entry_is_complete_and_its_dim_is_what_the_model_returns(
    name: str, refuse_downloads: list[str], covid_dir: Path
):
    """All fields are set, and a real forward pass returns ``dim`` values. Weights that ship in
    packages must load; downloaded ones either load (when present on this machine) or fail
    with a message that says which file goes where."""
    spec = ENCODERS[name]
    for field in fields(EncoderSpec):
        if field.default is MISSING and field.name != "weights":  # every required field
            assert getattr(spec, field.name) not in (None, ""), f"{name}.{field.name} is empty"
    assert spec.name == name and callable(spec.build) and callable(spec.forward)
    assert spec.weights_source and spec.input_description
    if spec.kind == "image":
        assert spec.input_size and spec.channels in (1, 3) and spec.value_range
    else:
        assert spec.input_size is None and spec.channels is None
    try:
        encoder = get_encoder(name, device="cpu")
    except WeightsUnavailableError as error:
        assert isinstance(spec.weights, DownloadWeights), f"{name}'s weights should ship"
        message = str(error)
        assert spec.weights.file in message and spec.weights.url in message
        assert f"${spec.weights.env}" in message
        return
    assert isinstance(encoder, ImageEncoder if spec.kind == "image" else TextEncoder)
    assert encoder.spec is spec
    if spec.kind == "image":
        tensor = encoder.preprocess(load_pixels(covid_dir / "images" / XRAY_PA))
        assert tensor.shape == (spec.channels, spec.input_size, spec.input_size)
        low, high = spec.value_range
        assert low - 1e-4 <= float(tensor.min()) and float(tensor.max()) <= high + 1e-4
        vectors = encoder.embed_batch(tensor[None])
    else:
        vectors = encoder.embed_texts(["Patchy opacities in the right lower zone."])
    assert vectors.shape == (1, spec.dim) and np.isfinite(vectors).all()
    if spec.feature_map is not None:
        with torch.no_grad():
            feature_map = spec.feature_map(encoder.model, tensor[None])
        assert feature_map.shape[:2] == (1, spec.dim)
        np.testing.assert_allclose(feature_map.mean(dim=(2, 3)).numpy(), vectors, atol=1e-4)


@pytest.mark.slow
def test_cache_namespaces_are_unchanged_by_the_registry_rework():
    """The namespace keys the embedding cache used before the registry became flat."""
    expected = {"efficientnet-lite0": "efficientnet-lite0-a279fee1b806",
                "pixels": "pixels-d58514ac7f88", "minilm": "minilm-79668c2d9593"}
    for name, key in expected.items():
        encoder = get_encoder(name, device="cpu")
        assert namespace_key(name, encoder.spec.version, encoder.preprocess_params()) == key
    # Downloaded weights may be absent here: the key with a stand-in fingerprint.
    expected = {"resnet18": "resnet18-9ce9adbeca0a",
                "densenet121-xrv": "densenet121-xrv-6a833b3beaf3",
                "efficientnet-lite0": "efficientnet-lite0-8a97b7ce0d35"}
    for name, key in expected.items():
        spec = get_spec(name)
        encoder = ImageEncoder(spec, device=torch.device("cpu"), model=None,
                               weights_sha256="0123456789abcdef")
        assert namespace_key(name, spec.version, encoder.preprocess_params()) == key


def test_unknown_encoder_name_lists_valid_names():
    for ask in (get_encoder, get_spec):
        with pytest.raises(ValueError, match="unknown encoder 'vit-huge'") as error:
            ask("vit-huge")
        for name in ENCODERS:
            assert name in str(error.value)
    with pytest.raises(ValueError, match="kind='audio'"):
        encoder_names("audio")


# --- entries are checked when they are made -------------------------------------------------


def test_an_incomplete_or_inconsistent_entry_is_refused():
    base = get_spec("pixels")
    with pytest.raises(ValueError, match="kind='video'"):
        replace(base, kind="video")
    with pytest.raises(ValueError, match="dim=0 must be a positive int"):
        replace(base, dim=0)
    with pytest.raises(ValueError, match="a version is required"):
        replace(base, version="")
    with pytest.raises(ValueError, match=r"needs preprocessing=TextPreprocessing\(...\)"):
        replace(base, kind="text")
    with pytest.raises(ValueError, match="cam_layer and feature_map go together"):
        replace(base, cam_layer="somewhere")
    with pytest.raises(ValueError, match="Grad-CAM needs an image encoder"):
        replace(get_spec("minilm"), cam_layer="x", feature_map=lambda model, batch: batch)
    with pytest.raises(ValueError, match="weights must be PackageWeights"):
        replace(base, weights="/tmp/weights.pt")
    with pytest.raises(ValueError, match=r"mean and std need one value per channel \(3\)"):
        Preprocessing(input_size=224, channels=3, mean=(0.5,), std=(0.5,))


def test_register_encoder_refuses_a_taken_name_and_non_entries():
    with pytest.raises(ValueError, match="'pixels' is already registered"):
        register_encoder(get_spec("pixels"))
    with pytest.raises(TypeError, match="needs an EncoderSpec"):
        register_encoder({"name": "dict-encoder"})  # type: ignore[arg-type]
    assert list(ENCODERS)[-1] == "minilm"


# --- adding an encoder is adding one entry --------------------------------------------------


class _TinyConv(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, kernel_size=3)


def _build_tiny(spec: EncoderSpec, weights: Path | None, device: torch.device) -> _TinyConv:
    model = _TinyConv()
    load_strict(model, load_state_dict_file(weights), weights, "tiny conv")
    return model


def _tiny_map(model: _TinyConv, batch: torch.Tensor) -> torch.Tensor:
    return torch.relu(model.conv(batch))


def _tiny_forward(model: _TinyConv, batch: torch.Tensor) -> torch.Tensor:
    return _tiny_map(model, batch).mean(dim=(2, 3))


def _letter_counts(model: None, texts: list[str]) -> torch.Tensor:
    counts = torch.zeros(len(texts), 26)
    for row, text in enumerate(texts):
        for char in text.lower():
            if "a" <= char <= "z":
                counts[row, ord(char) - ord("a")] += 1
    return counts


@pytest.fixture
def tiny_encoders(tmp_path: Path) -> Iterator[tuple[EncoderSpec, EncoderSpec, dict]]:
    """A 4-channel conv image encoder with a weights file, and a letter-count text encoder,
    each registered as one entry and removed afterwards."""
    torch.manual_seed(0)
    state = _TinyConv().state_dict()
    weights = tmp_path / "tiny-conv.pt"
    torch.save(state, weights)
    image = register_encoder(EncoderSpec(
        name="tiny-conv-32",
        kind="image",
        dim=4,
        version="tiny-1",
        description="A 3x3 conv with 4 filters, ReLU, global mean pool.",
        preprocessing=Preprocessing(input_size=32, channels=1, mean=(0.5,), std=(0.25,)),
        normalisation="(x - 0.5) / 0.25, grey",
        weights=PackageWeights("scanatlas-tiny-weights", lambda: weights),
        build=_build_tiny,
        forward=_tiny_forward,
        cam_layer="conv -> ReLU (4 x 30 x 30)",
        feature_map=_tiny_map,
    ))
    text = register_encoder(EncoderSpec(
        name="letters",
        kind="text",
        dim=26,
        version="letters-1",
        description="Letter counts, L2-normalised.",
        preprocessing=TextPreprocessing(max_tokens=10_000),
        normalisation="L2",
        weights=None,
        build=lambda spec, weights, device: None,
        forward=_letter_counts,
    ))
    yield image, text, state
    for spec in (image, text):
        ENCODERS.pop(spec.name, None)
    clear_model_cache()


@pytest.mark.slow
def test_an_added_entry_is_usable_end_to_end(tiny_encoders, covid_dir: Path, tmp_path: Path):
    from core.embed import embed_dataset
    from core.explain.gradcam import gradcam_with_encoder

    image_spec, text_spec, state = tiny_encoders
    files = [XRAY_PA, "jkms-35-e79-g001-l-d.jpg", "nejmc2001573_f1a.jpeg"]
    paths = [str(covid_dir / "images" / name) for name in files]
    table = pd.DataFrame({"image_id": ["a", "b", "c"], "path": paths, "frame": 0,
                          "text": ["Abc abc", None, "zz"]})

    # Listed, and explained by Grad-CAM, with no code outside the entry.
    availability = encoder_availability().set_index("name")
    assert availability.loc["tiny-conv-32", "weights_available"]
    assert availability.loc["tiny-conv-32", "input"] == "32x32 grey"
    assert availability.loc["letters", "message"] == "no weights needed"
    assert "tiny-conv-32" in cam_encoders() and "letters" not in cam_encoders()

    first = embed_dataset(table, "tiny-conv-32", cache_root=tmp_path / "cache", device="cpu")
    assert (first.n_computed, first.n_failed) == (3, 0) and first.vectors.shape == (3, 4)
    assert first.version == "tiny-1"
    encoder = get_encoder("tiny-conv-32", device="cpu")
    for row, path in enumerate(paths):
        x = encoder.preprocess(load_pixels(path, 0, min_size=32))[None]  # as embed_dataset decodes
        assert x.shape == (1, 1, 32, 32)
        # The saved weights, applied by hand: the entry's build and forward were used.
        by_hand = torch.relu(torch.nn.functional.conv2d(x, state["conv.weight"],
                                                        state["conv.bias"])).mean(dim=(2, 3))
        np.testing.assert_allclose(first.vectors[row], by_hand[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(first.vectors[0], first.vectors[1])
    again = embed_dataset(table, "tiny-conv-32", cache_root=tmp_path / "cache", device="cpu")
    assert (again.n_cached, again.n_computed) == (3, 0)
    np.testing.assert_array_equal(again.vectors, first.vectors)

    image = load_pixels(paths[2])
    heatmap = gradcam_with_encoder(image, encoder, np.ones((2, 4), np.float32), None, 1)
    assert heatmap.shape == image.shape[:2] and np.isfinite(heatmap).all() and heatmap.max() > 0

    texts = embed_dataset(table, "letters", cache_root=tmp_path / "cache", device="cpu")
    assert (texts.n_computed, texts.n_failed) == (2, 1)
    expected = np.zeros(26, np.float32)
    expected[:3] = 2 / np.sqrt(12)  # "Abc abc": a, b, c twice each, unit length
    np.testing.assert_allclose(texts.vectors[0], expected, rtol=1e-6)
    assert np.isnan(texts.vectors[1]).all() and texts.vectors[2][25] == pytest.approx(1.0)


def test_an_added_entry_appears_in_the_encoders_command(tiny_encoders,
                                                        capsys: pytest.CaptureFixture):
    from cli.commands import encoders as command

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["encoders"])
    assert args.func(args) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line}
    assert lines["tiny-conv-32"][:6] == ["tiny-conv-32", "image", "4", "32x32", "grey", "yes"]
    assert lines["letters"][:5] == ["letters", "text", "26", "text", "yes"]
