"""How far do unsupervised clusters fall from the real labels?

Clusters are matched to ground-truth labels (Hungarian assignment on the contingency table
when there are no more clusters than labels, otherwise each cluster takes its majority label),
and the share of samples whose mapped label differs from their true label is the
``label_change_pct``. Alongside it: ARI, NMI, homogeneity, completeness, V-measure and purity,
(``confounders``: chi-square / Cramér's V checks of whether clusters follow metadata instead of
disease; ``grid``: encoders x algorithms; ``study``: that grid as a named run.)

Conventions: rows without a true label (None, NaN, empty string) are left out of every score
and counted. Cluster -1 (noise, or a row whose features were NaN) is never mapped to a label,
so its rows count as changed and as impure; for ARI/NMI it is one more cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.clustering import NOISE


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
