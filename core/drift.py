"""How far do unsupervised clusters fall from the real labels?

Clusters are matched to ground-truth labels (Hungarian assignment on the contingency table
when there are no more clusters than labels, otherwise each cluster takes its majority label),
and the share of samples whose mapped label differs from their true label is the
``label_change_pct``. Alongside it: ARI, NMI, homogeneity, completeness, V-measure and purity,
plus chi-square / Cramér's V checks of whether clusters follow metadata (site, sex, age bands,
modality) instead of disease, and a grid over encoders x algorithms.

Conventions: rows without a true label (None, NaN, empty string) are left out of every score
and counted. Cluster -1 (noise, or a row whose features were NaN) is never mapped to a label,
so its rows count as changed and as impure; for ARI/NMI it is one more cluster.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import atomic_write
from core.clustering import ALGORITHMS, NOISE, cluster, get_algorithm

DEFAULT_GRID_ALGORITHMS = ("kmeans", "gmm", "agglomerative", "spectral", "birch", "hdbscan")


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _sorted_levels(values: Sequence[Any]) -> list[Any]:
    levels = list(dict.fromkeys(values))
    try:
        return sorted(levels)
    except TypeError:  # mixed types, e.g. 1 and "1": order by text instead
        return sorted(levels, key=str)


def _prepare(
    labels_true: Sequence[Any], clusters: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels_true = np.asarray(labels_true, dtype=object)
    clusters = np.asarray(clusters)
    if labels_true.ndim != 1 or clusters.ndim != 1 or len(labels_true) != len(clusters):
        raise ValueError(
            f"labels_true (shape {labels_true.shape}) and clusters (shape {clusters.shape}) "
            "must be 1-D and of equal length"
        )
    if clusters.size and not np.issubdtype(clusters.dtype, np.integer):
        raise ValueError(f"clusters must be integers (-1 = noise); got dtype {clusters.dtype}")
    labelled = np.array([not _is_missing(v) for v in labels_true], dtype=bool)
    return labels_true, clusters.astype(np.int64), labelled


def contingency(labels_true: Sequence[Any], clusters: Sequence[int]) -> pd.DataFrame:
    """Counts of samples per (cluster, true label).

    labels_true : array-like of shape (n_samples,); rows with a missing label are left out.
    clusters : array-like of shape (n_samples,), int (-1 = noise, kept as a row).
    Returns a DataFrame with sorted cluster ids as index ("cluster") and sorted labels as
    columns ("label"). Raises ValueError on mismatched lengths or non-integer clusters.
    """
    labels_true, clusters, labelled = _prepare(labels_true, clusters)
    truth, found = labels_true[labelled], clusters[labelled]
    rows = _sorted_levels(found.tolist())
    columns = _sorted_levels(truth.tolist())
    row_pos = {c: i for i, c in enumerate(rows)}
    col_pos = {c: j for j, c in enumerate(columns)}
    counts = np.zeros((len(rows), len(columns)), dtype=np.int64)
    for c, label in zip(found.tolist(), truth.tolist(), strict=True):
        counts[row_pos[c], col_pos[label]] += 1
    return pd.DataFrame(
        counts,
        index=pd.Index(rows, name="cluster"),
        columns=pd.Index(columns, name="label"),
    )


def assign_clusters(
    labels_true: Sequence[Any], clusters: Sequence[int], *, method: str = "auto"
) -> dict[int, Any]:
    """Map each cluster to a true label.

    method : "hungarian" (one-to-one, maximising matched samples; clusters left without a
    label when there are more clusters than labels map to None), "majority" (each cluster takes
    its most common label; ties go to the first label in sorted order), or "auto" (Hungarian
    when n_clusters <= n_labels, else majority). Noise (-1) is never mapped.

    Returns {cluster id: label or None}. Raises ValueError for an unknown method or bad inputs.
    """
    from scipy.optimize import linear_sum_assignment

    if method not in ("auto", "hungarian", "majority"):
        raise ValueError(f"method={method!r} is not valid; valid: 'auto', 'hungarian', 'majority'")
    table = contingency(labels_true, clusters)
    table = table.drop(index=NOISE, errors="ignore")
    if table.empty:
        return {}
    if method == "auto":
        method = "hungarian" if table.shape[0] <= table.shape[1] else "majority"
    if method == "majority":
        counts = table.to_numpy()
        return {
            int(c): _plain(table.columns[int(np.argmax(counts[i]))])
            for i, c in enumerate(table.index)
        }
    rows, cols = linear_sum_assignment(table.to_numpy(), maximize=True)
    mapping: dict[int, Any] = dict.fromkeys((int(c) for c in table.index), None)
    for i, j in zip(rows, cols, strict=True):
        mapping[int(table.index[i])] = _plain(table.columns[j])
    return mapping


@dataclass
class DriftReport:
    """Agreement between clusters and true labels (rows with a true label only).

    mapping : {cluster: label or None}; mapped_labels : ndarray of shape (n_rows,), object,
    aligned with the inputs (None for noise, unmapped clusters and unlabelled rows).
    label_change_pct : percentage of labelled samples whose mapped label != true label.
    purity : share of labelled samples whose cluster's majority label is their own label.
    n_samples : labelled rows scored; n_missing_labels : rows left out for lack of a label.
    """

    mapping: dict[int, Any]
    method: str
    label_change_pct: float
    ari: float
    nmi: float
    homogeneity: float
    completeness: float
    v_measure: float
    purity: float
    contingency: pd.DataFrame
    n_samples: int
    n_missing_labels: int
    n_noise: int
    n_clusters: int
    n_labels: int
    mapped_labels: np.ndarray

    def summary(self) -> dict[str, Any]:
        """Scalar fields only, e.g. for a table row."""
        return {
            "method": self.method,
            "label_change_pct": self.label_change_pct,
            "ari": self.ari,
            "nmi": self.nmi,
            "homogeneity": self.homogeneity,
            "completeness": self.completeness,
            "v_measure": self.v_measure,
            "purity": self.purity,
            "n_samples": self.n_samples,
            "n_missing_labels": self.n_missing_labels,
            "n_noise": self.n_noise,
            "n_clusters": self.n_clusters,
            "n_labels": self.n_labels,
        }


def drift_report(
    labels_true: Sequence[Any], clusters: Sequence[int], *, method: str = "auto"
) -> DriftReport:
    """Score clusters against true labels.

    labels_true : array-like of shape (n_samples,) (missing labels are counted, not scored);
    clusters : array-like of shape (n_samples,), int, -1 = noise.
    method : the mapping method of :func:`assign_clusters`.

    Raises ValueError on mismatched lengths, non-integer clusters, an unknown method, or when
    no row has a true label.
    """
    from sklearn import metrics

    labels_true, clusters, labelled = _prepare(labels_true, clusters)
    if not labelled.any():
        raise ValueError(f"no row of {len(labels_true)} has a true label; nothing to compare")
    table = contingency(labels_true, clusters)
    n_clusters = int((table.index != NOISE).sum())
    resolved = method
    if method == "auto":
        resolved = "hungarian" if n_clusters <= table.shape[1] else "majority"
    mapping = assign_clusters(labels_true, clusters, method=resolved)

    mapped = np.array(
        [mapping.get(int(c)) if ok else None for c, ok in zip(clusters, labelled, strict=True)],
        dtype=object,
    )
    truth, found = labels_true[labelled], clusters[labelled]
    n = int(labelled.sum())
    changed = sum(m is None or m != t for m, t in zip(mapped[labelled], truth, strict=True))
    non_noise = table.drop(index=NOISE, errors="ignore")
    purity = float(non_noise.max(axis=1).sum() / n) if not non_noise.empty else 0.0
    # sklearn wants one comparable type; the text form keeps int and str labels distinct enough.
    truth_text = np.array([str(v) for v in truth])
    homogeneity, completeness, v_measure = metrics.homogeneity_completeness_v_measure(
        truth_text, found
    )
    return DriftReport(
        mapping=mapping,
        method=resolved,
        label_change_pct=100.0 * changed / n,
        ari=float(metrics.adjusted_rand_score(truth_text, found)),
        nmi=float(metrics.normalized_mutual_info_score(truth_text, found)),
        homogeneity=float(homogeneity),
        completeness=float(completeness),
        v_measure=float(v_measure),
        purity=purity,
        contingency=table,
        n_samples=n,
        n_missing_labels=int(len(labels_true) - n),
        n_noise=int((found == NOISE).sum()),
        n_clusters=n_clusters,
        n_labels=int(table.shape[1]),
        mapped_labels=mapped,
    )


def cramers_v(table: np.ndarray | pd.DataFrame, *, bias_correction: bool = False) -> float:
    """Cramér's V of a contingency table (0 = independent, 1 = perfectly associated).

    table : array-like of shape (n_rows, n_cols) of counts, at least 2 x 2 after dropping
    empty rows/columns (else NaN). Uses the chi-square without Yates' correction.
    bias_correction : Bergsma (2013) correction, which shrinks V toward 0 in small samples.
    """
    from scipy.stats import chi2_contingency

    counts = np.asarray(table, dtype=np.float64)
    counts = counts[counts.sum(axis=1) > 0][:, counts.sum(axis=0) > 0]
    if counts.ndim != 2 or min(counts.shape) < 2:
        return float("nan")
    n = counts.sum()
    chi2 = chi2_contingency(counts, correction=False)[0]
    r, k = counts.shape
    if not bias_correction:
        return float(np.sqrt(chi2 / (n * (min(r, k) - 1))))
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_corr = r - (r - 1) ** 2 / (n - 1)
    k_corr = k - (k - 1) ** 2 / (n - 1)
    denominator = min(k_corr - 1, r_corr - 1)
    return float(np.sqrt(phi2 / denominator)) if denominator > 0 else float("nan")


def _as_levels(values: pd.Series, n_bins: int) -> tuple[pd.Series, str]:
    """Categorical levels of a column: numeric columns with many values become quantile bands."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return values.astype(object).where(values.notna()).map(
            lambda v: None if _is_missing(v) else str(v)
        ), "categorical"
    if values.nunique(dropna=True) <= n_bins:
        return values.map(lambda v: None if pd.isna(v) else str(v)), "categorical"
    bands = pd.qcut(values, q=n_bins, duplicates="drop")
    return bands.astype(object).map(
        lambda v: None if _is_missing(v) else str(v)
    ), "numeric (quantile bands)"


