"""core.serving without HTTP: the image block is rebuilt exactly as core.features built it, a
fused study (image + age + sex) predicts with the blocks a request cannot carry at their
training mean and says so, and a study whose encoder version differs from the installed one is
refused rather than fed vectors it was not trained on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.features import build_features
from core.runs import RunStore
from core.serving import ImageBlock, load_served_model

pytestmark = pytest.mark.slow


def test_image_block_matches_build_features():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 12)).astype(np.float32)
    vectors[:, 3] = 7.0  # a constant column stays 0
    vectors[5] = np.nan  # a row without a vector is left out of the statistics
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(30)]})
    expected = build_features(frame, vectors, metadata=()).X
    block = ImageBlock.from_training(vectors)
    rows = np.isfinite(vectors).all(axis=1)
    np.testing.assert_allclose(block.transform(vectors[rows]), expected[rows], atol=1e-5)
    assert not block.varying[3]


def test_a_fused_study_fills_metadata_with_the_training_mean(served_study, served_cache, monkeypatch):
    monkeypatch.setenv("SCANATLAS_CACHE", str(served_cache))
    from core.classify.study import classifier_study

    _key, dataset = served_study
    study = classifier_study(dataset, positive="COVID-19", encoder="efficientnet-lite0", use_text=False,
                             metadata=("age", "sex"), n_splits=3, n_bootstrap=50)
    model = load_served_model(study.key, device="cpu")
    info = model.describe()
    assert info["inputs"]["filled_with_training_mean"] == ["metadata (age, sex)"]
    paths = [Path(p) for p in study.table["path"].head(2)]
    predictions = model.predict_files([(p.name, p) for p in paths])
    n_image = study.image_vectors.shape[1]
    features = np.zeros((2, study.final_model.n_features))
    features[:, :n_image] = model.image_block.transform(study.image_vectors[:2])
    expected = study.final_model.predict_proba(features)
    for prediction, proba in zip(predictions, expected, strict=True):
        np.testing.assert_allclose(list(prediction.probabilities.values()), proba, atol=2e-4)
        assert "metadata (age, sex) not given: set to the training mean" in prediction.notes


def test_a_study_of_another_encoder_version_is_refused(served_study, served_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SCANATLAS_CACHE", str(served_cache))
    key, _dataset = served_study
    store = RunStore(tmp_path / "runs")
    folder = store.root / "classifier-study" / key
    shutil.copytree(served_cache / "runs" / "classifier-study" / key, folder)
    meta = json.loads((folder / "study.json").read_text())
    meta["config"]["image_embedding"] = "efficientnet-lite0-000000000000-0123456789ab"
    (folder / "study.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another version or weights"):
        load_served_model(key, store=store, device="cpu")
    with pytest.raises(ValueError, match="not a saved classifier study"):
        load_served_model("projection-0123456789abcdef0123", store=store, device="cpu")
