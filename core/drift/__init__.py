"""Agreement between clusters and diagnoses: metrics, confounder checks, the encoders x
algorithms grid (primitives), and the drift study as a named run (``core.drift.study``, a task
module: import it explicitly)."""

from core.drift.confounders import confounder_checks, cramers_v
from core.drift.grid import DEFAULT_GRID_ALGORITHMS, drift_grid, labels_filename
from core.drift.metrics import DriftReport, assign_clusters, contingency, drift_report

__all__ = [
    "DEFAULT_GRID_ALGORITHMS", "DriftReport", "assign_clusters", "confounder_checks", "contingency",
    "cramers_v", "drift_grid", "drift_report", "labels_filename",
]
