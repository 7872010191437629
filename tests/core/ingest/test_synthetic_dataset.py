"""The synthetic imported dataset of the scale benchmarks and the 200k-map browser test (issue 12,
goal 6): an ordinary imported dataset whose vectors are ``synthetic_vectors`` row for row."""

from __future__ import annotations

import numpy as np
import pytest

from core.demo import DEMO_GROUPS, synthetic_vectors
from core.embed import embed_dataset
from core.ingest import load_dataset
from core.ingest.imported import has_images
from core.ingest.synthetic import SYNTHETIC_ENCODER, make_synthetic_dataset


def test_the_dataset_holds_the_synthetic_vectors_with_their_groups_as_labels(tmp_path) -> None:
    result = make_synthetic_dataset(tmp_path / "synthetic-600", 600, dim=16, seed=3)
    assert (result.n_vectors, result.dim, result.encoder) == (600, 16, SYNTHETIC_ENCODER)
    dataset = load_dataset(tmp_path / "synthetic-600")
    assert not has_images(dataset)
    images = dataset.images
    assert images["image_id"].tolist()[:2] == ["S000001", "S000002"] and images["image_id"].is_unique
    assert (images["patient_id"] == images["image_id"]).all() and len(dataset.patients) == 600
    expected, groups = synthetic_vectors(600, dim=16, seed=3)
    assert images["label"].tolist() == [DEMO_GROUPS[g] for g in groups]
    assert set(images["sex"]) == {"F", "M"} and images["age"].between(18, 90).all()
    stored = embed_dataset(dataset, SYNTHETIC_ENCODER)
    assert np.array_equal(stored.vectors, expected)


def test_an_existing_dataset_is_not_overwritten_without_replace(tmp_path) -> None:
    make_synthetic_dataset(tmp_path / "synthetic", 50, dim=8)
    with pytest.raises(Exception, match="synthetic"):
        make_synthetic_dataset(tmp_path / "synthetic", 60, dim=8)
    assert len(make_synthetic_dataset(tmp_path / "synthetic", 60, dim=8, replace=True).dataset.images) == 60


def test_a_size_out_of_range_names_the_parameter(tmp_path) -> None:
    with pytest.raises(ValueError, match="n_rows"):
        make_synthetic_dataset(tmp_path / "none", 0)
    assert not (tmp_path / "none").exists()
