"""Import time of 50,000 x 1376 float32 vectors (a common CXR foundation model's dimension);
writes benchmarks/results/import_embeddings.json.

    .venv/bin/python benchmarks/bench_import.py [--n 50000] [--dim 1376]

Generates a Parquet file (a fixed-size list column, written in chunks) and a metadata CSV in a
temp folder, then times ``core.ingest.imported.import_embeddings`` (torch already imported, as in
the app; the CLI adds its import, a few seconds), loading the imported vectors back through
``core.embed.embed_dataset``, and a cohort filter + embed of the filtered subset. Peak RSS too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=1376)
    args = parser.parse_args()
    import core.encoders.registry  # noqa: F401
    from core.embed import embed_dataset
    from core.filters import parse_where, select_dataset
    from core.ingest import load_dataset
    from core.ingest.imported import import_embeddings

    n, dim, chunk = args.n, args.dim, 5_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        schema = pa.schema([("image_id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))])
        with pq.ParquetWriter(folder / "v.parquet", schema) as writer:
            for start in range(0, n, chunk):
                size = min(chunk, n - start)
                block = np.random.default_rng(start).standard_normal((size, dim), dtype=np.float32)
                writer.write_table(pa.table({"image_id": [f"dicom-{i:06d}" for i in range(start, start + size)],
                                             "embedding": pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), dim)},
                                            schema=schema))
        pd.DataFrame({"image_id": [f"dicom-{i:06d}" for i in range(n)], "subject_id": [f"s{i // 3}" for i in range(n)],
                      "sex": np.where(np.arange(n) % 2, "F", "M"), "age": 18 + np.arange(n) % 70,
                      "view": np.where(np.arange(n) % 3 == 0, "AP", "PA"),
                      "label": np.where(np.arange(n) % 7 == 0, "Effusion", "No Finding")}).to_csv(folder / "m.csv", index=False)
        started = time.perf_counter()
        import_embeddings(folder / "v.parquet", folder / "m.csv", folder / "out", encoder="cxr-foundation",
                          dataset_roots=[folder])
        import_s = time.perf_counter() - started
        dataset = load_dataset(folder / "out")
        started = time.perf_counter()
        vectors = embed_dataset(dataset, "cxr-foundation").vectors
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        subset = select_dataset(dataset, parse_where(["view in [PA]", "age >= 40"]))
        sub_vectors = embed_dataset(subset, "cxr-foundation").vectors
        filter_s = time.perf_counter() - started
        result = {
            "n": n, "dim": dim, "parquet_mb": round((folder / "v.parquet").stat().st_size / 1e6),
            "import_s": round(import_s, 1), "vectors_per_s": round(n / import_s),
            "load_vectors_s": round(load_s, 2), "filter_and_load_subset_s": round(filter_s, 2),
            "subset_rows": int(len(sub_vectors)), "loaded_shape": list(vectors.shape),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "cores": os.cpu_count(), "load_average": [round(x, 1) for x in os.getloadavg()],
        }
    print(json.dumps(result, indent=2))
    out = REPO_ROOT / "benchmarks" / "results" / "import_embeddings.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
