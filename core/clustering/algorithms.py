"""Clustering of feature matrices: a registry of algorithms, scores and k sweeps.

Every algorithm in :data:`ALGORITHMS` declares its parameters (type, default, valid range) so
that front ends can build widgets from the registry, and whether it takes a number of clusters
``k``. :func:`cluster` runs one of them on the rows of ``X`` without NaN; NaN rows (images that
failed) get label -1, like noise, and every output stays aligned with the rows of ``X``.

Scaling: features arrive already scaled from ``core.features`` (per-block standardisation and
weights), and re-standardising here would undo those block weights, so inputs are used as given.
``standardize=True`` z-scores each column over the fitted rows for matrices that were not
prepared that way (e.g. raw metadata columns).

Scale (issue 12). Algorithms whose time or memory grows with n^2 declare ``max_rows`` and
refuse larger inputs with a message that names a scalable alternative (``scalable_with``):
agglomerative and spectral above 20,000 rows, k-medoids above 20,000, DBSCAN above 50,000.
``minibatch-kmeans`` is linear in rows. HDBSCAN above ``HDBSCAN_REDUCE_ROWS`` (5,000) runs on
``HDBSCAN_REDUCED_DIMS`` (10) PCA components, and above ``HDBSCAN_FIT_ROWS`` (20,000) also on a
sample: HDBSCAN on a seeded random sample of ``HDBSCAN_FIT_ROWS`` rows, and every other row takes the label (cluster or noise) of
its nearest sampled row in the reduced space; ``notes`` says so. Above ``LARGE_ROWS`` rows the
matrix stays float32 instead of being copied to float64. Below these sizes every run is exactly
what it was.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

NOISE = -1
# Silhouette is O(n^2) in time and memory; above this many rows it is estimated on a sample.
SILHOUETTE_SAMPLE = 5000
# FasterPAM needs the full distance matrix (n^2 float32): 20,000 rows is 1.6 GB.
KMEDOIDS_MAX_SAMPLES = 20_000
# Ward/complete/average linkage keep n^2/2 distances (20,000 rows: 1.6 GB); spectral
# clustering's eigen-solve and rbf affinity are O(n^2) as well.
QUADRATIC_MAX_ROWS = 20_000
# DBSCAN stores every point's eps-neighbourhood: up to n^2 indices for a generous eps.
DBSCAN_MAX_ROWS = 50_000
# HDBSCAN's minimum spanning tree is O(n^2) distance evaluations in scikit-learn; above this it
# runs on a sample in reduced dimensions (module docstring).
HDBSCAN_FIT_ROWS = 20_000
HDBSCAN_REDUCED_DIMS = 10
# ...and above this many rows it runs on HDBSCAN_REDUCED_DIMS PCA dimensions even unsampled:
# measured, 10,000 rows x 512 dims took more than 10 minutes on the 2-core machine.
HDBSCAN_REDUCE_ROWS = 5_000
# Above this many rows matrices stay float32 (a float64 copy of 200,000 x 1,280 is 2 GB).
LARGE_ROWS = 20_000


class ScaleNote(UserWarning):
    """How a large input was handled (a sample, reduced dimensions); ends up in ``notes``."""


@dataclass(frozen=True)
class ParamSpec:
    """One tunable parameter of an algorithm.

    kind : "int", "float" or "choice". ``low``/``high`` are inclusive bounds (None: unbounded);
    ``ui_high`` is a sensible widget maximum where ``high`` is unbounded. ``allow_none``: None is
    a valid value (meaning given in ``help``).
    """

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    allow_none: bool = False
    ui_high: float | None = None
    help: str = ""

    def validate(self, value: Any, algorithm: str) -> Any:
        """Return ``value`` (ints/floats normalised) or raise ValueError naming the valid range."""
        where = f"for algorithm {algorithm!r}"
        if value is None:
            if self.allow_none:
                return None
            raise ValueError(f"{self.name}=None is not allowed {where}")
        if self.kind == "choice":
            if value not in self.choices:
                valid = ", ".join(repr(c) for c in self.choices)
                raise ValueError(f"{self.name}={value!r} is not valid {where}; valid: {valid}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ValueError(f"{self.name}={value!r} must be a number ({self.kind}) {where}")
        if self.kind == "int":
            if float(value) != int(value):
                raise ValueError(f"{self.name}={value!r} must be an integer {where}")
            value = int(value)
        else:
            value = float(value)
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            high = "inf" if self.high is None else self.high
            raise ValueError(f"{self.name}={value!r} must be in [{self.low}, {high}] {where}")
        return value


def _k(default: int = 4) -> ParamSpec:
    return ParamSpec("k", "int", default, low=2, ui_high=30, help="number of clusters")


@dataclass
class _Fit:
    labels: np.ndarray
    centers: np.ndarray | None = None
    medoids: np.ndarray | None = None  # indices into the fitted rows
    membership: np.ndarray | None = None  # (n_fitted, k) soft memberships


@dataclass(frozen=True)
class AlgorithmSpec:
    """A registry entry: name, what it does, whether it takes ``k``, and its parameters."""

    name: str
    description: str
    takes_k: bool
    params: tuple[ParamSpec, ...]
    fit: Callable[[np.ndarray, dict[str, Any], int], _Fit] = field(repr=False)
    finds_noise: bool = False
    max_rows: int | None = None  # refuses more rows than this (O(n^2) time or memory)
    scalable_with: str = ""  # what to use instead above max_rows, in words

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


def _fit_kmeans(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=p["k"], n_init=p["n_init"], random_state=random_state).fit(X)
    return _Fit(model.labels_, centers=model.cluster_centers_)


def _fit_minibatch_kmeans(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(
        n_clusters=p["k"], batch_size=p["batch_size"], n_init=p["n_init"],
        random_state=random_state,
    ).fit(X)
    return _Fit(model.labels_, centers=model.cluster_centers_)


def _fit_gmm(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    from sklearn.mixture import GaussianMixture

    model = GaussianMixture(
        n_components=p["k"],
        covariance_type=p["covariance_type"],
        reg_covar=p["reg_covar"],
        random_state=random_state,
    ).fit(X)
    membership = model.predict_proba(X)
    return _Fit(membership.argmax(axis=1), centers=model.means_, membership=membership)


def _fit_agglomerative(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(n_clusters=p["k"], linkage=p["linkage"]).fit(X)
    return _Fit(model.labels_)


def _fit_spectral(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    from sklearn.cluster import SpectralClustering

    model = SpectralClustering(
        n_clusters=p["k"],
        affinity=p["affinity"],
        n_neighbors=p["n_neighbors"],
        random_state=random_state,
    ).fit(X)
    return _Fit(model.labels_)


def _fit_dbscan(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    from sklearn.cluster import DBSCAN

    model = DBSCAN(eps=p["eps"], min_samples=p["min_samples"], metric=p["metric"]).fit(X)
    return _Fit(model.labels_)


def _fit_hdbscan(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    from sklearn.cluster import HDBSCAN

    def fit(data: np.ndarray) -> np.ndarray:
        return HDBSCAN(
            min_cluster_size=p["min_cluster_size"],
            min_samples=p["min_samples"],
            cluster_selection_epsilon=p["cluster_selection_epsilon"],
            copy=True,
        ).fit(data).labels_

    n = X.shape[0]
    if n <= HDBSCAN_REDUCE_ROWS:
        return _Fit(fit(X))
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KDTree

    dims = min(HDBSCAN_REDUCED_DIMS, X.shape[1])
    reduced = X
    if X.shape[1] > dims:
        reduced = PCA(n_components=dims, svd_solver="randomized",
                      random_state=random_state).fit_transform(X).astype(np.float32)
    if n <= HDBSCAN_FIT_ROWS:
        if dims < X.shape[1]:
            warnings.warn(f"HDBSCAN of {n} rows ran on {dims} PCA dimensions", ScaleNote,
                          stacklevel=2)
        return _Fit(fit(reduced))
    sample = np.sort(np.random.default_rng(random_state).choice(n, HDBSCAN_FIT_ROWS,
                                                                 replace=False))
    sample_labels = fit(reduced[sample])
    labels = np.empty(n, dtype=np.int64)
    labels[sample] = sample_labels
    rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    nearest = KDTree(reduced[sample]).query(reduced[rest], k=1, return_distance=False)[:, 0]
    labels[rest] = sample_labels[nearest]
    warnings.warn(
        f"HDBSCAN of {n} rows: fitted on a random sample of {HDBSCAN_FIT_ROWS} rows in "
        f"{dims} PCA dimensions; the other {len(rest)} rows took the label of their nearest "
        "sampled row",
        ScaleNote,
        stacklevel=2,
    )
    return _Fit(labels)


def _fit_birch(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    from sklearn.cluster import Birch

    model = Birch(
        n_clusters=p["k"], threshold=p["threshold"], branching_factor=p["branching_factor"]
    ).fit(X)
    return _Fit(model.labels_)


def _fit_kmedoids(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    import kmedoids
    from sklearn.metrics import pairwise_distances

    distances = pairwise_distances(X, metric=p["metric"]).astype(np.float32)
    result = kmedoids.fasterpam(
        distances, p["k"], max_iter=p["max_iter"], init="random", random_state=random_state, n_cpu=1
    )
    medoids = np.asarray(result.medoids, dtype=np.int64)
    return _Fit(np.asarray(result.labels, dtype=np.int64), centers=X[medoids], medoids=medoids)


def _fit_fuzzy_cmeans(X: np.ndarray, p: dict[str, Any], random_state: int) -> _Fit:
    import skfuzzy

    centers, membership, *_ = skfuzzy.cluster.cmeans(
        X.T, c=p["k"], m=p["m"], error=p["error"], maxiter=p["maxiter"], seed=random_state
    )
    return _Fit(membership.argmax(axis=0), centers=centers, membership=membership.T)


ALGORITHMS: dict[str, AlgorithmSpec] = {
    spec.name: spec
    for spec in (
        AlgorithmSpec(
            "kmeans",
            "k-means (Lloyd, k-means++ starts): compact, similar-sized spherical clusters",
            True,
            (_k(), ParamSpec("n_init", "int", 10, low=1, high=100, help="restarts; best kept")),
            _fit_kmeans,
        ),
        AlgorithmSpec(
            "minibatch-kmeans",
            "mini-batch k-means (Sculley 2010): k-means on random batches, linear in rows; "
            "for 100,000+ scans",
            True,
            (
                _k(),
                ParamSpec("batch_size", "int", 4096, low=64, high=1_000_000, ui_high=65536,
                          help="rows per update"),
                ParamSpec("n_init", "int", 3, low=1, high=100, help="restarts; best kept"),
            ),
            _fit_minibatch_kmeans,
        ),
        AlgorithmSpec(
            "gmm",
            "Gaussian mixture (EM); hard label = most probable component",
            True,
            (
                _k(),
                # "diag" by default: full covariances over 1,000+ embedding dims are singular
                # for cohorts of a few hundred scans.
                ParamSpec(
                    "covariance_type",
                    "choice",
                    "diag",
                    choices=("diag", "full", "tied", "spherical"),
                ),
                ParamSpec("reg_covar", "float", 1e-6, low=0.0, high=1.0, help="added to variances"),
            ),
            _fit_gmm,
        ),
        AlgorithmSpec(
            "agglomerative",
            "bottom-up hierarchical merging (Ward linkage by default)",
            True,
            (
                _k(),
                ParamSpec(
                    "linkage", "choice", "ward", choices=("ward", "complete", "average", "single")
                ),
            ),
            _fit_agglomerative,
            max_rows=QUADRATIC_MAX_ROWS,
            scalable_with="birch (a CF-tree summary, then agglomerative on its subclusters) or "
            "minibatch-kmeans",
        ),
        AlgorithmSpec(
            "spectral",
            "spectral clustering on a k-nearest-neighbour graph: non-convex shapes",
            True,
            (
                _k(),
                ParamSpec(
                    "affinity", "choice", "nearest_neighbors", choices=("nearest_neighbors", "rbf")
                ),
                ParamSpec("n_neighbors", "int", 10, low=2, ui_high=100, help="graph neighbours"),
            ),
            _fit_spectral,
            max_rows=QUADRATIC_MAX_ROWS,
            scalable_with="hdbscan (non-convex shapes, sampled above 20,000 rows) or "
            "minibatch-kmeans",
        ),
        AlgorithmSpec(
            "dbscan",
            "density-based; finds the number of clusters and marks sparse points as noise (-1)",
            False,
            (
                ParamSpec("eps", "float", 0.5, low=1e-9, ui_high=50.0, help="neighbourhood radius"),
                ParamSpec("min_samples", "int", 5, low=1, ui_high=100, help="core-point density"),
                ParamSpec(
                    "metric", "choice", "euclidean", choices=("euclidean", "cosine", "manhattan")
                ),
            ),
            _fit_dbscan,
            finds_noise=True,
            max_rows=DBSCAN_MAX_ROWS,
            scalable_with="hdbscan (density clusters, sampled above 20,000 rows)",
        ),
        AlgorithmSpec(
            "hdbscan",
            "hierarchical DBSCAN: density clusters at varying scales, noise = -1",
            False,
            (
                ParamSpec("min_cluster_size", "int", 5, low=2, ui_high=200),
                ParamSpec(
                    "min_samples",
                    "int",
                    None,
                    low=1,
                    allow_none=True,
                    ui_high=100,
                    help="None: same as min_cluster_size",
                ),
                ParamSpec("cluster_selection_epsilon", "float", 0.0, low=0.0, ui_high=10.0),
            ),
            _fit_hdbscan,
            finds_noise=True,
        ),
        AlgorithmSpec(
            "birch",
            "BIRCH: streaming CF-tree summary, then agglomerative on the subclusters",
            True,
            (
                _k(),
                ParamSpec(
                    "threshold", "float", 0.5, low=1e-9, ui_high=10.0, help="subcluster radius"
                ),
                ParamSpec("branching_factor", "int", 50, low=2, ui_high=200),
            ),
            _fit_birch,
        ),
        AlgorithmSpec(
            "kmedoids",
            "k-medoids (FasterPAM): cluster centres are real scans; robust to outliers",
            True,
            (
                _k(),
                ParamSpec(
                    "metric", "choice", "euclidean", choices=("euclidean", "cosine", "manhattan")
                ),
                ParamSpec("max_iter", "int", 100, low=1, high=10_000),
            ),
            _fit_kmedoids,
            max_rows=KMEDOIDS_MAX_SAMPLES,
            scalable_with="minibatch-kmeans or kmeans (centres are means, not scans)",
        ),
        AlgorithmSpec(
            "fuzzy-cmeans",
            "fuzzy c-means: soft memberships; hard label = largest membership",
            True,
            (
                _k(),
                ParamSpec("m", "float", 2.0, low=1.01, high=10.0, help="fuzziness exponent"),
                ParamSpec("error", "float", 0.005, low=1e-9, high=1.0, help="stopping tolerance"),
                ParamSpec("maxiter", "int", 1000, low=1, high=100_000),
            ),
            _fit_fuzzy_cmeans,
        ),
    )
}


@dataclass
class Clustering:
    """Result of :func:`cluster`.

    labels : ndarray of shape (n_samples,), int; clusters are 0..n_clusters-1, -1 is noise or a
        NaN row that was not fitted.
    scores : silhouette, davies_bouldin, calinski_harabasz over non-noise rows (NaN when
        undefined, e.g. fewer than 2 clusters).
    centers : ndarray of shape (n_clusters, n_features) in the fitted (possibly standardised)
        space, for kmeans, gmm, kmedoids, fuzzy-cmeans; else None.
    medoid_indices : ndarray of shape (n_clusters,), row indices into ``X`` (kmedoids only).
    membership : ndarray of shape (n_samples, n_clusters), soft memberships (gmm,
        fuzzy-cmeans; NaN rows for unfitted rows), else None.
    inertia : within-cluster sum of squared distances to the cluster mean (noise excluded).
    """

    labels: np.ndarray
    algorithm: str
    params: dict[str, Any]
    n_clusters: int
    scores: dict[str, float]
    centers: np.ndarray | None = None
    medoid_indices: np.ndarray | None = None
    membership: np.ndarray | None = None
    inertia: float = float("nan")
    n_noise: int = 0
    n_excluded: int = 0
    standardized: bool = False
    notes: list[str] = field(default_factory=list)


def get_algorithm(name: str) -> AlgorithmSpec:
    """Registry look-up; raises ValueError listing the valid names."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown clustering algorithm {name!r}; valid: {', '.join(ALGORITHMS)}"
        ) from None


