"""Nearest neighbours through an index (issue 12): faiss HNSW and pynndescent against the exact
search, the automatic choice by size, NaN rows and the query row itself."""

from __future__ import annotations

import numpy as np
import pytest

import core.explain.similar as similar
from core.explain.similar import SimilarCases, faiss_available

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (20, 32))
    return (centres[rng.integers(0, 20, 3000)] + rng.normal(0, 1, (3000, 32))).astype(np.float32)


def _recall(approximate: SimilarCases, exact: SimilarCases, queries: range, k: int) -> float:
    hits = 0
    for row in queries:
        hits += len(set(approximate.query(row, k)["row"]) & set(exact.query(row, k)["row"]))
    return hits / (k * len(queries))


@pytest.mark.parametrize("index", [pytest.param("hnsw", marks=needs_faiss), "nndescent"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_index_agrees_with_exact_search(vectors, index, metric):
    exact = SimilarCases(metric, index="exact").fit(vectors)
    approximate = SimilarCases(metric, index=index).fit(vectors)
    assert approximate.index_kind_ == index
    assert _recall(approximate, exact, range(0, 3000, 60), k=8) > 0.9
    answer = approximate.query(5, k=8)
    assert 5 not in set(answer["row"]) and list(answer["rank"]) == list(range(1, 9))
    assert np.all(np.diff(answer["distance"]) >= -1e-6)
    # Distances are the metric's, as the exact search gives them for the same rows.
    truth = exact.index_.kneighbors(vectors[5][None, :].astype(np.float64), n_neighbors=3000)
    by_row = dict(zip(truth[1][0], truth[0][0], strict=True))
    for row, distance in zip(answer["row"], answer["distance"], strict=True):
        assert distance == pytest.approx(by_row[row], abs=1e-4)


def test_nan_rows_are_never_returned_by_an_index(vectors):
    with_nan = vectors.copy()
    with_nan[[3, 10]] = np.nan
    search = SimilarCases("cosine", index="nndescent").fit(with_nan)
    rows = search.query(with_nan[11], k=20)["row"]
    assert not {3, 10} & set(rows)
    with pytest.raises(ValueError, match="row 3 .* has no vector"):
        search.query(3)


def test_auto_is_exact_below_the_threshold_and_an_index_above(vectors, monkeypatch):
    assert SimilarCases().fit(vectors).index_kind_ == "exact"
    monkeypatch.setattr(similar, "INDEX_MIN_ROWS", 1000)
    expected = "hnsw" if faiss_available() else "nndescent"
    assert SimilarCases("cosine").fit(vectors).index_kind_ == expected
    assert SimilarCases("manhattan").fit(vectors).index_kind_ == "nndescent"
    monkeypatch.setattr(similar, "faiss_available", lambda: False)
    assert SimilarCases("cosine").fit(vectors).index_kind_ == "nndescent"
    with pytest.raises(ValueError, match="index='hnsw' needs faiss"):
        SimilarCases("cosine", index="hnsw").fit(vectors)


def test_bad_index_and_metric_combinations(vectors):
    with pytest.raises(ValueError, match="index='kdtree' is not supported"):
        SimilarCases(index="kdtree").fit(vectors)
    if faiss_available():
        with pytest.raises(ValueError, match="use index='nndescent' for manhattan"):
            SimilarCases("manhattan", index="hnsw").fit(vectors)
