"""Label propagation: from the few clusters and patients an analyst labelled, propose labels for
the rest, each with a confidence.

* ``hand_labels`` reads what the analyst said: the saved cluster mapping (every member of a
  mapped cluster carries its disease) and patient overrides (which win). These are the seeds.
* ``propagate`` spreads the seeds over a k-nearest-neighbour graph of the embeddings
  (scikit-learn ``LabelSpreading``, Zhou et al. 2004) or trains a self-training logistic
  regression (``SelfTrainingClassifier``). Vectors are L2-normalised and reduced to at most 50
  principal components first, so that the neighbour graph follows cosine similarity, the usual
  measure between CNN features. The confidence of a proposal is the winning class's share of
  the propagated label distribution (1 = every path from the seeds says the same).
* ``propagate_labels`` does both for a cohort's rows and saves the result as a named run (kind
  ``label-propagation``), keyed by the cohort, the clustering, the seeds (mapping version and
  overrides) and the parameters; rows of image-level cohorts are pooled per patient.
* ``accept_proposals`` saves accepted proposals as patient overrides through
  ``LabelStore.set_patient_override`` (versioned, with who and when, conflict-checked against
  the override version the analyst saw); ``reject_proposals`` records rejections in the audit
  log, and ``rejected_patients`` reads them back so a rejected proposal is not offered again.
* ``propagation_curve`` scores propagation against ground truth: hide all labels, hand-label a
  random fraction of patients (stratified, several repeats), propagate, and measure accuracy on
  the patients not hand-labelled, next to the majority-class baseline (every patient gets the
  commonest hand label).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.auth import AccessStore, User, require
from core.labels.combine import labeled_patients
from core.labels.store import ConflictError, LabelStore, StoreBusyError
from core.runs import Run, RunStore, run_key

__all__ = [
    "METHODS",
    "PROPAGATION_KIND",
    "PROPOSAL_COLUMNS",
    "Propagation",
    "accept_proposals",
    "hand_labels",
    "propagate",
    "propagate_labels",
    "propagation_curve",
    "reject_proposals",
    "rejected_patients",
    "propagation_curve_run",
    "score_proposals",
    "stored_propagation",
]

PROPAGATION_KIND, PROPAGATION_VERSION = "label-propagation", "1"
METHODS = ("spreading", "self-training")
MAX_COMPONENTS = 50
PROPOSAL_COLUMNS = ["patient_id", "disease", "icd10_code", "confidence", "seed", "seed_source", "reason"]
REJECT_ACTION = "proposal.reject"


def _check_params(method: str, n_neighbors: int, alpha: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {list(METHODS)}")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int | np.integer) or n_neighbors < 1:
        raise ValueError(f"n_neighbors={n_neighbors!r} must be an integer >= 1")
    if not 0 < float(alpha) < 1:
        raise ValueError(f"alpha={alpha!r} must be strictly between 0 and 1")


def _prepare(vectors: np.ndarray) -> np.ndarray:
    """Rows L2-normalised (so Euclidean neighbours are cosine neighbours), then at most
    ``MAX_COMPONENTS`` principal components: neighbour graphs in 1,000+ dimensions are mostly
    noise, and this keeps the graph fast."""
    from sklearn.decomposition import PCA

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    n_components = min(MAX_COMPONENTS, unit.shape[0] - 1, unit.shape[1])
    if n_components < 2 or unit.shape[1] <= MAX_COMPONENTS:
        return unit
    return PCA(n_components=n_components, random_state=0).fit_transform(unit)


def propagate(
    vectors: np.ndarray,
    seeds: Sequence[Any],
    *,
    method: str = "spreading",
    n_neighbors: int = 7,
    alpha: float = 0.2,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Spread the seed labels to every row.

    Parameters
    ----------
    vectors : ndarray of shape (n_rows, dim); rows with NaN or inf get no proposal.
    seeds : n_rows labels (str), None / NaN / "" for rows nobody labelled.
    method : "spreading" (``LabelSpreading`` on a kNN graph) or "self-training"
        (``SelfTrainingClassifier`` around a logistic regression).
    n_neighbors : neighbours per row in the graph (spreading).
    alpha : how far a seed may move from its own label (spreading), 0 < alpha < 1.

    Returns
    -------
    (distributions, valid, classes): ``distributions`` ndarray of shape (n_rows, n_classes)
    (rows sum to 1; all NaN where the row has no vector or no seed reaches it), ``valid``
    bool ndarray of shape (n_rows,) (the row had a vector), ``classes`` the sorted labels.

    Raises ``ValueError`` for bad parameters, a length mismatch, no seeded row with a vector,
    fewer than two distinct seed labels, or every row already seeded.
    """
    _check_params(method, n_neighbors, alpha)
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"vectors must have shape (n_rows, dim), got {matrix.shape}")
    seeds = [None if s is None or (isinstance(s, float) and math.isnan(s)) or (isinstance(s, str) and not s.strip())
             else str(s).strip() for s in seeds]
    if len(seeds) != matrix.shape[0]:
        raise ValueError(f"seeds has {len(seeds)} values but vectors has {matrix.shape[0]} rows")
    valid = np.isfinite(matrix).all(axis=1)
    classes = sorted({s for s, ok in zip(seeds, valid, strict=True) if s is not None and ok})
    if len(classes) < 2:
        raise ValueError(
            f"propagation needs hand labels of at least two diseases on rows with vectors; found {classes or 'none'}. "
            "Map more clusters or override more patients first.")
    codes = np.array([classes.index(s) if s is not None else -1 for s in seeds])
    rows = np.flatnonzero(valid)
    if (codes[rows] >= 0).all():
        raise ValueError("every patient already has a hand label; there is nothing to propose")
    features = _prepare(matrix[rows])
    y = codes[rows]
    if method == "spreading":
        from sklearn.semi_supervised import LabelSpreading

        k = int(min(n_neighbors, len(rows) - 1))
        model = LabelSpreading(kernel="knn", n_neighbors=max(k, 1), alpha=float(alpha), max_iter=1000)
        with np.errstate(divide="ignore", invalid="ignore"):
            model.fit(features, y)
        found = np.asarray(model.label_distributions_, dtype=np.float64)
    else:
        from sklearn.linear_model import LogisticRegression
        from sklearn.semi_supervised import SelfTrainingClassifier

        model = SelfTrainingClassifier(LogisticRegression(max_iter=2000, class_weight="balanced"),
                                       threshold=0.8, max_iter=20)
        model.fit(features, y)
        found = model.predict_proba(features)
        # predict_proba's columns follow the classes the model saw (the seeds' codes)
        ordered = np.zeros((len(rows), len(classes)))
        ordered[:, np.asarray(model.classes_, dtype=int)] = found
        found = ordered
    totals = found.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        found = np.where(totals > 0, found / totals, np.nan)  # 0 everywhere: no seed reaches the row
    distributions = np.full((matrix.shape[0], len(classes)), np.nan)
    distributions[rows] = found
    return distributions, valid, classes


