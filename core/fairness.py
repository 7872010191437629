"""Subgroup performance of a binary classifier: does it work as well for women as for men, for
the over-80s, for each hospital or country?

:func:`fairness_table` computes, per subgroup of one or more sensitive columns (and their
intersections), AUC, TPR (sensitivity), FPR, precision and selection rate with fairlearn's
``MetricFrame``, bootstrap 95% intervals for AUC and TPR, how many rows each group has (its
share of the data), and how far each group is from the best group. A metric that a group
cannot define (AUC with one class only, TPR without positives ...) is NaN with a note, never an
error: small, one-sided groups are the normal case in a clinic's data.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from core.weighted_metrics import (
    binary_rates,
    bootstrap_weights,
    percentile_interval,
    weighted_auc,
    weighted_confusion,
)

AGE_EDGES = (0, 18, 40, 60, 80, 200)
UNKNOWN = "unknown"
OUT_OF_RANGE = "out of range"
OVERALL = "overall"
MIN_GROUP = 20  # groups with fewer rows are "small" (hatched on the page)
METRICS = ("auc", "tpr", "fpr", "precision", "selection_rate")
# For FPR lower is better; gaps and ratios are oriented so that gap >= 0 and ratio <= 1 always
# mean "this group is worse than the best group by this much".
LOWER_IS_BETTER = frozenset({"fpr"})
CI_METRICS = ("auc", "tpr")
COUNTRY_ALIASES = {
    "us": "USA", "u.s.": "USA", "u.s.a.": "USA", "united states": "USA",
    "united states of america": "USA", "uk": "United Kingdom", "u.k.": "United Kingdom",
    "england": "United Kingdom", "scotland": "United Kingdom", "wales": "United Kingdom",
    "great britain": "United Kingdom", "prc": "China", "p.r. china": "China",
    "korea": "South Korea", "republic of korea": "South Korea",
}


def age_bands(age: pd.Series | Sequence[float], *, edges: Sequence[float] = AGE_EDGES) -> pd.Series:
    """Age in years -> band labels such as "40-59" (each band holds ``lo <= age < hi``).

    age : Series or sequence of n_samples ages (numbers or numeric strings).
    edges : strictly increasing band edges; a last edge >= 120 is written as "80+".
    Returns an ordered categorical Series (same index as ``age``); missing or non-numeric ages
    are "unknown", ages outside the edges "out of range".
    Raises ValueError for fewer than two edges or edges that do not increase.
    """
    edges = [float(e) for e in edges]
    if len(edges) < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges={edges} must be at least two finite, strictly increasing numbers")
    series = age if isinstance(age, pd.Series) else pd.Series(list(age), dtype=object)
    years = pd.to_numeric(series, errors="coerce").astype(float)
    whole = all(e.is_integer() for e in edges)

    def name(lo: float, hi: float, last: bool) -> str:
        lo_text = f"{int(lo)}" if whole else f"{lo:g}"
        if last and hi >= 120:
            return f"{lo_text}+"
        return f"{lo_text}-{int(hi) - 1}" if whole else f"{lo_text}-<{hi:g}"

    labels = [name(lo, hi, i == len(edges) - 2) for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True))]
    position = np.searchsorted(edges, years.to_numpy(), side="right") - 1
    out = np.where(years.isna(), UNKNOWN, OUT_OF_RANGE).astype(object)
    inside = years.notna().to_numpy() & (position >= 0) & (position < len(labels))
    out[inside] = np.array(labels, dtype=object)[position[inside]]
    return pd.Series(pd.Categorical(out, categories=[*labels, OUT_OF_RANGE, UNKNOWN], ordered=True),
                     index=series.index, name="age_band")


def country_from_location(location: pd.Series | Sequence[str | None]) -> pd.Series:
    """The country (or site) of a free-text location: its last comma-separated part
    ("Cho Ray Hospital, Ho Chi Minh City, Vietnam" -> "Vietnam"), with a few spellings merged
    ("US", "United States" -> "USA"; "UK", "England" -> "United Kingdom"). Missing or blank
    -> "unknown". Returns a Series aligned with ``location``."""
    series = location if isinstance(location, pd.Series) else pd.Series(list(location), dtype=object)

    def one(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            return UNKNOWN
        last = re.sub(r"\s+", " ", value.split(",")[-1]).strip()
        return COUNTRY_ALIASES.get(last.lower(), last) or UNKNOWN

    return pd.Series([one(v) for v in series.tolist()], index=series.index, dtype=object, name="country")




def sensitive_attributes(table: pd.DataFrame) -> pd.DataFrame:
    """Subgroup columns present in ``table`` (same index): sex, age band, country (from
    ``location``), and site, race, ethnicity or insurance where such columns exist; missing
    values become "unknown"."""
    out = pd.DataFrame(index=table.index)
    if "sex" in table:
        out["sex"] = table["sex"].fillna(UNKNOWN).astype(str)
    if "age" in table:
        out["age_band"] = age_bands(table["age"]).astype(str)
    if "location" in table:
        out["country"] = country_from_location(table["location"]).fillna(UNKNOWN).astype(str)
    for column in ("site", "race", "ethnicity", "insurance"):
        if column in table:
            out[column] = table[column].fillna(UNKNOWN).astype(str)
    return out


@dataclass
class FairnessReport:
    """Result of :func:`fairness_table`.

    table : one row per group: attribute (sensitive column, "a × b" for intersections, or
        "overall"), group, count, share, n_positive, n_negative, auc/auc_lo/auc_hi,
        tpr/tpr_lo/tpr_hi, fpr, precision, selection_rate, small, note, and per metric
        ``<metric>_gap`` and ``<metric>_ratio``.
    summary : per attribute and metric: best and worst group (among groups that are not
        small), their values, the largest gap and smallest ratio.
    metric_frames : the fairlearn MetricFrame of each attribute.

    Gap and ratio compare a group with the best group of its attribute (groups that are not
    small and where the metric is defined): for AUC, TPR, precision and selection rate
    gap = best - group and ratio = group / best; for FPR, where lower is better,
    gap = group - best and ratio = best / group. So a larger gap or smaller ratio means a
    worse-off group; gap < 0 (ratio > 1) only happens for a small group that beats the best
    group. A ratio with a zero denominator is NaN (1 when both sides are 0).
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    threshold: float
    min_group: int
    n_rows: int
    n_excluded: int
    metric_frames: dict[str, MetricFrame]
    notes: list[str] = field(default_factory=list)


