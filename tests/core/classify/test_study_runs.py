"""Classifier studies in the run store: every field survives save -> new process -> load, the
final model predicts the same probabilities from its saved arrays (or its skops file), a
second call loads instead of recomputing, and a model file with an untrusted type is refused."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.classify.runs import (
    LinearProbabilityModel,
    find_run,
    load_skops_model,
    load_study,
    study_runs,
)
from core.classify.study import ClassifierStudy, classifier_study, study_config
from core.runs import RunStore

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve()


def _plain(value):
    """A JSON-comparable picture of ``value`` that keeps dtypes, index, NaN and None apart."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "estimators"):  # FinalModel: compared through its predictions
            return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "estimators"}
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, pd.DataFrame):
        return {"frame": True, "columns": [str(c) for c in value.columns], "columns_name": value.columns.name,
                "dtypes": [str(d) for d in value.dtypes], "index": _plain(value.index),
                "values": [_plain(value[c].tolist()) for c in value.columns]}
    if isinstance(value, pd.Series):
        return {"series": True, "name": value.name, "dtype": str(value.dtype), "index": _plain(value.index),
                "values": _plain(value.tolist())}
    if isinstance(value, pd.Index):
        return {"index": value.tolist(), "name": value.name}
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "shape": list(value.shape), "values": _plain(value.tolist())}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | np.floating):
        return "nan" if np.isnan(value) else float(value)
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if value is pd.NA or value is pd.NaT:
        return "nan"
    raise TypeError(f"unexpected {type(value).__name__}")


def fingerprint(study: ClassifierStudy) -> dict:
    """Every field of the study (the run key and time aside, which only the store sets) plus
    the final model's probabilities on the study's own feature matrix."""
    fields = _plain(study)
    for name in ("from_store",):
        fields.pop(name)
    proba = study.final_model.predict_proba(study.features) if study.final_model is not None else None
    return {"fields": fields, "proba": None if proba is None else proba.tolist()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("study-runs-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(root))
        yield root


def _reload_in_new_process(cache: Path, key: str) -> dict:
    code = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('roundtrip', {str(HERE)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "from core.classify.runs import load_study\n"
        f"study = load_study({key!r})\n"
        "assert study.from_store\n"
        "print(json.dumps(module.fingerprint(study)))\n"
    )
    env = {"SCANATLAS_CACHE": str(cache), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("model", "positive", "level"), [
    ("logreg", "Dilated cardiomyopathy", "patient"),  # binary: plain arrays, fairness table
    ("gbm", None, "image"),  # multi-class: a skops model file, no fairness table
])
def test_every_field_survives_save_new_process_load(cache, demo_dataset, model, positive, level):
    study = classifier_study(demo_dataset, positive=positive, encoder="pixels", use_text=False, model=model,
                             level=level, n_splits=3, n_bootstrap=20)
    assert not study.from_store and study.key.startswith("classifier-study-") and study.created
    assert study.final_model is not None and (study.fairness is not None) == (positive is not None)
    original = fingerprint(study)
    loaded = _reload_in_new_process(cache, study.key)
    probabilities = np.asarray(loaded.pop("proba"), float)
    expected = np.asarray(original.pop("proba"), float)
    assert probabilities.shape == (len(study.table), len(study.report.classes))
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert loaded == json.loads(json.dumps(original))
    # The saved model is what predicts, not a copy of the out-of-fold numbers.
    assert not np.allclose(probabilities, np.nan_to_num(study.report.oof))


def test_binary_logistic_model_is_saved_as_arrays_only(cache, demo_dataset):
    study = classifier_study(demo_dataset, positive="Hypertrophic cardiomyopathy", encoder="pixels", use_text=False,
                             level="patient", n_splits=3, n_bootstrap=20)
    run = RunStore().load("classifier-study", study.key)
    assert not any(name.endswith(".bin") for name in run.files.values())  # nothing to unpickle or unskops
    loaded = load_study(study.key)
    assert isinstance(loaded.final_model.estimators[0], LinearProbabilityModel)
    sklearn_proba = study.final_model.estimators[0].predict_proba(study.features)
    np.testing.assert_allclose(loaded.final_model.estimators[0].predict_proba(study.features), sklearn_proba, atol=1e-9)
    assert list(loaded.final_model.predict(study.features)) == list(study.final_model.predict(study.features))


def test_a_second_call_loads_the_run_and_force_recomputes(cache, demo_dataset):
    options = dict(positive="Dilated cardiomyopathy", encoder="pixels", use_text=False, level="patient",
                   n_splits=3, n_bootstrap=20)
    first = classifier_study(demo_dataset, **options)
    messages = []
    again = classifier_study(demo_dataset, progress=lambda f, m: messages.append(m), **options)
    assert again.from_store and again.key == first.key and messages[-1] == "loaded the saved run"
    pd.testing.assert_frame_equal(again.report.per_class, first.report.per_class)
    assert find_run(demo_dataset, study_config(**options)).key == first.key
    assert first.key in {run.key for run in study_runs(demo_dataset, binary_only=True)}
    forced = classifier_study(demo_dataset, force=True, **options)
    assert not forced.from_store and forced.key == first.key
    # Other settings or other labels are another run.
    other = study_config(**{**options, "n_bootstrap": 21})
    assert find_run(demo_dataset, other) is None
    relabelled = dataclasses.replace(demo_dataset, patients=demo_dataset.patients.assign(
        label=demo_dataset.patients["label"].iloc[::-1].to_numpy()))
    assert classifier_study(relabelled, **options).key != first.key


class Untrusted:
    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_a_model_file_with_an_untrusted_type_is_refused():
    import skops.io

    with pytest.raises(ValueError, match="not trusted.*Untrusted"):
        load_skops_model(skops.io.dumps(Untrusted()))


def test_hostile_keys_never_reach_the_disk(cache):
    for key in ("../../etc/passwd", "classifier-study-../x", "drift-study-0123456789abcdef"):
        with pytest.raises(ValueError):
            load_study(key)


def test_a_study_that_cannot_be_saved_is_returned_with_a_note_and_the_job_fails_clearly(cache, demo_dataset,
                                                                                           monkeypatch):
    from core.classify.study import train_study

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RunStore, "save", full_disk)
    options = dict(positive="Dilated cardiomyopathy", encoder="pixels", use_text=False, level="patient",
                   n_splits=3, n_bootstrap=22)
    study = classifier_study(demo_dataset, **options)
    assert study.key == "" and study.report.mean_auc > 0.5
    assert any(note.startswith("not saved to the run store") and "No space" in note for note in study.notes)
    with pytest.raises(RuntimeError, match="No space left"):
        train_study(demo_dataset, **options)
