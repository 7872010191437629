"""Devices: "auto" picks the best one here, bad names are refused, models load once per device,
and the same scan gives the same vector on every device this machine has."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.encoders import clear_model_cache, get_encoder, resolve_device
from core.pixels import load_pixels

XRAY_PA = "auntminnie-a-2020_01_28_23_51_6665_2020_01_28_Vietnam_coronavirus.jpeg"
CT_SLICE = "jkms-35-e79-g001-l-d.jpg"

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
ACCELERATORS = [
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here")),
    pytest.param("mps", marks=pytest.mark.skipif(not HAS_MPS, reason="no MPS device here")),
]


def test_device_auto_picks_cuda_then_mps_then_cpu():
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    # pixels' entry pins it to the CPU: a host-to-GPU copy costs more than its work.
    assert get_encoder("pixels").device.type == "cpu"
    assert get_encoder("pixels", device="cpu") is get_encoder("pixels")


def test_unknown_or_absent_device_is_a_value_error():
    with pytest.raises(ValueError, match="device='tpu'"):
        resolve_device("tpu")
    if HAS_CUDA:
        count = torch.cuda.device_count()
        with pytest.raises(ValueError, match=rf"only {count} CUDA device\(s\) here"):
            resolve_device(f"cuda:{count}")
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_models_are_loaded_once_per_process_and_device():
    first = get_encoder("efficientnet-lite0", device="cpu")
    assert get_encoder("efficientnet-lite0", device=torch.device("cpu")) is first
    auto = get_encoder("efficientnet-lite0", device="auto")
    assert (auto is first) == (resolve_device("auto").type == "cpu")
    assert auto.device == resolve_device("auto")
    clear_model_cache()
    assert get_encoder("efficientnet-lite0", device="cpu") is not first


@pytest.mark.slow
@pytest.mark.parametrize("device", ACCELERATORS)
def test_an_accelerator_gives_the_cpu_vectors(device: str, covid_dir: Path):
    """Mixed precision on the GPU moves the vectors a little, never the neighbours."""
    scans = [load_pixels(covid_dir / "images" / name) for name in (XRAY_PA, CT_SLICE)]
    vectors = {}
    for where in ("cpu", device):
        encoder = get_encoder("efficientnet-lite0", device=where)
        assert encoder.device.type == where
        assert next(encoder.model.parameters()).device.type == where
        vectors[where] = encoder.embed_batch(torch.stack([encoder.preprocess(s) for s in scans]))
    cpu, accelerated = vectors["cpu"], vectors[device]
    assert accelerated.shape == cpu.shape == (2, 1280) and accelerated.dtype == np.float32
    for row in range(2):
        cosine = cpu[row] @ accelerated[row] / (np.linalg.norm(cpu[row])
                                                 * np.linalg.norm(accelerated[row]))
        assert cosine > 0.99
    text = get_encoder("minilm", device=device)
    assert text.device.type == device
    on_device = text.embed_texts(["Bilateral opacities.", None])
    on_cpu = get_encoder("minilm", device="cpu").embed_texts(["Bilateral opacities.", None])
    np.testing.assert_allclose(on_device[0], on_cpu[0], atol=1e-3)
    assert np.isnan(on_device[1]).all()
