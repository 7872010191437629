"""The Ray engine on a local Ray instance: same vectors as the local engine, same cache, retries.

Real covid-chestxray images, the real efficientnet-lite0 encoder, a real (small) Ray instance.
Skipped, with the reason shown, where Ray is not installed (it is the optional ``[ray]`` extra).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason='Ray is an optional extra: pip install -e ".[ray]"')
pytest.importorskip("ray.data", reason='Ray Data is missing: pip install -e ".[ray]"')

from core.cache import EmbeddingCache  # noqa: E402
from core.embed import embed_dataset  # noqa: E402
from core.ray_engine import EncoderActor, RayEngineError, embed_dataset_ray  # noqa: E402

pytestmark = pytest.mark.slow
ENCODER = "efficientnet-lite0"
N_IMAGES = 12


class LoggingActor(EncoderActor):
    """EncoderActor that logs every batch it computes to a file (one line per image), and
    kills its own worker process on its first batch when ``crash_marker`` does not exist yet
    (creating it first, so the restarted actor goes on)."""

    log_file: str = ""
    crash_marker: str = ""

    def __call__(self, batch):
        if self.crash_marker and not os.path.exists(self.crash_marker):
            Path(self.crash_marker).write_text(str(os.getpid()))
            os._exit(1)
        with open(self.log_file, "a", encoding="utf-8") as handle:
            handle.writelines(f"{os.getpid()} {image_id}\n" for image_id in batch["image_id"])
        return super().__call__(batch)


def _actor_class(log_file: Path, crash_marker: Path | None) -> type:
    # A fresh subclass per test, shipped to the workers by value (this module is not
    # importable there).
    return type("LoggingActorFor", (LoggingActor,), {
        "log_file": str(log_file), "crash_marker": str(crash_marker) if crash_marker else "",
        "__module__": __name__,
    })


@pytest.fixture(scope="module")
def local_ray():
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    root = str(Path(__file__).resolve().parents[2])
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 1024**2,
             log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": root}})
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def images(covid_dir: Path) -> pd.DataFrame:
    files = sorted(
        p for p in (covid_dir / "images").iterdir() if p.suffix.lower() in {".jpg", ".png"}
    )[:N_IMAGES]
    rows = []
    for i, path in enumerate(files):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append({"image_id": f"{digest}-0", "path": str(path), "frame": 0,
                     "patient_id": f"p{i // 3}"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def local_vectors(images, tmp_path_factory) -> np.ndarray:
    result = embed_dataset(images, ENCODER, cache_root=tmp_path_factory.mktemp("local-cache"),
                           device="cpu")
    assert (result.n_computed, result.n_failed) == (N_IMAGES, 0)
    return result.vectors


def _logged(log_file: Path) -> list[str]:
    return log_file.read_text("utf-8").split("\n")[:-1] if log_file.exists() else []


def test_ray_vectors_equal_local_and_second_run_is_all_cache_hits(
    local_ray, images, local_vectors, tmp_path
):
    log_file = tmp_path / "computed.log"
    actor = _actor_class(log_file, None)
    first = embed_dataset_ray(images, ENCODER, cache_root=tmp_path / "cache", batch_size=4,
                              num_actors=1, actor_class=actor)
    assert (first.n_computed, first.n_cached, first.n_failed) == (N_IMAGES, 0, 0)
    assert first.image_ids.tolist() == images["image_id"].tolist()
    assert np.abs(first.vectors - local_vectors).max() < 1e-4
    assert sorted(line.split()[1] for line in _logged(log_file)) == sorted(first.image_ids)

    # Written into the same content-addressed cache the local engine reads.
    local_again = embed_dataset(images, ENCODER, cache_root=tmp_path / "cache", device="cpu")
    assert (local_again.n_cached, local_again.n_computed) == (N_IMAGES, 0)
    assert local_again.namespace == first.namespace and local_again.key == first.key
    np.testing.assert_array_equal(local_again.vectors, first.vectors)

    second = embed_dataset_ray(images, ENCODER, cache_root=tmp_path / "cache", batch_size=4,
                               num_actors=1, actor_class=actor)
    assert (second.n_cached, second.n_computed, second.n_failed) == (N_IMAGES, 0, 0)
    np.testing.assert_array_equal(second.vectors, first.vectors)
    assert len(_logged(log_file)) == N_IMAGES  # no actor computed anything the second time


def test_a_killed_worker_is_restarted_and_its_batch_retried(
    local_ray, images, local_vectors, tmp_path
):
    log_file, marker = tmp_path / "computed.log", tmp_path / "crashed"
    result = embed_dataset_ray(images, ENCODER, cache_root=tmp_path / "cache", batch_size=4,
                               num_actors=1, actor_class=_actor_class(log_file, marker),
                               max_restarts=2)
    assert marker.exists()  # a worker did die (os._exit on its first batch)
    crashed_pid = int(marker.read_text())
    pids = {line.split()[0] for line in _logged(log_file)}
    assert pids and str(crashed_pid) not in pids  # the batches ran in the restarted worker
    assert (result.n_computed, result.n_failed) == (N_IMAGES, 0)
    assert np.abs(result.vectors - local_vectors).max() < 1e-4
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.contains(result.namespace, result.image_ids).all()


def test_an_actor_that_keeps_dying_fails_with_a_clear_error(local_ray, images, tmp_path):
    log_file, marker = tmp_path / "computed.log", tmp_path / "crashed"
    with pytest.raises(RayEngineError, match="ActorDiedError.*run again to compute the rest"):
        embed_dataset_ray(images.iloc[:4], ENCODER, cache_root=tmp_path / "cache", batch_size=4,
                          num_actors=1, actor_class=_actor_class(log_file, marker),
                          max_restarts=0)
    assert marker.exists() and not log_file.exists()


def test_failures_come_back_with_reasons_and_are_not_cached(local_ray, images, tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("a report, not pixels")
    table = pd.concat([images.iloc[:3], pd.DataFrame([{
        "image_id": "bad-0", "path": str(bad), "frame": 0, "patient_id": "px"}])],
        ignore_index=True)
    result = embed_dataset_ray(table, ENCODER, cache_root=tmp_path / "cache", batch_size=4,
                               num_actors=1)
    assert (result.n_computed, result.n_failed) == (3, 1)
    failure = result.failures.iloc[0]
    assert failure["image_id"] == "bad-0" and failure["path"] == str(bad) and failure["reason"]
    assert np.isnan(result.vectors[3]).all()
    assert not EmbeddingCache(tmp_path / "cache").contains(result.namespace, ["bad-0"]).any()