def _safe(fn):
    def metric(y_true: np.ndarray, y_score: np.ndarray) -> float:
        return float(fn(np.asarray(y_true, dtype=bool), np.asarray(y_score, dtype=float)))
    return metric


def _metric_functions(threshold: float) -> dict[str, Any]:
    def rates(t: np.ndarray, s: np.ndarray) -> dict[str, np.ndarray]:
        return binary_rates(weighted_confusion(t, s >= threshold))

    return {
        "count": _safe(lambda t, s: t.size),
        "n_positive": _safe(lambda t, s: t.sum()),
        "auc": _safe(lambda t, s: weighted_auc(t, s)[0]),
        "tpr": _safe(lambda t, s: rates(t, s)["recall"][0]),
        "fpr": _safe(lambda t, s: rates(t, s)["fpr"][0]),
        "precision": _safe(lambda t, s: rates(t, s)["precision"][0]),
        "selection_rate": _safe(lambda t, s: rates(t, s)["selection_rate"][0]),
    }


def _binary_truth(y_true: Any) -> np.ndarray:
    values = pd.Series(np.asarray(y_true, dtype=object).ravel())
    numeric = pd.to_numeric(values.map(lambda v: float(v) if isinstance(v, bool | np.bool_) else v),
                            errors="coerce")
    bad = values.notna() & ~numeric.isin([0, 1])
    if bad.any():
        raise ValueError(
            f"y_true must hold 0/1 (or True/False; NaN = unknown); found {sorted(set(map(str, values[bad])))[:10]}"
        )
    return numeric.to_numpy(dtype=float)


