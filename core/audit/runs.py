"""The audit of a dataset, computed once and kept as a named run of kind ``audit``.

:func:`audit_dataset` decodes every image once (:mod:`core.audit.fingerprints`), embeds the
images with one encoder (cached vectors are reused), and finds duplicates, outliers, likely
label errors and image problems, plus a per-cluster summary (k-means on the same embedding).
Everything is stored in the run store (``RunStore``; key over the dataset's ingest token, the
embedding set, the label and patient columns, the config and :data:`AUDIT_VERSION`), so the
Quality page, the Classifiers page and ``scanatlas audit`` read it instead of recomputing.

Duplicate *candidates* are stored with every score, so thresholds move without recomputing
(:meth:`Audit.duplicates`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.audit.duplicates import (
    DEFAULT_THRESHOLDS,
    NEIGHBOURS,
    Thresholds,
    candidate_pairs,
    duplicates_report,
)
from core.audit.fingerprints import fingerprint_images
from core.audit.images import image_issues
from core.audit.label_issues import find_label_problems
from core.audit.outliers import find_outliers
from core.audit.xray import BLANK_STD
from core.runs import Run, RunStore, run_key

if TYPE_CHECKING:
    from core.ingest import Dataset

KIND = "audit"
AUDIT_VERSION = 4
INGEST_DUPLICATE_STATUSES = ("duplicate_row", "duplicate_file")
ProgressFn = Callable[[float, str], None]


def audit_config(*, encoder: str | None = None, n_clusters: int = 4, use_cleanvision: bool = True,
                 n_splits: int = 5, random_state: int = 0, neighbours: int = NEIGHBOURS) -> dict[str, Any]:
    """The parameters of an audit, defaults filled in. ``neighbours``: duplicate candidates each
    image proposes from each of pHash, centre descriptor and embedding (see
    :func:`core.audit.duplicates.candidate_pairs`)."""
    from core.encoders import DEFAULT_IMAGE_ENCODER

    return {"encoder": encoder or DEFAULT_IMAGE_ENCODER, "n_clusters": int(n_clusters),
            "use_cleanvision": bool(use_cleanvision), "n_splits": int(n_splits), "random_state": int(random_state),
            "neighbours": int(neighbours)}


@dataclass
class Audit:
    """One dataset's audit. Tables are aligned with ``images`` rows through their ``row``
    column (or, for ``fingerprints``/``outliers``, by position)."""

    images: pd.DataFrame            # image_id, patient_id, label, path, frame (+ cluster)
    fingerprints: pd.DataFrame
    candidates: pd.DataFrame        # duplicate candidate pairs with all scores
    outliers: pd.DataFrame
    label_issues: pd.DataFrame
    image_issues: pd.DataFrame
    ingest_duplicates: pd.DataFrame  # rows/files ingest reported as repeats
    clusters: np.ndarray
    config: dict
    notes: list[str] = field(default_factory=list)
    key: str = ""
    created: str = ""
    dataset: str = ""

    def duplicates(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(pairs, sets) under ``thresholds`` (see :func:`core.audit.duplicates.duplicates_report`)."""
        return duplicates_report(self.images, self.candidates, thresholds)

    def cluster_summary(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> pd.DataFrame:
        return cluster_summary(self, thresholds)

    def counts(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> dict[str, int]:
        """How many findings of each kind (for summaries and run listings)."""
        pairs, sets = self.duplicates(thresholds)
        counts = {
            "images": len(self.images),
            "exact_duplicate_pairs": int((pairs["kind"] == "exact").sum()),
            "near_duplicate_pairs": int((pairs["kind"] == "near").sum()),
            "duplicate_sets": len(sets),
            "cross_patient_sets": int(sets["cross_patient"].sum()) if len(sets) else 0,
            "ingest_repeats": len(self.ingest_duplicates),
            "outliers": int((self.outliers["outlier"] | self.outliers["cluster_outlier"]).sum()),
            "label_issues": len(self.label_issues),
        }
        for issue, n in self.image_issues["issue"].value_counts().sort_index().items():
            counts[f"image_{issue}"] = int(n)
        return counts


def _columns_hash(images: pd.DataFrame) -> str:
    columns = [c for c in ("image_id", "patient_id", "label") if c in images]
    payload = images[columns].astype(str).to_csv(index=False).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def audit_key(dataset: Dataset, config: dict, embedding_key: str) -> str:
    inputs = {"dataset": dataset.token, "embedding": embedding_key, "columns": _columns_hash(dataset.images)}
    return run_key(KIND, inputs=inputs, config=config, version=AUDIT_VERSION)


def _clusters(vectors: np.ndarray, n_clusters: int, random_state: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    ok = np.isfinite(vectors).all(axis=1)
    labels = np.full(len(vectors), -1, dtype=np.int64)
    if ok.sum() > n_clusters:
        unit = vectors[ok] / np.maximum(np.linalg.norm(vectors[ok], axis=1, keepdims=True), 1e-12)
        labels[ok] = KMeans(n_clusters=n_clusters, n_init=10, random_state=random_state).fit_predict(unit)
    return labels


def ingest_duplicates(dataset: Dataset) -> pd.DataFrame:
    """The rows and files ingest reported as repeats (same file named twice, same bytes)."""
    report = dataset.report
    if report is None or report.empty or "status" not in report:
        return pd.DataFrame(columns=["source", "status", "reason"])
    found = report[report["status"].isin(INGEST_DUPLICATE_STATUSES)]
    return found[["source", "status", "reason"]].astype(str).reset_index(drop=True)


def audit_dataset(
    dataset: Dataset,
    *,
    encoder: str | None = None,
    n_clusters: int = 4,
    use_cleanvision: bool = True,
    n_splits: int = 5,
    random_state: int = 0,
    neighbours: int = NEIGHBOURS,
    store: RunStore | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> Audit:
    """Audit ``dataset`` (or load the stored audit with the same inputs and config).

    Raises ValueError for an unknown encoder and ``core.encoders.WeightsUnavailableError`` when
    its weights are missing. Images that cannot be decoded or embedded are reported, not dropped.
    """
    from core.embed import embed_dataset

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(fraction, message)

    config = audit_config(encoder=encoder, n_clusters=n_clusters, use_cleanvision=use_cleanvision,
                          n_splits=n_splits, random_state=random_state, neighbours=neighbours)
    if config["n_clusters"] < 1:
        raise ValueError(f"n_clusters={n_clusters} must be >= 1")
    if not 1 <= config["neighbours"] <= 100:
        raise ValueError(f"neighbours={neighbours} must be in 1..100")
    store = store if store is not None else RunStore()
    report(0.0, f"embedding with {config['encoder']}")
    embedding = embed_dataset(dataset, config["encoder"],
                              progress=lambda done, total: report(0.3 * done / max(total, 1), "embedding"))
    key = audit_key(dataset, config, embedding.key)
    if not force:
        stored = load_audit(key, store=store)
        if stored is not None:
            report(1.0, "loaded the saved audit")
            return stored
    images = dataset.images.reset_index(drop=True)
    notes: list[str] = []
    if embedding.n_failed:
        notes.append(f"{embedding.n_failed} image(s) have no {config['encoder']} vector (left out of embedding checks)")
    report(0.3, "decoding every image once")
    prints = fingerprint_images(images, progress=lambda done, total: report(0.3 + 0.2 * done / max(total, 1), "decoding"))
    blank = (prints.table["std"] < BLANK_STD).fillna(False).to_numpy(dtype=bool)
    report(0.5, "finding duplicates")
    candidates = candidate_pairs(
        prints.table["pixel_hash"].tolist(), prints.table["phash"].tolist(), descriptors=prints.descriptors,
        vectors=embedding.vectors, thumbnails=prints.thumbnails, skip=blank, neighbours=config["neighbours"],
        progress=lambda done, total: report(0.5 + 0.2 * done / max(total, 1), "comparing candidate pairs"))
    if blank.any():
        notes.append(f"{int(blank.sum())} blank image(s) left out of duplicate matching (reported as blank)")
    report(0.7, "clusters and outliers")
    clusters = _clusters(embedding.vectors, config["n_clusters"], random_state)
    outliers = find_outliers(embedding.vectors, clusters, random_state=random_state)
    report(0.75, "likely label errors (cleanlab)")
    label_issues = pd.DataFrame(columns=["row", "given_label", "suggested_label", "given_probability",
                                         "suggested_probability", "self_confidence", "rank"])
    if "label" in images and images["label"].notna().any():
        try:
            label_issues, label_notes = find_label_problems(embedding.vectors, images["label"],
                                                            images["patient_id"].astype(str).to_numpy(),
                                                            n_splits=n_splits, random_state=random_state)
            notes.extend(label_notes)
        except ValueError as error:
            notes.append(f"no label check: {error}")
    else:
        notes.append("no label check: the dataset has no labels")
    report(0.8, "image problems (cleanvision and radiograph checks)")
    issues, issue_notes = image_issues(images, prints.table, use_cleanvision=use_cleanvision)
    notes.extend(issue_notes)
    keep = [c for c in ("image_id", "patient_id", "label", "path", "frame", "modality", "view") if c in images]
    table = images[keep].copy()
    table["cluster"] = clusters
    audit = Audit(images=table, fingerprints=prints.table, candidates=candidates, outliers=outliers,
                  label_issues=label_issues, image_issues=issues, ingest_duplicates=ingest_duplicates(dataset),
                  clusters=clusters, config=config | {"embedding": embedding.key}, notes=notes, dataset=dataset.name)
    report(0.95, "saving")
    try:
        run = save_audit(audit, key, dataset=dataset, store=store)
        audit.key, audit.created = run.key, run.created
    except (OSError, ValueError, TypeError) as error:
        audit.notes.append(f"not saved to the run store: {error}")
    report(1.0, "done")
    return audit


# ---------------------------------------------------------------------------- storage

_TABLES = ("images", "fingerprints", "candidates", "outliers", "label_issues", "image_issues", "ingest_duplicates")


def save_audit(audit: Audit, key: str, *, dataset: Dataset, store: RunStore | None = None) -> Run:
    store = store if store is not None else RunStore()
    images = audit.images.drop(columns=["path"], errors="ignore")
    payload: dict[str, Any] = {name: getattr(audit, name) for name in _TABLES}
    payload["images"] = images
    payload["clusters"] = np.asarray(audit.clusters, dtype=np.int64)
    payload["notes"] = list(audit.notes)
    counts = audit.counts()
    summary = {"dataset": audit.dataset, "encoder": audit.config["encoder"], **{k: counts[k] for k in (
        "images", "duplicate_sets", "cross_patient_sets", "outliers", "label_issues")}}
    return store.save(KIND, key, version=AUDIT_VERSION, config=audit.config, payload=payload,
                      inputs={"dataset": dataset.token}, dataset=dataset.token, summary=summary)


def _from_run(run: Run) -> Audit:
    tables = {name: run.load(name) for name in _TABLES}
    return Audit(**tables, clusters=run.load("clusters"), config=dict(run.config), notes=list(run.load("notes")),
                 key=run.key, created=run.created, dataset=str(run.summary.get("dataset", "")))


def load_audit(key: str, *, store: RunStore | None = None) -> Audit | None:
    """The stored audit ``key``, or None when absent or from another audit version."""
    store = store if store is not None else RunStore()
    run = store.load(KIND, key, version=AUDIT_VERSION)
    return None if run is None else _from_run(run)


def audit_runs(dataset: Dataset | None = None, *, store: RunStore | None = None) -> list[Run]:
    """Stored audits of this code version, newest first (of ``dataset`` when given)."""
    store = store if store is not None else RunStore()
    token = None if dataset is None else dataset.token
    return [run for run in store.runs(kind=KIND, dataset=token) if run.version == str(AUDIT_VERSION)]


def latest_audit(dataset: Dataset, *, store: RunStore | None = None) -> Audit | None:
    """The newest stored audit of ``dataset`` (None when it was never audited)."""
    runs = audit_runs(dataset, store=store)
    return _from_run(runs[0]) if runs else None


# ---------------------------------------------------------------------------- summaries


def row_problems(audit: Audit, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """One row per image: booleans per kind of problem (duplicate, cross_patient_duplicate,
    outlier, label_issue and each image issue) and ``set_id`` of its duplicate set."""
    n = len(audit.images)
    pairs, sets = audit.duplicates(thresholds)
    frame = pd.DataFrame(index=range(n))
    set_id = np.full(n, -1, dtype=np.int64)
    if len(pairs):
        set_id[pairs["i"].to_numpy()] = pairs["set_id"].to_numpy()
        set_id[pairs["j"].to_numpy()] = pairs["set_id"].to_numpy()
    frame["set_id"] = set_id
    frame["duplicate"] = set_id >= 0
    cross = set(sets.loc[sets["cross_patient"], "set_id"]) if len(sets) else set()
    frame["cross_patient_duplicate"] = np.isin(set_id, list(cross))
    frame["outlier"] = (audit.outliers["outlier"] | audit.outliers["cluster_outlier"]).to_numpy(dtype=bool)
    frame["label_issue"] = False
    if len(audit.label_issues):
        frame.loc[audit.label_issues["row"].to_numpy(dtype=int), "label_issue"] = True
    for issue, rows in audit.image_issues.groupby("issue")["row"]:
        frame[f"image_{issue}"] = False
        frame.loc[rows.to_numpy(dtype=int), f"image_{issue}"] = True
    return frame


def cluster_summary(audit: Audit, thresholds: Thresholds = DEFAULT_THRESHOLDS, *, dominant_share: float = 0.5,
                    clusters: np.ndarray | None = None) -> pd.DataFrame:
    """Per cluster: size, count of each problem, the most common problem and its share, the
    largest duplicate set's share, and ``dominated`` when one problem (or one duplicate set)
    covers at least ``dominant_share`` of a cluster of 5 or more: a confounder, since the
    cluster may exist because of it.

    clusters : (n_images,) cluster ids aligned with the dataset's images (e.g. an image-level
    clustering of the Agreement page); default the audit's own k-means."""
    problems = row_problems(audit, thresholds)
    if clusters is not None and len(clusters) != len(problems):
        raise ValueError(f"clusters has {len(clusters)} rows; the audit has {len(problems)} images")
    problems["cluster"] = audit.clusters if clusters is None else np.asarray(clusters)
    kinds = [c for c in problems.columns if c not in ("set_id", "cluster")]
    records = []
    for cluster, group in problems.groupby("cluster"):
        counts = {kind: int(group[kind].sum()) for kind in kinds}
        # Duplicates dominate a cluster only as one set ("all from one duplicate set"): copies
        # of many different scans are spread like the scans themselves.
        single = {k: v for k, v in counts.items() if k not in ("duplicate", "cross_patient_duplicate")}
        top_kind = max(single, key=single.get) if single else ""
        share = counts.get(top_kind, 0) / len(group) if len(group) else 0.0
        sets = group.loc[group["set_id"] >= 0, "set_id"].value_counts()
        set_share = float(sets.iloc[0] / len(group)) if len(sets) else 0.0
        dominated = len(group) >= 5 and (share >= dominant_share or set_share >= dominant_share)
        records.append({"cluster": int(cluster), "size": len(group), **counts, "top_problem": top_kind if single.get(top_kind) else "",
                        "top_share": share, "largest_set_share": set_share, "dominated": dominated})
    return pd.DataFrame.from_records(records)


def clusters_of_images(images: pd.DataFrame, table: pd.DataFrame, labels: np.ndarray, level: str) -> np.ndarray:
    """The cluster of each of ``images``'s rows (an audit's images) under a clustering of a
    cohort: ``table`` is the cohort table aligned with ``labels``, ``level`` its level ("image":
    matched by ``image_id``; "patient": every image takes its patient's cluster). Images the
    cohort does not hold (filtered out, excluded) get -2; noise stays -1. For
    ``cluster_summary(audit, clusters=...)``."""
    labels = np.asarray(labels)
    if len(labels) != len(table):
        raise ValueError(f"{len(labels)} cluster labels for {len(table)} cohort rows")
    column = {"image": "image_id", "patient": "patient_id"}.get(level)
    if column is None:
        raise ValueError(f"level={level!r} must be 'image' or 'patient'")
    lookup = pd.Series(labels, index=table[column].astype(str).to_numpy())
    lookup = lookup[~lookup.index.duplicated()]
    return images[column].astype(str).map(lookup).fillna(-2).astype(np.int64).to_numpy()


def dominated_sentences(summary: pd.DataFrame) -> list[str]:
    """Plain sentences for the clusters ``cluster_summary`` marks as dominated by one problem
    (clusters < 0, i.e. noise and rows outside the cohort, are left out)."""
    lines = []
    for row in summary[summary["dominated"].astype(bool) & (summary["cluster"] >= 0)].itertuples():
        if row.top_problem and row.top_share >= row.largest_set_share:
            what = f"{row.top_share:.0%} of its {row.size} images are flagged \"{row.top_problem.replace('_', ' ')}\""
        else:
            what = f"{row.largest_set_share:.0%} of its {row.size} images are copies from one duplicate set"
        lines.append(f"C{row.cluster}: {what}")
    return lines


def summary_lines(audit: Audit, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[str]:
    """A one-screen summary in words."""
    counts = audit.counts(thresholds)
    pairs, sets = audit.duplicates(thresholds)
    lines = [
        f"Audit of {audit.dataset}: {counts['images']} images, encoder {audit.config['encoder']}",
        f"Duplicates: {counts['exact_duplicate_pairs']} exact and {counts['near_duplicate_pairs']} near pairs in "
        f"{counts['duplicate_sets']} sets; {counts['cross_patient_sets']} sets span different patient ids",
        f"  (near = pHash <= {thresholds.phash_bits} bits, or pixel match >= {thresholds.match}"
        + (f", or embedding cosine <= {thresholds.cosine})" if thresholds.cosine > 0 else "; embedding: candidates only)"),
    ]
    if counts["ingest_repeats"]:
        lines.append(f"Ingest repeats: {counts['ingest_repeats']} rows or files named an image already ingested")
    for row in sets[sets["cross_patient"]].head(5).itertuples():
        lines.append(f"  set {row.set_id}: patients {row.patient_ids} ({row.size} images, {row.kinds})")
    lines.append(f"Outliers: {counts['outliers']} (kNN distance above the 98th percentile, overall or in their cluster)")
    lines.append(f"Likely label errors: {counts['label_issues']} (cleanlab on patient-grouped out-of-fold probabilities)")
    issues = audit.image_issues["issue"].value_counts()
    lines.append("Image problems: " + (", ".join(f"{k} {v}" for k, v in issues.items()) if len(issues) else "none"))
    summary = cluster_summary(audit, thresholds)
    for row in summary[summary["dominated"]].itertuples() if len(summary) else []:
        lines.append(f"Cluster {row.cluster} ({row.size} images) is dominated by {row.top_problem} "
                     f"({row.top_share:.0%}); largest duplicate set {row.largest_set_share:.0%}")
    lines.extend(f"Note: {note}" for note in audit.notes)
    return lines


def audit_json(audit: Audit) -> str:
    return json.dumps({"key": audit.key, "created": audit.created, "config": audit.config, "counts": audit.counts()},
                      indent=1, default=str)


def train_audit(dataset: Dataset, *, progress: ProgressFn | None = None, force: bool = False,
                store: RunStore | None = None, **config: Any) -> str:
    """Compute (or load) the audit and return its run key: what the app's background job runs,
    so that the page reads the result from the store. Raises RuntimeError when it was not saved."""
    audit = audit_dataset(dataset, progress=progress, force=force, store=store, **config)
    if not audit.key:
        raise RuntimeError("; ".join(n for n in audit.notes if n.startswith("not saved")) or "the audit was not saved")
    return audit.key
