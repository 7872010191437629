"""ScanAtlas engine: ingest, embed, project, cluster, label, drift, classify, explain.

Nothing in this package imports Streamlit; the app (``app.py``, ``pages/``) and the
``scanatlas`` command line are thin front ends over it.
"""

__version__ = "0.1.0"