def confounder_checks(
    clusters: Sequence[int],
    metadata_df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    strong: float = 0.3,
    bias_correction: bool = False,
    n_bins: int = 4,
    max_missing: float = 0.5,
    max_levels: int = 50,
) -> pd.DataFrame:
    """Chi-square test of clusters against each metadata column.

    clusters : array-like of shape (n_samples,), aligned by position with ``metadata_df``;
    -1 (noise / failed rows) is kept as its own group, since failures can follow metadata too.
    columns : columns to test (default: all). Numeric columns with more than ``n_bins`` values
    are cut into ``n_bins`` quantile bands (age -> age bands). Rows missing the column are left
    out of that column's test.

    Returns one row per column: column, kind, n, n_levels, chi2, p_value, dof, cramers_v,
    flagged (V >= ``strong``), note. Skipped columns (one level, more than ``max_missing``
    missing, identifier-like (a level per row), more than ``max_levels`` levels, one cluster) have NaN
    statistics and the reason in ``note``. Raises ValueError on mismatched lengths or an
    unknown column.
    """
    from scipy.stats import chi2_contingency

    clusters = np.asarray(clusters)
    if len(clusters) != len(metadata_df):
        raise ValueError(
            f"clusters has {len(clusters)} rows but metadata_df has {len(metadata_df)}; they must align"
        )
    if columns is None:
        columns = list(metadata_df.columns)
    unknown = [c for c in columns if c not in metadata_df.columns]
    if unknown:
        raise ValueError(
            f"unknown column(s) {', '.join(map(str, unknown))}; "
            f"metadata columns: {', '.join(map(str, metadata_df.columns))}"
        )
    if not 0 < strong <= 1:
        raise ValueError(f"strong={strong} must be in (0, 1]")
    meta = metadata_df.reset_index(drop=True)
    nan = float("nan")
    rows = []
    for column in columns:
        row: dict[str, Any] = {
            "column": column,
            "kind": "",
            "n": 0,
            "n_levels": 0,
            "chi2": nan,
            "p_value": nan,
            "dof": np.nan,
            "cramers_v": nan,
            "flagged": False,
            "note": "",
        }
        rows.append(row)
        levels, row["kind"] = _as_levels(meta[column], n_bins)
        present = levels.notna().to_numpy()
        missing_share = 1 - present.mean() if len(present) else 1.0
        row["n"] = int(present.sum())
        row["n_levels"] = int(levels[present].nunique())
        if missing_share > max_missing:
            row["note"] = f"skipped: mostly missing ({100 * missing_share:.0f}% missing)"
            continue
        if row["n_levels"] < 2:
            row["note"] = "skipped: only one level"
            continue
        if row["kind"] == "categorical" and row["n_levels"] == row["n"] and row["n"] > 2:
            row["note"] = f"skipped: identifier-like ({row['n_levels']} levels in {row['n']} rows)"
            continue
        if row["kind"] == "categorical" and row["n_levels"] > max_levels:
            row["note"] = (
                f"skipped: too many levels ({row['n_levels']} > max_levels={max_levels}; "
                "identifier or free text?)"
            )
            continue
        table = pd.crosstab(clusters[present], levels[present].to_numpy())
        if table.shape[0] < 2:
            row["note"] = "skipped: only one cluster among rows with this column"
            continue
        chi2, p_value, dof, _ = chi2_contingency(table.to_numpy(), correction=False)
        row.update(
            chi2=float(chi2),
            p_value=float(p_value),
            dof=int(dof),
            cramers_v=cramers_v(table, bias_correction=bias_correction),
        )
        row["flagged"] = bool(row["cramers_v"] >= strong)
        if (table.to_numpy() < 5).mean() > 0.2:
            row["note"] = "over 20% of cells have count < 5; p-value is approximate"
    return pd.DataFrame(rows)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"


