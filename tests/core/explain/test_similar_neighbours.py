"""SimilarCases.neighbours: every row's k nearest at once, through the same index as query()."""

from __future__ import annotations

import numpy as np
import pytest

from core.explain.similar import SimilarCases, faiss_available


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 3, (10, 16))
    return (centres[rng.integers(0, 10, 600)] + rng.normal(0, 1, (600, 16))).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_neighbours_equal_one_query_per_row(vectors, metric):
    search = SimilarCases(metric, index="exact").fit(vectors)
    rows, distances = search.neighbours(4, chunk=128)  # several chunks
    assert rows.shape == distances.shape == (600, 4)
    for row in (0, 17, 301, 599):
        answer = search.query(row, k=4)
        assert rows[row].tolist() == answer["row"].tolist()
        assert distances[row] == pytest.approx(answer["distance"].to_numpy(), abs=1e-9)
    assert not (rows == np.arange(600)[:, None]).any()  # a row never lists itself
    assert np.all(np.diff(distances, axis=1) >= -1e-9)


def test_neighbours_keep_exact_copies_and_skip_nan_rows(vectors):
    data = vectors.copy()
    data[10] = data[20]  # an exact copy: its distance-0 twin is an answer
    data[[3, 7]] = np.nan
    rows, distances = SimilarCases("euclidean", index="exact").fit(data).neighbours(3)
    assert rows[10, 0] == 20 and rows[20, 0] == 10 and distances[10, 0] == pytest.approx(0.0)
    assert (rows[[3, 7]] == -1).all() and np.isinf(distances[[3, 7]]).all()
    assert not np.isin(rows, [3, 7]).any()
    with pytest.raises(ValueError, match="k=599 must be an integer in 1..597"):
        SimilarCases("euclidean", index="exact").fit(data).neighbours(599)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
def test_neighbours_through_hnsw_agree_with_exact(vectors):
    exact, _ = SimilarCases("cosine", index="exact").fit(vectors).neighbours(5)
    approximate, _ = SimilarCases("cosine", index="hnsw").fit(vectors).neighbours(5)
    hits = sum(len(set(a) & set(b)) for a, b in zip(exact, approximate, strict=True))
    assert hits / exact.size > 0.95
    assert not (approximate == np.arange(600)[:, None]).any()
