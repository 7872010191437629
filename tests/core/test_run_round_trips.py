"""Every field of every run kind this package stores survives save -> a new process -> load.

The parent computes each run (projection, clustering, k sweep, cluster drivers, clustering drift,
drift study) and describes the in-memory result; a fresh Python process loads the same runs from
the store by key and describes them the same way; the two descriptions must be equal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.clustering.runs import cluster_cohort, drivers_of_clustering, sweep_cohort
from core.cohort import build_cohort
from core.drift.study import clustering_drift, drift_study
from core.embed import embed_dataset
from core.projection import compute_or_load

ROOT = Path(__file__).resolve().parents[2]


def describe(value):
    """A JSON-comparable description of a result: arrays, frames (with index and attrs),
    dataclasses field by field; floats rounded to 9 significant digits."""
    if is_dataclass(value):
        return {f.name: describe(getattr(value, f.name)) for f in fields(value) if f.name != "from_cache"}
    if isinstance(value, pd.DataFrame):
        frame = value.copy()
        frame.columns = [str(c) for c in frame.columns]
        return {"split": json.loads(frame.to_json(orient="split", double_precision=9)),
                "attrs": describe(dict(value.attrs))}
    if isinstance(value, np.ndarray):
        return describe(value.tolist())
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [describe(v) for v in value]
    if isinstance(value, np.generic):
        return describe(value.item())
    if isinstance(value, float):
        return None if value != value else float(f"{value:.9g}")
    return value


LOADER = """
import json, sys
sys.path.insert(0, {tests!r})
from test_run_round_trips import describe
from core.clustering.runs import CLUSTERING_KIND, _clustering_from_run, stored_drivers, stored_sweep
from core.drift.study import stored_drift_study, CLUSTERING_DRIFT_KIND, ClusteringDrift
from core.projection import load_projection
from core.runs import RunStore

keys = json.loads({keys!r})
store = RunStore()
class Stub:  # stored_sweep needs only the cohort's key and row mask
    key = keys["cohort"]
    import numpy as _np
    has_vector = _np.ones(keys["n_rows"], bool)
drift = store.load(CLUSTERING_DRIFT_KIND, keys["clustering_drift"])
out = {{
    "projection": describe(load_projection(keys["projection"])),
    "clustering": describe(_clustering_from_run(store.load(CLUSTERING_KIND, keys["clustering"]))),
    "sweep": describe(stored_sweep(Stub, "kmeans")),
    "drivers": describe(stored_drivers(keys["clustering"])),
    "clustering_drift": describe(ClusteringDrift(
        summary=drift.load("report"), mapping={{int(k): v for k, v in drift.load("mapping")}},
        contingency=drift.load("contingency").set_index("cluster").rename_axis(None),
        confounders=drift.load("confounders"), key=drift.key)),
    "drift_study": describe(stored_drift_study(keys["drift_study"])),
}}
print(json.dumps(out))
"""


def test_every_run_kind_round_trips_through_a_new_process(demo40):
    cohort = build_cohort(demo40, embed_dataset(demo40, "pixels"), level="patient")
    projection = compute_or_load(cohort.masked(), cohort.key, "pca", n_components=3)
    key, clustering = cluster_cohort(cohort, algorithm="fuzzy-cmeans", k=4)
    sweep = sweep_cohort(cohort, "kmeans", ks=range(2, 6))
    drivers = drivers_of_clustering(cohort, key, clustering.labels)
    drift = clustering_drift(cohort, key, clustering.labels)
    study = drift_study(demo40, ["pixels"], algorithms=["kmeans", "birch"], level="patient")
    expected = {
        "projection": describe(projection), "clustering": describe(clustering),
        "sweep": describe(sweep), "drivers": describe(drivers),
        "clustering_drift": describe(drift), "drift_study": describe(study),
    }
    assert clustering.membership is not None and clustering.centers is not None  # fuzzy: every field set
    keys = json.dumps({"projection": projection.key, "clustering": key, "cohort": cohort.key,
                       "n_rows": len(cohort.table), "clustering_drift": drift.key, "drift_study": study.key})
    # stored_sweep looks up the default ks; this test swept 2..5, so ask for the same ks.
    code = LOADER.format(tests=str(Path(__file__).parent), keys=keys).replace(
        'stored_sweep(Stub, "kmeans")', 'stored_sweep(Stub, "kmeans", ks=range(2, 6))')
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout)
    for kind, description in expected.items():
        assert loaded[kind] == description, kind
