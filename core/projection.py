"""2-D / 3-D maps of a feature matrix (UMAP, PCA, t-SNE) and a store of named, cached runs.

A projection is expensive (UMAP and t-SNE take seconds to minutes), so, as in FiftyOne's
brain, every run has a key derived from the feature matrix's key, the method and its full
parameter set; the run store (``core.runs``, kind ``projection``) keeps the coordinates with
their config, version and timestamp, and :func:`compute_or_load` reloads by key instead of
recomputing.

Preprocessing: before UMAP and t-SNE, a matrix wider than ``pre_pca_dims`` (50) columns is
standardised per column and reduced to ``pre_pca_dims`` principal components. Neighbour search
in 1,000+ embedding dimensions is slow and noisy; the leading 50 components keep the
neighbourhood structure (the usual recipe for t-SNE/UMAP on CNN embeddings) and make runs much
faster. PCA itself runs on the matrix as given: features arrive already scaled from
``core.features``. Rows with any NaN/inf (images that failed to load) are left out of the fit
and get NaN coordinates, so ``coords[i]`` always belongs to ``X[i]``.

Scale (issue 12). Above ``LARGE_ROWS`` (20,000) valid rows a run switches to what holds at
archive size, and says so in ``notes``: the matrix stays float32 (200,000 x 1,280 is 1 GB, not
2), PCA (the map itself and the pre-reduction) uses the randomized solver, and t-SNE runs
through openTSNE's FFT-accelerated gradient (O(n)) instead of scikit-learn's Barnes-Hut; a 3-D
t-SNE, or any t-SNE above ``SKLEARN_TSNE_MAX_ROWS`` rows without openTSNE installed, is refused
with a message naming UMAP. Below ``LARGE_ROWS`` every run is exactly what it was.
"""

from __future__ import annotations

import inspect
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.runs import Run, RunStore, run_key

# Bump when preprocessing or defaults change so that stored runs stop matching.
PROJECTION_VERSION = "1"
RUN_KIND = "projection"
METHODS = ("umap", "pca", "tsne")
DEFAULT_PRE_PCA_DIMS = 50
# Above this many valid rows: float32, randomized PCA, openTSNE (see the module docstring).
LARGE_ROWS = 20_000
# scikit-learn's Barnes-Hut t-SNE takes hours beyond this on two cores.
SKLEARN_TSNE_MAX_ROWS = 50_000

# The defaults each method is run with; they are part of every key so that leaving a
# parameter out and passing its default name the same run.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "umap": {"n_neighbors": 15, "min_dist": 0.1, "metric": "euclidean"},
    "pca": {},
    "tsne": {"perplexity": 30.0, "learning_rate": "auto", "max_iter": 1000, "metric": "euclidean"},
}
# Set by project() itself, never by the caller through **params.
_RESERVED = {"n_components", "random_state", "n_jobs", "verbose"}


@dataclass
class Projection:
    """Coordinates of one projection run.

    coords : ndarray of shape (n_samples, n_components), float32; NaN rows for input rows
        that held NaN/inf.
    params : every parameter the run used (defaults filled in), JSON-serialisable.
    key : the store key (set by :func:`compute_or_load`; None for a bare :func:`project`).
    """

    coords: np.ndarray
    method: str
    params: dict[str, Any]
    key: str | None = None
    created: str | None = None
    from_cache: bool = False
    n_failed: int = 0
    notes: list[str] = field(default_factory=list)


def _estimator_class(method: str) -> type:
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE
    from core.settings import configure_numba_cache

    configure_numba_cache()  # before umap (and numba) are imported: compiled code kept on disk
    import umap  # imported lazily: numba start-up costs ~2 s

    return umap.UMAP


def _allowed_params(method: str) -> set[str]:
    signature = inspect.signature(_estimator_class(method).__init__)
    names = {name for name in signature.parameters if name != "self"}
    extra = {"pre_pca_dims"} if method != "pca" else set()
    return (names - _RESERVED) | extra


def map_params(method: str, n_valid: int, *, n_components: int = 2) -> dict[str, Any]:
    """The parameters the app draws a map with: the method defaults, with UMAP's neighbours and
    t-SNE's perplexity lowered for cohorts too small for them (``n_valid`` embedded rows)."""
    params: dict[str, Any] = {"n_components": n_components}
    if method == "umap":
        params["n_neighbors"] = min(METHOD_DEFAULTS["umap"]["n_neighbors"], max(2, n_valid - 1))
    elif method == "tsne":
        params["perplexity"] = min(METHOD_DEFAULTS["tsne"]["perplexity"], max(2, n_valid - 1))
    return params


