"""``scanatlas embed --device / --decode / --decode-processes``: CUDA refused cleanly where there is
none, the CPU path otherwise (worker processes giving the thread path's vectors), the GPU decode
path where CUDA exists."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main
from core.embed import embed_dataset

HAS_CUDA = torch.cuda.is_available()
ENCODER = "efficientnet-lite0"


def _namespaces(cache: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache.glob("*/namespace.json"))]


@pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour without CUDA")
@pytest.mark.parametrize("options", [["--device", "cuda"], ["--device", "cuda:0"],
                                     ["--decode", "gpu"]])
def test_asking_for_cuda_without_it_is_refused_before_anything_runs(demo_dataset, tmp_path,
                                                                    capsys, options):
    cache = tmp_path / "cache"
    code = main(["embed", str(demo_dataset.root), "--encoder", ENCODER, "--cache", str(cache),
                 *options])
    captured = capsys.readouterr()
    assert code == 2
    assert "CUDA is not available on this machine" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not cache.exists()  # refused before the encoder loaded or anything was written


@pytest.mark.skipif(HAS_CUDA, reason="checks the behaviour without CUDA")
def test_auto_says_cuda_is_missing_and_embeds_on_the_cpu_in_worker_processes(
        demo_dataset, tmp_path, capsys):
    n = len(demo_dataset.images)
    assert n >= 24  # enough images for worker processes
    in_processes, in_threads = tmp_path / "processes", tmp_path / "threads"
    args = ["embed", str(demo_dataset.root), "--encoder", ENCODER, "--batch-size", "16"]
    assert main([*args, "--cache", str(in_processes), "--decode-processes", "2"]) == 0
    out = capsys.readouterr().out
    assert "decode:   on the CPU (CUDA is not available here), 2 worker process(es)" in out
    assert f"computed: {n}\n" in out and "failed:   0" in out
    assert main([*args, "--cache", str(in_threads), "--decode-processes", "0"]) == 0
    assert "on the CPU (CUDA is not available here), threads" in capsys.readouterr().out
    # One CPU namespace, without the GPU decoder's name, and the same vectors either way.
    assert [ns["preprocess"].get("jpeg_decoder") for ns in _namespaces(in_processes)] == [None]
    first = embed_dataset(demo_dataset, ENCODER, cache_root=in_processes, device="cpu")
    second = embed_dataset(demo_dataset, ENCODER, cache_root=in_threads, device="cpu")
    assert first.n_cached == second.n_cached == n and first.namespace == second.namespace
    assert np.array_equal(first.vectors, second.vectors)


def test_bad_decode_options_are_one_line_errors(demo_dataset, tmp_path, capsys):
    root = str(demo_dataset.root)
    assert main(["embed", root, "--cache", str(tmp_path), "--decode-processes", "-1"]) == 2
    assert "--decode-processes -1 must be >= 0" in capsys.readouterr().err
    if HAS_CUDA:
        assert main(["embed", root, "--cache", str(tmp_path), "--device", "cpu",
                     "--decode", "gpu"]) == 2
        assert "--decode gpu needs the encoder on CUDA" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA (GPU JPEG decoding)")
def test_on_cuda_jpegs_are_decoded_on_the_gpu_in_their_own_namespace(covid_dataset, tmp_path,
                                                                     capsys):
    cache = tmp_path / "cache"
    assert main(["embed", str(covid_dataset.root), "--encoder", ENCODER, "--cache", str(cache),
                 "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "JPEGs on the GPU" in out and "failed:   0" in out
    assert "torchvision-decode_jpeg" in json.dumps(_namespaces(cache))
    assert main(["embed", str(covid_dataset.root), "--encoder", ENCODER, "--cache", str(cache),
                 "--device", "cuda", "--decode", "cpu"]) == 0
    assert "on the CPU" in capsys.readouterr().out
    assert len(_namespaces(cache)) == 2  # the CPU decode's vectors are cached apart
