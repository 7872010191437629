"""A classifier study on a dataset: features from embeddings (+ metadata, + text), patient-
grouped cross-validation, per-class table, image vs text vs metadata vs fused comparison, label
leakage check and fairness breakdowns. Stored under a key derived from its config."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.classify.compare import compare_modalities
from core.classify.evaluate import ClassifierReport, evaluate
from core.classify.leakage import LeakageReport, detect_text_leakage, mask_label_words
from core.classify.target import prepare_target
from core.cohort import build_cohort, short_hash
from core.embed import embed_dataset
from core.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER
from core.fairness import age_bands, country_from_location, fairness_table
from core.features import patient_embeddings
from core.ingest import Dataset

TEXT_ENCODER = DEFAULT_TEXT_ENCODER
SENSITIVE_COLUMNS = ("sex", "age_band", "country", "site", "race", "ethnicity", "insurance")

ProgressFn = Callable[[float, str], None]


@dataclass
class ClassifierStudy:
    """report : the main (fused or image) model's ClassifierReport; comparison : one row per
    modality; fairness : per-subgroup table for the positive class (binary targets);
    leakage : text leakage report (None without text)."""

    report: ClassifierReport
    comparison: pd.DataFrame
    fairness: pd.DataFrame | None
    leakage: LeakageReport | None
    config: dict
    table: pd.DataFrame
    image_vectors: np.ndarray  # (n_rows, dim) raw encoder vectors (patient level: pooled)
    notes: list[str] = field(default_factory=list)


def sensitive_attributes(table: pd.DataFrame) -> pd.DataFrame:
    """Subgroup columns present in ``table``: sex, age band, country (from ``location``), and
    site, race, ethnicity or insurance where such columns exist."""
    out = pd.DataFrame(index=table.index)
    if "sex" in table:
        out["sex"] = table["sex"].fillna("unknown").astype(str)
    if "age" in table:
        out["age_band"] = age_bands(table["age"]).astype(str)
    if "location" in table:
        out["country"] = pd.Series(country_from_location(table["location"]), index=table.index).fillna("unknown").astype(str)
    for column in ("site", "race", "ethnicity", "insurance"):
        if column in table:
            out[column] = table[column].fillna("unknown").astype(str)
    return out


def classifier_study(
    dataset: Dataset,
    *,
    target_column: str | Sequence[str] = "label",
    positive: str | Sequence[str] | None = None,
    uncertain_policy: str = "ignore",
    calibrate: bool = False,
    encoder: str = DEFAULT_IMAGE_ENCODER,
    use_text: bool = True,
    metadata: Sequence[str] = ("age", "sex"),
    model: str = "logreg",
    level: str = "image",
    n_splits: int = 5,
    n_bootstrap: int = 500,
    mask_leaking_words: bool = False,
    rare_classes: str = "merge",
    progress: ProgressFn | None = None,
    random_state: int = 0,
) -> ClassifierStudy:
    """Run the study. Rows are images (grouped by patient in CV) or patients.

    ``target_column``: one column (binary with ``positive``, else multi-class) or several
    columns for a multi-label target in the CheXpert convention (1 positive, 0 negative, -1
    uncertain, blank unknown; ``uncertain_policy`` "ignore", "as-positive" or "as-negative").

    Raises ``ValueError`` for a target column the dataset lacks or with fewer than two classes.
    """
    def report(fraction: float, message: str) -> None:
        if progress:
            progress(fraction, message)

    table = dataset.images if level == "image" else dataset.patients
    columns = [target_column] if isinstance(target_column, str) else list(target_column)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"target column(s) {missing} not found; columns: {list(table.columns)}")
    single = columns[0] if len(columns) == 1 else None
    report(0.02, f"embedding with {encoder}")
    image_set = embed_dataset(dataset, encoder)
    text_set = None
    notes: list[str] = []
    if use_text and "text" in dataset.images and dataset.images["text"].notna().any():
        texts = dataset.images["text"]
        if mask_leaking_words:
            terms = columns if single is None else sorted(set(dataset.images[single].dropna().astype(str)))
            masked = mask_label_words(texts, terms + ([positive] if isinstance(positive, str) else list(positive or [])))
            notes.append("label words were masked in the text before embedding")
            report(0.2, "embedding masked text")
            text_set = embed_dataset(dataset.images.assign(text=masked), TEXT_ENCODER)
        else:
            report(0.2, "embedding text")
            text_set = embed_dataset(dataset, TEXT_ENCODER)
    cohort = build_cohort(dataset, image_set, level=level, metadata=tuple(metadata), text_set=text_set)
    rows = cohort.table
    target = prepare_target(rows, single or columns, positive=positive, uncertain_policy=uncertain_policy)
    groups = rows["patient_id"].astype(str).to_numpy()
    # Rows with no image vector are left out of evaluation (NaN); rows without notes keep the
    # text block's mean (flagged in features.missing): a missing note should not drop the scan.
    blocks = {block.name: cohort.masked(block.name) for block in cohort.features.blocks}
    report(0.35, f"cross-validating {model}")
    fused = np.hstack(list(blocks.values()))
    main = evaluate(fused, target, groups, model=model, n_splits=n_splits, n_bootstrap=n_bootstrap,
                    rare_classes=rare_classes if single else "error", calibrate=calibrate,
                    random_state=random_state)
    report(0.6, "comparing modalities")
    comparison = compare_modalities(blocks, main.target, groups, model=model, n_splits=n_splits,
                                    n_bootstrap=min(n_bootstrap, 200), random_state=random_state,
                                    rare_classes=rare_classes if single else "error", calibrate=calibrate)
    leakage = None
    if single and "text" in rows and rows["text"].notna().any():
        report(0.85, "checking the text for label leakage")
        leakage = detect_text_leakage(rows["text"], rows[single], groups=groups, random_state=random_state)
    fairness = None
    if main.kind == "binary":
        report(0.9, "fairness breakdowns")
        sensitive = sensitive_attributes(rows)
        usable = main.used if main.used.ndim == 1 else main.used.all(axis=1)
        threshold = float(main.thresholds.iloc[-1]) if np.isfinite(main.thresholds.iloc[-1]) else 0.5
        fairness = fairness_table(
            main.target.y[usable], main.oof[usable, 1], sensitive[usable].reset_index(drop=True),
            threshold=threshold, groups=groups[usable], n_bootstrap=min(n_bootstrap, 300),
            random_state=random_state,
        ).table
    config = {"dataset": dataset.name, "target": target_column, "positive": positive, "encoder": encoder,
              "text": text_set is not None, "metadata": list(metadata), "model": model, "level": level,
              "n_splits": n_splits, "n_bootstrap": n_bootstrap, "mask_leaking_words": mask_leaking_words,
              "uncertain_policy": uncertain_policy, "calibrate": calibrate,
              "created": datetime.now(UTC).isoformat(timespec="seconds")}
    report(1.0, "done")
    if level == "image":
        image_vectors = np.asarray(image_set.vectors)
    else:
        _, image_vectors = patient_embeddings(dataset.images, image_set.vectors)
    return ClassifierStudy(main, comparison, fairness, leakage, config, rows, image_vectors, notes + main.notes)


def study_key(dataset: Dataset, **config) -> str:
    token = f"{dataset.root.resolve()}@{dataset.manifest.get('created', '')}"
    return "classify-" + short_hash(token, config)


def write_study(study: ClassifierStudy, out_dir: str | Path) -> Path:
    """Write per_class.csv, comparison.csv, fairness.csv, leakage.json, config.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study.report.per_class.to_csv(out / "per_class.csv", index=False)
    study.report.confusion.to_csv(out / "confusion.csv")
    study.comparison.to_csv(out / "comparison.csv", index=False)
    if study.fairness is not None:
        study.fairness.to_csv(out / "fairness.csv", index=False)
    if study.leakage is not None:
        leak = study.leakage
        (out / "leakage.json").write_text(json.dumps({
            "flagged": bool(leak.flagged), "flags": list(leak.flags), "text_auc": leak.text_auc,
            "own_label_share": leak.own_label_share, "terms": leak.terms.head(50).to_dict("records"),
        }, indent=2, default=str))
    (out / "config.json").write_text(json.dumps(study.config | {"notes": study.notes}, indent=2, default=str))
    return out