def resolve_params(
    method: str, *, n_components: int = 2, random_state: int = 0, **params: Any
) -> dict[str, Any]:
    """Return the full parameter set a run uses: method defaults, then ``params``.

    Raises ValueError for an unknown method, ``n_components`` not in {2, 3}, or a parameter
    name the method does not take (the message lists the valid names).
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; valid: {', '.join(METHODS)}")
    if n_components not in (2, 3):
        raise ValueError(f"n_components={n_components!r} must be 2 or 3")
    # Names among the defaults are valid without importing the estimator (umap's import compiles
    # numba code: most of a minute on a fresh cache), so that finding a stored map stays instant.
    known = set(METHOD_DEFAULTS[method]) | ({"pre_pca_dims"} if method != "pca" else set())
    unknown = sorted(set(params) - known)
    if unknown:
        unknown = sorted(set(params) - _allowed_params(method))
    if unknown:
        allowed = _allowed_params(method)
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for method {method!r}; "
            f"valid: {', '.join(sorted(allowed))}"
        )
    resolved: dict[str, Any] = {"n_components": int(n_components), "random_state": random_state}
    if method != "pca":
        resolved["pre_pca_dims"] = DEFAULT_PRE_PCA_DIMS
    resolved.update(METHOD_DEFAULTS[method])
    resolved.update(params)
    return _jsonable(resolved)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"parameter value {value!r} ({type(value).__name__}) is not JSON-serialisable")


def _canonical(value: Any) -> Any:
    # perplexity=5 and perplexity=5.0 are the same run and must share a key.
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _validate_for_data(method: str, params: dict[str, Any], n_valid: int, n_features: int) -> None:
    n_components = params["n_components"]
    if n_valid < n_components + 1:
        raise ValueError(
            f"{method} needs at least {n_components + 1} rows without NaN; got n_samples={n_valid}"
        )
    if method == "pca" and n_features < n_components:
        raise ValueError(f"n_components={n_components} must be <= n_features={n_features} for pca")
    if method == "tsne":
        perplexity = params["perplexity"]
        if not 0 < perplexity < n_valid:
            raise ValueError(
                f"perplexity={perplexity} must be > 0 and < n_samples={n_valid} for tsne; "
                f"try perplexity={max(1, min(30, (n_valid - 1) // 3))}"
            )
    if method == "tsne" and n_valid > LARGE_ROWS:
        if n_components != 2:
            raise ValueError(
                f"3-D t-SNE of n_samples={n_valid} rows is too slow (more than {LARGE_ROWS}); "
                "use method='umap' with n_components=3, or a 2-D t-SNE"
            )
        if n_valid > SKLEARN_TSNE_MAX_ROWS and not _opentsne_available():
            raise ValueError(
                f"t-SNE of n_samples={n_valid} rows needs openTSNE (pip install openTSNE) above "
                f"{SKLEARN_TSNE_MAX_ROWS} rows; use method='umap', which scales to this size"
            )
    if method == "umap":
        n_neighbors = params["n_neighbors"]
        if not 2 <= n_neighbors < n_valid:
            raise ValueError(
                f"n_neighbors={n_neighbors} must be >= 2 and < n_samples={n_valid} for umap; "
                f"try n_neighbors={max(2, min(15, n_valid - 1))}"
            )
    pre = params.get("pre_pca_dims")
    if pre is not None and (not isinstance(pre, int) or pre < n_components):
        raise ValueError(
            f"pre_pca_dims={pre!r} must be None or an int >= n_components={n_components}"
        )


def _opentsne_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openTSNE") is not None


def _pre_reduce(X: np.ndarray, dims: int | None, random_state: int, notes: list[str]) -> np.ndarray:
    if dims is None or X.shape[1] <= dims:
        return X
    from sklearn.decomposition import PCA

    large = X.shape[0] > LARGE_ROWS
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0  # constant columns carry no neighbourhood information
    if large:  # in place on a float32 copy: one extra matrix, not three
        standardized = X - mean
        standardized /= scale
    else:
        standardized = (X - mean) / scale
    n_keep = min(dims, X.shape[0] - 1)
    # The full SVD of 200,000 x 1,280 takes minutes; the randomized one (Halko et al.) seconds,
    # and its leading components agree to well within what a map can show.
    solver = "randomized" if large else "full"
    reduced = PCA(n_components=n_keep, svd_solver=solver, random_state=random_state)
    notes.append(
        f"standardised and PCA-reduced {X.shape[1]} -> {n_keep} dimensions before projection"
        + (" (randomized SVD)" if large else "")
    )
    return reduced.fit_transform(standardized)


def _fit_opentsne(data: np.ndarray, params: dict[str, Any], notes: list[str]) -> np.ndarray:
    """2-D t-SNE through openTSNE (FFT-accelerated interpolation, Linderman et al. 2019)."""
    from openTSNE import TSNE as OpenTSNE

    # openTSNE counts the 250 early-exaggeration iterations apart; max_iter is the total, as in
    # scikit-learn.
    n_iter = max(1, int(params["max_iter"]) - 250)
    estimator = OpenTSNE(
        n_components=2, perplexity=float(params["perplexity"]),
        learning_rate=params["learning_rate"], n_iter=n_iter, metric=params["metric"],
        random_state=params["random_state"], n_jobs=1, negative_gradient_method="fft",
        neighbors="auto",
    )
    notes.append(
        f"t-SNE of {len(data)} rows by openTSNE (FFT gradients) instead of scikit-learn"
    )
    return np.asarray(estimator.fit(data), dtype=np.float32)


def project(
    X: np.ndarray,
    *,
    method: str = "umap",
    n_components: int = 2,
    random_state: int = 0,
    **params: Any,
) -> Projection:
    """Project a feature matrix to 2 or 3 dimensions.

    X : ndarray of shape (n_samples, n_features). Rows with NaN/inf are not fitted and get NaN
        coordinates.
    method : "umap" (default), "pca" or "tsne".
    params : passed to the estimator (e.g. ``n_neighbors``, ``min_dist`` for UMAP,
        ``perplexity`` for t-SNE, ``whiten`` for PCA) plus ``pre_pca_dims`` (int or None,
        default 50) for UMAP/t-SNE: wider matrices are standardised and PCA-reduced first.

    Returns a :class:`Projection` with ``coords`` of shape (n_samples, n_components), float32.

    Raises ValueError for a bad method, ``n_components``, parameter name, a non-2-D ``X``, too
    few valid rows, ``perplexity >= n_samples`` (t-SNE) or ``n_neighbors >= n_samples`` (UMAP);
    every message includes the bad value and the valid range.
    """
    resolved = resolve_params(
        method, n_components=n_components, random_state=random_state, **params
    )
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    valid = np.isfinite(X).all(axis=1)
    n_valid = int(valid.sum())
    large = n_valid > LARGE_ROWS
    X = X.astype(np.float32 if large else np.float64, copy=False)
    _validate_for_data(method, resolved, n_valid, X.shape[1])

    notes: list[str] = []
    estimator_params = {k: v for k, v in resolved.items() if k != "pre_pca_dims"}
    data = X if valid.all() else X[valid]
    if method == "pca":
        # "full" is deterministic; at archive size the randomized solver (seeded) is the one
        # that finishes in seconds.
        estimator_params.setdefault("svd_solver", "randomized" if large else "full")
    else:
        data = _pre_reduce(data, resolved["pre_pca_dims"], random_state, notes)
    if method == "umap":
        # umap-learn forces one thread when random_state is set; saying so avoids its warning.
        estimator_params["n_jobs"] = 1
    if method == "tsne" and large and _opentsne_available():
        fitted = _fit_opentsne(data, resolved, notes)
    else:
        estimator = _estimator_class(method)(**estimator_params)
        with warnings.catch_warnings():
            # UMAP's "spectral initialisation failed" and numba notices are not actionable here.
            warnings.filterwarnings("ignore", category=UserWarning, module="umap")
            fitted = estimator.fit_transform(data)

    coords = np.full((X.shape[0], n_components), np.nan, dtype=np.float32)
    coords[valid] = np.asarray(fitted, dtype=np.float32)
    n_failed = X.shape[0] - n_valid
    if n_failed:
        notes.append(f"{n_failed} row(s) with NaN features have NaN coordinates")
    return Projection(coords=coords, method=method, params=resolved, n_failed=n_failed, notes=notes)


def projection_key(matrix_key: str, method: str, params: Mapping[str, Any]) -> str:
    """Key of a projection run: ``f"projection-{hash}"`` over matrix key, method, params, version.

    ``params`` should be the full set from :func:`resolve_params` so that spelling out a
    default gives the same key. Raises ValueError if a parameter value is not JSON-serialisable.
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; valid: {', '.join(METHODS)}")
    return run_key(
        RUN_KIND,
        inputs={"matrix": matrix_key},
        config={"method": method, "params": _canonical(_jsonable(dict(params)))},
        version=PROJECTION_VERSION,
    )


