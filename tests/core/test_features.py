"""Patient pooling of image embeddings and weighted feature blocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.features import build_features, patient_embeddings

NAN = np.nan


@pytest.fixture
def tiny_images() -> tuple[pd.DataFrame, np.ndarray]:
    """5 images of 3 patients; p3's only image failed (NaN row)."""
    images = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e"],
            "patient_id": ["p1", "p2", "p1", "p3", "p1"],
            "series_uid": ["s1", "s2", "s1", "s3", "s9"],
        }
    )
    vectors = np.array(
        [[1.0, 10.0], [5.0, -1.0], [3.0, 20.0], [NAN, NAN], [8.0, 0.0]], dtype=np.float32
    )
    return images, vectors


def test_mean_pooling_by_hand(tiny_images):
    images, vectors = tiny_images
    patient_ids, matrix = patient_embeddings(images, vectors, how="mean")
    assert patient_ids.tolist() == ["p1", "p2", "p3"]  # first-appearance order
    assert matrix.dtype == np.float32 and matrix.shape == (3, 2)
    np.testing.assert_allclose(matrix[0], [(1 + 3 + 8) / 3, (10 + 20 + 0) / 3], rtol=1e-6)
    np.testing.assert_allclose(matrix[1], [5, -1])
    assert np.isnan(matrix[2]).all()  # every image failed: NaN row, patient kept


def test_max_pooling_by_hand(tiny_images):
    images, vectors = tiny_images
    _, matrix = patient_embeddings(images, vectors, how="max")
    np.testing.assert_array_equal(matrix[0], [8, 20])
    np.testing.assert_array_equal(matrix[1], [5, -1])
    assert np.isnan(matrix[2]).all()


def test_nan_image_rows_are_ignored_not_propagated(tiny_images):
    images, vectors = tiny_images
    vectors = vectors.copy()
    vectors[2] = NAN  # one of p1's three images failed
    _, mean = patient_embeddings(images, vectors, how="mean")
    _, largest = patient_embeddings(images, vectors, how="max")
    np.testing.assert_allclose(mean[0], [(1 + 8) / 2, (10 + 0) / 2])
    np.testing.assert_array_equal(largest[0], [8, 10])


def test_series_mean_averages_series_means(tiny_images):
    images, vectors = tiny_images
    _, matrix = patient_embeddings(images, vectors, how="series-mean")
    # p1: series s1 = mean(a, c) = (2, 15); series s9 = e = (8, 0); then the mean of the two.
    np.testing.assert_allclose(matrix[0], [(2 + 8) / 2, (15 + 0) / 2])
    np.testing.assert_allclose(matrix[1], [5, -1])
    assert np.isnan(matrix[2]).all()


def test_series_mean_without_series_uid_equals_mean(tiny_images):
    images, vectors = tiny_images
    _, plain = patient_embeddings(images, vectors, how="mean")
    _, series = patient_embeddings(images.drop(columns="series_uid"), vectors, how="series-mean")
    np.testing.assert_allclose(series, plain, equal_nan=True, rtol=1e-6)


def test_missing_series_uid_makes_each_image_its_own_series(tiny_images):
    images, vectors = tiny_images
    images = images.assign(series_uid=[None, "s2", None, "s3", "s9"])
    _, matrix = patient_embeddings(images, vectors, how="series-mean")
    np.testing.assert_allclose(matrix[0], [(1 + 3 + 8) / 3, (10 + 20 + 0) / 3], rtol=1e-6)


def test_pooling_refuses_bad_input(tiny_images):
    images, vectors = tiny_images
    with pytest.raises(ValueError, match="how='median' must be one of"):
        patient_embeddings(images, vectors, how="median")
    with pytest.raises(ValueError, match=r"shape \(n_images=5, dim\)"):
        patient_embeddings(images, vectors[:4])
    with pytest.raises(ValueError, match="patient_id"):
        patient_embeddings(images.drop(columns="patient_id"), vectors)


def test_pooling_accepts_an_aligned_embedding_set(tiny_images):
    from core.embed import EmbeddingSet

    images, vectors = tiny_images
    common = dict(
        encoder="x",
        version="1",
        n_cached=0,
        n_computed=4,
        failures=pd.DataFrame(),
        key="k",
        namespace="n",
    )
    aligned = EmbeddingSet(
        image_ids=images["image_id"].to_numpy(dtype=object), vectors=vectors, **common
    )
    _, matrix = patient_embeddings(images, aligned)
    np.testing.assert_allclose(matrix[1], [5, -1])
    shuffled = EmbeddingSet(
        image_ids=np.array(list("edcba"), dtype=object), vectors=vectors, **common
    )
    with pytest.raises(ValueError, match="not in the order"):
        patient_embeddings(images, shuffled)


def _patients(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(["M", "F", "unknown"], dtype=object), size=n)
    age = rng.uniform(20, 90, size=n)
    age[::7] = NAN
    return pd.DataFrame({"patient_id": [f"p{i}" for i in range(n)], "age": age, "sex": sex})


def block_variance(features, name: str) -> float:
    return float(features.block(name).astype(np.float64).var(axis=0).sum())


def test_shapes_blocks_and_names():
    patients = _patients(40)
    rng = np.random.default_rng(1)
    features = build_features(
        patients, rng.standard_normal((40, 1280)), text_block=rng.standard_normal((40, 384))
    )
    # age (median-imputed) + "age missing" + sex one-hot (M, F, unknown): the one metadata
    # encoder, core.metadata.encode_metadata, that classifiers and SHAP use too.
    assert features.X.shape == (40, 1280 + 5 + 384) and features.X.dtype == np.float32
    assert np.isfinite(features.X).all()
    assert [b.name for b in features.blocks] == ["image", "metadata", "text"]
    assert [(b.start, b.stop) for b in features.blocks] == [(0, 1280), (1280, 1285), (1285, 1669)]
    names = features.blocks[1].column_names
    assert names[:2] == ["age", "age missing"] and sorted(names[2:]) == ["sex=F", "sex=M", "sex=unknown"]
    assert features.row_ids.tolist() == patients["patient_id"].tolist()
    assert len(features.column_names) == features.X.shape[1]
    assert "40 patients x 1669 features" in features.description


