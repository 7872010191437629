"""Drift as named runs: the encoders x algorithms study, and the drift of one clustering.

``drift_study`` embeds the dataset with each encoder (through the embedding cache), builds the
cohort matrix, runs :func:`core.drift.drift_grid` and stores, as run kind ``drift-study``: the
grid (label-change %, ARI, NMI per combination), every combination's cluster labels, and for
the best combination its contingency table and confounder checks (does it just track view,
modality, site, sex?). ``clustering_drift`` stores the same report for the clustering the user
chose (kind ``clustering-drift``), so pages read it instead of recomputing on every rerun.
``write_drift_study`` exports a study as CSV files for the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.atomic import atomic_write
from core.cohort import Cohort, build_cohort
from core.columns import CONFOUNDER_COLUMNS
from core.drift.confounders import confounder_checks
from core.drift.grid import drift_grid, labels_filename
from core.drift.metrics import drift_report
from core.embed import embed_dataset
from core.ingest import Dataset
from core.runs import Run, RunStore, run_key

STUDY_ALGORITHMS = ("kmeans", "gmm", "agglomerative", "spectral", "birch", "hdbscan", "kmedoids", "fuzzy-cmeans")
STUDY_KIND, STUDY_VERSION = "drift-study", "3"  # 3: confounders need p < 0.05, skip near-unique
CLUSTERING_DRIFT_KIND, CLUSTERING_DRIFT_VERSION = "clustering-drift", "2"  # 2: as STUDY_VERSION 3

ProgressFn = Callable[[float, str], None]


@dataclass
class DriftStudy:
    """grid : one row per (encoder, algorithm); labels : row_id, label_true and one column of
    cluster labels per successful combination (``"<encoder>__<algorithm>"``); contingency and
    confounders : of the best combination (None when no combination succeeded)."""

    grid: pd.DataFrame
    config: dict[str, Any]
    key: str
    created: str
    labels: pd.DataFrame
    contingency: pd.DataFrame | None = None
    confounders: pd.DataFrame | None = None
    from_cache: bool = False

    @property
    def best(self) -> pd.Series | None:
        ok = self.grid.dropna(subset=["ari"]) if "ari" in self.grid else self.grid.iloc[0:0]
        return None if ok.empty else ok.sort_values("ari", ascending=False).iloc[0]


def drift_study_key(dataset: Dataset, encoders: Sequence[str], algorithms: Sequence[str], level: str,
                    label_column: str) -> str:
    """Key of the drift study of ``dataset`` with these encoders, algorithms, level and labels."""
    return run_key(STUDY_KIND, inputs={"dataset": dataset.token},
                   config={"encoders": list(encoders), "algorithms": list(algorithms), "level": level,
                           "label_column": label_column},
                   version=STUDY_VERSION)


def _combination(encoder: str, algorithm: str) -> str:
    return f"{encoder}__{algorithm}"


def _study_from_run(run: Run, *, from_cache: bool) -> DriftStudy:
    return DriftStudy(
        grid=run.load("grid"), config=run.config, key=run.key, created=run.created,
        labels=run.load("labels"), contingency=_contingency_from(run.get("contingency")),
        confounders=run.get("confounders"), from_cache=from_cache,
    )


def _contingency_from(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    # Stored with the cluster ids as a column (Parquet keeps no index); restore the index.
    return None if frame is None else frame.set_index("cluster").rename_axis(None)


def stored_drift_study(key: str, *, store: RunStore | None = None) -> DriftStudy | None:
    """The stored study ``key`` (None when absent or of an older version)."""
    run = (store or RunStore()).load(STUDY_KIND, key, version=STUDY_VERSION)
    return None if run is None else _study_from_run(run, from_cache=True)


def drift_study(
    dataset: Dataset,
    encoders: Sequence[str],
    *,
    algorithms: Sequence[str] = STUDY_ALGORITHMS,
    level: str = "image",
    label_column: str = "label",
    store: RunStore | None = None,
    progress: ProgressFn | None = None,
    random_state: int = 0,
) -> DriftStudy:
    """Run (or load) the study; ``progress(fraction, message)`` is called as it goes.

    Raises ``ValueError`` when the dataset has no ``label_column`` values (no ground truth).
    """
    table = dataset.images if level == "image" else dataset.patients
    if label_column not in table.columns or table[label_column].notna().sum() == 0:
        raise ValueError(f"dataset {dataset.name!r} has no ground truth in column {label_column!r}")
    store = store or RunStore()
    key = drift_study_key(dataset, encoders, algorithms, level, label_column)
    stored = stored_drift_study(key, store=store)
    if stored is not None:
        return stored

    def report(fraction: float, message: str) -> None:
        if progress:
            progress(min(max(fraction, 0.0), 1.0), message)

    feature_sets: dict[str, np.ndarray] = {}
    cohort = None
    for i, encoder in enumerate(encoders):
        report(0.4 * i / len(encoders), f"embedding with {encoder}")
        embedded = embed_dataset(
            dataset, encoder,
            progress=lambda done, total, i=i, encoder=encoder: report(
                0.4 * (i + done / max(total, 1)) / len(encoders), f"embedding with {encoder}: {done}/{total}"),
        )
        cohort = build_cohort(dataset, embedded, level=level)
        feature_sets[encoder] = cohort.masked()
    truth = cohort.table[label_column].to_numpy(dtype=object)
    found: dict[tuple[str, str], np.ndarray] = {}
    grid = drift_grid(
        feature_sets, truth, algorithms=algorithms, row_ids=cohort.row_ids, labels_out=found,
        progress=lambda done, total: report(0.4 + 0.55 * done / max(total, 1), f"clustering {done}/{total}"),
        random_state=random_state,
    )
    labels = pd.DataFrame({"row_id": [str(v) for v in cohort.row_ids],
                           "label_true": [None if v is None else str(v) for v in truth]})
    for (encoder, algorithm), clusters in found.items():
        labels[_combination(encoder, algorithm)] = clusters
    payload: dict[str, Any] = {"grid": grid, "labels": labels}
    study = DriftStudy(grid, {}, key, "", labels)
    best = study.best
    if best is not None:
        clusters = found[(best["encoder"], best["algorithm"])]
        best_table = drift_report(truth, clusters).contingency
        payload["contingency"] = best_table.rename(columns=str).rename_axis("cluster").reset_index()
        columns = [c for c in CONFOUNDER_COLUMNS if c in cohort.table.columns]
        payload["confounders"] = confounder_checks(clusters, cohort.table, columns)
    config = {"encoders": list(encoders), "algorithms": list(algorithms), "level": level,
              "label_column": label_column, "random_state": random_state}
    run = store.save(
        STUDY_KIND, key, version=STUDY_VERSION, config=config, payload=payload,
        inputs={"dataset": dataset.token}, dataset=dataset.name,
        summary={"best": None if best is None else _combination(best["encoder"], best["algorithm"]),
                 "best_ari": None if best is None else round(float(best["ari"]), 4),
                 "combinations": len(grid)},
    )
    report(1.0, "done")
    return _study_from_run(run, from_cache=False)


def write_drift_study(study: DriftStudy, out_dir: str | Path) -> list[Path]:
    """Export ``study`` as CSV files in ``out_dir``: grid.csv, one labels_<encoder>__<algorithm>.csv
    per combination (row_id, label_true, cluster), contingency.csv and confounders.csv."""
    out = Path(out_dir)
    written = [atomic_write(out / "grid.csv", lambda fh: study.grid.to_csv(fh, index=False))]
    for combination in study.labels.columns[2:]:
        encoder, algorithm = combination.split("__", 1)
        per_row = study.labels[["row_id", "label_true"]].assign(cluster=study.labels[combination])
        written.append(atomic_write(out / labels_filename(encoder, algorithm),
                                    lambda fh, frame=per_row: frame.to_csv(fh, index=False)))
    if study.contingency is not None:
        written.append(atomic_write(out / "contingency.csv", lambda fh: study.contingency.to_csv(fh)))
    if study.confounders is not None:
        written.append(atomic_write(out / "confounders.csv", lambda fh: study.confounders.to_csv(fh, index=False)))
    return written


@dataclass
class ClusteringDrift:
    """Drift of one clustering against the labels: the report's scalars, mapping, contingency,
    and the confounder checks of its clusters."""

    summary: dict[str, Any]
    mapping: dict[int, Any]
    contingency: pd.DataFrame
    confounders: pd.DataFrame
    key: str


def clustering_drift(
    cohort: Cohort,
    clustering_key: str,
    clusters: np.ndarray,
    *,
    label_column: str = "label",
    store: RunStore | None = None,
    dataset: str | None = None,
) -> ClusteringDrift:
    """Drift report + confounder checks of clustering ``clustering_key`` (stored, computed once).

    Raises ValueError when no row has a label.
    """
    store = store or RunStore()
    key = run_key(CLUSTERING_DRIFT_KIND, inputs={"clustering": clustering_key, "cohort": cohort.key},
                  config={"label_column": label_column}, version=CLUSTERING_DRIFT_VERSION)
    run = store.load(CLUSTERING_DRIFT_KIND, key, version=CLUSTERING_DRIFT_VERSION)
    if run is None:
        truth = cohort.table[label_column].to_numpy(dtype=object)
        report = drift_report(truth, clusters)
        columns = [c for c in CONFOUNDER_COLUMNS if c in cohort.table.columns]
        run = store.save(
            CLUSTERING_DRIFT_KIND, key, version=CLUSTERING_DRIFT_VERSION, dataset=dataset,
            config={"label_column": label_column}, inputs={"clustering": clustering_key, "cohort": cohort.key},
            payload={"report": report.summary(),
                     "mapping": [[int(k), None if v is None else str(v)] for k, v in report.mapping.items()],
                     "contingency": report.contingency.rename(columns=str).rename_axis("cluster").reset_index(),
                     "confounders": confounder_checks(clusters, cohort.table, columns)},
            summary={"ari": round(report.ari, 4), "label_change_pct": round(report.label_change_pct, 2)},
        )
    return ClusteringDrift(
        summary=run.load("report"), mapping={int(k): v for k, v in run.load("mapping")},
        contingency=_contingency_from(run.load("contingency")), confounders=run.load("confounders"), key=key,
    )
