"""``scanatlas finetune`` on the demo cohort (real DICOM files): a tiny real run, its reuse, and a
missing-weights refusal in one clear line."""

from __future__ import annotations

import pandas as pd

from cli.main import main


def test_finetune_trains_then_reuses_the_saved_run(demo_dataset, cache_env, tmp_path, capsys):
    args = ["finetune", str(demo_dataset.root), "--positive", "Hypertrophic cardiomyopathy",
            "--epochs", "1", "--image-size", "32", "--splits", "2", "--bootstrap", "20", "--no-final",
            "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fold0 epoch 1: loss" in out and "validation AUC" in out
    comparison = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert len(comparison) == 2 and comparison["n_rows"].nunique() == 1
    assert comparison["modality"].str.startswith("fine-tuned").sum() == 1
    assert ((comparison["auc_lo"] <= comparison["mean_auc"]) & (comparison["mean_auc"] <= comparison["auc_hi"])).all()
    assert main(args) == 0
    assert "Reused the saved run" in capsys.readouterr().out


def test_finetune_without_weights_says_which_file_goes_where(demo_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCANATLAS_RESNET18_WEIGHTS", str(tmp_path / "resnet18-f37072fd.pth"))
    code = main(["finetune", str(demo_dataset.root), "--positive", "Normal", "--encoder", "resnet18"])
    assert code == 2
    error = capsys.readouterr().err
    assert "scanatlas finetune: error: resnet18" in error and "resnet18-f37072fd.pth" in error
    assert "Traceback" not in error