def resolve_params(algorithm: str, **params: Any) -> dict[str, Any]:
    """Defaults of ``algorithm`` updated with ``params``, each validated against its spec.

    Raises ValueError for an unknown algorithm, unknown parameter names (listing the valid
    ones) or an out-of-range value.
    """
    spec = get_algorithm(algorithm)
    specs = {p.name: p for p in spec.params}
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for algorithm {algorithm!r}; "
            f"valid: {', '.join(specs)}"
        )
    resolved = spec.defaults()
    for name, value in params.items():
        resolved[name] = specs[name].validate(value, algorithm)
    return resolved


def _check_against_data(algorithm: str, params: dict[str, Any], n: int) -> None:
    if "k" in params and params["k"] > n:
        raise ValueError(f"k={params['k']} must be <= n_samples={n}")
    if (
        algorithm == "spectral"
        and params["affinity"] == "nearest_neighbors"
        and params["n_neighbors"] >= n
    ):
        raise ValueError(f"n_neighbors={params['n_neighbors']} must be < n_samples={n}")
    if algorithm == "hdbscan" and params["min_cluster_size"] > n:
        raise ValueError(f"min_cluster_size={params['min_cluster_size']} must be <= n_samples={n}")
    if algorithm == "hdbscan" and params["min_samples"] is not None and params["min_samples"] > n:
        raise ValueError(f"min_samples={params['min_samples']} must be <= n_samples={n}")


