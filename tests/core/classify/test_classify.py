"""core.classify: targets, models, patient-grouped CV, bootstrap CIs, modality comparison, text
leakage. Synthetic data with known answers plus the real covid-chestxray metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from core.classify import (
    MODELS,
    Target,
    bootstrap_weights,
    choose_threshold,
    compare_modalities,
    detect_text_leakage,
    evaluate,
    label_terms,
    make_model,
    mask_label_words,
    merge_rare_classes,
    prepare_target,
    weighted_auc,
)
from core.classify.metrics import binary_rates, percentile_interval, weighted_confusion


def synthetic(n_patients: int = 60, per_patient: int = 3, *, signal: float = 2.0, n_features: int = 8,
              n_classes: int = 2, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Patients with one label each; feature 0 shifts with the label by ``signal``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n_patients)
    groups = np.repeat(np.arange(n_patients), per_patient)
    y = labels[groups]
    X = rng.normal(size=(len(y), n_features))
    X[:, 0] += signal * y
    df = pd.DataFrame({"label": np.array([f"class{k}" for k in range(n_classes)])[y]})
    return X, df, groups.astype(str)


@pytest.fixture(scope="module")
def covid_metadata(covid_dir) -> pd.DataFrame:
    return pd.read_csv(covid_dir / "metadata.csv", encoding_errors="replace")


def metadata_features(df: pd.DataFrame) -> np.ndarray:
    """One-hot view/modality/sex plus age with a missing indicator: no images needed."""
    onehot = pd.get_dummies(df[["view", "modality", "sex"]].fillna("unknown")).astype(float)
    onehot["age"] = df["age"].fillna(df["age"].median())
    onehot["age_missing"] = df["age"].isna().astype(float)
    return onehot.to_numpy()


# --- targets -------------------------------------------------------------------------------


def test_prepare_target_multiclass_keeps_missing_rows_with_reason():
    df = pd.DataFrame({"dx": ["b", "a", None, "c", " ", "a"]})
    target = prepare_target(df, "dx")
    assert target.kind == "multiclass"
    assert target.classes == ["a", "b", "c"]
    assert target.y.tolist() == [1, 0, -1, 2, -1, 0]
    assert target.mask.tolist() == [True, True, False, True, False, True]
    assert target.reasons.iloc[2] == "label 'dx' missing" and target.reasons.iloc[0] is None
    assert len(target) == 6 and target.counts().to_dict() == {"a": 2, "b": 1, "c": 1}


def test_prepare_target_positive_values_make_a_binary_target():
    df = pd.DataFrame({"finding": ["COVID-19", "SARS", "COVID-19, ARDS", None, "No Finding"]})
    target = prepare_target(df, "finding", positive=["COVID-19", "COVID-19, ARDS"])
    assert target.kind == "binary"
    assert target.classes == ["not COVID-19 or COVID-19, ARDS", "COVID-19 or COVID-19, ARDS"]
    assert target.y.tolist() == [1, 0, 1, -1, 0]


def test_prepare_target_float_zero_one_column_gives_binary_classes_0_1():
    target = prepare_target(pd.DataFrame({"flag": [0.0, 1.0, np.nan, 1.0]}), "flag")
    assert target.kind == "binary" and target.classes == ["0", "1"]
    assert target.y.tolist() == [0, 1, -1, 1]


@pytest.mark.parametrize(
    ("policy", "expected_edema"),
    [
        ("ignore", [1, 0, -1, -1]),
        ("as-positive", [1, 0, 1, -1]),
        ("as-negative", [1, 0, 0, -1]),
    ],
)
def test_multilabel_uncertain_policies(policy, expected_edema):
    df = pd.DataFrame({"Edema": [1.0, 0.0, -1.0, np.nan], "Effusion": ["1", "-1", "0", ""]})
    target = prepare_target(df, ["Edema", "Effusion"], uncertain_policy=policy)
    assert target.kind == "multilabel" and target.classes == ["Edema", "Effusion"]
    assert target.y[:, 0].tolist() == expected_edema
    expected_effusion = {"ignore": [1, -1, 0, -1], "as-positive": [1, 1, 0, -1],
                         "as-negative": [1, 0, 0, -1]}[policy]
    assert target.y[:, 1].tolist() == expected_effusion
    assert (target.mask == (target.y >= 0)).all()
    assert target.reasons.iloc[3] == "Edema: blank; Effusion: blank"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"columns": "nope"}, r"\['nope'\] not in the table; available columns: \['dx', 'Edema'\]"),
        ({"columns": "dx", "uncertain_policy": "zeros"}, r"uncertain_policy='zeros'.*'as-negative'"),
        ({"columns": "dx", "positive": "z"}, r"positive=\['z'\] not found.*\['a', 'b'\]"),
        ({"columns": ["Edema"], "positive": "a"}, "only applies to a single label column"),
        ({"columns": []}, "columns=\\[\\] is empty"),
    ],
)
def test_prepare_target_validation_errors(kwargs, message):
    df = pd.DataFrame({"dx": ["a", "b", "a"], "Edema": [1, 0, -1]})
    with pytest.raises(ValueError, match=message):
        prepare_target(df, **kwargs)


def test_prepare_target_single_class_and_bad_chexpert_value_and_non_frame():
    with pytest.raises(ValueError, match=r"at least 2 distinct labels to classify, found \['a'\]"):
        prepare_target(pd.DataFrame({"dx": ["a", "a", None]}), "dx")
    with pytest.raises(ValueError, match=r"values \['2', 'yes'\] outside the CheXpert.*-1 \(uncertain\)"):
        prepare_target(pd.DataFrame({"Edema": ["1", "2", "yes", "0"]}), ["Edema"])
    with pytest.raises(ValueError, match="must be a pandas DataFrame, got list"):
        prepare_target([1, 2], "dx")


def test_merge_rare_classes_joins_small_classes_into_other():
    df = pd.DataFrame({"dx": ["a"] * 6 + ["b"] * 6 + ["c", "d"]})
    merged = merge_rare_classes(prepare_target(df, "dx"), 3)
    assert merged.classes == ["a", "b", "other"]
    assert merged.y.tolist() == [0] * 6 + [1] * 6 + [2, 2]
    assert "'other': c (1), d (1)" in merged.notes[0]
    two = prepare_target(pd.DataFrame({"dx": ["a"] * 6 + ["b"]}), "dx")
    with pytest.raises(ValueError, match="leaves only \\['a', 'other'\\]|leaves only"):
        merge_rare_classes(two, 10)


# --- metrics ---------------------------------------------------------------------------------


def test_weighted_auc_hand_cases_and_agreement_with_sklearn():
    assert weighted_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0] == 1.0
    assert weighted_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])[0] == 0.0
    assert weighted_auc([0, 1], [0.5, 0.5])[0] == 0.5
    # pos {0.7, 0.2} vs neg {0.4, 0.1}: 3 of 4 pairs ranked right
    assert weighted_auc([1, 1, 0, 0], [0.7, 0.2, 0.4, 0.1])[0] == 0.75
    assert np.isnan(weighted_auc([1, 1], [0.2, 0.3])[0])
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    assert weighted_auc(y, s)[0] == pytest.approx(roc_auc_score(y, s))
    # weight 2 on a row == that row twice
    w = rng.integers(0, 3, 200).astype(float)
    rows = np.repeat(np.arange(200), w.astype(int))
    assert weighted_auc(y, s, w)[0] == pytest.approx(roc_auc_score(y[rows], s[rows]))


def test_weighted_confusion_and_rates_hand_case():
    rates = binary_rates(weighted_confusion([1, 1, 0, 0, 0], [1, 0, 1, 0, 0]))
    assert rates["recall"][0] == 0.5 and rates["precision"][0] == 0.5
    assert rates["fpr"][0] == pytest.approx(1 / 3) and rates["accuracy"][0] == pytest.approx(3 / 5)
    assert rates["f1"][0] == 0.5 and rates["selection_rate"][0] == pytest.approx(2 / 5)
    assert np.isnan(binary_rates(weighted_confusion([0, 0], [0, 0]))["precision"][0])


def test_choose_threshold_youden_and_f1():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.3, 0.6, 0.5, 0.8, 0.9])
    # Youden: t=0.8 gives J=2/3-0; t=0.5 gives 1-1/3 = 2/3 as well; first max in roc order is 0.8
    assert choose_threshold(y, s, "youden") in (0.8, 0.5)
    assert choose_threshold(y, s, "f1") == 0.5  # recall 1, precision 3/4 -> F1 6/7
    assert np.isnan(choose_threshold([1, 1], [0.2, 0.4]))
    with pytest.raises(ValueError, match=r"threshold_metric='acc' is not valid.*'youden', 'f1'"):
        choose_threshold(y, s, "acc")


def test_bootstrap_weights_keep_a_patients_rows_together():
    groups = np.array(["p1", "p1", "p2", "p3", "p3", "p3"])
    w = bootstrap_weights(groups, 50, 0)
    assert w.shape == (50, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 4]).all() and (w[:, 4] == w[:, 5]).all()
    # three patients drawn per replicate
    assert (w[:, [0, 2, 3]].sum(axis=1) == 3).all()


# --- models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registry_model_gives_probabilities(name):
    X, df, _ = synthetic(40, 1, n_classes=3, signal=3.0)
    y = prepare_target(df, "label").y
    model = make_model(name).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (40, 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert (model.predict(X) == y).mean() > 0.6


def test_make_model_unknown_name_and_calibration():
    with pytest.raises(ValueError, match=r"model='svm' is not a known model; valid models: \['logreg'"):
        make_model("svm")
    with pytest.raises(ValueError, match=r"calibration_method='platt'.*'sigmoid', 'isotonic'"):
        make_model("logreg", calibration_method="platt")
    calibrated = make_model("logreg", calibrate=True)
    X, df, _ = synthetic(30, 1)
    y = prepare_target(df, "label").y
    y[0] = 2  # a class with a single row cannot be calibrated: falls back, no crash
    calibrated.fit(X, y)
    assert calibrated.named_steps["model"].calibrated_ is False
    assert calibrated.predict_proba(X).shape == (30, 3)


# --- evaluate --------------------------------------------------------------------------------


def test_grouped_cv_never_puts_a_patient_in_train_and_test():
    X, df, groups = synthetic(50, 4)
    report = evaluate(X, prepare_target(df, "label"), groups, n_bootstrap=0)
    folds = report.folds
    assert set(folds.tolist()) == {0, 1, 2, 3, 4}
    for fold in range(5):
        test_patients = set(groups[folds == fold])
        train_patients = set(groups[(folds >= 0) & (folds != fold)])
        assert not test_patients & train_patients
    assert pd.Series(folds).groupby(groups).nunique().max() == 1


def test_evaluate_finds_signal_and_reports_consistent_metrics():
    X, df, groups = synthetic(80, 2, signal=2.5)
    target = prepare_target(df, "label", positive="class1")
    report = evaluate(X, target, groups, n_bootstrap=100)
    table = report.per_class.set_index("class")
    assert list(table.index) == ["not class1", "class1", "mean"]
    assert table.loc["class1", "auc"] > 0.9
    assert report.oof.shape == (160, 2) and np.allclose(report.oof.sum(axis=1), 1)
    y = target.y
    assert table.loc["class1", "auc"] == pytest.approx(roc_auc_score(y, report.oof[:, 1]))
    pred = report.predictions
    assert table.loc["class1", "f1"] == pytest.approx(f1_score(y, pred))
    assert table.loc["class1", "precision"] == pytest.approx(precision_score(y, pred))
    assert table.loc["class1", "recall"] == pytest.approx(recall_score(y, pred))
    assert table.loc["mean", "accuracy"] == pytest.approx((pred == y).mean())
    assert report.confusion.to_numpy().sum() == 160
    # thresholds tuned per fold on inner validation, applied as p >= t
    assert np.isfinite(report.fold_thresholds["class1"]).all()
    for fold in range(5):
        rows = report.folds == fold
        t = report.fold_thresholds.loc[fold, "class1"]
        assert (pred[rows] == (report.oof[rows, 1] >= t)).all()
    assert set(report.roc) == {"not class1", "class1"}
    assert report.roc["class1"][["fpr", "tpr"]].iloc[-1].tolist() == [1.0, 1.0]


def test_evaluate_without_signal_is_near_chance():
    X, df, groups = synthetic(80, 2, signal=0.0, seed=3)
    report = evaluate(X, prepare_target(df, "label"), groups, n_bootstrap=0)
    assert 0.25 < report.mean_auc < 0.75


def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_patients():
    widths = []
    for n_patients in (40, 400):
        X, df, groups = synthetic(n_patients, 2, signal=1.0, seed=5)
        report = evaluate(X, prepare_target(df, "label"), groups, n_bootstrap=200, threshold_splits=0)
        row = report.per_class.set_index("class").loc["mean"]
        for metric in ("auc", "f1", "accuracy", "precision", "recall"):
            assert row[f"{metric}_lo"] <= row[metric] <= row[f"{metric}_hi"]
        widths.append(row["auc_hi"] - row["auc_lo"])
    assert widths[1] < widths[0] / 2


def test_bootstrap_resamples_patients_not_rows():
    # 10 near-identical images per patient: resampling rows would pretend to have 10x the data
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 40)
    patient_features = rng.normal(size=(40, 4))
    patient_features[:, 0] += labels
    groups = np.repeat(np.arange(40), 10)
    X = patient_features[groups] + 0.05 * rng.normal(size=(400, 4))
    target = prepare_target(pd.DataFrame({"label": labels[groups]}), "label")
    report = evaluate(X, target, groups, n_bootstrap=300, threshold_splits=0, random_state=0)
    truth, score = target.y == 1, report.oof[:, 1]

    def interval(weights):
        return percentile_interval(weighted_auc(truth, score, weights), 0.95)

    by_patient = interval(bootstrap_weights(groups, 300, 0))
    by_row = interval(bootstrap_weights(np.arange(400), 300, 0))
    row = report.per_class.set_index("class").loc["1"]
    assert (row["auc_lo"], row["auc_hi"]) == pytest.approx(by_patient)
    assert by_patient[1] - by_patient[0] > 2 * (by_row[1] - by_row[0])


def test_evaluate_keeps_unusable_rows_aligned_with_reasons():
    X, df, groups = synthetic(40, 2)
    df.loc[3, "label"] = None
    X[5, 2] = np.nan
    report = evaluate(X, prepare_target(df, "label"), groups, n_bootstrap=0)
    assert report.oof.shape == (80, 2)
    assert np.isnan(report.oof[[3, 5]]).all() and np.isfinite(np.delete(report.oof, [3, 5], axis=0)).all()
    assert report.folds[3] == -1 and report.folds[5] == -1 and report.predictions[5] == -1
    assert report.row_reasons.iloc[3] == "label 'label' missing"
    assert report.row_reasons.iloc[5] == "features contain NaN/inf"
    assert report.per_class.set_index("class").loc["mean", "n_rows"] == 78
    assert any("NaN/inf" in note for note in report.notes)


def test_multiclass_uses_argmax_and_reports_every_class():
    X, df, groups = synthetic(90, 2, n_classes=3, signal=3.0)
    report = evaluate(X, prepare_target(df, "label"), groups, n_bootstrap=50)
    assert report.kind == "multiclass" and report.oof.shape == (180, 3)
    assert (report.predictions == report.oof.argmax(axis=1)).all()
    assert report.thresholds.isna().all()
    assert report.per_class["class"].tolist() == ["class0", "class1", "class2", "mean"]
    assert report.confusion.shape == (3, 3) and report.confusion.to_numpy().trace() > 90
    assert report.mean_auc > 0.85


def test_multilabel_evaluation_per_label_with_own_rows():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 2)
    X = rng.normal(size=(120, 6))
    edema = np.where(X[:, 0] > 0, 1.0, 0.0)
    edema[::7] = -1
    effusion = np.where(X[:, 1] > 0, 1.0, 0.0)
    effusion[::5] = np.nan
    target = prepare_target(pd.DataFrame({"Edema": edema, "Effusion": effusion}), ["Edema", "Effusion"])
    report = evaluate(X, target, groups, n_bootstrap=50)
    table = report.per_class.set_index("class")
    assert table.loc["Edema", "n_rows"] == int((edema >= 0).sum())
    assert table.loc["Effusion", "n_rows"] == int((~np.isnan(effusion)).sum())
    assert table.loc["Edema", "auc"] > 0.85 and table.loc["Effusion", "auc"] > 0.85
    assert report.folds.shape == (120, 2) and (report.folds[::7, 0] == -1).all()
    assert list(report.confusion.columns) == ["tn", "fp", "fn", "tp"]
    final = report.fit_final(X)
    assert final.predict(X[:5]).shape == (5, 2)


def test_fit_final_predicts_class_names():
    X, df, groups = synthetic(50, 2, signal=3.0)
    report = evaluate(X, prepare_target(df, "label"), groups, n_bootstrap=0)
    final = report.fit_final(X)
    predicted = final.predict(X)
    assert set(predicted) <= {"class0", "class1"}
    assert (predicted == df["label"].to_numpy()).mean() > 0.85
    X_bad = X.copy()
    X_bad[0, 0] = np.nan
    assert final.predict(X_bad)[0] is None and np.isnan(final.predict_proba(X_bad)[0]).all()
    with pytest.raises(ValueError, match="X has 3 features; the model was trained on 8"):
        final.predict(X[:, :3])
    with pytest.raises(ValueError, match=r"y has shape \(5,\); expected \(100,\)"):
        report.fit_final(X, np.zeros(5))


def test_rare_class_error_names_class_and_count_or_merges():
    X, df, groups = synthetic(60, 1, n_classes=2, signal=2.0)
    df.loc[:2, "label"] = "rare"
    target = prepare_target(df, "label")
    with pytest.raises(ValueError, match=r"n_splits=5: 'rare' has 3; .*rare_classes='merge'"):
        evaluate(X, target, groups, n_bootstrap=0)
    with pytest.raises(ValueError, match=r"even after merging \['rare'\] into 'other': 'other' has 3"):
        evaluate(X, target, groups, n_bootstrap=0, rare_classes="merge")
    binary = prepare_target(df, "label", positive="rare")
    with pytest.raises(ValueError, match=r"'rare' has 3; a target defined by positive=\['rare'\] cannot merge"):
        evaluate(X, binary, groups, n_bootstrap=0, rare_classes="merge")
    df.loc[3:5, "label"] = "scarce"
    report = evaluate(X, prepare_target(df, "label"), groups, n_bootstrap=0, rare_classes="merge")
    assert report.classes == ["class0", "class1", "other"]
    assert (report.target.y[:6] == 2).all()
    assert any("merged 2 class" in note for note in report.notes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "forest"}, r"model='forest' is not a known model; valid models: \['logreg', 'linear-svm', 'mlp', 'gbm'\]"),
        ({"n_splits": 1}, "n_splits=1 must be an integer >= 2"),
        ({"n_bootstrap": -1}, "n_bootstrap=-1 must be an integer >= 0"),
        ({"threshold_metric": "auc"}, r"threshold_metric='auc' is not valid; use one of \['youden', 'f1'\]"),
        ({"threshold_splits": 1}, "threshold_splits=1 must be 0"),
        ({"rare_classes": "drop"}, r"rare_classes='drop' is not valid; use one of \['error', 'merge'\]"),
        ({"ci_level": 95}, "ci_level=95 must be between 0 and 1"),
    ],
)
def test_evaluate_parameter_errors(kwargs, message):
    X, df, groups = synthetic(20, 1)
    with pytest.raises(ValueError, match=message):
        evaluate(X, prepare_target(df, "label"), groups, **kwargs)


def test_evaluate_input_errors():
    X, df, groups = synthetic(20, 1)
    target = prepare_target(df, "label")
    with pytest.raises(ValueError, match="X has 19 rows but the target has 20"):
        evaluate(X[:19], target, groups)
    with pytest.raises(ValueError, match=r"X must be 2-D .* got shape \(20,\)"):
        evaluate(X[:, 0], target, groups)
    with pytest.raises(ValueError, match="groups has 3 entries but the target has 20 rows"):
        evaluate(X, target, groups[:3])
    with pytest.raises(ValueError, match="target must be a Target from prepare_target"):
        evaluate(X, df["label"], groups)
    with pytest.raises(ValueError, match=r"n_splits=5 must be <= the number of patients \(groups\) = 4"):
        evaluate(X, target, np.arange(20) % 4, n_bootstrap=0)


# --- compare_modalities ----------------------------------------------------------------------


def test_compare_modalities_ranks_the_informative_block_first():
    rng = np.random.default_rng(4)
    X, df, groups = synthetic(60, 2, signal=2.5, n_features=4)
    target = prepare_target(df, "label")
    blocks = {"text": rng.normal(size=(120, 5)), "image": X, "metadata": rng.normal(size=(120, 3))}
    blocks["metadata"][7] = np.nan  # one row lacks metadata: all blocks are scored without it
    table = compare_modalities(blocks, target, groups, n_bootstrap=50)
    assert table["modality"].iloc[0] in ("image", "fused")
    ranked = table.set_index("modality")
    assert ranked.loc["image", "mean_auc"] > 0.85 > max(ranked.loc["text", "mean_auc"], ranked.loc["metadata", "mean_auc"])
    assert ranked.loc["fused", "n_features"] == 12 and (table["n_rows"] == 119).all()
    assert {"auc:class0", "auc:class1", "auc_lo", "auc_hi", "mean_f1", "rank"} <= set(table.columns)
    assert table["rank"].tolist() == [1, 2, 3, 4]


def test_compare_modalities_errors():
    X, df, groups = synthetic(20, 1)
    target = prepare_target(df, "label")
    with pytest.raises(ValueError, match="feature_blocks is empty"):
        compare_modalities({}, target, groups)
    with pytest.raises(ValueError, match="X has 5 rows but the target has 20"):
        compare_modalities({"image": X[:5]}, target, groups)
    with pytest.raises(ValueError, match="a block is named 'fused'"):
        compare_modalities({"image": X, "fused": X}, target, groups)


# --- leakage ---------------------------------------------------------------------------------

FILLER = ["patient", "admitted", "with", "cough", "fever", "dyspnea", "chest", "film", "shows",
          "bilateral", "opacities", "treated", "oxygen", "improved", "discharged", "day", "lobe"]


def leaky_notes(n: int = 120, seed: int = 0) -> tuple[pd.Series, pd.Series, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.where(rng.random(n) < 0.5, "COVID-19", "Streptococcus")
    covid_words = ["COVID-19", "covid 19", "SARS-CoV-2", "novel Coronavirus", "Covid19"]
    strep_words = ["streptococcus", "Streptococcal", "pneumococcal"]
    notes = []
    for label in labels:
        words = list(rng.choice(FILLER, 12))
        leak = rng.choice(covid_words if label == "COVID-19" else strep_words)
        words.insert(int(rng.integers(0, 12)), leak)
        notes.append(" ".join(words))
    return pd.Series(notes), pd.Series(labels), np.arange(n) // 2


def test_leakage_detector_flags_literal_labels_and_masking_removes_them():
    notes, labels, groups = leaky_notes()
    report = detect_text_leakage(notes, labels, groups=groups)
    assert report.flagged and report.text_auc >= 0.95
    assert report.own_label_share == 1.0
    per_label = report.per_label.set_index("label")
    assert per_label.loc["COVID-19", "own_share"] == 1.0 and per_label.loc["COVID-19", "other_share"] == 0.0
    assert "covid-19" in set(report.terms["term"])
    masked = mask_label_words(notes, labels)
    assert not masked.str.contains("covid|sars|coronavirus|strep|pneumococ", case=False).any()
    after = detect_text_leakage(masked, labels, groups=groups)
    assert after.own_label_share == 0.0
    assert after.text_auc < 0.75 and not after.flagged


def test_mask_label_words_handles_spelling_variants_and_missing_text():
    texts = pd.Series(["COVID-19 and covid 19 and Covid19", "SARS-CoV-2 (2019-nCoV) coronavirus", None,
                       "no finding here"], index=[10, 11, 12, 13])
    masked = mask_label_words(texts, ["COVID-19"])
    assert masked.loc[10] == "[MASKED] and [MASKED] and [MASKED]"
    assert masked.loc[11] == "[MASKED] ([MASKED]) [MASKED]"
    assert pd.isna(masked.loc[12]) and masked.loc[13] == "no finding here"
    assert list(masked.index) == [10, 11, 12, 13]
    assert mask_label_words(texts, "No Finding", token="").loc[13] == " here"


def test_label_terms():
    assert {"covid-19", "sars-cov-2", "coronavirus", "ards"} <= set(label_terms("COVID-19, ARDS"))
    assert label_terms("not COVID-19") == label_terms("COVID-19")
    assert label_terms("1") == [] and label_terms("other") == []
    assert {"mycoplasma", "pneumonia"} <= set(label_terms("Mycoplasma Bacterial Pneumonia"))


def test_leakage_errors():
    with pytest.raises(ValueError, match="texts has 2 rows but labels has 3"):
        detect_text_leakage(["a", "b"], ["x", "y", "z"])
    with pytest.raises(ValueError, match="auc_flag=2 must be between 0.5 and 1"):
        detect_text_leakage(["a", "b"], ["x", "y"], auc_flag=2)
    with pytest.raises(ValueError, match="top=0 must be >= 1"):
        detect_text_leakage(["a", "b"], ["x", "y"], top=0)


# --- real data: covid-chestxray metadata -----------------------------------------------------


def test_covid_vs_other_from_metadata_columns(covid_metadata):
    df = covid_metadata
    target = prepare_target(df, "finding", positive=["COVID-19", "COVID-19, ARDS"])
    report = evaluate(metadata_features(df), target, df["patientid"], n_bootstrap=200)
    table = report.per_class.set_index("class")
    assert table.loc["mean", "n_rows"] == len(df) == 673
    assert table.loc["COVID-19 or COVID-19, ARDS", "support"] == 538
    # view / modality / age carry real (site-driven) signal
    assert 0.6 < report.mean_auc < 0.95
    assert table.loc["mean", "auc_lo"] < report.mean_auc < table.loc["mean", "auc_hi"]
    patients = df["patientid"].astype(str).to_numpy()
    for fold in range(5):
        assert not set(patients[report.folds == fold]) & set(patients[report.folds != fold])


def test_covid_multiclass_finding_names_rare_classes(covid_metadata):
    df = covid_metadata
    target = prepare_target(df, "finding")
    with pytest.raises(ValueError, match=r"'Chlamydophila' has 2.*'Influenza' has 2"):
        evaluate(metadata_features(df), target, df["patientid"], n_bootstrap=0)


@pytest.mark.slow
def test_covid_clinical_notes_name_the_diagnosis(covid_metadata):
    df = covid_metadata
    covid = np.where(df["finding"].str.contains("COVID"), "COVID-19", "other")
    report = detect_text_leakage(df["clinical_notes"], covid, groups=df["patientid"])
    per_label = report.per_label.set_index("label")
    assert per_label.loc["COVID-19", "own_share"] > 0.2 > per_label.loc["COVID-19", "other_share"]
    assert report.text_auc > 0.75
    masked = mask_label_words(df["clinical_notes"], df["finding"])
    after = detect_text_leakage(masked, covid, groups=df["patientid"])
    assert after.per_label.set_index("label").loc["COVID-19", "own_share"] == 0.0
    assert masked.isna().sum() == df["clinical_notes"].isna().sum()


def test_target_is_a_dataclass_with_row_index(covid_metadata):
    target = prepare_target(covid_metadata, "sex")
    assert isinstance(target, Target) and target.classes == ["F", "M"]
    assert (target.index == covid_metadata.index).all()
    assert (~target.mask).sum() == covid_metadata["sex"].isna().sum() == 67
