"""ScanAtlas engine: ingest, embed, project, cluster, label, drift, classify, explain.

Nothing in this package imports Streamlit; the app (``app.py``, ``pages/``) and the
``scanatlas`` command line are thin front ends over it.
"""

__version__ = "0.1.0"

import os as _os

# Idle OpenMP threads of torch's forward pass spin only briefly (GNU OpenMP: 10,000 spins
# instead of 300,000) before they sleep, so that they leave the cores to the decode worker
# processes running beside them (``core.encoders.batching``). Measured on 2 cores, one run:
# DICOM embedding 0.80 -> 0.86 of the sum-of-parts limit, one-image latency unchanged (14 ms;
# OMP_WAIT_POLICY=PASSIVE gave 0.84 but 25 ms). Read by the OpenMP runtime when torch loads, so
# only where core is imported first; a value the user set (either variable) wins.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")