def _as_matrix(X: Any) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    return X.astype(np.float32 if X.shape[0] > LARGE_ROWS else np.float64, copy=False)


def _check_size(spec: AlgorithmSpec, n: int) -> None:
    if spec.max_rows is not None and n > spec.max_rows:
        raise ValueError(
            f"{spec.name} grows with n^2 in time or memory: n_samples={n} exceeds its limit of "
            f"{spec.max_rows}; use {spec.scalable_with}"
        )


def _standardize(X: np.ndarray) -> np.ndarray:
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0  # constant columns stay 0 instead of dividing by zero
    return (X - X.mean(axis=0)) / scale


def clustering_scores(
    X: np.ndarray, labels: np.ndarray, *, random_state: int = 0
) -> dict[str, float]:
    """Internal validity scores of a labelling, noise (-1) excluded.

    X : ndarray of shape (n_samples, n_features), no NaN; labels : ndarray of shape (n_samples,).
    Returns silhouette (higher better, in [-1, 1]), davies_bouldin (lower better),
    calinski_harabasz (higher better); each NaN unless 2 <= n_clusters <= n_points - 1.
    Silhouette is estimated on a sample of SILHOUETTE_SAMPLE rows for larger inputs.
    """
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    keep = labels != NOISE
    X, labels = X[keep], labels[keep]
    n_clusters = len(np.unique(labels))
    nan = float("nan")
    if not 2 <= n_clusters <= len(labels) - 1:
        return {"silhouette": nan, "davies_bouldin": nan, "calinski_harabasz": nan}
    sample = SILHOUETTE_SAMPLE if len(labels) > SILHOUETTE_SAMPLE else None
    return {
        "silhouette": float(
            silhouette_score(X, labels, sample_size=sample, random_state=random_state)
        ),
        "davies_bouldin": float(davies_bouldin_score(X, labels)),
        "calinski_harabasz": float(calinski_harabasz_score(X, labels)),
    }


