"""Issue 10, time to the first map: on a fresh cache the first start shows its steps in the main
area while the demo cohort is made; the Map page draws the PCA map at once with a note while
UMAP is computed in the background, and switches to UMAP when that job ends.

A private SCANATLAS_CACHE (the demo cohort is made here) and the fast ``pixels`` encoder."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import core.embed
from core.cohort import build_cohort
from core.datasets import DEMO_NAME, demo_dataset_ready, ensure_demo_dataset, open_dataset
from core.demo import DEMO_PATIENTS, DEMO_SLICES
from core.embed import embed_dataset, middle_slice_rows
from core.projection import map_params, stored_projection
from core.runs import RunStore
from ui import data

APP = Path(__file__).resolve().parents[2] / "app.py"
TIMEOUT_S = 600


@pytest.fixture(scope="module", autouse=True)
def fresh_cache(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("first-map-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(root))
        patch.setenv("SCANATLAS_DB_URL", f"sqlite:///{root / 'labels.db'}")
        st.cache_data.clear()
        st.cache_resource.clear()
        yield root
        st.cache_data.clear()
        st.cache_resource.clear()


def texts(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def progress_texts(at: AppTest) -> list[str]:
    return [str(bar.text) for bar in at.get("progress")]


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def map_x(at: AppTest) -> np.ndarray:
    (chart,) = at.get("plotly_chart")
    xs = []
    for trace in json.loads(chart.proto.spec)["data"]:
        x = trace["x"]
        xs.append(np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]) if isinstance(x, dict) else np.asarray(x))
    return np.sort(np.concatenate(xs).astype(np.float32))


def pending_notes(at: AppTest) -> list[str]:
    return [str(note.value) for note in at.info if "is being computed" in str(note.value)]


def test_first_start_shows_its_steps_in_the_main_area_then_the_data_page() -> None:
    assert not demo_dataset_ready()
    # The demo job is held at its start (a gate in front of the real work), so that the page
    # is certainly seen while it runs.
    gate = threading.Event()

    def work(*, progress):
        gate.wait(TIMEOUT_S)
        return ensure_demo_dataset(progress=progress).name

    job = data.job_runner().submit(data.demo_job_key(), work)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    assert_clean(at)
    shown = texts(at)
    assert "First start: preparing the demo cohort" in shown
    images = DEMO_PATIENTS * DEMO_SLICES
    assert f"Generating the synthetic demo cohort** ({images} cardiac-MRI slices)" in shown
    assert "Embedding the 320 slices" in shown and "Computing the map" in shown
    assert len(progress_texts(at)) == 1
    assert not at.title  # no page under the status

    gate.set()
    job.future.result(timeout=TIMEOUT_S)
    assert job.message.startswith("Reading the demo cohort in: ") and job.fraction == 1.0
    at.run()
    assert_clean(at)
    assert at.title[0].value == "Data"
    assert next(m.value for m in at.metric if m.label == "Images") == str(images) == "320"


def filling_notes(at: AppTest) -> list[str]:
    return [str(note.value) for note in at.info if str(note.value).startswith("First map: ")]


def test_the_first_map_is_each_patients_middle_slice_while_the_rest_embed(monkeypatch) -> None:
    # The second pass (every slice) is held until the first map has been checked.
    gate = threading.Event()
    real = core.embed.embed_dataset
    images = DEMO_PATIENTS * DEMO_SLICES

    def held(dataset, encoder, **kwargs):
        if len(getattr(dataset, "images", dataset)) == images:
            gate.wait(TIMEOUT_S)
        return real(dataset, encoder, **kwargs)

    monkeypatch.setattr(core.embed, "embed_dataset", held)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"encoder": "pixels", "method": "umap"})
    at.run()
    at.switch_page("app_pages/map.py").run()
    deadline = time.monotonic() + TIMEOUT_S
    while not filling_notes(at):
        assert time.monotonic() < deadline and not gate.is_set()
        time.sleep(0.5)
        at.run()
    assert_clean(at)
    (note,) = filling_notes(at)
    assert note.startswith(f"First map: PCA of each patient's middle slice ({DEMO_PATIENTS} of {images} images)")
    assert any("· PCA ·" in c.value for c in at.caption)

    # What is drawn is the PCA map of the middle-slice cohort, one point per patient.
    dataset = open_dataset(DEMO_NAME)
    rows = middle_slice_rows(dataset.images)
    subset = replace(dataset, images=dataset.images.iloc[rows].reset_index(drop=True))
    first = build_cohort(subset, real(subset, "pixels"), level="patient")
    full_job = data.job_runner().get(data.embedding_job_key(dataset, "pixels"))
    assert full_job is not None and not full_job.done
    pca = stored_projection(len(first.has_vector), first.key, "pca", **map_params("pca", DEMO_PATIENTS))
    assert pca is not None and len(map_x(at)) == DEMO_PATIENTS
    np.testing.assert_allclose(map_x(at), np.sort(pca.coords[:, 0]), rtol=1e-5, atol=1e-6)
    assert data.job_runner().get(data.projection_job_key(first, "umap", 2)) is None  # no UMAP of a preview

    gate.set()
    full_job.future.result(timeout=TIMEOUT_S)
    at.run()
    assert_clean(at)
    assert not filling_notes(at)
    full = build_cohort(dataset, real(dataset, "pixels"), level="patient")
    assert full.key != first.key
    umap_job = data.job_runner().get(data.projection_job_key(full, "umap", 2))
    assert umap_job is not None  # now UMAP starts

    # Leave no UMAP behind: the next test needs this cohort's UMAP neither stored nor started.
    # (With numba compiled by an earlier test module, this job can end, and store its map, before
    # that test looks for its pending note.)
    umap_job.future.result(timeout=TIMEOUT_S)
    umap = stored_projection(len(full.has_vector), full.key, "umap",
                             **map_params("umap", int(full.has_vector.sum())))
    assert umap is not None and RunStore().delete(umap.key)
    data.job_runner.clear()  # a fresh runner, without the finished job


def test_umap_not_stored_yet_draws_pca_with_a_note_then_switches_to_umap(monkeypatch) -> None:
    # The UMAP job is held until its note has been checked: with numba's code already compiled
    # (by an earlier test in the same process), 80 points could otherwise finish first.
    gate = threading.Event()
    real = data.compute_or_load

    def held(vectors, key, method, **kwargs):
        if method == "umap":
            gate.wait(TIMEOUT_S)
        return real(vectors, key, method, **kwargs)

    monkeypatch.setattr(data, "compute_or_load", held)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.query_params.update({"encoder": "pixels", "method": "umap"})
    at.run()
    at.switch_page("app_pages/map.py").run()
    deadline = time.monotonic() + TIMEOUT_S
    while any(text.startswith("Embedding ") for text in progress_texts(at)) or filling_notes(at):  # pixels: seconds
        assert time.monotonic() < deadline
        time.sleep(0.5)
        at.run()
    assert_clean(at)

    dataset = open_dataset(DEMO_NAME)
    cohort = build_cohort(dataset, embed_dataset(dataset, "pixels"), level="patient")
    n_valid = int(cohort.has_vector.sum())
    umap_params = map_params("umap", n_valid)
    job = data.job_runner().get(data.projection_job_key(cohort, "umap", 2))
    assert job is not None  # the page started the UMAP job

    # While it runs: the PCA map, a note, and the caption names PCA.
    (note,) = pending_notes(at)
    assert note.startswith("UMAP is being computed (about ") and "the map will switch when it is ready" in note
    pca = stored_projection(len(cohort.has_vector), cohort.key, "pca", **map_params("pca", n_valid))
    assert pca is not None
    np.testing.assert_allclose(map_x(at), np.sort(pca.coords[:, 0]), rtol=1e-5, atol=1e-6)
    assert any("· PCA ·" in c.value for c in at.caption)
    assert stored_projection(len(cohort.has_vector), cohort.key, "umap", **umap_params) is None and not job.done

    # The job ends: the rerun (the page's fragment would trigger it) draws the stored UMAP map.
    gate.set()
    job.future.result(timeout=TIMEOUT_S)
    at.run()
    assert_clean(at)
    assert not pending_notes(at)
    umap = stored_projection(len(cohort.has_vector), cohort.key, "umap", **umap_params)
    assert umap is not None and umap.method == "umap"
    assert len(map_x(at)) == DEMO_PATIENTS
    np.testing.assert_allclose(map_x(at), np.sort(umap.coords[:, 0]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.sort(umap.coords[:, 0]), np.sort(pca.coords[:, 0]))
    assert any("· UMAP ·" in c.value for c in at.caption)

    # A new session finds UMAP stored: drawn at once, no note, no new job.
    again = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    again.query_params.update({"encoder": "pixels", "method": "umap"})
    again.run()
    again.switch_page("app_pages/map.py").run()
    assert_clean(again)
    assert not pending_notes(again)
    np.testing.assert_allclose(map_x(again), np.sort(umap.coords[:, 0]), rtol=1e-5, atol=1e-6)
    assert data.job_runner().get(data.projection_job_key(cohort, "umap", 2)) is job
