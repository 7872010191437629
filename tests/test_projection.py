from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA

import core.projection as projection_module
from core.projection import (
    PROJECTION_VERSION,
    Projection,
    ProjectionStore,
    compute_or_load,
    project,
    projection_key,
    resolve_params,
)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    X, _ = make_blobs(n_samples=40, centers=3, n_features=8, random_state=0)
    return X


def with_nan_rows(X: np.ndarray, rows: list[int]) -> np.ndarray:
    X = X.copy()
    X[rows, 0] = np.nan
    return X


def test_pca_shape_dtype_nan_alignment_and_determinism(features):
    X = with_nan_rows(features, [3, 30])
    first = project(X, method="pca")
    second = project(X, method="pca")
    assert first.coords.shape == (40, 2) and first.coords.dtype == np.float32
    assert np.isnan(first.coords[[3, 30]]).all()
    valid = np.setdiff1d(np.arange(40), [3, 30])
    assert np.isfinite(first.coords[valid]).all()
    np.testing.assert_array_equal(first.coords, second.coords)
    reference = PCA(n_components=2, svd_solver="full").fit_transform(features[valid])
    np.testing.assert_allclose(first.coords[valid], reference, rtol=1e-4, atol=1e-4)
    assert first.n_failed == 2
    assert first.params == {"n_components": 2, "random_state": 0}


def test_pca_three_components(features):
    assert project(features, method="pca", n_components=3).coords.shape == (40, 3)


def test_tsne_shape_and_nan_alignment(features):
    X = with_nan_rows(features, [0])
    result = project(X, method="tsne", perplexity=5, max_iter=250)
    assert result.coords.shape == (40, 2)
    assert np.isnan(result.coords[0]).all() and np.isfinite(result.coords[1:]).all()
    assert result.params["perplexity"] == 5 and result.params["pre_pca_dims"] == 50


def test_wide_matrix_is_pca_reduced_before_tsne():
    X = np.random.default_rng(0).normal(size=(30, 80))
    reduced = project(X, method="tsne", perplexity=5, max_iter=250)
    assert any("80 -> 29 dimensions" in note for note in reduced.notes)
    unreduced = project(X, method="tsne", perplexity=5, max_iter=250, pre_pca_dims=None)
    assert not any("dimensions" in note for note in unreduced.notes)


@pytest.mark.slow
def test_umap_separates_blobs_and_keeps_nan_rows(features):
    X = with_nan_rows(features, [7])
    result = project(X, method="umap", n_components=3, n_neighbors=10)
    assert result.coords.shape == (40, 3) and result.coords.dtype == np.float32
    assert (
        np.isnan(result.coords[7]).all() and np.isfinite(np.delete(result.coords, 7, axis=0)).all()
    )
    _, y = make_blobs(n_samples=40, centers=3, n_features=8, random_state=0)
    from sklearn.metrics import silhouette_score

    kept = np.delete(np.arange(40), 7)
    assert silhouette_score(result.coords[kept], y[kept]) > 0.5


def test_projection_validation_messages(features):
    with pytest.raises(ValueError, match="n_components=4 must be 2 or 3"):
        project(features, method="pca", n_components=4)
    with pytest.raises(ValueError, match="unknown projection method 'mds'; valid: umap, pca, tsne"):
        project(features, method="mds")
    with pytest.raises(ValueError, match="unknown parameter.*perplexity for method 'pca'; valid: "):
        project(features, method="pca", perplexity=5)
    with pytest.raises(ValueError, match="unknown parameter.*pre_pca_dims for method 'pca'"):
        project(features, method="pca", pre_pca_dims=10)
    with pytest.raises(ValueError, match="perplexity=40 must be > 0 and < n_samples=39 for tsne"):
        project(with_nan_rows(features, [0]), method="tsne", perplexity=40)
    with pytest.raises(ValueError, match="n_neighbors=40 must be >= 2 and < n_samples=40 for umap"):
        project(features, method="umap", n_neighbors=40)
    with pytest.raises(ValueError, match=r"X must be 2-D .*got shape \(40,\)"):
        project(features[:, 0], method="pca")
    with pytest.raises(ValueError, match="pca needs at least 3 rows without NaN; got n_samples=2"):
        project(with_nan_rows(features[:5], [0, 1, 2]), method="pca")
    with pytest.raises(ValueError, match="n_components=3 must be <= n_features=2 for pca"):
        project(features[:, :2], method="pca", n_components=3)
    with pytest.raises(ValueError, match="pre_pca_dims=1 must be None or an int >= n_components=2"):
        project(features, method="tsne", perplexity=5, pre_pca_dims=1)