def _inertia(X: np.ndarray, labels: np.ndarray) -> float:
    total = 0.0
    for label in np.unique(labels[labels != NOISE]):
        members = X[labels == label]
        total += float(((members - members.mean(axis=0)) ** 2).sum())
    return total


def cluster(
    X: np.ndarray,
    *,
    algorithm: str = "kmeans",
    random_state: int = 0,
    standardize: bool = False,
    **params: Any,
) -> Clustering:
    """Cluster the rows of ``X``.

    X : ndarray of shape (n_samples, n_features). Rows with NaN/inf are not fitted; their label
        is -1 and they are counted in ``n_excluded``.
    algorithm : a key of :data:`ALGORITHMS`; params : that algorithm's parameters (e.g. ``k``).
    standardize : z-score columns over the fitted rows first (off: features arrive scaled).

    Returns a :class:`Clustering` aligned with the rows of ``X``; cluster ids are renumbered
    0..n_clusters-1 in order of their original ids.

    Raises ValueError for an unknown algorithm or parameter, an out-of-range value,
    ``k > n_samples`` (``f"k={k} must be <= n_samples={n}"``, n counting fitted rows), or fewer
    than 2 rows without NaN. Warnings raised by the algorithm are kept in ``notes``.
    """
    spec = get_algorithm(algorithm)
    resolved = resolve_params(algorithm, **params)
    X = _as_matrix(X)
    valid = np.isfinite(X).all(axis=1)
    n_valid = int(valid.sum())
    if n_valid < 2:
        raise ValueError(f"clustering needs at least 2 rows without NaN; got n_samples={n_valid}")
    _check_against_data(algorithm, resolved, n_valid)
    _check_size(spec, n_valid)
    data = X if valid.all() else X[valid]
    data = _standardize(data) if standardize else data

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = spec.fit(data, resolved, random_state)
    notes = sorted({f"{w.category.__name__}: {w.message}" for w in caught})

    raw = np.asarray(fit.labels, dtype=np.int64)
    # Renumber to 0..m-1: fuzzy/GMM argmax can leave a component empty.
    kept_ids = np.unique(raw[raw != NOISE])
    fitted_labels = np.where(raw == NOISE, NOISE, np.searchsorted(kept_ids, raw)).astype(np.int64)
    centers = fit.centers[kept_ids] if fit.centers is not None else None
    membership = None
    if fit.membership is not None:
        membership = np.full((X.shape[0], len(kept_ids)), np.nan)
        membership[valid] = fit.membership[:, kept_ids]
    medoid_indices = None
    if fit.medoids is not None:
        medoid_indices = np.flatnonzero(valid)[fit.medoids[kept_ids]]

    labels = np.full(X.shape[0], NOISE, dtype=np.int64)
    labels[valid] = fitted_labels
    n_excluded = X.shape[0] - n_valid
    if n_excluded:
        notes.append(f"{n_excluded} row(s) with NaN features were not clustered (label -1)")
    return Clustering(
        labels=labels,
        algorithm=algorithm,
        params=resolved,
        n_clusters=len(kept_ids),
        scores=clustering_scores(data, fitted_labels, random_state=random_state),
        centers=centers,
        medoid_indices=medoid_indices,
        membership=membership,
        inertia=_inertia(data, fitted_labels),
        n_noise=int((fitted_labels == NOISE).sum()),
        n_excluded=n_excluded,
        standardized=standardize,
        notes=notes,
    )