def hand_labels(patients: pd.DataFrame, clusters: pd.Series, mapping: pd.DataFrame | None,
                overrides: pd.DataFrame | None) -> pd.DataFrame:
    """What the analyst has labelled, per patient.

    patients : table with a ``patient_id`` column; clusters : Series patient_id -> cluster id;
    mapping / overrides : ``LabelStore.current_mapping`` / ``patient_overrides``.
    Returns ``patient_id, disease, icd10_code, label_source`` ("override", "cluster" or "none")
    in the order of ``patients`` (``core.labels.labeled_patients``).
    """
    table = labeled_patients(patients[["patient_id"]], clusters, mapping, overrides)
    return table[["patient_id", "disease", "icd10_code", "label_source"]].reset_index(drop=True)


@dataclass
class Propagation:
    """A stored propagation.

    proposals : DataFrame, one row per patient (``PROPOSAL_COLUMNS`` plus one ``p_<disease>``
        column per class): the proposed disease and ICD-10-CM code, the confidence (0-1), whether
        the patient was a seed and from what ("override" / "cluster"), and for patients with no
        proposal the reason. Sorted by confidence, highest first, seeds last.
    classes : the diseases seen in the seeds. key / created : the run's key and time.
    """

    proposals: pd.DataFrame
    classes: list[str]
    key: str
    created: str
    config: dict[str, Any]
    from_store: bool = False

    @property
    def open_proposals(self) -> pd.DataFrame:
        """Proposals for patients without a hand label, highest confidence first."""
        frame = self.proposals
        return frame[~frame["seed"] & frame["disease"].notna()].reset_index(drop=True)


