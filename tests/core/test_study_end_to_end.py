"""End-to-end analysis on the demo cohort, whose answer is known: clustering recovers the
planted groups, the drift study writes and reloads its grid, the classifier study reports
per-class AUC with CIs, a modality comparison and fairness tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.classify.study import classifier_study, write_study
from core.clustering import cluster
from core.cohort import build_cohort
from core.drift import drift_report
from core.embed import embed_dataset
from core.jobs import JobRunner


@pytest.mark.slow
def test_clustering_recovers_the_planted_groups(demo40):
    embedded = embed_dataset(demo40, "efficientnet-lite0")
    cohort = build_cohort(demo40, embedded, level="patient")
    result = cluster(cohort.X, algorithm="kmeans", k=4)
    report = drift_report(cohort.table["label"].to_numpy(dtype=object), result.labels)
    # Chance is ARI 0; the pretrained ImageNet encoder finds the groups without labels.
    assert report.ari > 0.3, report.summary()
    # A permutation of the labels scores near zero: the ARI above is not an artefact.
    shuffled = np.random.default_rng(0).permutation(cohort.table["label"].to_numpy(dtype=object))
    assert drift_report(shuffled, result.labels).ari < 0.15


def test_classifier_study_binary_with_fairness(demo40, tmp_path):
    study = classifier_study(demo40, positive="Dilated cardiomyopathy", encoder="pixels", use_text=False,
                             level="image", n_bootstrap=50, n_splits=4)
    per_class = study.report.per_class.set_index("class")
    assert per_class.loc["Dilated cardiomyopathy", "auc"] > 0.8
    assert (per_class["auc_lo"] <= per_class["auc"]).all() and (per_class["auc"] <= per_class["auc_hi"]).all()
    # Patient-grouped folds: no patient on both sides.
    folds = pd.DataFrame({"patient": study.table["patient_id"], "fold": study.report.folds})
    assert (folds.groupby("patient")["fold"].nunique() == 1).all()
    assert set(study.comparison["modality"]) >= {"image", "metadata", "fused"}
    assert {"sex", "age_band"} <= set(study.fairness["attribute"])
    written = write_study(study, tmp_path / "out")
    assert {"per_class.csv", "comparison.csv", "fairness.csv", "config.json"} <= {p.name for p in written.iterdir()}


def test_job_runner_reports_progress_and_reuses_jobs():
    def work(n, *, progress):
        for i in range(n):
            progress((i + 1) / n, f"step {i + 1}")
        return n * 2

    runner = JobRunner()
    job = runner.submit("k", work, 3)
    assert job.result() == 6 and job.fraction == 1.0 and job.message == "step 3"
    assert runner.submit("k", work, 5) is job

    def broken(*, progress):
        raise RuntimeError("boom")

    failed = runner.submit("bad", broken)
    with pytest.raises(RuntimeError):
        failed.result()
    assert runner.submit("bad", work, 1) is not failed


def test_cli_drift_classify_explain_write_their_files(demo40, tmp_path, capsys):
    from cli.main import main

    root = str(demo40.root)
    assert main(["drift", root, "--encoder", "pixels", "--algorithms", "kmeans,birch", "--level", "patient",
                 "--out", str(tmp_path / "drift")]) == 0
    grid = pd.read_csv(tmp_path / "drift" / "grid.csv")
    assert list(grid["algorithm"]) == ["kmeans", "birch"]
    assert main(["classify", root, "--encoder", "pixels", "--positive", "Hypertrophic cardiomyopathy",
                 "--no-text", "--bootstrap", "50", "--splits", "4", "--out", str(tmp_path / "classify")]) == 0
    per_class = pd.read_csv(tmp_path / "classify" / "per_class.csv").set_index("class")
    assert per_class.loc["Hypertrophic cardiomyopathy", "auc"] > 0.8
    out = capsys.readouterr().out
    assert "Modalities:" in out and "Reused the saved run" not in out
    # explain with the classify options explains that very study: loaded from the run store.
    assert main(["explain", root, "--encoder", "pixels", "--positive", "Hypertrophic cardiomyopathy", "--no-text",
                 "--bootstrap", "50", "--splits", "4", "--gradcam", "0", "--out", str(tmp_path / "explain")]) == 0
    out = capsys.readouterr().out
    assert "Reused the saved run classifier-study-" in out and "Cluster drivers" in out
    importance = pd.read_csv(tmp_path / "explain" / "shap_importance.csv")
    assert {"feature", "mean_abs_shap"} <= set(importance.columns) and importance["feature"].str.startswith("PC").any()
    similar = pd.read_csv(tmp_path / "explain" / "similar_cases.csv")
    assert len(similar) == 5 * len(demo40.images)


def test_classifier_study_multilabel_chexpert_convention(demo40):
    images = demo40.images.copy()
    # Two findings per image: 1 positive, 0 negative, -1 uncertain (a few made uncertain).
    for name in ("Dilated cardiomyopathy", "Hypertrophic cardiomyopathy"):
        images[name] = (images["label"] == name).astype(int)
    images.loc[images.index[:6], "Dilated cardiomyopathy"] = -1
    dataset = type(demo40)(root=demo40.root, images=images, patients=demo40.patients,
                           report=demo40.report, manifest=demo40.manifest)
    study = classifier_study(dataset, target_column=["Dilated cardiomyopathy", "Hypertrophic cardiomyopathy"],
                             uncertain_policy="ignore", encoder="pixels", use_text=False, metadata=(),
                             level="image", n_bootstrap=30, n_splits=4)
    assert study.report.kind == "multilabel"
    per_class = study.report.per_class.set_index("class")
    assert per_class.loc["Hypertrophic cardiomyopathy", "auc"] > 0.8
    # Uncertain labels are left out under "ignore": fewer rows scored for that finding.
    assert per_class.loc["Dilated cardiomyopathy", "n_rows"] == len(images) - 6
    assert study.fairness is None