def k_sweep(
    X: np.ndarray,
    *,
    algorithm: str = "kmeans",
    ks: Iterable[int] = range(2, 11),
    random_state: int = 0,
    standardize: bool = False,
    progress: Callable[[float, str], None] | None = None,
    **params: Any,
) -> pd.DataFrame:
    """Run ``algorithm`` for each k and tabulate the scores (to pick k).

    X : ndarray of shape (n_samples, n_features). ``params`` are the algorithm's other
    parameters. Returns a DataFrame with one row per k: k, n_clusters (found),
    silhouette, davies_bouldin, calinski_harabasz, inertia. ``progress(fraction, message)``,
    when given, is called after each k ("k = 4 done (3 of 9)").

    Raises ValueError for an algorithm that does not take k, ``k`` inside ``params``, an empty
    ``ks`` or any k outside [2, n_samples] (checked before any fitting).
    """
    spec = get_algorithm(algorithm)
    if not spec.takes_k:
        takes_k = ", ".join(name for name, s in ALGORITHMS.items() if s.takes_k)
        raise ValueError(f"algorithm {algorithm!r} does not take k; k_sweep works with: {takes_k}")
    if "k" in params:
        raise ValueError("pass the values of k as ks=..., not k=...")
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks is empty; give at least one k, e.g. ks=range(2, 11)")
    X = _as_matrix(X)
    n_valid = int(np.isfinite(X).all(axis=1).sum())
    for k in ks:
        if k < 2:
            raise ValueError(f"k={k} must be >= 2")
        if k > n_valid:
            raise ValueError(f"k={k} must be <= n_samples={n_valid}")
    rows = []
    for done, k in enumerate(ks, start=1):
        result = cluster(
            X,
            algorithm=algorithm,
            random_state=random_state,
            standardize=standardize,
            k=k,
            **params,
        )
        rows.append(
            {"k": k, "n_clusters": result.n_clusters, **result.scores, "inertia": result.inertia}
        )
        if progress is not None:
            progress(done / len(ks), f"k = {k} done ({done} of {len(ks)})")
    return pd.DataFrame(
        rows,
        columns=["k", "n_clusters", "silhouette", "davies_bouldin", "calinski_harabasz", "inertia"],
    )


def algorithm_table(algorithms: Mapping[str, AlgorithmSpec] = ALGORITHMS) -> pd.DataFrame:
    """One row per registered algorithm: name, takes_k, finds_noise, parameters, description."""
    return pd.DataFrame(
        [
            {
                "name": spec.name,
                "takes_k": spec.takes_k,
                "finds_noise": spec.finds_noise,
                "parameters": ", ".join(f"{p.name}={p.default!r}" for p in spec.params),
                "description": spec.description,
            }
            for spec in algorithms.values()
        ]
    )