def _group_name(key: Any) -> str:
    return " & ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def _notes_for(row: dict[str, Any], min_group: int) -> str:
    notes = []
    if row["small"]:
        notes.append(f"small group (n={row['count']} < {min_group})")
    if row["n_positive"] == 0 or row["n_negative"] == 0:
        only = "negatives" if row["n_positive"] == 0 else "positives"
        notes.append(f"only {only}: AUC undefined")
    if row["n_positive"] == 0:
        notes.append("no positives: TPR undefined")
    if row["n_negative"] == 0:
        notes.append("no negatives: FPR undefined")
    if np.isnan(row["precision"]) and row["count"] > 0:
        notes.append("no predicted positives: precision undefined")
    return "; ".join(notes)


def fairness_table(
    y_true: Any,
    y_score: Any,
    sensitive: pd.DataFrame | pd.Series,
    *,
    threshold: float = 0.5,
    min_group: int = MIN_GROUP,
    n_bootstrap: int = 500,
    groups: Any = None,
    intersections: bool = True,
    ci_level: float = 0.95,
    random_state: int = 0,
) -> FairnessReport:
    """Per-subgroup performance of a binary classifier's scores.

    y_true : array-like of shape (n_samples,), 0/1 or bool; NaN rows are excluded (counted).
    y_score : array-like of shape (n_samples,), the positive-class score (e.g. ``report.oof[:, 1]``
        of a binary :class:`core.classify.ClassifierReport`); NaN rows are excluded (counted).
    sensitive : DataFrame (n_samples rows, one column per attribute, e.g. sex, age band,
        country) or a Series; missing values form the group "unknown". With several columns
        and ``intersections=True`` every combination is a group too ("F & 60-79").
    threshold : positive prediction when ``score >= threshold`` (TPR, FPR, precision, selection).
    min_group : groups with fewer rows are flagged ``small`` and not used as the best group.
    groups : optional patient ids (n_samples,) so that the bootstrap resamples patients.

    Raises ValueError for mismatched lengths, non-binary y_true, an empty ``sensitive`` or
    out-of-range parameters.
    """
    if not np.isfinite(threshold):
        raise ValueError(f"threshold={threshold} must be a finite number")
    if not isinstance(min_group, int | np.integer) or min_group < 1:
        raise ValueError(f"min_group={min_group!r} must be an integer >= 1")
    if not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be an integer >= 0")
    if not 0.0 < ci_level < 1.0:
        raise ValueError(f"ci_level={ci_level!r} must be between 0 and 1")
    frame = sensitive.to_frame() if isinstance(sensitive, pd.Series) else sensitive
    if not isinstance(frame, pd.DataFrame) or frame.shape[1] == 0:
        raise ValueError("sensitive must be a DataFrame with at least one column (or a Series)")
    truth = _binary_truth(y_true)
    score = np.asarray(y_score, dtype=float).ravel()
    n = len(frame)
    if len(truth) != n or len(score) != n:
        raise ValueError(f"y_true ({len(truth)}), y_score ({len(score)}) and sensitive ({n}) must have the same length")
    patient = np.arange(n).astype(object) if groups is None else np.asarray(groups, dtype=object)
    if len(patient) != n:
        raise ValueError(f"groups has {len(patient)} entries but sensitive has {n} rows")

    keep = np.isfinite(truth) & np.isfinite(score)
    notes = [f"{int((~keep).sum())} row(s) with missing y_true or y_score excluded"] if (~keep).any() else []
    if not keep.any():
        raise ValueError("no row has both y_true and y_score")
    truth, score, patient = truth[keep].astype(bool), score[keep], patient[keep]
    columns = [str(c) for c in frame.columns]
    features = pd.DataFrame(
        {str(c): frame[c].astype(object).where(frame[c].notna(), UNKNOWN).astype(str).to_numpy()[keep]
         for c in frame.columns}, columns=columns,
    )
    attributes: dict[str, list[str]] = {c: [c] for c in columns}
    if intersections and len(columns) > 1:
        attributes[" × ".join(columns)] = columns

    functions = _metric_functions(threshold)
    rng = np.random.default_rng(random_state)
    rows = [_row(OVERALL, "all", np.ones(len(truth), bool), truth, score, patient, threshold,
                 n_bootstrap, rng, ci_level, len(truth), min_group)]
    metric_frames: dict[str, MetricFrame] = {}
    for attribute, cols in attributes.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mf = MetricFrame(metrics=functions, y_true=truth.astype(int), y_pred=score,
                             sensitive_features=features[cols] if len(cols) > 1 else features[cols[0]])
        metric_frames[attribute] = mf
        keys = features[cols].astype(str).agg(" & ".join, axis=1).to_numpy()
        by_group = mf.by_group.sort_values("count", ascending=False, kind="stable")
        # Intersections are listed as a full product of values; combinations nobody has are
        # not groups.
        by_group = by_group[by_group["count"] > 0]
        for key, values in by_group.iterrows():
            name = _group_name(key)
            row = _row(attribute, name, keys == name, truth, score, patient, threshold,
                       n_bootstrap, rng, ci_level, len(truth), min_group)
            # The table reports fairlearn's per-group values; the bootstrap only adds intervals.
            row.update({m: float(values[m]) for m in METRICS})
            row["note"] = _notes_for(row, min_group)
            rows.append(row)
    table = pd.DataFrame(rows)
    table, summary, gap_notes = _gaps(table)
    notes.extend(gap_notes)
    return FairnessReport(
        table=table, summary=summary, threshold=float(threshold), min_group=int(min_group),
        n_rows=int(keep.sum()), n_excluded=int((~keep).sum()), metric_frames=metric_frames, notes=notes,
    )