def _propagation_from_run(run: Run, *, from_store: bool) -> Propagation:
    return Propagation(proposals=run.load("proposals"), classes=list(run.load("classes")), key=run.key,
                       created=run.created, config=dict(run.config), from_store=from_store)


def _seed_fingerprint(seeds: pd.DataFrame) -> list[list[Any]]:
    return [[str(r.patient_id), r.disease, r.icd10_code, r.label_source]
            for r in seeds.itertuples() if r.label_source != "none"]


def propagation_key(cohort_key: str, clustering_key: str, seeds: pd.DataFrame, config: Mapping[str, Any]) -> str:
    return run_key(PROPAGATION_KIND, inputs={"cohort": cohort_key, "clustering": clustering_key,
                                             "seeds": _seed_fingerprint(seeds)},
                   config=dict(config), version=PROPAGATION_VERSION)


def stored_propagation(key: str, *, store: RunStore | None = None) -> Propagation | None:
    run = (store or RunStore()).load(PROPAGATION_KIND, key, version=PROPAGATION_VERSION)
    return None if run is None else _propagation_from_run(run, from_store=True)


def propagate_labels(
    table: pd.DataFrame,
    vectors: np.ndarray,
    cluster_labels: np.ndarray,
    mapping: pd.DataFrame | None,
    overrides: pd.DataFrame | None,
    *,
    cohort_key: str,
    clustering_key: str,
    dataset: str | None = None,
    method: str = "spreading",
    n_neighbors: int = 7,
    alpha: float = 0.2,
    store: RunStore | None = None,
) -> Propagation:
    """Propose a label for every patient of a cohort from the analyst's hand labels; a named run.

    Parameters
    ----------
    table : the cohort's rows (patients or images), with ``patient_id``; vectors : ndarray of
        shape (n_rows, dim) aligned with it (NaN rows: no vector); cluster_labels : ndarray of
        shape (n_rows,), the clustering the mapping was saved for (-1 noise).
    mapping, overrides : ``LabelStore.current_mapping(dataset, clustering_key)`` and
        ``patient_overrides(dataset)``.
    cohort_key, clustering_key : name the inputs (the run key covers them and the seeds).
    method, n_neighbors, alpha : see ``propagate``.

    Returns a ``Propagation`` (loaded when the same inputs were propagated before). Raises what
    ``propagate`` raises (e.g. fewer than two hand-labelled diseases).
    """
    _check_params(method, n_neighbors, alpha)
    if "patient_id" not in table.columns:
        raise ValueError(f"table needs a 'patient_id' column; it has {list(table.columns)}")
    matrix = np.asarray(vectors, dtype=np.float64)
    if matrix.shape[0] != len(table) or len(cluster_labels) != len(table):
        raise ValueError(f"{len(table)} rows, {matrix.shape[0]} vectors and {len(cluster_labels)} cluster labels must match")
    patient_of_row = table["patient_id"].astype(str).to_numpy()
    patients = pd.DataFrame({"patient_id": pd.unique(patient_of_row)})
    seeds = hand_labels(patients, _patient_clusters(patient_of_row, np.asarray(cluster_labels)), mapping, overrides)
    config = {"method": method, "n_neighbors": int(n_neighbors), "alpha": float(alpha), "components": MAX_COMPONENTS}
    key = propagation_key(cohort_key, clustering_key, seeds, config)
    runs = store or RunStore()

    def compute() -> tuple[dict[str, Any], dict[str, Any]]:
        by_patient = seeds.set_index("patient_id")
        row_seeds = by_patient["disease"].reindex(patient_of_row).to_numpy(dtype=object)
        distributions, valid, classes = propagate(matrix, row_seeds, method=method, n_neighbors=n_neighbors, alpha=alpha)
        # Image-level rows: a patient's proposal pools its images' distributions.
        pooled = pd.DataFrame(distributions, columns=classes).assign(patient_id=patient_of_row, valid=valid)
        per_patient = pooled.groupby("patient_id", sort=False)
        mean = per_patient[classes].mean().reindex(patients["patient_id"])
        had_vector = per_patient["valid"].any().reindex(patients["patient_id"]).to_numpy()
        codes = _codes_by_disease(seeds)
        frame = seeds[["patient_id", "label_source"]].copy()
        values = mean.to_numpy()
        reachable = np.isfinite(values).all(axis=1)
        best = np.where(reachable, np.nanargmax(np.where(np.isfinite(values), values, -1), axis=1), 0)
        frame["disease"] = [classes[b] if ok else None for b, ok in zip(best, reachable, strict=True)]
        frame["icd10_code"] = [codes.get(d) if d else None for d in frame["disease"]]
        frame["confidence"] = np.where(reachable, np.nanmax(np.where(np.isfinite(values), values, -1), axis=1), np.nan)
        frame["seed"] = (seeds["label_source"] != "none").to_numpy()
        frame["seed_source"] = seeds["label_source"].where(frame["seed"], None).to_numpy(dtype=object)
        frame["reason"] = [
            None if ok else ("no usable image vector" if not has else "no hand-labelled patient is connected to it")
            for ok, has in zip(reachable, had_vector, strict=True)
        ]
        for index, name in enumerate(classes):
            frame[f"p_{name}"] = values[:, index]
        frame = frame[[*PROPOSAL_COLUMNS, *[f"p_{c}" for c in classes]]]
        frame = frame.sort_values(["seed", "confidence"], ascending=[True, False], na_position="last", kind="stable")
        frame = frame.reset_index(drop=True)
        payload = {"proposals": frame, "classes": classes}
        summary = {"method": method, "seeds": int(frame["seed"].sum()),
                   "proposed": int((~frame["seed"] & frame["disease"].notna()).sum()), "classes": len(classes)}
        return payload, summary

    run, from_store = runs.compute_or_load(
        PROPAGATION_KIND, key, version=PROPAGATION_VERSION, compute=compute, config=config,
        inputs={"cohort": cohort_key, "clustering": clustering_key}, dataset=dataset)
    return _propagation_from_run(run, from_store=from_store)


