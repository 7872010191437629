"""Data-quality audit of a dataset: duplicates (exact, near, across patients), outliers in
embedding space, likely label errors (cleanlab), image problems (cleanvision + radiograph checks)
and a per-cluster summary, saved as a run of kind ``audit``.

- :mod:`core.audit.fingerprints`: one decoding pass (pixel hash, perceptual hashes, descriptors).
- :mod:`core.audit.xray`: blank, inverted polarity, burned-in text, black border.
- :mod:`core.audit.duplicates`: candidate pairs, thresholds, duplicate sets.
- :mod:`core.audit.outliers`, :mod:`core.audit.label_issues`, :mod:`core.audit.images`.
- :mod:`core.audit.runs`: :func:`audit_dataset` (computed or loaded), summaries.
- :mod:`core.audit.export`: the CSV files ``scanatlas audit`` writes.
- :mod:`core.audit.planted`: a cohort with planted problems (tests, benchmarks).

Decisions on findings ("excluded", "not a problem") live in :mod:`core.exclusions`, outside this
package, so that the cohort filter can read them without importing the audit.
"""

from core.audit.duplicates import Thresholds
from core.exclusions import DecisionStore, excluded_ids, finding_id

__all__ = ["DecisionStore", "Thresholds", "excluded_ids", "finding_id"]