def _row(attribute: str, group: str, members: np.ndarray, truth: np.ndarray, score: np.ndarray,
         patient: np.ndarray, threshold: float, n_bootstrap: int, rng: np.random.Generator,
         ci_level: float, n_total: int, min_group: int) -> dict[str, Any]:
    t, s = truth[members], score[members]
    weights = np.vstack([np.ones(t.size), bootstrap_weights(patient[members], n_bootstrap, rng)])
    rates = binary_rates(weighted_confusion(t, s >= threshold, weights))
    auc = weighted_auc(t, s, weights)
    row: dict[str, Any] = {
        "attribute": attribute, "group": group, "count": int(t.size), "share": t.size / n_total,
        "n_positive": int(t.sum()), "n_negative": int((~t).sum()),
        "auc": float(auc[0]), "tpr": float(rates["recall"][0]), "fpr": float(rates["fpr"][0]),
        "precision": float(rates["precision"][0]), "selection_rate": float(rates["selection_rate"][0]),
    }
    for metric, values in (("auc", auc), ("tpr", rates["recall"])):
        row[f"{metric}_lo"], row[f"{metric}_hi"] = percentile_interval(values[1:], ci_level)
    row["small"] = bool(t.size < min_group)
    row["note"] = _notes_for(row, min_group)
    return row


def _ratio(numerator: Any, denominator: Any) -> np.ndarray:
    """numerator / denominator; 1 when both are 0 (equal), NaN when undefined."""
    num, den = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    out = np.full(num.shape, np.nan)
    defined = den > 0
    out[defined] = num[defined] / den[defined]
    out[(num == 0) & (den == 0)] = 1.0
    return out


