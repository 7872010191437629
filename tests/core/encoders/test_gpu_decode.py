"""The GPU decode path: refused cleanly without CUDA, its arithmetic checked on CPU against the
standard path (real covid-chestxray files, real efficientnet-lite0), and run for real on CUDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.embed import embed_dataset
from core.encoders import iter_image_embeddings
from core.encoders.gpu_decode import (
    GpuDecodeUnavailable,
    gpu_decode_available,
    gpu_image_embedder,
    iter_image_embeddings_on,
)

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def items(images: Path) -> list[tuple[str, str, int]]:
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return [(p.name, str(p), 0) for p in files[:12]]


def _by_id(chunks) -> dict[str, np.ndarray]:
    return {i: v for chunk in chunks for i, v in zip(chunk.image_ids, chunk.vectors, strict=True)}


@pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour without CUDA")
def test_without_cuda_the_gpu_path_refuses_and_the_cpu_path_is_unchanged(effnet, items, tmp_path):
    assert not gpu_decode_available("cpu") and not gpu_decode_available("cuda")
    with pytest.raises(GpuDecodeUnavailable, match="needs an encoder on CUDA"):
        gpu_image_embedder()(items, effnet)
    with pytest.raises(GpuDecodeUnavailable):
        embed_dataset(_table(items[:2]), "efficientnet-lite0", cache_root=tmp_path / "gpu",
                      device="cpu", image_embedder=gpu_image_embedder())
    assert not list((tmp_path / "gpu").rglob("*.arrow"))  # refused before anything was written
    plain = embed_dataset(_table(items[:2]), "efficientnet-lite0", cache_root=tmp_path / "cpu",
                          device="cpu")
    assert plain.n_computed == 2 and "jpeg_decoder" not in _namespace_meta(tmp_path / "cpu")


def _table(items):
    import pandas as pd

    return pd.DataFrame({"image_id": [i for i, _, _ in items], "path": [p for _, p, _ in items],
                         "frame": [f for _, _, f in items]})


def _namespace_meta(root: Path) -> str:
    return "".join(p.read_text() for p in root.glob("*/namespace.json"))


def test_decode_and_preprocess_in_torch_match_the_standard_path_on_cpu(effnet, items):
    reference = _by_id(iter_image_embeddings(items, effnet, batch_size=6))
    torch_path = _by_id(iter_image_embeddings_on(items, effnet, decode_device="cpu", batch_size=6))
    assert set(torch_path) == set(reference) == {i for i, _, _ in items}
    full_scale = 0
    for image_id, path, _ in items:
        a, b = reference[image_id], torch_path[image_id]
        assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99, image_id
        with Image.open(path) as image:
            # pixels.py decodes a JPEG at reduced scale when both sides stay >= 2 x input size;
            # torchvision decodes at full scale. Otherwise the two paths must agree closely.
            if path.endswith(".png") or min(image.size) < 2 * effnet.spec.input_size:
                assert np.abs(a - b).max() < 1e-4, image_id
                full_scale += 1
    assert full_scale >= 6  # the comparison above was not vacuous


def test_a_corrupt_jpeg_falls_back_to_the_cpu_decoder_which_reports_it(effnet, items, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(Path(items[0][1]).read_bytes()[:200])
    chunks = list(iter_image_embeddings_on([*items[:2], ("bad", str(bad), 0)], effnet,
                                           decode_device="cpu", batch_size=8))
    assert sorted(i for c in chunks for i in c.image_ids) == sorted(i for i, _, _ in items[:2])
    failures = [f for c in chunks for f in c.failures]
    assert [f[0] for f in failures] == ["bad"] and failures[0][2]


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA (GPU JPEG decoding)")
def test_on_cuda_jpegs_decode_on_the_gpu_into_their_own_namespace(items, tmp_path):
    table = _table(items)
    gpu = embed_dataset(table, "efficientnet-lite0", cache_root=tmp_path, device="cuda",
                        image_embedder=gpu_image_embedder())
    cpu = embed_dataset(table, "efficientnet-lite0", cache_root=tmp_path, device="cpu")
    assert gpu.n_computed == len(items) and cpu.n_computed == len(items)  # no mixing
    assert gpu.namespace != cpu.namespace
    cosine = (gpu.vectors * cpu.vectors).sum(1) / np.linalg.norm(gpu.vectors, axis=1) / np.linalg.norm(cpu.vectors, axis=1)
    assert (cosine > 0.98).all(), cosine


def test_an_embedder_that_decodes_differently_gets_its_own_cache_namespace(items, tmp_path):
    def torch_decode(items_, encoder, *, batch_size=32, progress=None):
        return iter_image_embeddings_on(items_, encoder, decode_device="cpu",
                                        batch_size=batch_size, progress=progress)

    torch_decode.preprocess_extra = dict(gpu_image_embedder().preprocess_extra)
    table = _table(items[:3])
    other = embed_dataset(table, "efficientnet-lite0", cache_root=tmp_path, device="cpu",
                          image_embedder=torch_decode)
    plain = embed_dataset(table, "efficientnet-lite0", cache_root=tmp_path, device="cpu")
    assert (other.n_computed, plain.n_computed, plain.n_cached) == (3, 3, 0)
    assert other.namespace != plain.namespace and "jpeg_decoder" in _namespace_meta(tmp_path)
