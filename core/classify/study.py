"""A classifier study on a dataset: features from embeddings (+ metadata, + text), patient-
grouped cross-validation, per-class table, image vs text vs metadata vs fused comparison, label
leakage check, fairness breakdowns and a final model fitted on every usable row.

Every study is a named run of kind ``classifier-study`` in the run store
(:mod:`core.classify.runs`): a second call with the same dataset, embeddings, labels and
config loads it instead of recomputing, in this process or after a restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.classify import runs
from core.classify.compare import compare_modalities
from core.classify.evaluate import evaluate
from core.classify.leakage import detect_text_leakage, mask_label_words
from core.classify.runs import ClassifierStudy
from core.classify.target import prepare_target
from core.cohort import build_cohort
from core.columns import SENSITIVE_COLUMNS
from core.embed import embed_dataset
from core.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER
from core.fairness import fairness_table, sensitive_attributes
from core.features import patient_embeddings
from core.ingest import Dataset

if TYPE_CHECKING:
    from core.runs import RunStore

TEXT_ENCODER = DEFAULT_TEXT_ENCODER
__all__ = ["SENSITIVE_COLUMNS", "TEXT_ENCODER", "ClassifierStudy", "classifier_study", "study_config",
           "train_study", "write_study"]

ProgressFn = Callable[[float, str], None]


def study_config(
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
    random_state: int = 0,
) -> dict[str, Any]:
    """The full parameter set of :func:`classifier_study`, defaults filled in and lists made
    plain, so that spelling a default out gives the same run key."""
    target = target_column if isinstance(target_column, str) else list(target_column)
    if isinstance(target, list) and len(target) == 1:
        target = target[0]
    if positive is not None and not isinstance(positive, str):
        positive = list(positive)
        positive = positive[0] if len(positive) == 1 else positive
    return {
        "target_column": target, "positive": positive, "uncertain_policy": uncertain_policy,
        "calibrate": bool(calibrate), "encoder": encoder, "use_text": bool(use_text),
        "metadata": list(metadata), "model": model, "level": level, "n_splits": int(n_splits),
        "n_bootstrap": int(n_bootstrap), "mask_leaking_words": bool(mask_leaking_words),
        "rare_classes": rare_classes, "random_state": int(random_state),
    }


def classifier_study(
    dataset: Dataset,
    *,
    progress: ProgressFn | None = None,
    store: RunStore | None = None,
    force: bool = False,
    **params: Any,
) -> ClassifierStudy:
    """Run the study, or load it from the run store. Rows are images (grouped by patient in
    CV) or patients. ``params`` are the run's parameters, exactly those :func:`study_config`
    takes (it fills in the defaults: label column, logistic regression, image level, 5 folds).

    ``target_column``: one column (binary with ``positive``, else multi-class) or several
    columns for a multi-label target in the CheXpert convention (1 positive, 0 negative, -1
    uncertain, blank unknown; ``uncertain_policy`` "ignore", "as-positive" or "as-negative").
    ``store``: the run store (default ``RunStore()``, i.e. ``$SCANATLAS_CACHE/runs``);
    ``force=True`` computes again and replaces the stored run.

    Raises ``ValueError`` for a target column the dataset lacks or with fewer than two classes.
    """
    def report(fraction: float, message: str) -> None:
        if progress:
            progress(fraction, message)

    config = study_config(**params)
    target_column, positive = config["target_column"], config["positive"]
    uncertain_policy, calibrate, model = config["uncertain_policy"], config["calibrate"], config["model"]
    encoder, use_text, metadata, level = config["encoder"], config["use_text"], config["metadata"], config["level"]
    n_splits, n_bootstrap, random_state = config["n_splits"], config["n_bootstrap"], config["random_state"]
    mask_leaking_words, rare_classes = config["mask_leaking_words"], config["rare_classes"]
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
    store = runs.default_store(store)
    key = runs.classifier_study_key(
        dataset, table, config, embedding_keys={"image": image_set.key, "text": text_set.key if text_set else None},
    )
    if not force:
        stored = runs.load_study(key, store=store)
        if stored is not None:
            report(1.0, "loaded the saved run")
            return stored

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
    report(0.95, "fitting the final model on every usable row")
    final_model = None
    try:
        final_model = main.fit_final(fused)
    except ValueError as error:
        notes.append(f"no final model: {error}")
    study_settings = {"dataset": dataset.name, "target": target_column, "text": text_set is not None,
                      "image_embedding": image_set.key, "text_embedding": text_set.key if text_set else None}
    if level == "image":
        image_vectors = np.asarray(image_set.vectors)
    else:
        _, image_vectors = patient_embeddings(dataset.images, image_set.vectors)
    study = ClassifierStudy(main, comparison, fairness, leakage, config | study_settings, rows,
                            image_vectors, notes + main.notes, final_model, fused)
    try:
        runs.save_study(study, key, dataset=dataset, store=store)
    except (OSError, ValueError, TypeError) as error:  # a full disk, a column Arrow cannot write
        study.notes.append(f"not saved to the run store: {error}")
    report(1.0, "done")
    return study


def write_study(study: ClassifierStudy, out_dir: str | Path) -> Path:
    """Write per_class.csv, confusion.csv, comparison.csv, fairness.csv, leakage.json and
    config.json (with the run key and time) to ``out_dir``."""
    from core.atomic import atomic_write, atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def csv(frame: pd.DataFrame, name: str, **options: Any) -> None:
        atomic_write(out / name, lambda handle: frame.to_csv(handle, **options))

    csv(study.report.per_class, "per_class.csv", index=False)
    csv(study.report.confusion, "confusion.csv")
    csv(study.comparison, "comparison.csv", index=False)
    if study.fairness is not None:
        csv(study.fairness, "fairness.csv", index=False)
    if study.leakage is not None:
        leak = study.leakage
        atomic_write_text(out / "leakage.json", json.dumps({
            "flagged": bool(leak.flagged), "flags": list(leak.flags), "text_auc": leak.text_auc,
            "own_label_share": leak.own_label_share, "terms": leak.terms.head(50).to_dict("records"),
        }, indent=2, default=str))
    record = study.config | {"notes": study.notes, "run": study.key, "created": study.created}
    atomic_write_text(out / "config.json", json.dumps(record, indent=2, default=str))
    return out


def train_study(dataset: Dataset, *, progress: ProgressFn | None = None, force: bool = False,
                store: RunStore | None = None, **config: Any) -> str:
    """Compute (or, unless ``force``, load) the study ``config`` describes and return its run
    key: what the app's background job runs, so that the page reads the result from the store.
    Raises RuntimeError when the study could not be saved (with the reason)."""
    study = classifier_study(dataset, progress=progress, force=force, store=store, **config)
    if not study.key:
        raise RuntimeError("; ".join(n for n in study.notes if n.startswith("not saved")) or "the study was not saved")
    return study.key
