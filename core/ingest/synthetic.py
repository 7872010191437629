"""A large imported dataset in seconds, for the scale benchmarks and the 200k-point map test.

``make_synthetic_dataset(out_dir, n_rows)`` draws ``core.demo.synthetic_vectors`` (embedding-like
vectors with planted groups), writes them with a metadata CSV (patient id, age, sex, label =
the planted group's name, site) to a scratch folder, and imports them through the ordinary
imported-embeddings path (``core.ingest.imported.import_embeddings``). The result is a normal
dataset folder: no pixels (pages that need them say so), one image per patient, every vector
aligned with its row. Making 200,000 DICOM files instead takes minutes; this takes seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from core.demo import DEMO_GROUPS, DEMO_SEED, synthetic_vectors
from core.ingest.imported import ImportResult, import_embeddings

SYNTHETIC_ENCODER = "synthetic-vectors"
SITES = ("north", "south", "east", "west", "central")


def synthetic_metadata(groups: np.ndarray, *, seed: int = DEMO_SEED) -> pd.DataFrame:
    """One metadata row per vector: ``image_id`` and ``patient_id`` (``S000001``...), age, sex,
    ``label`` (the planted group's name; groups past ``DEMO_GROUPS`` are ``group-<n>``) and a
    ``site``.

    groups : ndarray of shape (n_rows,), int, the planted group of each row
    """
    rng = np.random.default_rng([seed, len(groups), 3])
    names = np.array([DEMO_GROUPS[g] if g < len(DEMO_GROUPS) else f"group-{g}" for g in range(int(groups.max()) + 1)],
                     dtype=object)
    ids = np.char.add("S", np.char.zfill(np.arange(1, len(groups) + 1).astype(str), 6))
    return pd.DataFrame({
        "image_id": ids,
        "patient_id": ids,
        "age": rng.integers(18, 90, len(groups)),
        "sex": rng.choice(np.array(["F", "M"]), len(groups)),
        "label": names[groups],
        "site": rng.choice(np.array(SITES), len(groups)),
    })


def make_synthetic_dataset(out_dir: str | Path, n_rows: int, *, dim: int = 32, n_groups: int = len(DEMO_GROUPS),
                           seed: int = DEMO_SEED, encoder: str = SYNTHETIC_ENCODER,
                           replace: bool = False) -> ImportResult:
    """Import ``n_rows`` synthetic vectors of dimension ``dim`` as the dataset folder ``out_dir``.

    The vectors are ``core.demo.synthetic_vectors(n_rows, dim=dim, n_groups=n_groups,
    seed=seed)``; the metadata is ``synthetic_metadata(groups)``. ``encoder`` is the name the
    vectors go by (the sidebar's encoder for this dataset). Raises ``ValueError`` for a parameter
    out of range (see ``synthetic_vectors``) and what ``import_embeddings`` raises (e.g. a
    non-empty ``out_dir`` without ``replace``).
    """
    vectors, groups = synthetic_vectors(n_rows, dim=dim, n_groups=n_groups, seed=seed)
    metadata = synthetic_metadata(groups, seed=seed)
    with tempfile.TemporaryDirectory(prefix="scanatlas-synthetic-") as scratch:
        folder = Path(scratch)
        np.save(folder / "vectors.npy", vectors)
        (folder / "ids.txt").write_text("\n".join(metadata["image_id"]) + "\n", encoding="utf-8")
        metadata.to_csv(folder / "metadata.csv", index=False)
        del vectors
        return import_embeddings(folder / "vectors.npy", folder / "metadata.csv", out_dir, encoder=encoder,
                                 ids_path=folder / "ids.txt", id_column="image_id", replace=replace)
