"""Projection at archive scale (issue 12): float32, randomized PCA and openTSNE above
LARGE_ROWS, refusals that name UMAP, and small runs exactly as before."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs

import core.projection as projection
from core.projection import project

needs_opentsne = pytest.mark.skipif(not projection._opentsne_available(),
                                    reason="openTSNE is not installed")


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_blobs(n_samples=400, centers=3, n_features=80, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


def _separated(coords: np.ndarray, y: np.ndarray) -> bool:
    """Each group's centre on the map is farther from the others than its own spread."""
    centres = np.array([coords[y == g].mean(axis=0) for g in np.unique(y)])
    spread = max(coords[y == g].std(axis=0).max() for g in np.unique(y))
    gaps = [np.linalg.norm(a - b) for i, a in enumerate(centres) for b in centres[i + 1:]]
    return min(gaps) > 2 * spread


@needs_opentsne
def test_large_tsne_runs_through_opentsne(blobs, monkeypatch):
    X, y = blobs
    monkeypatch.setattr(projection, "LARGE_ROWS", 100)
    result = project(X, method="tsne", perplexity=20, max_iter=500)
    assert result.coords.shape == (400, 2) and result.coords.dtype == np.float32
    assert np.isfinite(result.coords).all()
    assert any("openTSNE" in note for note in result.notes)
    assert any("randomized SVD" in note for note in result.notes)
    assert _separated(result.coords, y)


def test_large_pca_is_randomized_and_close_to_the_full_solver(blobs, monkeypatch):
    X, _ = blobs
    exact = project(X, method="pca").coords
    monkeypatch.setattr(projection, "LARGE_ROWS", 100)
    fast = project(X, method="pca").coords
    # Components agree up to sign.
    for column in range(2):
        correlation = np.corrcoef(exact[:, column], fast[:, column])[0, 1]
        assert abs(correlation) > 0.999


def test_large_3d_tsne_and_tsne_without_opentsne_are_refused(blobs, monkeypatch):
    X, _ = blobs
    monkeypatch.setattr(projection, "LARGE_ROWS", 100)
    with pytest.raises(ValueError, match="3-D t-SNE of n_samples=400 .* use method='umap'"):
        project(X, method="tsne", n_components=3, perplexity=20)
    monkeypatch.setattr(projection, "SKLEARN_TSNE_MAX_ROWS", 200)
    monkeypatch.setattr(projection, "_opentsne_available", lambda: False)
    with pytest.raises(ValueError, match="needs openTSNE .* use method='umap'"):
        project(X, method="tsne", perplexity=20)


def test_nan_rows_keep_their_place_at_scale(blobs, monkeypatch):
    X, _ = blobs
    X = X.copy()
    X[[0, 7]] = np.nan
    monkeypatch.setattr(projection, "LARGE_ROWS", 100)
    result = project(X, method="pca")
    assert np.isnan(result.coords[[0, 7]]).all() and np.isfinite(result.coords[1:7]).all()
    assert result.n_failed == 2
