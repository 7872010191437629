from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA

import core.projection as projection_module
from core.projection import (
    PROJECTION_VERSION,
    compute_or_load,
    estimate_seconds,
    load_projection,
    project,
    projection_key,
    resolve_params,
    stored_projection,
)
from core.runs import RunStore


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
    assert projection_key("m1", "umap", defaults).startswith("projection-")
    assert projection_key("m1", "umap", defaults) != projection_key("m2", "umap", defaults)
    changed = resolve_params("umap", n_neighbors=30)
    assert projection_key("m1", "umap", defaults) != projection_key("m1", "umap", changed)
    seeded = resolve_params("umap", random_state=1)
    assert projection_key("m1", "umap", defaults) != projection_key("m1", "umap", seeded)
    with pytest.raises(ValueError, match="unknown projection method 'mds'"):
        projection_key("m1", "mds", {})
    with pytest.raises(ValueError, match="is not JSON-serialisable"):
        projection_key("m1", "pca", {"whiten": object()})


def test_store_round_trip_in_a_new_process(tmp_path, features):
    store = RunStore(tmp_path)
    started = time.monotonic()
    result = compute_or_load(with_nan_rows(features, [2]), "matrix-a", "pca", store=store, dataset="ds")
    elapsed = time.monotonic() - started
    assert not result.from_cache and result.created
    run = store.load("projection", result.key, version=PROJECTION_VERSION)
    assert run.config == {"method": "pca", "params": result.params}
    assert run.inputs == {"matrix": "matrix-a"} and run.dataset == "ds"
    seconds = run.summary.pop("seconds")
    assert isinstance(seconds, int | float) and 0 <= seconds <= round(elapsed, 2) + 0.01  # the fit's own time
    assert run.summary == {"method": "pca", "n_samples": 40, "n_failed": 1}
    code = (
        "import json; from core.projection import load_projection; from core.runs import RunStore\n"
        f"p = load_projection({result.key!r}, store=RunStore({str(tmp_path)!r}))\n"
        "print(json.dumps({'coords': p.coords.tolist(), 'dtype': str(p.coords.dtype), 'method': p.method,"
        " 'params': p.params, 'key': p.key, 'created': p.created, 'from_cache': p.from_cache,"
        " 'n_failed': p.n_failed, 'notes': p.notes}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                                    capture_output=True, text=True, check=True).stdout)
    loaded = np.array(out["coords"], dtype=np.float64)
    np.testing.assert_allclose(loaded[[0, 1, 3]], result.coords[[0, 1, 3]])
    assert np.isnan(result.coords[2]).all() and np.isnan(loaded[2]).all()
    assert out["dtype"] == "float32" and out["method"] == "pca" and out["params"] == result.params
    assert out["key"] == result.key and out["created"] == result.created and out["from_cache"]
    assert out["n_failed"] == 1 and out["notes"] == result.notes
    assert store.list(kind="projection")["key"].tolist() == [result.key]
    assert store.delete(result.key) and load_projection(result.key, store=store) is None


def test_store_ignores_other_versions(tmp_path, features, monkeypatch):
    store = RunStore(tmp_path)
    first = compute_or_load(features, "matrix-a", "pca", store=store)
    monkeypatch.setattr(projection_module, "PROJECTION_VERSION", "0")
    assert load_projection(first.key, store=store) is None


def test_compute_or_load_hits_the_cache(tmp_path, features, monkeypatch):
    calls = []
    real_project = projection_module.project

    def counting_project(*args, **kwargs):
        calls.append(kwargs)
        return real_project(*args, **kwargs)

    monkeypatch.setattr(projection_module, "project", counting_project)
    store = RunStore(tmp_path)
    first = compute_or_load(features, "matrix-a", "tsne", perplexity=5, max_iter=250, store=store)
    second = compute_or_load(features, "matrix-a", "tsne", perplexity=5.0, max_iter=250, store=store)
    assert len(calls) == 1
    assert not first.from_cache and second.from_cache
    assert first.key == second.key
    np.testing.assert_array_equal(first.coords, second.coords)

    compute_or_load(features, "matrix-a", "tsne", perplexity=6, max_iter=250, store=store)
    assert len(calls) == 2
    # Same key but a different number of rows: the stored run is stale and is recomputed.
    compute_or_load(features[:30], "matrix-a", "tsne", perplexity=5, max_iter=250, store=store)
    assert len(calls) == 3
    assert len(store.list(kind="projection")) == 2


def test_stored_projection_finds_what_compute_or_load_would_load(tmp_path, features):
    store = RunStore(tmp_path)
    params = {"n_neighbors": 5, "min_dist": 0.2}
    assert stored_projection(40, "matrix-a", "umap", store=store, **params) is None
    computed = compute_or_load(features, "matrix-a", "umap", store=store, **params)
    found = stored_projection(40, "matrix-a", "umap", store=store, **params)
    assert found is not None and found.from_cache and found.key == computed.key
    np.testing.assert_array_equal(found.coords, computed.coords)
    # Another row count (stale), other parameters or another matrix: not stored.
    assert stored_projection(39, "matrix-a", "umap", store=store, **params) is None
    assert stored_projection(40, "matrix-a", "umap", store=store, n_neighbors=6, min_dist=0.2) is None
    assert stored_projection(40, "matrix-b", "umap", store=store, **params) is None
    with pytest.raises(ValueError, match="unknown parameter"):
        stored_projection(40, "matrix-a", "umap", store=store, perplexity=5)


def test_estimate_seconds_scales_the_newest_stored_run_of_the_method(tmp_path, features, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    store = RunStore(tmp_path / "runs")
    assert estimate_seconds("pca", 10_000, store=store) == 1.0
    # Nothing measured yet: a default that grows with the rows, longer while numba's cache is empty.
    cold = estimate_seconds("umap", 500, store=store)
    (tmp_path / "numba" / "pkg").mkdir(parents=True)
    (tmp_path / "numba" / "pkg" / "f.nbi").write_bytes(b"")
    assert 1 <= estimate_seconds("umap", 500, store=store) < cold
    assert estimate_seconds("umap", 5000, store=store) > estimate_seconds("umap", 50, store=store)
    assert estimate_seconds("tsne", 1000, store=store) > estimate_seconds("tsne", 100, store=store)

    run = compute_or_load(features, "matrix-a", "tsne", perplexity=5, max_iter=250, store=store)
    measured = store.load("projection", run.key).summary["seconds"]
    assert estimate_seconds("tsne", 40, store=store) == pytest.approx(max(1.0, measured))
    assert estimate_seconds("tsne", 400, store=store) == pytest.approx(max(1.0, measured * 10))


def test_finding_a_stored_umap_does_not_import_umap(tmp_path):
    """Looking a map up must stay instant: ``import umap`` compiles numba code for most of a
    minute on a fresh cache. A fresh process proves it."""
    code = (
        "import sys; from core.projection import stored_projection, map_params\n"
        f"from core.runs import RunStore; store = RunStore({str(tmp_path)!r})\n"
        "assert stored_projection(80, 'm', 'umap', store=store, **map_params('umap', 80)) is None\n"
        "assert stored_projection(80, 'm', 'tsne', store=store, **map_params('tsne', 80)) is None\n"
        "print('umap' in sys.modules, 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