def _patient_clusters(patient_of_row: np.ndarray, labels: np.ndarray) -> pd.Series:
    """patient_id -> the cluster most of its rows fall in (noise rows do not count), as
    ``core.export.patient_clusters`` (not imported: core.export imports core.labels)."""
    series = pd.Series(labels, index=pd.Index(patient_of_row, name="patient_id"))
    kept = series[series >= 0]
    if kept.empty:
        return pd.Series(dtype="int64", index=pd.Index([], name="patient_id"))
    return kept.groupby(level=0, sort=False).agg(lambda s: s.mode().iloc[0]).astype("int64")


def _codes_by_disease(seeds: pd.DataFrame) -> dict[str, str | None]:
    """The ICD-10-CM code the analyst gave each disease (the commonest, when several)."""
    coded = seeds[seeds["label_source"] != "none"]
    out: dict[str, str | None] = {}
    for disease, group in coded.groupby("disease"):
        codes = group["icd10_code"].dropna()
        out[str(disease)] = str(codes.mode().iloc[0]) if len(codes) else None
    return out


def accept_proposals(store: LabelStore, dataset: str, accepted: pd.DataFrame, *, user: User,
                     run_key: str = "") -> pd.DataFrame:
    """Save accepted proposals as patient overrides (versioned, with who and when).

    accepted : rows with ``patient_id, disease, icd10_code, confidence`` and ``base_version``:
        the patient's override version when the analyst looked (``LabelStore.override_version``;
        None when never overridden). A colleague's edit since then is a conflict, not overwritten.
    Returns one row per accepted patient: ``patient_id, status`` ("saved", "unchanged",
    "conflict" or "error"), ``version`` and ``message``. Raises ``PermissionError`` unless
    ``user`` may label (nothing is saved then).
    """
    require(user, "label")
    missing = [c for c in ("patient_id", "disease", "icd10_code", "base_version") if c not in accepted.columns]
    if missing:
        raise ValueError(f"accepted proposals lack columns {missing}; they have {list(accepted.columns)}")
    results = []
    for row in accepted.itertuples(index=False):
        base = None if row.base_version is None or pd.isna(row.base_version) else int(row.base_version)
        confidence = getattr(row, "confidence", None)
        note = "accepted label propagation" + (f" {run_key}" if run_key else "") + (
            f" (confidence {float(confidence):.2f})" if confidence is not None and pd.notna(confidence) else "")
        code = None if row.icd10_code is None or pd.isna(row.icd10_code) else str(row.icd10_code)
        try:
            saved = store.set_patient_override(dataset, str(row.patient_id), str(row.disease), code,
                                               user=user, base_version=base, note=note)
        except ConflictError as error:
            results.append({"patient_id": str(row.patient_id), "status": "conflict",
                            "version": error.current_version, "message": str(error)})
        except (ValueError, StoreBusyError) as error:
            results.append({"patient_id": str(row.patient_id), "status": "error", "version": None, "message": str(error)})
        else:
            results.append({"patient_id": str(row.patient_id), "status": "saved" if saved.created else "unchanged",
                            "version": saved.version, "message": ""})
    return pd.DataFrame(results, columns=["patient_id", "status", "version", "message"])