def _from_run(run: Run) -> Projection:
    return Projection(
        coords=run.load("coords").astype(np.float32, copy=False),
        method=run.config["method"],
        params=run.config["params"],
        key=run.key,
        created=run.created,
        from_cache=True,
        n_failed=int(run.summary.get("n_failed", 0)),
        notes=list(run.load("notes")),
    )


def load_projection(key: str, *, store: RunStore | None = None) -> Projection | None:
    """The stored projection ``key``, or None when absent or of an older version."""
    run = (store or RunStore()).load(RUN_KIND, key, version=PROJECTION_VERSION)
    return None if run is None else _from_run(run)


def compute_or_load(
    X: np.ndarray,
    matrix_key: str,
    method: str = "umap",
    *,
    store: RunStore | None = None,
    dataset: str | None = None,
    **params: Any,
) -> Projection:
    """Return the stored projection of ``X`` for this config, computing and storing it if absent.

    X : ndarray of shape (n_samples, n_features), the matrix that ``matrix_key`` names.
    params : as for :func:`project` (``n_components``, ``random_state`` included).
    store : the run store (default: ``RunStore()`` under ``SCANATLAS_CACHE``); dataset : the
    dataset name the run is listed under.

    A stored run whose row count differs from ``X`` is treated as stale and recomputed.
    Raises what :func:`project` raises.
    """
    store = store or RunStore()
    n_components = params.pop("n_components", 2)
    random_state = params.pop("random_state", 0)
    resolved = resolve_params(
        method, n_components=n_components, random_state=random_state, **params
    )
    key = projection_key(matrix_key, method, resolved)
    cached = load_projection(key, store=store)
    if cached is not None and cached.coords.shape[0] == np.shape(X)[0]:
        return cached
    started = time.monotonic()
    fresh = project(
        X, method=method, n_components=n_components, random_state=random_state, **params
    )
    seconds = round(time.monotonic() - started, 2)
    run = store.save(
        RUN_KIND, key, version=PROJECTION_VERSION,
        config={"method": method, "params": resolved}, inputs={"matrix": matrix_key},
        dataset=dataset,
        payload={"coords": np.ascontiguousarray(fresh.coords, dtype=np.float32), "notes": fresh.notes},
        summary={"method": method, "n_samples": int(fresh.coords.shape[0]), "n_failed": fresh.n_failed,
                 "seconds": seconds},
    )
    fresh.key, fresh.created = key, run.created
    return fresh