def _gaps(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    order = ["attribute", "group", "count", "share", "n_positive", "n_negative", "auc", "auc_lo",
             "auc_hi", "tpr", "tpr_lo", "tpr_hi", "fpr", "precision", "selection_rate", "small", "note"]
    table = table[order].copy()
    notes, summary_rows = [], []
    for metric in METRICS:
        table[f"{metric}_gap"] = np.nan
        table[f"{metric}_ratio"] = np.nan
    for attribute in table["attribute"].unique():
        if attribute == OVERALL:
            continue
        part = table["attribute"] == attribute
        for metric in METRICS:
            values = table.loc[part, metric]
            reference = values[~table.loc[part, "small"] & values.notna()]
            if reference.empty:
                reference = values.dropna()
                if not reference.empty:
                    notes.append(f"{attribute}: every group is small; {metric} compared across all groups")
            if reference.empty:
                continue
            lower = metric in LOWER_IS_BETTER
            best = reference.min() if lower else reference.max()
            gap = values - best if lower else best - values
            ratio = _ratio(best, values) if lower else _ratio(values, best)
            table.loc[part, f"{metric}_gap"] = gap
            table.loc[part, f"{metric}_ratio"] = ratio
            best_group = table.loc[reference.index, "group"][reference == best].iloc[0]
            worst_value = reference.max() if lower else reference.min()
            worst_group = table.loc[reference.index, "group"][reference == worst_value].iloc[0]
            ref_ratios = table.loc[reference.index, f"{metric}_ratio"]
            summary_rows.append({
                "attribute": attribute, "metric": metric, "best_group": best_group, "best": best,
                "worst_group": worst_group, "worst": worst_value,
                "max_gap": float(table.loc[reference.index, f"{metric}_gap"].max()),
                "min_ratio": float(ref_ratios.min()) if ref_ratios.notna().any() else np.nan,
                "n_groups_compared": int(reference.size),
            })
    summary = pd.DataFrame(summary_rows, columns=["attribute", "metric", "best_group", "best", "worst_group",
                                                  "worst", "max_gap", "min_ratio", "n_groups_compared"])
    return table, summary, notes


# --- Reading the table -------------------------------------------------------------------------
# Under 5 people with the condition a group's sensitivity is 0/1, 1/1, 2/3 ...: an interval of
# "1-1" looks certain but says nothing. Such a metric is reported as "too few to judge".
MIN_POSITIVES = 5
METRIC_NAMES = {"auc": "AUC", "tpr": "sensitivity", "fpr": "false-positive rate",
                "precision": "PPV (precision)", "selection_rate": "share predicted positive"}
COLUMN_NAMES = {"attribute": "grouped by", "group": "group", "count": "rows", "share": "share of data",
                "n_positive": "with the condition", "n_negative": "without the condition",
                "small": "small group", "note": "note"}
TOO_FEW = "too few to judge"


def judgeable(n_positive: int, n_negative: int, metric: str, *, minimum: int = MIN_POSITIVES) -> bool:
    """Whether a group has enough cases to judge ``metric``: the false-positive rate needs
    ``minimum`` rows without the condition, AUC needs ``minimum`` with and without, every other
    metric ``minimum`` with the condition. Raises ValueError for an unknown metric."""
    if metric not in METRIC_NAMES:
        raise ValueError(f"metric={metric!r} is not valid; use one of {list(METRIC_NAMES)}")
    if metric == "fpr":
        return n_negative >= minimum
    if metric == "auc":
        return min(n_positive, n_negative) >= minimum
    return n_positive >= minimum


def readable_fairness(table: pd.DataFrame, metrics: Sequence[str] = tuple(METRIC_NAMES), *,
                      minimum: int = MIN_POSITIVES, digits: int = 2) -> pd.DataFrame:
    """A :func:`fairness_table` table as people read it: plain column names
    (:data:`COLUMN_NAMES`, :data:`METRIC_NAMES`), each metric one text cell "0.81 (0.62-0.95)"
    (its interval where there is one), "too few to judge" where :func:`judgeable` says so, and
    "behind the best group by" columns for the gaps, rounded to ``digits`` decimals."""
    out = table[[c for c in COLUMN_NAMES if c in table]].copy()
    if "share" in out:
        out["share"] = out["share"].round(3)
    records = table.to_dict("records")
    for metric in metrics:
        title = METRIC_NAMES[metric]
        cells, judged = [], []
        for row in records:
            value = row.get(metric, np.nan)
            judged.append(judgeable(row["n_positive"], row["n_negative"], metric, minimum=minimum))
            if not judged[-1]:
                cells.append(TOO_FEW)
            elif value is None or not np.isfinite(value):
                cells.append("-")
            elif np.isfinite(row.get(f"{metric}_lo", np.nan)) and np.isfinite(row.get(f"{metric}_hi", np.nan)):
                cells.append(f"{value:.{digits}f} ({row[f'{metric}_lo']:.{digits}f}-{row[f'{metric}_hi']:.{digits}f})")
            else:
                cells.append(f"{value:.{digits}f}")
        out[title] = cells
        if f"{metric}_gap" in table:
            gaps = table[f"{metric}_gap"].to_numpy(dtype=float).round(digits)
            out[f"{title}: behind the best group by"] = np.where(judged, gaps, np.nan)
    return out.rename(columns=COLUMN_NAMES)
