"""ScanAtlas engine: ingest, embed, project, cluster, label, drift, classify, explain.

Nothing in this package imports Streamlit; the app (``app.py``, ``pages/``) and the
``scanatlas`` command line are thin front ends over it.
"""

__version__ = "0.1.0"

import os as _os

# Idle OpenMP threads of torch's forward pass sleep instead of spinning, so that they leave the
# cores to the decode worker processes running beside them (``core.encoders.batching``); read
# by the OpenMP runtime when torch loads, so only where core is imported first. A value the
# user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
