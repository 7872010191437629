"""Ingest: whatever a clinic has on disk -> one table of images and one of patients.

``ingest(source, out_dir)`` writes ``images.parquet`` (one row per 2-D image or frame),
``patients.parquet`` (one row per patient), ``ingest_report.csv`` (every file or row that was
not ingested, with the reason), ``manifest.json`` and ``previews/`` (a 256 px preview per file,
made by the one reduced-scale decode that verifies it: :mod:`core.previews`; a PNG is verified
by its chunks without inflating it (:mod:`core.png_check`) and gets its preview from the first
embedding's decode).
``load_dataset(out_dir)`` reads them back.

Modules, by concept: :mod:`~core.ingest.layouts` (which files, which metadata),
:mod:`~core.ingest.normalize` (canonical values), :mod:`~core.ingest.safety` (paths, names,
ZIPs), :mod:`~core.ingest.join` (``--metadata``), :mod:`~core.ingest.budget` (decode memory),
:mod:`~core.ingest.pipeline` (probe, rows, ``ingest``) and :mod:`~core.ingest.dataset`
(the folder's files, ``load_dataset``, ``summarize``); :mod:`~core.ingest.imported` writes the
same folder from vectors made elsewhere (read by :mod:`~core.ingest.vector_files`), without images.
"""

from __future__ import annotations

from core.ingest.dataset import (
    IMAGE_COLUMNS,
    REPORT_COLUMNS,
    WARNING_STATUSES,
    Dataset,
    IngestResult,
    load_dataset,
    summarize,
)
from core.ingest.layouts import LAYOUTS, detect_layout
from core.ingest.pipeline import ingest, sha256_file
from core.ingest.safety import ZipLimits, ZipRefusedError

__all__ = [
    "IMAGE_COLUMNS",
    "LAYOUTS",
    "REPORT_COLUMNS",
    "WARNING_STATUSES",
    "Dataset",
    "IngestResult",
    "ZipLimits",
    "ZipRefusedError",
    "detect_layout",
    "ingest",
    "load_dataset",
    "sha256_file",
    "summarize",
]