def stored_projection(
    n_rows: int,
    matrix_key: str,
    method: str = "umap",
    *,
    store: RunStore | None = None,
    **params: Any,
) -> Projection | None:
    """The projection :func:`compute_or_load` would load for these arguments (``n_rows``: the
    row count of the matrix ``matrix_key`` names), or None when it would have to compute it.
    Computes nothing. Raises ValueError for bad parameters, as :func:`resolve_params`."""
    n_components = params.pop("n_components", 2)
    random_state = params.pop("random_state", 0)
    resolved = resolve_params(method, n_components=n_components, random_state=random_state, **params)
    cached = load_projection(projection_key(matrix_key, method, resolved), store=store)
    if cached is None or cached.coords.shape[0] != n_rows:
        return None
    return cached


# Rough seconds for a UMAP nothing has been measured for yet (2 CPU cores, load ~7): a fresh
# numba cache compiles for ~50 s at ``import umap`` and ~30 s in the first fit; with the cache on
# disk a new process needs ~5 s + ~20 s (measured for issue 10).
_FIRST_UMAP_S = 80.0
_WARM_UMAP_S = 25.0


def estimate_seconds(method: str, n_rows: int, *, store: RunStore | None = None) -> float:
    """About how long a ``method`` projection of ``n_rows`` rows takes here: the newest stored
    run of that method scaled by rows (runs record their ``seconds``), else a rough default.
    For a progress message only; never a promise."""
    if method == "pca":  # randomized PCA of 200,000 x 512: 41 s on the loaded 2-core machine
        return 1.0 if n_rows <= LARGE_ROWS else n_rows / 5_000.0
    for run in (store or RunStore()).runs(kind=RUN_KIND):
        seconds, n = run.summary.get("seconds"), run.summary.get("n_samples")
        if run.summary.get("method") == method and isinstance(seconds, int | float) and n:
            return max(1.0, float(seconds) * max(1.0, n_rows / float(n)))
    if method == "tsne":
        return 5.0 + n_rows / 50.0
    from core.settings import numba_cache_dir

    folder = Path(os.environ.get("NUMBA_CACHE_DIR") or numba_cache_dir())
    warm = folder.is_dir() and any(folder.rglob("*.nbi"))
    return (_WARM_UMAP_S if warm else _FIRST_UMAP_S) + n_rows / 500.0
