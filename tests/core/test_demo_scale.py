"""Tests for the archive-scale parts of core.demo: the fast DICOM writer, worker processes and
the synthetic vectors used by the scale benchmarks (issue 12, goal 6)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from core.demo import (
    MAX_PATIENTS,
    _draw_patient,
    _render_slice,
    _slice_dataset,
    make_demo_cohort,
    synthetic_vectors,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_worker_processes_write_the_same_bytes(tmp_path: Path) -> None:
    params = {"n_patients": 6, "n_slices": 3, "size": 48, "seed": 5}
    serial = make_demo_cohort(tmp_path / "serial", **params).parent
    parallel = make_demo_cohort(tmp_path / "parallel", workers=2, **params).parent
    files = _files(serial)
    assert len(files) == 1 + 6 * 3
    assert files == _files(parallel)


def test_fast_writer_matches_pydicoms_own_writer(tmp_path: Path) -> None:
    """Each file is the bytes ``Dataset.save_as`` would write for the same dataset."""
    n_slices, size, seed = 3, 48, 2
    root = make_demo_cohort(tmp_path, n_patients=1, n_slices=n_slices, size=size, seed=seed).parent
    ds = pydicom.dcmread(root / "DEMO-001" / "slice_02.dcm")
    patient = _draw_patient(0, "DEMO-001", _group_of(root), seed)
    rng = np.random.default_rng([seed, 0, size, n_slices])
    volume = [_render_slice(patient, (k + 0.5) / n_slices, size, rng) for k in range(n_slices)]
    top = float(np.percentile(np.stack(volume), 99.5))
    expected = _slice_dataset(patient, volume[2], slice_index=2, n_slices=n_slices, seed=seed,
                              window=(round(top / 2), max(round(top), 1)))
    buffer = io.BytesIO()
    expected.save_as(buffer, enforce_file_format=True)
    assert (root / "DEMO-001" / "slice_02.dcm").read_bytes() == buffer.getvalue()
    assert np.array_equal(ds.pixel_array, volume[2])


def _group_of(root: Path) -> str:
    return (root / "patients.csv").read_text().splitlines()[1].split(",")[-1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_patients": MAX_PATIENTS + 1}, f"n_patients={MAX_PATIENTS + 1}"),
     ({"workers": 0}, "workers=0")],
)
def test_bad_scale_parameters(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_demo_cohort(tmp_path, **kwargs)


def test_synthetic_vectors_shape_determinism_and_prefix() -> None:
    vectors, groups = synthetic_vectors(3000, dim=64, n_groups=5, seed=1, chunk_rows=1000)
    assert vectors.shape == (3000, 64) and vectors.dtype == np.float32
    assert groups.shape == (3000,) and set(np.unique(groups)) == set(range(5))
    again, again_groups = synthetic_vectors(3000, dim=64, n_groups=5, seed=1, chunk_rows=1000)
    assert np.array_equal(vectors, again) and np.array_equal(groups, again_groups)
    prefix, prefix_groups = synthetic_vectors(2000, dim=64, n_groups=5, seed=1, chunk_rows=1000)
    assert np.array_equal(prefix, vectors[:2000]) and np.array_equal(prefix_groups, groups[:2000])
    other, _ = synthetic_vectors(3000, dim=64, n_groups=5, seed=2, chunk_rows=1000)
    assert not np.allclose(other, vectors)


def test_synthetic_groups_are_recoverable_but_not_points() -> None:
    vectors, groups = synthetic_vectors(2000, dim=128, n_groups=4, seed=0)
    labels = KMeans(4, n_init=3, random_state=0).fit_predict(vectors)
    assert adjusted_rand_score(groups, labels) > 0.9
    # Rows of one group are spread out (a manifold plus noise), not copies of the centre.
    spread = vectors[groups == 0].std(axis=0).mean()
    assert spread > 0.3


@pytest.mark.parametrize(("kwargs", "message"),
                         [({"n_rows": 0}, "n_rows=0"), ({"dim": 4}, "dim=4"),
                          ({"n_groups": 1}, "n_groups=1")])
def test_synthetic_vectors_bad_parameters(kwargs: dict, message: str) -> None:
    params = {"n_rows": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        synthetic_vectors(**params)
