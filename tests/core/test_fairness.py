"""core.fairness: age bands, country from location, subgroup metrics checked by hand, gaps and
ratios, bootstrap intervals, undefined metrics, and a real run on covid-chestxray metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.fairness import age_bands, country_from_location, fairness_table

# Group A: y=[1,1,0,0], scores [.9,.8,.3,.6] -> predicted [1,1,0,1] at 0.5
#   TPR 2/2 = 1, FPR 1/2, precision 2/3, selection 3/4, AUC 4/4 pairs = 1.0
# Group B: y=[1,1,0,0], scores [.7,.2,.4,.1] -> predicted [1,0,0,0]
#   TPR 1/2, FPR 0/2 = 0, precision 1/1, selection 1/4, AUC 3/4 pairs = 0.75
HAND_Y = [1, 1, 0, 0, 1, 1, 0, 0]
HAND_SCORE = [0.9, 0.8, 0.3, 0.6, 0.7, 0.2, 0.4, 0.1]
HAND_GROUP = ["A"] * 4 + ["B"] * 4


def hand_report(**kwargs):
    options = {"min_group": 1, "n_bootstrap": 0} | kwargs
    return fairness_table(HAND_Y, HAND_SCORE, pd.DataFrame({"site": HAND_GROUP}), **options)


def test_hand_computed_group_metrics():
    table = hand_report().table.set_index(["attribute", "group"])
    a, b = table.loc[("site", "A")], table.loc[("site", "B")]
    assert (a["auc"], a["tpr"], a["fpr"], a["precision"], a["selection_rate"]) == pytest.approx(
        (1.0, 1.0, 0.5, 2 / 3, 0.75))
    assert (b["auc"], b["tpr"], b["fpr"], b["precision"], b["selection_rate"]) == pytest.approx(
        (0.75, 0.5, 0.0, 1.0, 0.25))
    assert (a["count"], a["share"], a["n_positive"], a["n_negative"]) == (4, 0.5, 2, 2)
    overall = table.loc[("overall", "all")]
    # overall predicted [1,1,0,1,1,0,0,0]: TPR 3/4, FPR 1/4, precision 3/4
    assert (overall["tpr"], overall["fpr"], overall["precision"], overall["count"]) == pytest.approx(
        (0.75, 0.25, 0.75, 8))


def test_hand_computed_gaps_and_ratios():
    report = hand_report()
    table = report.table.set_index(["attribute", "group"])
    a, b = table.loc[("site", "A")], table.loc[("site", "B")]
    # best AUC is A (1.0): B is 0.25 worse, ratio 0.75
    assert (a["auc_gap"], a["auc_ratio"], b["auc_gap"], b["auc_ratio"]) == pytest.approx((0, 1, 0.25, 0.75))
    assert (b["tpr_gap"], b["tpr_ratio"]) == pytest.approx((0.5, 0.5))
    # FPR: lower is better, best is B (0): A is 0.5 worse, ratio best/group = 0
    assert (a["fpr_gap"], a["fpr_ratio"], b["fpr_gap"], b["fpr_ratio"]) == pytest.approx((0.5, 0.0, 0.0, 1.0))
    assert (a["precision_gap"], a["precision_ratio"]) == pytest.approx((1 / 3, 2 / 3))
    summary = report.summary.set_index(["attribute", "metric"])
    assert summary.loc[("site", "auc"), "best_group"] == "A"
    assert summary.loc[("site", "auc"), "worst_group"] == "B"
    assert summary.loc[("site", "fpr"), "best_group"] == "B"
    assert summary.loc[("site", "tpr"), "max_gap"] == pytest.approx(0.5)


def test_table_values_come_from_fairlearn_metricframe():
    report = hand_report()
    by_group = report.metric_frames["site"].by_group
    table = report.table.set_index(["attribute", "group"])
    for group in ("A", "B"):
        for metric in ("auc", "tpr", "fpr", "precision", "selection_rate"):
            assert table.loc[("site", group), metric] == pytest.approx(by_group.loc[group, metric])


def test_undefined_metrics_are_nan_with_a_note_not_an_error():
    y = [1, 1, 1, 0, 1, 0]
    score = [0.9, 0.2, 0.6, 0.7, 0.1, 0.3]
    sex = ["M", "M", "M", "F", "F", "F"]  # M has positives only
    table = fairness_table(y, score, pd.Series(sex, name="sex"), min_group=1, n_bootstrap=20).table
    male = table.set_index("group").loc["M"]
    assert np.isnan(male["auc"]) and np.isnan(male["fpr"]) and np.isnan(male["auc_lo"])
    assert male["tpr"] == pytest.approx(2 / 3)
    assert "only positives: AUC undefined" in male["note"] and "FPR undefined" in male["note"]
    assert np.isnan(male["auc_gap"])


def test_small_groups_are_flagged_and_not_the_reference():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 130)
    score = np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.25, 130)
    site = np.array(["big1"] * 60 + ["big2"] * 60 + ["tiny"] * 10)
    score[120:] = y[120:]  # the tiny site is perfectly ranked
    report = fairness_table(y, score, pd.DataFrame({"site": site}), min_group=20, n_bootstrap=0)
    table = report.table.set_index("group")
    assert table.loc["tiny", "small"] and not table.loc["big1", "small"]
    assert "small group (n=10 < 20)" in table.loc["tiny", "note"]
    assert table.loc["tiny", "auc"] == 1.0
    best = report.summary.set_index("metric").loc["auc", "best_group"]
    assert best in ("big1", "big2")
    assert table.loc["tiny", "auc_gap"] < 0  # beats the best non-small group


def test_intersections_and_shares():
    rng = np.random.default_rng(1)
    n = 200
    sensitive = pd.DataFrame({"sex": rng.choice(["F", "M", None], n), "age_band": rng.choice(["40-59", "60-79"], n)})
    y = rng.integers(0, 2, n)
    report = fairness_table(y, rng.random(n), sensitive, min_group=5, n_bootstrap=0)
    table = report.table
    assert set(table["attribute"]) == {"overall", "sex", "age_band", "sex × age_band"}
    for attribute in ("sex", "age_band", "sex × age_band"):
        part = table[table["attribute"] == attribute]
        assert part["count"].sum() == n and part["share"].sum() == pytest.approx(1.0)
    assert "unknown" in set(table.loc[table["attribute"] == "sex", "group"])
    assert {"F & 40-59", "unknown & 60-79"} <= set(table["group"])
    assert (table["count"] > 0).all()
    no_cross = fairness_table(y, rng.random(n), sensitive, intersections=False, n_bootstrap=0)
    assert "sex × age_band" not in set(no_cross.table["attribute"])


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_data():
    widths = []
    for n in (80, 2000):
        rng = np.random.default_rng(3)
        y = rng.integers(0, 2, n)
        score = y + rng.normal(0, 1.0, n)
        report = fairness_table(y, score, pd.Series(np.where(rng.random(n) < 0.5, "F", "M"), name="sex"),
                                threshold=0.5, n_bootstrap=200)
        for _, row in report.table.iterrows():
            assert row["auc_lo"] <= row["auc"] <= row["auc_hi"]
            assert row["tpr_lo"] <= row["tpr"] <= row["tpr_hi"]
        overall = report.table.iloc[0]
        widths.append(overall["auc_hi"] - overall["auc_lo"])
    assert widths[1] < widths[0] / 2


def test_patient_groups_widen_the_interval():
    rng = np.random.default_rng(4)
    patient_y = rng.integers(0, 2, 30)
    patient_score = patient_y + rng.normal(0, 1.2, 30)
    patients = np.repeat(np.arange(30), 10)  # 10 near-identical images each
    y, score = patient_y[patients], patient_score[patients] + rng.normal(0, 0.01, 300)
    sex = pd.Series(np.where(patients % 2 == 0, "F", "M"), name="sex")
    rows = fairness_table(y, score, sex, n_bootstrap=300).table.iloc[0]
    grouped = fairness_table(y, score, sex, n_bootstrap=300, groups=patients).table.iloc[0]
    assert grouped["auc_hi"] - grouped["auc_lo"] > 2 * (rows["auc_hi"] - rows["auc_lo"])


def test_missing_labels_or_scores_are_counted_not_silently_dropped():
    y = [1, 0, np.nan, 1, 0, 1]
    score = [0.9, 0.1, 0.5, np.nan, 0.4, 0.8]
    report = fairness_table(y, score, pd.Series(list("ABABAB"), name="g"), min_group=1, n_bootstrap=0)
    assert report.n_rows == 4 and report.n_excluded == 2
    assert "2 row(s) with missing y_true or y_score excluded" in report.notes
    assert report.table.iloc[0]["count"] == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": float("nan")}, "threshold=nan must be a finite number"),
        ({"min_group": 0}, "min_group=0 must be an integer >= 1"),
        ({"n_bootstrap": -5}, "n_bootstrap=-5 must be an integer >= 0"),
        ({"ci_level": 1.5}, "ci_level=1.5 must be between 0 and 1"),
        ({"groups": [1, 2]}, "groups has 2 entries but sensitive has 8 rows"),
    ],
)
def test_fairness_parameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        hand_report(**kwargs)


def test_fairness_input_errors():
    sensitive = pd.DataFrame({"site": HAND_GROUP})
    with pytest.raises(ValueError, match=r"y_true must hold 0/1.*found \['2', 'yes'\]"):
        fairness_table([1, 0, 2, "yes", 0, 1, 0, 1], HAND_SCORE, sensitive)
    with pytest.raises(ValueError, match=r"y_true \(3\), y_score \(8\) and sensitive \(8\)"):
        fairness_table([1, 0, 1], HAND_SCORE, sensitive)
    with pytest.raises(ValueError, match="at least one column"):
        fairness_table(HAND_Y, HAND_SCORE, pd.DataFrame(index=range(8)))
    with pytest.raises(ValueError, match="no row has both y_true and y_score"):
        fairness_table([np.nan] * 8, HAND_SCORE, sensitive)
    assert fairness_table([True, False] * 4, HAND_SCORE, sensitive, n_bootstrap=0).n_rows == 8


def test_age_bands_labels_unknown_and_out_of_range():
    bands = age_bands(pd.Series([0, 17.9, 18, 45, 59, 60, 79, 80, 101, None, -3, "65", "old"]))
    assert bands.astype(str).tolist() == [
        "0-17", "0-17", "18-39", "40-59", "40-59", "60-79", "60-79", "80+", "80+", "unknown",
        "out of range", "60-79", "unknown"]
    assert list(bands.cat.categories) == ["0-17", "18-39", "40-59", "60-79", "80+", "out of range", "unknown"]
    custom = age_bands([5, 50, 70], edges=(0, 50, 65))
    assert custom.astype(str).tolist() == ["0-49", "50-64", "out of range"]
    halves = age_bands([0.2, 1.0], edges=(0, 0.5, 2))
    assert halves.astype(str).tolist() == ["0-<0.5", "0.5-<2"]


def test_age_bands_errors():
    with pytest.raises(ValueError, match="must be at least two finite, strictly increasing"):
        age_bands([10], edges=(0, 40, 30))
    with pytest.raises(ValueError, match="must be at least two finite"):
        age_bands([10], edges=(0,))


def test_country_from_location():
    locations = pd.Series(["Cho Ray Hospital, Ho Chi Minh City, Vietnam", "Italy", " Wuhan,  China ",
                           None, "", "Boston, MA, USA", "New York, United States", "Leeds, England"],
                          index=range(10, 18))
    countries = country_from_location(locations)
    assert countries.tolist() == ["Vietnam", "Italy", "China", "unknown", "unknown", "USA", "USA",
                                  "United Kingdom"]
    assert list(countries.index) == list(range(10, 18))


def test_real_covid_metadata_subgroups(covid_dir):
    df = pd.read_csv(covid_dir / "metadata.csv", encoding_errors="replace")
    y = df["finding"].str.contains("COVID").astype(int)
    # a simple score: CT images are almost all COVID-19 in this collection
    score = np.where(df["modality"] == "CT", 0.9, 0.6) + np.where(df["view"] == "PA", -0.2, 0.0)
    sensitive = pd.DataFrame({
        "sex": df["sex"], "age_band": age_bands(df["age"]), "country": country_from_location(df["location"]),
    })
    report = fairness_table(y, score, sensitive, groups=df["patientid"], n_bootstrap=100, intersections=False)
    table = report.table
    assert table.iloc[0]["count"] == len(df) == 673
    countries = table[table["attribute"] == "country"].set_index("group")
    assert countries.loc["Italy", "count"] == 155 and not countries.loc["Italy", "small"]
    assert countries.loc["Vietnam", "small"] and countries.loc["unknown", "count"] == df["location"].isna().sum()
    assert table.loc[table["attribute"] == "age_band", "group"].isin(
        ["0-17", "18-39", "40-59", "60-79", "80+", "unknown"]).all()
    one_class = countries[(countries["n_positive"] == 0) | (countries["n_negative"] == 0)]
    assert len(one_class) > 0 and one_class["auc"].isna().all()
    assert set(report.summary["attribute"]) == {"sex", "age_band", "country"}
