"""The text encoder (minilm): real sentence embeddings of report text, missing text as NaN."""

from __future__ import annotations

import numpy as np
import pytest

from core.encoders import get_encoder, iter_image_embeddings


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


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




@pytest.mark.slow
def test_minilm_truncates_at_its_contract_and_keeps_the_cache_params():
    encoder = get_encoder("minilm")
    assert encoder.model.max_seq_length == encoder.spec.preprocessing.max_tokens == 256
    assert encoder.preprocess_params() == {
        "max_seq_length": 256, "normalize_embeddings": True,
        "weights_sha256": encoder.weights_sha256,
    }
    # Batching does not change a vector: one call of 3 equals 3 calls of 1.
    texts = ["Right lower lobe consolidation.", "Normal chest radiograph.", "Small effusion."]
    together = encoder.embed_texts(texts, batch_size=3)
    apart = encoder.embed_texts(texts, batch_size=1)
    np.testing.assert_allclose(together, apart, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size=0"):
        encoder.embed_texts(texts, batch_size=0)
    with pytest.raises(ValueError, match="single str"):
        encoder.embed_texts("one text")