def reject_proposals(access: AccessStore, dataset: str, rejected: pd.DataFrame, *, user: User,
                     run_key: str) -> int:
    """Record that ``user`` rejected these proposals (``patient_id, disease``) of run
    ``run_key``, one audit row each (who, when, what); returns how many. Raises
    ``PermissionError`` unless ``user`` may label."""
    require(user, "label")
    for row in rejected.itertuples(index=False):
        access.record(user, REJECT_ACTION, f"{dataset}/{row.patient_id}", f"{run_key}: {row.disease}")
    return len(rejected)


def rejected_patients(access: AccessStore, dataset: str, run_key: str, *, limit: int = 100_000) -> set[str]:
    """Patients whose proposal in run ``run_key`` was rejected (from the audit log)."""
    events = access.events(limit=limit, action=REJECT_ACTION)
    prefix = f"{dataset}/"
    mine = events[events["target"].str.startswith(prefix) & events["detail"].str.startswith(f"{run_key}: ")]
    return {target[len(prefix):] for target in mine["target"]}


def propagation_curve(
    vectors: np.ndarray,
    truth: Sequence[Any],
    *,
    fractions: Iterable[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    repeats: int = 5,
    method: str = "spreading",
    n_neighbors: int = 7,
    alpha: float = 0.2,
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy of propagated labels against ground truth, by the fraction hand-labelled.

    vectors : ndarray of shape (n_rows, dim); truth : n_rows ground-truth labels (missing ones
    are neither hand-labelled nor scored). For each fraction and repeat, a stratified random
    ``fraction`` of the scored rows (at least one per class) is "hand-labelled" with its truth,
    the rest propagated, and accuracy measured on the rows not hand-labelled (a row no seed
    reaches counts as wrong). The baseline gives every row the commonest hand label.

    Returns one row per (fraction, repeat): ``fraction, repeat, n_labelled, n_scored, accuracy,
    majority_accuracy, unreached``. Raises ``ValueError`` for a fraction outside (0, 1),
    repeats < 1, or fewer than two classes in ``truth``.
    """
    matrix = np.asarray(vectors, dtype=np.float64)
    labels = pd.Series(list(truth), dtype=object)
    if len(labels) != matrix.shape[0]:
        raise ValueError(f"truth has {len(labels)} values but vectors has {matrix.shape[0]} rows")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be an integer >= 1")
    scored = np.flatnonzero(labels.notna().to_numpy() & np.isfinite(matrix).all(axis=1))
    classes = sorted(labels.iloc[scored].astype(str).unique())
    if len(classes) < 2:
        raise ValueError(f"truth needs at least two classes among rows with vectors; found {classes}")
    values = labels.iloc[scored].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    rows = []
    for fraction in fractions:
        if not 0 < float(fraction) < 1:
            raise ValueError(f"fraction={fraction!r} must be strictly between 0 and 1")
        for repeat in range(repeats):
            chosen: list[int] = []
            for name in classes:  # stratified: each class keeps its share, at least one row
                members = np.flatnonzero(values == name)
                take = max(1, round(float(fraction) * len(members)))
                chosen.extend(rng.choice(members, size=min(take, len(members) - 1) or 1, replace=False))
            picked = np.zeros(len(scored), dtype=bool)
            picked[chosen] = True
            seeds = np.full(matrix.shape[0], None, dtype=object)
            seeds[scored[picked]] = values[picked]
            distributions, _, seen = propagate(matrix, seeds, method=method, n_neighbors=n_neighbors, alpha=alpha)
            held = scored[~picked]
            found = distributions[held]
            reached = np.isfinite(found).all(axis=1)
            guesses = np.array([seen[i] for i in np.nanargmax(np.where(reached[:, None], found, 0), axis=1)], dtype=object)
            correct = (guesses == values[~picked]) & reached
            majority = pd.Series(values[picked]).mode().iloc[0]
            rows.append({
                "fraction": float(fraction), "repeat": repeat, "n_labelled": int(picked.sum()),
                "n_scored": int(len(held)), "accuracy": float(correct.mean()),
                "majority_accuracy": float((values[~picked] == majority).mean()),
                "unreached": int((~reached).sum()),
            })
    return pd.DataFrame(rows, columns=["fraction", "repeat", "n_labelled", "n_scored", "accuracy",
                                       "majority_accuracy", "unreached"])


CURVE_KIND, CURVE_VERSION = "propagation-curve", "1"


def propagation_curve_run(
    vectors: np.ndarray,
    truth: Sequence[Any],
    *,
    cohort_key: str,
    dataset: str | None = None,
    fractions: Iterable[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    repeats: int = 5,
    method: str = "spreading",
    n_neighbors: int = 7,
    alpha: float = 0.2,
    store: RunStore | None = None,
    compute: bool = True,
) -> tuple[pd.DataFrame | None, str, bool]:
    """``propagation_curve`` as a named run (kind ``propagation-curve``), keyed by the cohort, the
    ground truth and the parameters. Returns ``(curve, key, from_store)``; with ``compute=False``
    a curve not stored yet is ``None``."""
    fractions = [float(f) for f in fractions]
    labels = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in truth]
    config = {"fractions": fractions, "repeats": int(repeats), "method": method, "n_neighbors": int(n_neighbors),
              "alpha": float(alpha), "components": MAX_COMPONENTS}
    key = run_key(CURVE_KIND, inputs={"cohort": cohort_key, "truth": labels}, config=config, version=CURVE_VERSION)

    runs = store or RunStore()
    if not compute:
        stored = runs.load(CURVE_KIND, key, version=CURVE_VERSION)
        return (None if stored is None else stored.load("curve")), key, stored is not None

    def work() -> tuple[dict[str, Any], dict[str, Any]]:
        curve = propagation_curve(vectors, labels, fractions=fractions, repeats=repeats, method=method,
                                  n_neighbors=n_neighbors, alpha=alpha)
        best = curve.groupby("fraction")["accuracy"].mean()
        return {"curve": curve}, {"method": method, "max_fraction": float(best.index.max()),
                                  "accuracy_at_max": round(float(best.iloc[-1]), 4)}

    run, from_store = runs.compute_or_load(
        CURVE_KIND, key, version=CURVE_VERSION, compute=work, config=config,
        inputs={"cohort": cohort_key}, dataset=dataset)
    return run.load("curve"), key, from_store


def score_proposals(proposals: pd.DataFrame, truth: pd.Series) -> pd.DataFrame:
    """How often open proposals match the ground truth, by confidence band.

    proposals : ``Propagation.open_proposals``; truth : Series patient_id -> ground-truth label.
    Returns ``band, proposals, with_truth, correct, accuracy`` (bands 0-0.5, 0.5-0.7, 0.7-0.9,
    0.9-1 and "all"); proposals whose patient has no ground truth are counted but not scored.
    """
    frame = proposals[["patient_id", "disease", "confidence"]].copy()
    known = pd.Series(truth.to_numpy(), index=truth.index.astype(str))
    frame["truth"] = frame["patient_id"].astype(str).map(known)
    frame["band"] = pd.cut(frame["confidence"], [0, 0.5, 0.7, 0.9, 1.0], include_lowest=True,
                           labels=["0-0.5", "0.5-0.7", "0.7-0.9", "0.9-1"]).astype(str)
    rows = []
    for band, group in [*frame.groupby("band", sort=True), ("all", frame)]:
        scored = group[group["truth"].notna()]
        correct = int((scored["truth"].astype(str).str.casefold().str.strip()
                       == scored["disease"].astype(str).str.casefold().str.strip()).sum())
        rows.append({"band": band, "proposals": len(group), "with_truth": len(scored), "correct": correct,
                     "accuracy": correct / len(scored) if len(scored) else float("nan")})
    return pd.DataFrame(rows, columns=["band", "proposals", "with_truth", "correct", "accuracy"])
