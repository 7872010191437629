"""EmbeddingCache: content addressing, chunked crash-safe writes, reads, compact, prune, info."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.cache import EmbeddingCache, namespace_key, text_key

REPO_ROOT = Path(__file__).resolve().parents[2]
DIM = 64

# The "embedding job" used in-process and in a subprocess that gets SIGKILLed: look ids up,
# compute the misses (deterministically from the id number), write through the chunked writer.
JOB = """
import time
import numpy as np
from core.cache import EmbeddingCache


def vector_for(i, dim):
    return np.random.default_rng(i).standard_normal(dim).astype(np.float32)


def run_job(root, namespace, n, dim, chunk_size, delay=0.0):
    cache = EmbeddingCache(root)
    ids = [f"img-{i:05d}" for i in range(n)]
    hit = cache.contains(namespace, ids)
    computed = 0
    with cache.writer(namespace, chunk_size=chunk_size) as writer:
        for i in np.flatnonzero(~hit):
            writer.add([ids[i]], vector_for(int(i), dim)[None, :])
            computed += 1
            if delay:
                time.sleep(delay)
    return computed
"""
_job: dict = {}
exec(compile(JOB, "cache_job", "exec"), _job)
run_job, vector_for = _job["run_job"], _job["vector_for"]


def ids_for(n: int, start: int = 0) -> list[str]:
    return [f"img-{i:05d}" for i in range(start, start + n)]


def vectors_for(n: int, start: int = 0) -> np.ndarray:
    return np.stack([vector_for(i, DIM) for i in range(start, start + n)])


def shard_files(root: Path, namespace: str) -> list[Path]:
    return sorted((root / namespace).glob("chunk-*.arrow"))


@pytest.fixture
def cache(tmp_path: Path) -> EmbeddingCache:
    return EmbeddingCache(tmp_path / "embeddings")


@pytest.fixture
def namespace(cache: EmbeddingCache) -> str:
    return cache.namespace("test-encoder", "v1", {"size": 224, "mean": [0.5]}, dim=DIM)


def test_get_returns_hits_and_nan_rows_for_misses(cache, namespace):
    assert cache.put(namespace, ids_for(5), vectors_for(5)) == 5
    query = ["img-00003", "missing-a", "img-00000", "missing-b"]
    vectors, hit = cache.get(namespace, query)
    assert vectors.shape == (4, DIM) and vectors.dtype == np.float32
    assert hit.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(vectors[0], vector_for(3, DIM))
    np.testing.assert_array_equal(vectors[2], vector_for(0, DIM))
    assert np.isnan(vectors[[1, 3]]).all()


def test_get_on_unknown_namespace_is_all_misses(cache):
    vectors, hit = cache.get(namespace_key("never-written", "1", {}), ["a", "b"])
    assert not hit.any() and vectors.shape[0] == 2 and np.isnan(vectors).all()


def test_second_run_computes_nothing_and_adding_10_computes_10(cache, namespace):
    root = cache.root
    assert run_job(root, namespace, 40, DIM, 16) == 40
    assert run_job(root, namespace, 40, DIM, 16) == 0
    assert run_job(root, namespace, 50, DIM, 16) == 10
    vectors, hit = EmbeddingCache(root).get(namespace, ids_for(50))
    assert hit.all()
    np.testing.assert_array_equal(vectors, vectors_for(50))


def test_namespace_depends_on_preprocess_params_not_their_order(cache):
    base = namespace_key("enc", "v1", {"size": 224, "mean": [0.5, 0.5]})
    assert namespace_key("enc", "v1", {"mean": [0.5, 0.5], "size": 224}) == base
    assert namespace_key("enc", "v1", {"size": 256, "mean": [0.5, 0.5]}) != base
    assert namespace_key("enc", "v2", {"size": 224, "mean": [0.5, 0.5]}) != base
    assert namespace_key("enc2", "v1", {"size": 224, "mean": [0.5, 0.5]}) != base

    small = cache.namespace("enc", "v1", {"size": 224})
    large = cache.namespace("enc", "v1", {"size": 256})
    cache.put(small, ids_for(3), vectors_for(3))
    assert cache.contains(small, ids_for(3)).all()
    assert not cache.contains(large, ids_for(3)).any()


def test_failures_are_not_cached(cache, namespace):
    vectors = vectors_for(3)
    vectors[1] = np.nan
    with pytest.raises(ValueError, match="not finite.*img-00001"):
        cache.put(namespace, ids_for(3), vectors)
    with pytest.raises(ValueError, match="not finite"), cache.writer(namespace) as writer:
        writer.add(ids_for(3), vectors)
    assert not cache.contains(namespace, ids_for(3)).any()


def test_bad_inputs_are_refused(cache, namespace):
    with pytest.raises(ValueError, match="shape"):
        cache.put(namespace, ids_for(3), vectors_for(2))
    cache.put(namespace, ids_for(2), vectors_for(2))
    with pytest.raises(ValueError, match="dim 8 but namespace"):
        cache.put(namespace, ["other"], np.ones((1, 8)))
    with pytest.raises(ValueError, match="namespace '../escape'"):
        cache.get("../escape", ["a"])
    with pytest.raises(ValueError, match="non-empty strings"):
        cache.put(namespace, ["", "b"], vectors_for(2))
    with pytest.raises(ValueError, match="plain JSON"):
        namespace_key("enc", "v1", {"size": object()})


def test_put_skips_ids_already_cached(cache, namespace):
    assert cache.put(namespace, ids_for(4), vectors_for(4)) == 4
    assert cache.put(namespace, ids_for(6), vectors_for(6)) == 2
    assert cache.info().loc[0, "n_vectors"] == 6


def test_writer_flushes_every_chunk_size(cache, namespace):
    writer = cache.writer(namespace, chunk_size=100)
    writer.add(ids_for(250), vectors_for(250))
    # Two full chunks are on disk before the writer is closed; 50 wait in the buffer.
    assert len(shard_files(cache.root, namespace)) == 2
    assert EmbeddingCache(cache.root).contains(namespace, ids_for(250)).sum() == 200
    writer.close()
    assert len(shard_files(cache.root, namespace)) == 3
    assert EmbeddingCache(cache.root).contains(namespace, ids_for(250)).all()


def test_writer_flushes_buffer_when_the_block_raises(cache, namespace):
    with pytest.raises(RuntimeError), cache.writer(namespace, chunk_size=100) as writer:
        writer.add(ids_for(30), vectors_for(30))
        raise RuntimeError("encoder crashed after 30 good vectors")
    assert cache.contains(namespace, ids_for(30)).all()


def test_reader_sees_shards_written_after_it_was_built(cache, namespace):
    cache.put(namespace, ids_for(5), vectors_for(5))
    assert cache.contains(namespace, ids_for(10)).sum() == 5
    EmbeddingCache(cache.root).put(namespace, ids_for(5, start=5), vectors_for(5, start=5))
    assert cache.contains(namespace, ids_for(10)).all()


def test_killed_writer_leaves_intact_chunks_and_resume_computes_the_rest(tmp_path):
    root = tmp_path / "embeddings"
    namespace = EmbeddingCache(root).namespace("killed", "v1", {}, dim=DIM)
    n, chunk_size = 3000, 50
    script = JOB + (
        f"\nrun_job({str(root)!r}, {namespace!r}, {n}, {DIM}, {chunk_size}, delay=0.002)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while len(shard_files(root, namespace)) < 2:
            assert process.poll() is None, "writer exited before it was killed"
            assert time.monotonic() < deadline, "writer wrote no chunks within 60 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL

    fresh = EmbeddingCache(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unreadable shard would warn
        vectors, hit = fresh.get(namespace, ids_for(n))
    n_stored = int(hit.sum())
    # Only whole chunks land, and every stored vector is exactly what was computed.
    assert n_stored >= 2 * chunk_size and n_stored % chunk_size == 0 and n_stored < n
    np.testing.assert_array_equal(vectors[hit], vectors_for(n)[hit])
    assert run_job(root, namespace, n, DIM, chunk_size) == n - n_stored

    vectors, hit = EmbeddingCache(root).get(namespace, ids_for(n))
    assert hit.all()
    np.testing.assert_array_equal(vectors, vectors_for(n))
    assert not list((root / namespace).glob(".tmp-*"))


def test_orphaned_temp_files_are_ignored_and_removed(cache, namespace):
    cache.put(namespace, ids_for(20), vectors_for(20))
    shard = shard_files(cache.root, namespace)[0]
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    half = shard.read_bytes()[: shard.stat().st_size // 2]
    orphan = shard.parent / f".tmp-{exited.pid}-0123abcd.arrow"
    orphan.write_bytes(half)
    in_flight = shard.parent / f".tmp-{os.getpid()}-4567abcd.arrow"  # this live process's
    in_flight.write_bytes(half)

    fresh = EmbeddingCache(cache.root)
    vectors, hit = fresh.get(namespace, ids_for(20))
    assert hit.all()
    np.testing.assert_array_equal(vectors, vectors_for(20))
    assert not orphan.exists()
    assert in_flight.exists()
    assert fresh.info().loc[0, "n_shards"] == 1


def test_unreadable_shard_is_skipped_with_a_warning_and_pruned(cache, namespace):
    cache.put(namespace, ids_for(10), vectors_for(10))
    good = shard_files(cache.root, namespace)[0]
    damaged = good.with_name("chunk-00000000000000000001-deadbeef.arrow")
    damaged.write_bytes(good.read_bytes()[:200])

    fresh = EmbeddingCache(cache.root)
    with pytest.warns(UserWarning, match="unreadable cache shard"):
        vectors, hit = fresh.get(namespace, ids_for(10))
    assert hit.all()
    np.testing.assert_array_equal(vectors, vectors_for(10))
    assert fresh.info().loc[0, "n_unreadable"] == 1
    fresh.prune(ids_for(10))
    assert not damaged.exists() and good.exists()


def test_compact_merges_shards_and_keeps_every_vector(cache, namespace):
    with cache.writer(namespace, chunk_size=10) as writer:
        writer.add(ids_for(95), vectors_for(95))
    assert len(shard_files(cache.root, namespace)) == 10
    assert cache.compact(namespace) == 10
    assert len(shard_files(cache.root, namespace)) == 1
    vectors, hit = EmbeddingCache(cache.root).get(namespace, ids_for(95))
    assert hit.all()
    np.testing.assert_array_equal(vectors, vectors_for(95))
    assert cache.compact(namespace) == 0


def test_prune_keeps_only_the_given_ids(cache, namespace):
    other = cache.namespace("other-encoder", "v1", {}, dim=DIM)
    with cache.writer(namespace, chunk_size=10) as writer:
        writer.add(ids_for(30), vectors_for(30))
    cache.put(other, ids_for(5, start=100), vectors_for(5, start=100))
    keep = set(ids_for(5)) | set(ids_for(5, start=20))  # rows of shard 1 and shard 3

    stats = cache.prune(keep)
    assert stats["vectors_kept"] == 10 and stats["vectors_removed"] == 25
    assert stats["shards_rewritten"] == 2 and stats["shards_deleted"] == 2
    assert stats["namespaces"] == 2 and stats["namespaces_removed"] == 1
    assert stats["bytes_after"] < stats["bytes_before"]
    fresh = EmbeddingCache(cache.root)
    vectors, hit = fresh.get(namespace, ids_for(30))
    assert hit.tolist() == [i < 5 or i >= 20 and i < 25 for i in range(30)]
    np.testing.assert_array_equal(vectors[hit], vectors_for(30)[hit])
    assert fresh.namespaces() == [namespace]


def test_info_lists_each_namespace(cache, namespace):
    assert EmbeddingCache(cache.root / "elsewhere").info().empty
    assert cache.info()["n_vectors"].tolist() == [0]  # registered, nothing stored yet
    cache.put(namespace, ids_for(7), vectors_for(7))
    cache.put(namespace, ids_for(3, start=7), vectors_for(3, start=7))
    info = cache.info()
    assert list(info.columns[:8]) == [
        "namespace",
        "encoder",
        "version",
        "dim",
        "n_vectors",
        "n_shards",
        "n_unreadable",
        "bytes",
    ]
    row = info.iloc[0]
    assert (row["namespace"], row["encoder"], row["version"]) == (namespace, "test-encoder", "v1")
    assert (row["dim"], row["n_vectors"], row["n_shards"]) == (DIM, 10, 2)
    assert row["bytes"] > 10 * DIM * 4


def test_text_key_is_content_addressed():
    assert text_key("no acute findings") == text_key("no acute findings")
    assert text_key("no acute findings") != text_key("No acute findings")
    assert text_key("x").startswith("text-") and len(text_key("x")) == 5 + 64


def _dataset_folder(root: Path, image_ids: list[str], texts: list[str | None]) -> Path:
    root.mkdir(parents=True)
    images = pd.DataFrame(
        {"image_id": image_ids, "patient_id": "p1", "path": "/nowhere", "frame": 0, "text": texts}
    )
    images.to_parquet(root / "images.parquet")
    pd.DataFrame({"patient_id": ["p1"]}).to_parquet(root / "patients.parquet")
    return root


def _cache_cli(argv: list[str]) -> int:
    from cli.commands import cache as cache_command

    parser = argparse.ArgumentParser()
    cache_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cache_cli_info_and_prune_keep_dataset_ids_and_texts(tmp_path, capsys):
    cache = EmbeddingCache(tmp_path / "embeddings")
    images_ns = cache.namespace("pixels", "v1", {}, dim=DIM)
    text_ns = cache.namespace("minilm", "v1", {}, dim=DIM)
    cache.put(images_ns, ids_for(6), vectors_for(6))
    cache.put(text_ns, [text_key("kept report"), text_key("gone")], vectors_for(2))
    dataset = _dataset_folder(tmp_path / "ds", ids_for(2), ["kept report", None])

    assert _cache_cli(["cache", "info", "--cache", str(cache.root)]) == 0
    out = capsys.readouterr().out
    assert images_ns in out and text_ns in out and "8 vectors" in out

    with pytest.raises(ValueError, match="needs --datasets"):
        _cache_cli(["cache", "prune", "--cache", str(cache.root)])
    assert (
        _cache_cli(["cache", "prune", "--cache", str(cache.root), "--datasets", str(dataset)]) == 0
    )
    assert "kept 3 vectors, removed 5" in capsys.readouterr().out
    fresh = EmbeddingCache(cache.root)
    assert fresh.contains(images_ns, ids_for(6)).tolist() == [True, True] + [False] * 4
    assert fresh.contains(text_ns, [text_key("kept report"), text_key("gone")]).tolist() == [
        True,
        False,
    ]


# ------------------------------------------------- the atomic-write protocol, at cache level


def test_a_shard_is_fsynced_under_a_temp_name_before_it_is_renamed_into_place(cache, namespace, monkeypatch):
    """The cache must write shards through core.atomic: data under a temp name, fsynced, then
    renamed. Writing straight to the final name, or renaming before fsync, fails here."""
    from core import atomic

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(source, target) -> None:
        events.append(("replace", f"{Path(source).name} -> {Path(target).name}"))
        real_replace(source, target)

    def hook(stage: str, path: Path) -> None:
        events.append((stage, path.name))
        if stage in ("written", "synced"):
            assert atomic.is_temp(path) and path.exists()
            assert not shard_files(cache.root, namespace), "a shard is visible before its rename"

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(atomic, "fault_hook", hook)
    cache.put(namespace, ids_for(10), vectors_for(10))
    (shard,) = shard_files(cache.root, namespace)
    stages = [kind for kind, _ in events]
    assert stages[:4] == ["written", "fsync", "synced", "replace"], events
    temp_name = events[0][1]
    assert atomic.is_temp(Path(temp_name)) and events[1] == ("fsync", temp_name)
    assert events[3] == ("replace", f"{temp_name} -> {shard.name}")
    assert events[-1] == ("renamed", shard.name)


@pytest.mark.parametrize("stage", ["written", "synced"])
def test_a_shard_write_failing_inside_the_write_leaves_no_partial_shard(cache, namespace, monkeypatch, stage):
    from core import atomic

    cache.put(namespace, ids_for(10), vectors_for(10))

    def power_cut(at: str, path: Path) -> None:
        if at == stage:
            raise OSError("power cut")

    monkeypatch.setattr(atomic, "fault_hook", power_cut)
    more_ids = [f"more-{i}" for i in range(10)]
    with pytest.raises(OSError, match="power cut"):
        cache.put(namespace, more_ids, vectors_for(10) + 1)
    monkeypatch.setattr(atomic, "fault_hook", None)
    assert len(shard_files(cache.root, namespace)) == 1
    assert not list((cache.root / namespace).glob(".tmp-*"))
    fresh = EmbeddingCache(cache.root)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectors, hit = fresh.get(namespace, ids_for(10) + more_ids)
    assert hit.tolist() == [True] * 10 + [False] * 10
    np.testing.assert_array_equal(vectors[:10], vectors_for(10))


def test_a_writer_killed_inside_a_shard_write_leaves_only_complete_shards(tmp_path):
    """SIGKILL after the shard's bytes are written, before fsync and rename: the cache reads
    back only the complete shards and drops the dead writer's temp file."""
    root = tmp_path / "embeddings"
    namespace = EmbeddingCache(root).namespace("killed-mid-write", "v1", {}, dim=DIM)
    script = JOB + textwrap.dedent(f"""
        import os, signal
        from core import atomic
        from core.cache import EmbeddingCache
        cache = EmbeddingCache({str(root)!r})
        ids = [f"img-{{i:05d}}" for i in range(30)]
        vectors = np.stack([vector_for(i, {DIM}) for i in range(30)])
        cache.put({namespace!r}, ids[:10], vectors[:10])
        def kill(stage, path):
            if stage == "written":
                os.kill(os.getpid(), signal.SIGKILL)
        atomic.fault_hook = kill
        cache.put({namespace!r}, ids[10:], vectors[10:])
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, timeout=120)
    assert completed.returncode == -signal.SIGKILL
    directory = root / namespace
    temps = list(directory.glob(".tmp-*"))
    assert len(temps) == 1 and temps[0].stat().st_size > 0  # the half-done shard, hidden
    assert len(shard_files(root, namespace)) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectors, hit = EmbeddingCache(root).get(namespace, ids_for(30))
    assert hit.tolist() == [True] * 10 + [False] * 20
    np.testing.assert_array_equal(vectors[:10], vectors_for(30)[:10])
    assert not temps[0].exists()  # its writer is dead: cleaned on the next listing