@pytest.mark.parametrize("weights", [{}, {"image": 2.0, "metadata": 0.5, "text": 3.0}])
def test_each_block_total_variance_equals_its_weight(weights):
    rng = np.random.default_rng(2)
    # Wildly different raw scales: weighting must not depend on them.
    image = rng.standard_normal((60, 1280)) * 50 + 7
    text = rng.standard_normal((60, 20)) * 0.01
    features = build_features(_patients(60), image, text_block=text, weights=weights)
    expected = {"image": 1.0, "metadata": 1.0, "text": 1.0} | weights
    for name, weight in expected.items():
        assert block_variance(features, name) == pytest.approx(weight, rel=1e-4)
    # Two metadata columns weigh as much as 1280 image columns (at equal weights).
    if not weights:
        assert block_variance(features, "metadata") == pytest.approx(
            block_variance(features, "image"), rel=1e-4
        )


def test_missing_values_are_imputed_and_flagged():
    patients = pd.DataFrame(
        {
            "patient_id": ["a", "b", "c", "d", "e"],
            "age": [30.0, NAN, 50.0, 70.0, 40.0],
            "sex": ["M", "F", "unknown", None, "M"],
        }
    )
    features = build_features(patients, None, weights={"metadata": 3.0})
    metadata = features.block("metadata")
    names = features.blocks[0].column_names
    assert names == ["age", "age missing", "sex=M", "sex=(missing)", "sex=F", "sex=unknown"]
    column = {name: metadata[:, i] for i, name in enumerate(names)}
    # Unknown age takes the median of the known ages (45), then the block is standardised.
    filled = np.array([30.0, 45.0, 50.0, 70.0, 40.0])
    scale = np.sqrt(3.0 / len(names))  # each varying column's share of the block's variance
    np.testing.assert_allclose(column["age"], (filled - filled.mean()) / filled.std() * scale, rtol=1e-5)
    assert column["age missing"][1] > column["age missing"][[0, 2, 3, 4]].max()
    assert column["sex=M"][0] == column["sex=M"][4] > column["sex=M"][[1, 2, 3]].max()
    assert column["sex=unknown"][2] > column["sex=unknown"][[0, 1, 3, 4]].max()
    assert column["sex=(missing)"][3] > column["sex=(missing)"][[0, 1, 2, 4]].max()
    assert block_variance(features, "metadata") == pytest.approx(3.0, rel=1e-5)


def test_constant_columns_are_left_out_named_and_do_not_dilute_the_weight():
    patients = pd.DataFrame({"patient_id": list("abcd"), "age": [20.0, 30, 40, 50], "sex": "F"})
    features = build_features(patients, None)
    assert features.blocks[0].column_names == ["age"]
    assert "metadata left out: sex (constant)" in features.description
    assert block_variance(features, "metadata") == pytest.approx(1.0, rel=1e-5)


def test_nan_image_rows_are_imputed_and_reported_not_dropped():
    rng = np.random.default_rng(3)
    image = rng.standard_normal((10, 8))
    image[[2, 5]] = NAN
    features = build_features(_patients(10), image)
    assert features.X.shape[0] == 10 and np.isfinite(features.X).all()
    assert np.flatnonzero(features.missing["image"]).tolist() == [2, 5]
    assert np.all(features.block("image")[[2, 5]] == 0)
    assert "2 rows imputed" in features.description


def test_image_level_rows_use_image_ids():
    images = pd.DataFrame(
        {
            "image_id": ["i1", "i2", "i3"],
            "patient_id": ["p1", "p1", "p2"],
            "age": [60.0, 60, 30],
            "sex": ["M", "M", "F"],
        }
    )
    features = build_features(images, np.eye(3))
    assert features.row_ids.tolist() == ["i1", "i2", "i3"]
    assert features.index.tolist() == ["i1", "i2", "i3"]
    assert features.description.startswith("3 images x 6 features")


def test_zero_weight_leaves_a_block_out_and_other_metadata_is_encoded():
    patients = _patients(12).assign(modality=["CT", "MR", None] * 4, bmi=np.linspace(18, 30, 12))
    features = build_features(
        patients,
        np.random.default_rng(4).standard_normal((12, 5)),
        metadata=("sex", "modality", "bmi"),
        weights={"image": 0.0},
    )
    assert [b.name for b in features.blocks] == ["metadata"]
    names = features.blocks[0].column_names
    assert sorted(names[:3]) == ["sex=F", "sex=M", "sex=unknown"]
    # Equal counts (4 each): ordered by name, missing as its own category.
    assert names[3:] == ["modality=(missing)", "modality=CT", "modality=MR", "bmi"]


def test_build_features_refuses_bad_input():
    patients = _patients(5)
    with pytest.raises(ValueError, match="unknown block 'images'"):
        build_features(patients, np.zeros((5, 2)), weights={"images": 1.0})
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        build_features(patients, np.zeros((5, 2)), weights={"image": -1.0})
    with pytest.raises(ValueError, match=r"image block must have shape \(n_rows=5"):
        build_features(patients, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="metadata column 'height' not found"):
        build_features(patients, None, metadata=("height",))
    with pytest.raises(ValueError, match="no feature block left"):
        build_features(patients, None, metadata=())
