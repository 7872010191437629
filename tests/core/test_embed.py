"""embed_dataset and `scanatlas embed` on real covid-chestxray images with real encoders."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.cache import EmbeddingCache
from core.embed import embed_dataset, embed_middle_slices_first, middle_slice_rows
from core.features import patient_embeddings
from core.ingest import Dataset


def _image_row(path: Path, patient_id: str, text: str | None = None) -> dict:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "image_id": f"{digest}-0", "sha256": digest, "patient_id": patient_id, "path": str(path),
        "frame": 0, "n_frames": 1, "rows": 0, "columns": 0, "modality": "X-ray", "view": None,
        "age": np.nan, "sex": "unknown", "label": None, "text": text,
    }  # fmt: skip


@pytest.fixture(scope="module")
def covid_images(covid_dir: Path) -> pd.DataFrame:
    """10 real images of the covid collection as an images table (contract columns)."""
    files = sorted(
        p for p in (covid_dir / "images").iterdir() if p.suffix.lower() in {".jpg", ".png"}
    )
    rows = [_image_row(path, f"p{i // 3}") for i, path in enumerate(files[:10])]
    return pd.DataFrame(rows)


def test_second_run_serves_everything_from_the_cache(covid_images, tmp_path):
    dataset = Dataset(
        root=tmp_path, images=covid_images, patients=pd.DataFrame(), report=pd.DataFrame()
    )
    first = embed_dataset(dataset, "pixels", cache_root=tmp_path / "cache", device="cpu")
    assert (first.n_computed, first.n_cached, first.n_failed) == (10, 0, 0)
    assert first.vectors.shape == (10, 288) and np.isfinite(first.vectors).all()
    assert first.image_ids.tolist() == covid_images["image_id"].tolist()

    second = embed_dataset(covid_images, "pixels", cache_root=tmp_path / "cache", device="cpu")
    assert (second.n_computed, second.n_cached, second.n_failed) == (0, 10, 0)
    np.testing.assert_array_equal(second.vectors, first.vectors)
    assert second.key == first.key and second.namespace == first.namespace

    patient_ids, matrix = patient_embeddings(covid_images, second)
    assert patient_ids.tolist() == ["p0", "p1", "p2", "p3"] and matrix.shape == (4, 288)


def test_only_new_images_are_computed(covid_images, tmp_path):
    cache_root = tmp_path / "cache"
    embed_dataset(covid_images.iloc[:6], "pixels", cache_root=cache_root, device="cpu")
    calls: list[tuple[int, int]] = []
    result = embed_dataset(
        covid_images, "pixels", cache_root=cache_root, device="cpu",
        progress=lambda done, total: calls.append((done, total)),
    )  # fmt: skip
    assert (result.n_cached, result.n_computed) == (6, 4)
    assert calls[0] == (6, 10) and calls[-1] == (10, 10)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_failures_are_reported_aligned_and_retried(covid_images, tmp_path):
    fake = tmp_path / "not-an-image.png"
    fake.write_text("this is a radiology report, not pixels")
    images = pd.concat(
        [covid_images.iloc[:3], pd.DataFrame([_image_row(fake, "px")])], ignore_index=True
    )
    cache_root = tmp_path / "cache"
    for _ in range(2):
        result = embed_dataset(images, "pixels", cache_root=cache_root, device="cpu")
        assert result.n_failed == 1 and np.isnan(result.vectors[3]).all()
        assert np.isfinite(result.vectors[:3]).all()
        failure = result.failures.iloc[0]
        assert failure["image_id"] == images.loc[3, "image_id"] and failure["path"] == str(fake)
        assert failure["reason"]
    # Second pass: the good images came from the cache, the failure was tried again.
    assert (result.n_cached, result.n_computed) == (3, 0)
    cache = EmbeddingCache(cache_root)
    assert not cache.contains(result.namespace, [images.loc[3, "image_id"]]).any()


def test_bad_requests_are_refused(covid_images, tmp_path):
    with pytest.raises(ValueError, match="lacks column.*'frame'"):
        embed_dataset(covid_images.drop(columns="frame"), "pixels", cache_root=tmp_path)
    with pytest.raises(ValueError, match="unknown encoder 'resnet-9000'"):
        embed_dataset(covid_images, "resnet-9000", cache_root=tmp_path)
    with pytest.raises(ValueError, match="Dataset"):
        embed_dataset([1, 2, 3], "pixels", cache_root=tmp_path)


def _embed_cli(argv: list[str]) -> int:
    from cli.commands import embed as embed_command

    parser = argparse.ArgumentParser()
    embed_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_embed_cli_prints_counts_and_writes_failures(covid_images, tmp_path, capsys):
    folder = tmp_path / "dataset"
    folder.mkdir()
    fake = tmp_path / "broken.jpg"
    fake.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    images = pd.concat(
        [covid_images.iloc[:4], pd.DataFrame([_image_row(fake, "px")])], ignore_index=True
    )
    images.to_parquet(folder / "images.parquet")
    pd.DataFrame({"patient_id": images["patient_id"].unique()}).to_parquet(
        folder / "patients.parquet"
    )
    argv = ["embed", str(folder), "--encoder", "pixels", "--device", "cpu",
            "--cache", str(tmp_path / "cache")]  # fmt: skip

    assert _embed_cli(argv) == 0
    out = capsys.readouterr().out
    for line in ("images:   5", "cached:   0", "computed: 4", "failed:   1", "images/s:"):
        assert line in out
    failures = pd.read_csv(folder / "embed_failures_pixels.csv")
    assert failures["path"].tolist() == [str(fake)] and failures["reason"].notna().all()

    assert _embed_cli(argv) == 0
    out = capsys.readouterr().out
    assert "cached:   4" in out and "computed: 0" in out


@pytest.mark.slow
def test_efficientnet_lite0_on_three_real_images(covid_images, tmp_path):
    images = covid_images.iloc[:3]
    first = embed_dataset(images, "efficientnet-lite0", cache_root=tmp_path, device="cpu")
    assert (first.n_computed, first.n_failed) == (3, 0)
    assert first.vectors.shape == (3, 1280) and np.isfinite(first.vectors).all()
    # Different X-rays give different pooled features.
    assert not np.allclose(first.vectors[0], first.vectors[1])
    second = embed_dataset(images, "efficientnet-lite0", cache_root=tmp_path, device="cpu")
    assert (second.n_cached, second.n_computed) == (3, 0)
    np.testing.assert_array_equal(second.vectors, first.vectors)


@pytest.mark.slow
def test_minilm_embeds_the_text_column_once_per_distinct_text(covid_images, tmp_path):
    texts = ["Bilateral ground-glass opacities.", None, "Bilateral ground-glass opacities.",
             "No acute cardiopulmonary process.", "  "]  # fmt: skip
    images = covid_images.iloc[:5].assign(text=texts)
    first = embed_dataset(images, "minilm", cache_root=tmp_path, device="cpu")
    assert (first.n_computed, first.n_cached, first.n_failed) == (3, 0, 2)
    assert first.failures["reason"].tolist() == ["no text", "no text"]
    assert np.isnan(first.vectors[[1, 4]]).all()
    np.testing.assert_array_equal(first.vectors[0], first.vectors[2])
    np.testing.assert_allclose(np.linalg.norm(first.vectors[[0, 3]], axis=1), 1.0, rtol=1e-4)
    assert first.vectors[0] @ first.vectors[3] < 0.9

    second = embed_dataset(images, "minilm", cache_root=tmp_path, device="cpu")
    assert (second.n_computed, second.n_cached, second.n_failed) == (0, 3, 2)
    np.testing.assert_array_equal(second.vectors, first.vectors)


def test_middle_slices_first_hands_over_one_image_per_patient_then_the_same_set(covid_images, tmp_path):
    """Two passes (each patient's middle image, then all) give what one embed_dataset call gives."""
    rows = middle_slice_rows(covid_images)
    # p0..p2 hold 3 images each (their middle is the 2nd), p3 holds one.
    assert rows.tolist() == [1, 4, 7, 9]
    handed: list[tuple[np.ndarray, object]] = []
    calls: list[tuple[int, int]] = []
    both = embed_middle_slices_first(
        covid_images, "pixels", cache_root=tmp_path / "two-passes", device="cpu",
        on_first_pass=lambda r, s: handed.append((r, s)), progress=lambda d, t: calls.append((d, t)))
    single = embed_dataset(covid_images, "pixels", cache_root=tmp_path / "one-pass", device="cpu")

    ((first_rows, first),) = handed
    assert first_rows.tolist() == rows.tolist()
    assert first.image_ids.tolist() == covid_images["image_id"].iloc[rows].tolist()
    np.testing.assert_array_equal(first.vectors, single.vectors[rows])
    assert first.key != single.key  # its own named set: a cohort of middle slices, not the full one
    np.testing.assert_array_equal(both.vectors, single.vectors)
    assert both.key == single.key and both.image_ids.tolist() == single.image_ids.tolist()
    assert (both.n_computed, both.n_cached, both.n_failed) == (10, 0, 0)  # pass 1's rows counted once
    assert all(t == 10 for _, t in calls) and calls[-1] == (10, 10)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # one bar, never going back


def test_one_image_per_patient_is_one_pass(covid_images, tmp_path):
    singles = covid_images.assign(patient_id=[f"q{i}" for i in range(len(covid_images))])
    handed: list = []
    result = embed_middle_slices_first(singles, "pixels", cache_root=tmp_path / "c", device="cpu",
                                       on_first_pass=handed.append)
    assert handed == [] and (result.n_computed, result.n_failed) == (10, 0)
    with pytest.raises(ValueError, match="patient_id"):
        middle_slice_rows(covid_images.drop(columns="patient_id"))
