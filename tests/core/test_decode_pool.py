"""Decoding for the model in worker processes (core.decode_pool through iter_image_embeddings):
the same vectors as the thread path on real full-size radiographs and DICOMs of every syntax,
bad files reported by name while the batch goes on, a killed worker costing no image, the
settings that choose processes or threads, and the scheduling: workers forked from a fork
server, each batch dispatched largest file first, idle OpenMP threads sleeping."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

import core.decode_pool
from core.decode_pool import (
    DECODE_PROCESSES_ENV,
    PROCESS_MIN_ITEMS,
    DecodePool,
    decode_for_model,
    decode_processes,
    prestart_workers,
    use_processes,
)
from core.encoders import get_encoder, iter_image_embeddings
from core.encoders.batching import _largest_first
from core.pixels import load_pixels

SHARED_DATA = Path(os.environ.get("SCANATLAS_SHARED_DATA",
                                  Path(__file__).resolve().parents[3] / "shared" / "data"))
FULLSIZE = SHARED_DATA / "covid-chestxray-fullsize" / "images"


@pytest.fixture(scope="module")
def images(covid_dir: Path) -> Path:
    return covid_dir / "images"


@pytest.fixture(scope="module")
def fullsize_files() -> list[Path]:
    if not FULLSIZE.is_dir():
        pytest.fail(f"real test data missing: {FULLSIZE} (set SCANATLAS_SHARED_DATA)")
    files = sorted(p for p in FULLSIZE.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    jpegs = [p for p in files if p.suffix.lower() != ".png"]
    pngs = [p for p in files if p.suffix.lower() == ".png"]
    return jpegs[:12] + pngs[:6]


@pytest.fixture(scope="module")
def dicom_radiographs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """pydicom-data radiographs: uncompressed, JPEG 2000 lossless and lossy, and a JPEG-LS
    lossless copy of one (pydicom-data has no JPEG-LS radiograph)."""
    names = ["RG3_UNCR.dcm", "RG3_J2KR.dcm", "RG1_J2KI.dcm", "MR2_J2KI.dcm", "MR2_UNCR.dcm"]
    paths = [Path(pydicom.data.get_testdata_file(name)) for name in names]
    dataset = pydicom.dcmread(paths[0])
    dataset.compress(pydicom.uid.JPEGLSLossless)
    jpeg_ls = tmp_path_factory.mktemp("jpeg-ls") / "RG3_JLSL.dcm"
    dataset.save_as(jpeg_ls)
    return [*paths, jpeg_ls]


def _vectors(chunks) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, str]]]:
    vectors, failures = {}, {}
    for chunk in chunks:
        vectors.update(zip(chunk.image_ids, chunk.vectors, strict=True))
        failures.update({image_id: (path, reason) for image_id, path, reason in chunk.failures})
    return vectors, failures


def test_processes_give_the_vectors_of_the_thread_path_on_full_size_radiographs(
        fullsize_files, dicom_radiographs):
    encoder = get_encoder("efficientnet-lite0", device="cpu")
    paths = [*fullsize_files, *dicom_radiographs]
    assert len(paths) >= PROCESS_MIN_ITEMS  # so that processes=2 really uses processes
    items = [(path.name, str(path), 0) for path in paths]
    in_processes, failed = _vectors(iter_image_embeddings(items, encoder, batch_size=8,
                                                          processes=2))
    in_threads, _ = _vectors(iter_image_embeddings(items, encoder, batch_size=8, processes=0))
    assert not failed
    assert list(in_processes) == [item[0] for item in items]
    for image_id, vector in in_processes.items():
        assert np.array_equal(vector, in_threads[image_id]), image_id
    # ... and equal to decoding and preprocessing one image by hand.
    jpeg_ls = dicom_radiographs[-1]
    by_hand = encoder.embed_batch(encoder.preprocess(load_pixels(jpeg_ls, min_size=224))[None])[0]
    assert np.abs(in_processes[jpeg_ls.name] - by_hand).max() < 1e-5
    # The JPEG-LS copy decodes to the pixels of the uncompressed original.
    assert np.array_equal(in_processes[jpeg_ls.name], in_processes["RG3_UNCR.dcm"])


def test_bad_files_in_worker_processes_are_failures_naming_the_file(images: Path, tmp_path: Path):
    encoder = get_encoder("pixels")
    good = sorted(p for p in images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is a text file, not a scan")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(next(p for p in good if p.suffix == ".png").read_bytes()[:2000])
    bad = {"bad-text": not_an_image, "bad-truncated": truncated, "bad-missing": tmp_path / "gone.jpg"}
    items = [(p.name, str(p), 0) for p in good[:PROCESS_MIN_ITEMS]]
    items[3:3] = [(image_id, str(path), 0) for image_id, path in bad.items()]
    vectors, failures = _vectors(iter_image_embeddings(items, encoder, batch_size=5, processes=2))
    assert set(failures) == set(bad)
    assert len(vectors) == PROCESS_MIN_ITEMS
    for image_id, path in bad.items():
        assert failures[image_id][0] == str(path)
    assert failures["bad-text"][1].startswith("not_an_image")
    assert failures["bad-truncated"][1].split(":")[0] in {"truncated", "unreadable"}
    assert failures["bad-missing"][1].startswith("unreadable")


@pytest.mark.timeout(300)
def test_a_killed_worker_process_costs_no_image(images: Path):
    encoder = get_encoder("pixels")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    small = [(p.name, str(p), 0) for p in files[:24]]
    # The workers are killed while they decode 1,760 px JPEG 2000 radiographs (0.3 s and more
    # each), as a decoder crash would: not while one writes its result back, the moment at
    # which Python 3.11's ProcessPoolExecutor can wait forever for the rest of a message.
    big = pydicom.data.get_testdata_file("RG3_J2KR.dcm")
    items = [*small[:4], *[(f"big-{i}", big, 0) for i in range(8)], *small[4:]]
    chunks = iter_image_embeddings(items, encoder, batch_size=4, processes=2)
    first = next(chunks)
    workers = multiprocessing.active_children()
    assert workers  # the decoding runs in worker processes
    for worker in workers:
        os.kill(worker.pid, signal.SIGKILL)
    vectors, failures = _vectors([first, *chunks])
    assert not failures
    assert list(vectors) == [item[0] for item in items]
    in_threads, _ = _vectors(iter_image_embeddings(items, encoder, batch_size=4, processes=0))
    for image_id, vector in vectors.items():
        assert np.array_equal(vector, in_threads[image_id]), image_id


def test_small_jobs_and_processes_0_decode_in_threads(images: Path, monkeypatch):
    encoder = get_encoder("pixels")
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    items = [(p.name, str(p), 0) for p in files[:PROCESS_MIN_ITEMS]]
    for job, processes in ((items[:PROCESS_MIN_ITEMS - 1], 2), (items, 0), (items, 2)):
        chunks = iter_image_embeddings(job, encoder, batch_size=4, processes=processes)
        next(chunks)
        in_processes = bool(multiprocessing.active_children())
        chunks.close()
        assert in_processes == (processes == 2 and len(job) >= PROCESS_MIN_ITEMS)
    assert use_processes(PROCESS_MIN_ITEMS, 1) and not use_processes(PROCESS_MIN_ITEMS, 0)
    monkeypatch.setenv(DECODE_PROCESSES_ENV, "0")
    assert decode_processes("cuda") == 0 and not use_processes(1000)
    monkeypatch.setenv(DECODE_PROCESSES_ENV, "3")
    assert decode_processes("cpu") == 3
    for bad in ("-1", "two"):
        monkeypatch.setenv(DECODE_PROCESSES_ENV, bad)
        with pytest.raises(ValueError, match=f"{DECODE_PROCESSES_ENV}='{bad}' must be an integer"):
            decode_processes()
    monkeypatch.delenv(DECODE_PROCESSES_ENV)
    cores = os.cpu_count() or 1
    assert decode_processes("cuda") == decode_processes("cpu") == cores


def test_decode_for_model_returns_the_resized_planes_or_a_reason(images: Path, tmp_path: Path):
    path = next(p for p in sorted(images.iterdir()) if p.suffix.lower() in {".jpg", ".jpeg"})
    planes, reason = decode_for_model(("a", str(path), 0), 224, 3)
    assert reason is None and planes.dtype == np.float32 and planes.shape[1:] == (224, 224)
    assert planes.shape[0] in (1, 3)
    grey, _ = decode_for_model(("a", str(path), 0), 64, 1)
    assert grey.shape == (1, 64, 64)
    (tmp_path / "empty.png").write_bytes(b"")
    planes, reason = decode_for_model(("b", str(tmp_path / "empty.png"), 0), 224, 3)
    assert planes is None and reason.startswith("empty_file")
    planes, reason = decode_for_model(("c", str(path), 5), 224, 3)
    assert planes is None and "frame=5 is out of range" in reason
    with pytest.raises(ValueError, match="kind='gpu' must be 'process' or 'thread'"):
        DecodePool("gpu", 1, input_size=224, channels=3)
    with pytest.raises(ValueError, match="workers=0 must be >= 1"):
        DecodePool("thread", 0, input_size=224, channels=3)


def test_each_batch_goes_to_the_workers_largest_file_first(dicom_radiographs, images: Path,
                                                          tmp_path: Path, monkeypatch):
    paths = [str(p) for p in dicom_radiographs]  # 0.1 to 6 MB
    items = [(f"i{n}", path, 0) for n, path in enumerate(paths)]
    items.insert(2, ("missing", str(tmp_path / "gone.dcm"), 0))
    size = {path: os.stat(path).st_size for path in paths}
    order = _largest_first(items, 0, len(items), 4)
    assert sorted(order) == list(range(len(items)))
    blocks = [order[:4], order[4:]]
    assert [sorted(block) for block in blocks] == [[0, 1, 2, 3], [4, 5, 6]]  # batch after batch
    for block in blocks:
        sizes = [size.get(items[index][1], 0) for index in block]
        assert sizes == sorted(sizes, reverse=True)
    assert blocks[0][-1] == 2  # the missing file (size 0) last: it fails at once
    assert _largest_first(items, 4, 3, 4) == order[4:]
    # Through iter_image_embeddings: dispatched in that order, results in input order.
    submitted: list[str] = []
    submit = DecodePool.submit

    def recording_submit(pool, item, *args, **kwargs):
        submitted.append(item[0])
        return submit(pool, item, *args, **kwargs)

    monkeypatch.setattr(DecodePool, "submit", recording_submit)
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    job = [(p.name, str(p), 0) for p in files[:PROCESS_MIN_ITEMS]]
    vectors, failures = _vectors(iter_image_embeddings(job, get_encoder("pixels"), batch_size=8,
                                                       processes=2))
    assert not failures and list(vectors) == [item[0] for item in job]
    sizes = {p.name: p.stat().st_size for p in files}
    assert sorted(submitted) == sorted(vectors)
    for start in range(0, len(job), 8):
        block = submitted[start:start + 8]
        assert sorted(block) == sorted(item[0] for item in job[start:start + 8])
        assert [sizes[name] for name in block] == sorted((sizes[n] for n in block), reverse=True)


@pytest.mark.skipif(sys.platform != "linux", reason="reads parent ids from /proc")
def test_workers_are_forked_from_a_fork_server_that_preloads_no_core_module(images: Path):
    assert not any(name == "core" or name.startswith("core.")
                   for name in core.decode_pool._WORKER_PRELOAD)
    prestart_workers()
    prestart_workers()  # running already: nothing more
    path = next(p for p in sorted(images.iterdir()) if p.suffix.lower() in {".jpg", ".jpeg"})
    with DecodePool("process", 2, input_size=64, channels=1) as pool:
        workers = list(pool._executor._processes)
        assert len(workers) == 2
        for pid in workers:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            assert parent != os.getpid()  # forked by the server, not by this process
        planes, reason = pool.submit(("a", str(path), 0)).result()
    assert reason is None
    assert np.array_equal(planes, decode_for_model(("a", str(path), 0), 64, 1)[0])


def test_core_makes_idle_openmp_threads_spin_briefly_unless_the_user_chose():
    script = "import core, os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    cases = (({}, "10000 None"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "None ACTIVE"),
             ({"GOMP_SPINCOUNT": "5"}, "5 None"))
    for chosen, expected in cases:
        out = subprocess.run([sys.executable, "-c", script], env={**env, **chosen}, capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parents[2])
        assert out.stdout.strip() == expected


def test_the_fork_server_imports_nothing_from_the_folder_the_app_was_started_in(images: Path,
                                                                               tmp_path: Path):
    # `python -c` (how multiprocessing starts its fork server) puts the current directory first
    # on sys.path: started from a hostile folder, its pydicom.py would run in every worker.
    hostile = tmp_path / "dataset"
    hostile.mkdir()
    marker = tmp_path / "ran.txt"
    (hostile / "pydicom.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    path = next(p for p in sorted(images.iterdir()) if p.suffix.lower() == ".png")
    script = tmp_path / "runner" / "run.py"
    script.parent.mkdir()
    script.write_text(
        "from core.decode_pool import DecodePool\n"
        "with DecodePool('process', 1, input_size=32, channels=1) as pool:\n"
        f"    print(pool.submit(('a', {str(path)!r}, 0)).result()[1])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, str(script)], cwd=hostile, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"  # decoded, with the real pydicom beside it
    assert not marker.exists()


def test_jobs_decoded_again_after_a_worker_died_keep_their_previews(images: Path):
    # The embedding's one decode of a PNG makes its stored preview; the jobs a dead worker took
    # with it are decoded again, and must make theirs too (else it is never stored).
    path = str(next(p for p in sorted(images.iterdir()) if p.suffix.lower() == ".png"))
    with DecodePool("process", 1, input_size=32, channels=1) as pool:
        with_preview, without = pool.recover([("a", path, 0), ("b", path, 0)], frozenset({"a"}))
    assert with_preview[1] is None and with_preview[2][:2] == b"\xff\xd8"  # a JPEG
    assert without[1] is None and len(without) == 2