def test_projection_key_is_stable_and_config_sensitive():
    defaults = resolve_params("umap")
    explicit = resolve_params("umap", n_neighbors=15, min_dist=0.1)
    assert projection_key("m1", "umap", defaults) == projection_key("m1", "umap", explicit)
    assert projection_key("m1", "umap", defaults).startswith("umap-")
    assert projection_key("m1", "umap", defaults) != projection_key("m2", "umap", defaults)
    changed = resolve_params("umap", n_neighbors=30)
    assert projection_key("m1", "umap", defaults) != projection_key("m1", "umap", changed)
    seeded = resolve_params("umap", random_state=1)
    assert projection_key("m1", "umap", defaults) != projection_key("m1", "umap", seeded)
    with pytest.raises(ValueError, match="unknown projection method 'mds'"):
        projection_key("m1", "mds", {})
    with pytest.raises(ValueError, match="is not JSON-serialisable"):
        projection_key("m1", "pca", {"whiten": object()})


def test_store_round_trip(tmp_path, features):
    store = ProjectionStore(tmp_path)
    result = project(with_nan_rows(features, [2]), method="pca")
    result.key = projection_key("matrix-a", "pca", result.params)
    config_path = store.put(result, matrix_key="matrix-a")
    assert config_path == tmp_path / "projections" / f"{result.key}.json"
    config = json.loads(config_path.read_text())
    assert config["method"] == "pca" and config["params"] == result.params
    assert config["version"] == PROJECTION_VERSION and config["created"]
    assert config["matrix_key"] == "matrix-a" and config["n_failed"] == 1
    loaded = store.get(result.key)
    np.testing.assert_array_equal(loaded.coords, result.coords)
    assert loaded.coords.dtype == np.float32
    assert (loaded.method, loaded.params, loaded.key) == ("pca", result.params, result.key)
    assert loaded.from_cache and loaded.created == config["created"]
    assert sorted(p.name for p in (tmp_path / "projections").iterdir()) == sorted(
        [f"{result.key}.json", f"{result.key}.npy"]
    )
    runs = store.list_runs()
    assert runs["key"].tolist() == [result.key] and runs["n_samples"].tolist() == [40]
    assert store.get("pca-absent") is None
    assert store.delete(result.key) and store.get(result.key) is None


def test_store_ignores_other_versions_and_rejects_bad_keys(tmp_path):
    store = ProjectionStore(tmp_path)
    run = Projection(coords=np.zeros((3, 2), np.float32), method="pca", params={}, key="pca-old")
    config_path = store.put(run)
    config = json.loads(config_path.read_text())
    config["version"] = "0"
    config_path.write_text(json.dumps(config))
    assert store.get("pca-old") is None
    with pytest.raises(ValueError, match="projection.key is empty"):
        store.put(Projection(coords=np.zeros((3, 2)), method="pca", params={}))
    with pytest.raises(ValueError, match="invalid projection key '../x'"):
        store.get("../x")


def test_compute_or_load_hits_the_cache(tmp_path, features, monkeypatch):
    calls = []
    real_project = projection_module.project

    def counting_project(*args, **kwargs):
        calls.append(kwargs)
        return real_project(*args, **kwargs)

    monkeypatch.setattr(projection_module, "project", counting_project)
    store = ProjectionStore(tmp_path)
    first = compute_or_load(store, features, "matrix-a", "tsne", perplexity=5, max_iter=250)
    second = compute_or_load(store, features, "matrix-a", "tsne", perplexity=5.0, max_iter=250)
    assert len(calls) == 1
    assert not first.from_cache and second.from_cache
    assert first.key == second.key
    np.testing.assert_array_equal(first.coords, second.coords)

    compute_or_load(store, features, "matrix-a", "tsne", perplexity=6, max_iter=250)
    assert len(calls) == 2
    # Same key but a different number of rows: the stored run is stale and is recomputed.
    compute_or_load(store, features[:30], "matrix-a", "tsne", perplexity=5, max_iter=250)
    assert len(calls) == 3
    assert len(store.list_runs()) == 2
