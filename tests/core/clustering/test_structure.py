"""core.clustering.structure: silhouette -> a plain sentence (Kaufman & Rousseeuw bands)."""

from __future__ import annotations

import numpy as np
import pytest

from core.clustering import (
    SCORE_LABELS,
    clustering_scores,
    structure_sentence,
    structure_verdict,
    suggestion_sentence,
)


@pytest.mark.parametrize(("silhouette", "verdict"), [
    (0.025, "none"), (-0.2, "none"), (0.25, "none"), (0.26, "weak"), (0.5, "weak"),
    (0.51, "reasonable"), (0.7, "reasonable"), (0.71, "strong"), (1.0, "strong"), (float("nan"), "unknown"),
])
def test_bands(silhouette: float, verdict: str) -> None:
    assert structure_verdict(silhouette) == verdict


def test_the_issues_case_says_no_real_structure() -> None:
    sentence = structure_sentence(0.025)
    assert sentence.startswith("No real structure:")
    assert "silhouette 0.025" in sentence and "below 0.25" in sentence


def test_other_sentences() -> None:
    assert structure_sentence(0.6).startswith("Reasonable structure: the groups are reasonably separated")
    assert structure_sentence(0.3).startswith("Weak structure:")
    assert structure_sentence(0.9).startswith("Strong structure:")
    assert "cannot be judged" in structure_sentence(float("nan"))


def test_out_of_range_silhouette_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"silhouette=1.5 must be in \[-1, 1\]"):
        structure_verdict(1.5)


def test_real_scores_of_two_clear_blobs_and_of_noise() -> None:
    rng = np.random.default_rng(0)
    blobs = np.vstack([rng.normal(0, 0.1, (30, 2)), rng.normal(5, 0.1, (30, 2))])
    labels = np.repeat([0, 1], 30)
    assert structure_verdict(clustering_scores(blobs, labels)["silhouette"]) == "strong"
    noise = rng.normal(size=(60, 2))
    split = (noise[:, 0] > np.median(noise[:, 0])).astype(int)  # one cloud cut in two
    assert structure_verdict(clustering_scores(noise, split)["silhouette"]) in ("none", "weak")


def test_suggestion_says_when_even_the_best_k_is_poor() -> None:
    assert suggestion_sentence(3, 0.6) == "Suggested number of clusters: 3 (best separation in the sweep)."
    poor = suggestion_sentence(2, 0.05)
    assert poor.startswith("Suggested number of clusters: 2") and "separation is absent" in poor
    assert "suggests none" in suggestion_sentence(None, float("nan"))


def test_sweep_labels_cover_the_sweep_scores() -> None:
    from core.clustering.runs import SWEEP_SCORES

    assert set(SCORE_LABELS) == set(SWEEP_SCORES)
    assert all("_" not in label for label in SCORE_LABELS.values())
