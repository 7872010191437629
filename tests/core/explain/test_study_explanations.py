"""Explanations of a classifier study as runs: SHAP is computed once per study and survives a
new process, the Grad-CAM head is trained once and shared by every caller, and Grad-CAM of a
real CNN study gives a heatmap over the scan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.classify.runs import load_study
from core.classify.study import classifier_study
from core.explain import gradcam_head, study_gradcam, study_shap
from core.runs import RunStore

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("explain-runs-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCANATLAS_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def study(cache, demo_dataset):
    return classifier_study(demo_dataset, positive="Dilated cardiomyopathy", encoder="pixels", use_text=False,
                            level="image", n_splits=3, n_bootstrap=20)


def _shap_picture(result) -> dict:
    arrays = {name: np.nan_to_num(np.asarray(getattr(result, name), float), nan=-999.0).round(12).tolist()
              for name in ("values", "base_values", "output_values", "data", "explained_variance_ratio",
                           "feature_mean", "feature_scale")}
    return {**arrays, "explained": np.asarray(result.explained).tolist(), "output": result.output,
            "feature_names": result.feature_names, "sources": result.sources, "classes": result.classes.tolist(),
            "index": result.index.tolist(), "reasons": result.reasons, "skipped": result.skipped_columns,
            "explainer": result.explainer_name,
            "proba": np.asarray(result.model.predict_proba(result.model_input()[result.explained])).round(9).tolist()}


def test_shap_of_a_study_is_saved_once_and_survives_a_new_process(cache, study):
    first = study_shap(study)
    runs = RunStore().runs(kind="explanation")
    assert len(runs) == 1 and runs[0].inputs == {"study": study.key}
    assert first.values.shape == (len(study.table), len(first.feature_names))
    assert any(name.startswith("PC") for name in first.feature_names)
    explained = first.explained
    np.testing.assert_allclose(first.base_values[explained] + first.values[explained].sum(axis=1),
                               first.output_values[explained])
    again = study_shap(load_study(study.key))
    assert RunStore().runs(kind="explanation")[0].created == runs[0].created  # loaded, not recomputed
    assert _shap_picture(again) == _shap_picture(first)
    code = (
        "import json, sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('t', {str(Path(__file__).resolve())!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "from core.classify.runs import load_study\nfrom core.explain import study_shap\n"
        f"print(json.dumps(module._shap_picture(study_shap(load_study({study.key!r})))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={"SCANATLAS_CACHE": str(cache), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == json.loads(json.dumps(_shap_picture(first)))


def test_the_gradcam_head_is_trained_once(cache, study, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    fits = []
    original = LogisticRegression.fit

    def counting_fit(self, X, y, *args, **kwargs):
        fits.append(X.shape)
        return original(self, X, y, *args, **kwargs)

    monkeypatch.setattr(LogisticRegression, "fit", counting_fit)
    head = gradcam_head(study)
    again = gradcam_head(load_study(study.key))
    assert len(fits) == 1 and fits[0][1] == study.image_vectors.shape[1]
    assert head.key == again.key and head.key.startswith("gradcam-head-")
    np.testing.assert_array_equal(head.weights, again.weights)
    assert head.weights.shape == (1, study.image_vectors.shape[1])  # binary: one row, as scikit-learn
    assert head.class_names == ["not Dilated cardiomyopathy", "Dilated cardiomyopathy"]


def test_multilabel_studies_have_no_head_and_shap_says_why(cache, demo_dataset):
    images = demo_dataset.images.assign(
        DCM=(demo_dataset.images["label"] == "Dilated cardiomyopathy").astype(int),
        HCM=(demo_dataset.images["label"] == "Hypertrophic cardiomyopathy").astype(int))
    dataset = type(demo_dataset)(root=demo_dataset.root, images=images, patients=demo_dataset.patients,
                                 report=demo_dataset.report, manifest=demo_dataset.manifest)
    multilabel = classifier_study(dataset, target_column=["DCM", "HCM"], encoder="pixels", use_text=False,
                                  metadata=(), n_splits=3, n_bootstrap=10)
    assert gradcam_head(multilabel) is None
    with pytest.raises(ValueError, match="multi-label"):
        study_shap(multilabel)


@pytest.mark.slow
def test_gradcam_of_a_cnn_study_highlights_part_of_the_scan(cache, demo_dataset):
    cnn = classifier_study(demo_dataset, positive="Dilated cardiomyopathy", encoder="efficientnet-lite0",
                           use_text=False, level="patient", n_splits=3, n_bootstrap=10)
    scan = demo_dataset.images.iloc[0]
    image, overlay = study_gradcam(cnn, str(scan["path"]), int(scan["frame"]))
    assert overlay.shape == (*image.shape[:2], 3) and overlay.dtype == np.uint8
    assert not np.array_equal(overlay[..., 0], overlay[..., 2])  # jet colours were blended in
    assert study_gradcam(cnn, str(scan["path"]), int(scan["frame"]), class_index=5) is None  # no such class
