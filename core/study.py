"""The drift study: encoders x clustering algorithms, scored against ground truth.

``drift_study`` embeds the dataset with each encoder (through the embedding cache), builds the
cohort matrix, runs ``core.drift.drift_grid`` and writes, under one folder named by its inputs,
``grid.csv`` (label-change %, ARI, NMI per combination), one ``labels_<encoder>__<algorithm>.csv``
per combination, ``confounders.csv`` (does the best clustering just track view, modality, site,
sex?), ``contingency.csv`` of the best combination and ``study.json`` (config + timestamp). A
second call with the same inputs loads that folder instead of recomputing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.drift import confounder_checks, drift_grid, drift_report, labels_filename
from core.embed import embed_dataset
from core.ingest import Dataset
from core.workspace import build_cohort, short_hash

STUDY_ALGORITHMS = ("kmeans", "gmm", "agglomerative", "spectral", "birch", "hdbscan", "kmedoids", "fuzzy-cmeans")
CONFOUNDER_COLUMNS = ("view", "modality", "sex", "age", "site", "country", "location", "manufacturer", "body_part")
STUDY_VERSION = 1

ProgressFn = Callable[[float, str], None]


@dataclass
class DriftStudy:
    """grid : DataFrame, one row per (encoder, algorithm); folder : where its files are."""

    grid: pd.DataFrame
    folder: Path
    config: dict
    from_cache: bool = False

    @property
    def best(self) -> pd.Series | None:
        ok = self.grid.dropna(subset=["ari"]) if "ari" in self.grid else self.grid.iloc[0:0]
        return None if ok.empty else ok.sort_values("ari", ascending=False).iloc[0]


def study_key(dataset: Dataset, encoders: Sequence[str], algorithms: Sequence[str], level: str, label_column: str) -> str:
    token = f"{dataset.root.resolve()}@{dataset.manifest.get('created', '')}"
    return short_hash("drift-study", token, list(encoders), list(algorithms), level, label_column, STUDY_VERSION)


def drift_study(
    dataset: Dataset,
    encoders: Sequence[str],
    *,
    algorithms: Sequence[str] = STUDY_ALGORITHMS,
    level: str = "image",
    label_column: str = "label",
    runs_dir: str | Path,
    progress: ProgressFn | None = None,
    random_state: int = 0,
) -> DriftStudy:
    """Run (or load) the study; ``progress(fraction, message)`` is called as it goes.

    Raises ``ValueError`` when the dataset has no ``label_column`` values (no ground truth).
    """
    table = dataset.images if level == "image" else dataset.patients
    if label_column not in table.columns or table[label_column].notna().sum() == 0:
        raise ValueError(f"dataset {dataset.name!r} has no ground truth in column {label_column!r}")
    key = study_key(dataset, encoders, algorithms, level, label_column)
    folder = Path(runs_dir) / "drift" / key
    config = {"dataset": dataset.name, "encoders": list(encoders), "algorithms": list(algorithms),
              "level": level, "label_column": label_column, "version": STUDY_VERSION}
    if (folder / "study.json").is_file() and (folder / "grid.csv").is_file():
        stored = json.loads((folder / "study.json").read_text())
        return DriftStudy(pd.read_csv(folder / "grid.csv"), folder, stored, from_cache=True)

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
    labels = cohort.table[label_column].to_numpy(dtype=object)
    row_ids = cohort.row_ids
    folder.mkdir(parents=True, exist_ok=True)
    grid = drift_grid(
        feature_sets, labels, algorithms=algorithms, row_ids=row_ids, out_dir=folder,
        progress=lambda done, total: report(0.4 + 0.55 * done / max(total, 1), f"clustering {done}/{total}"),
        random_state=random_state,
    )
    study = DriftStudy(grid, folder, config)
    best = study.best
    if best is not None:
        best_labels = pd.read_csv(folder / labels_filename(best["encoder"], best["algorithm"]))
        clusters = best_labels["cluster"].to_numpy()
        drift_report(labels, clusters).contingency.to_csv(folder / "contingency.csv")
        columns = [c for c in CONFOUNDER_COLUMNS if c in cohort.table.columns]
        confounder_checks(clusters, cohort.table, columns).to_csv(folder / "confounders.csv", index=False)
    config["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    (folder / "study.json").write_text(json.dumps(config, indent=2))
    report(1.0, "done")
    return study