def labels_filename(encoder: str, algorithm: str) -> str:
    """File name of one grid combination's per-row labels, as ``drift_grid`` writes it."""
    return f"labels_{_safe_name(encoder)}__{_safe_name(algorithm)}.csv"


def drift_grid(
    feature_sets: Mapping[str, np.ndarray],
    labels_true: Sequence[Any],
    *,
    algorithms: Sequence[str] = DEFAULT_GRID_ALGORITHMS,
    n_clusters: int | None = None,
    algorithm_params: Mapping[str, Mapping[str, Any]] | None = None,
    row_ids: Sequence[Any] | None = None,
    out_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    random_state: int = 0,
) -> pd.DataFrame:
    """Cluster every feature set with every algorithm and score each against the true labels.

    feature_sets : {encoder name: ndarray of shape (n_samples, n_features)}, rows aligned with
    ``labels_true`` (array-like of shape (n_samples,)). All rows are clustered (NaN rows get -1);
    drift is scored on rows with a true label.
    n_clusters : k for algorithms that take one (default: number of distinct true labels);
    density algorithms find their own. algorithm_params : extra parameters per algorithm.
    out_dir : when given, writes ``grid.csv`` and ``labels_<encoder>__<algorithm>.csv``
    (row, row_id, label_true, cluster, mapped_label) per successful combination.
    progress : called as ``progress(done, total)`` after each combination.

    Returns one row per encoder x algorithm: encoder, algorithm, n_clusters_requested,
    n_clusters, n_noise, label_change_pct, ari, nmi, purity, silhouette, seconds, error. A
    combination that fails gets its message in ``error`` and NaN scores; the grid goes on.
    Raises ValueError (before any work) for no feature sets, an unknown algorithm, no labelled
    row, ``n_clusters < 2`` or ``row_ids`` of the wrong length.
    """
    if not feature_sets:
        raise ValueError("feature_sets is empty; give at least one {name: matrix}")
    for name in algorithms:
        get_algorithm(name)
    labels_true = np.asarray(labels_true, dtype=object)
    labelled = [v for v in labels_true if not _is_missing(v)]
    if not labelled:
        raise ValueError(f"no row of {len(labels_true)} has a true label; nothing to compare")
    if n_clusters is None:
        n_clusters = len(set(labelled))
    if n_clusters < 2:
        raise ValueError(f"n_clusters={n_clusters} must be >= 2")
    if row_ids is not None and len(row_ids) != len(labels_true):
        raise ValueError(f"row_ids has {len(row_ids)} entries; expected {len(labels_true)}")
    algorithm_params = algorithm_params or {}
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    total = len(feature_sets) * len(algorithms)
    rows = []
    done = 0
    for encoder, X in feature_sets.items():
        for algorithm in algorithms:
            row: dict[str, Any] = {
                "encoder": encoder,
                "algorithm": algorithm,
                "n_clusters_requested": np.nan,
                "n_clusters": np.nan,
                "n_noise": np.nan,
                "label_change_pct": np.nan,
                "ari": np.nan,
                "nmi": np.nan,
                "purity": np.nan,
                "silhouette": np.nan,
                "seconds": np.nan,
                "error": "",
            }
            started = time.perf_counter()
            try:
                params = dict(algorithm_params.get(algorithm, {}))
                if ALGORITHMS[algorithm].takes_k:
                    params.setdefault("k", n_clusters)
                    row["n_clusters_requested"] = params["k"]
                X = np.asarray(X)
                if X.ndim != 2 or X.shape[0] != len(labels_true):
                    raise ValueError(
                        f"feature set has shape {X.shape}; expected ({len(labels_true)}, n_features)"
                    )
                result = cluster(X, algorithm=algorithm, random_state=random_state, **params)
                report = drift_report(labels_true, result.labels)
                row.update(
                    n_clusters=result.n_clusters,
                    n_noise=result.n_noise + result.n_excluded,
                    label_change_pct=report.label_change_pct,
                    ari=report.ari,
                    nmi=report.nmi,
                    purity=report.purity,
                    silhouette=result.scores["silhouette"],
                )
                if out is not None:
                    per_row = pd.DataFrame(
                        {
                            "row": np.arange(len(labels_true)),
                            "row_id": list(row_ids)
                            if row_ids is not None
                            else np.arange(len(labels_true)),
                            "label_true": labels_true,
                            "cluster": result.labels,
                            "mapped_label": report.mapped_labels,
                        }
                    )
                    name = labels_filename(encoder, algorithm)
                    atomic_write(out / name, lambda fh, frame=per_row: frame.to_csv(fh, index=False))
            except Exception as error:  # one bad combination must not sink the whole grid
                row["error"] = f"{type(error).__name__}: {error}"
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
            done += 1
            if progress is not None:
                progress(done, total)
    grid = pd.DataFrame(rows)
    if out is not None:
        atomic_write(out / "grid.csv", lambda fh: grid.to_csv(fh, index=False))
    return grid
