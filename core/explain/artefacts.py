"""Flag drivers that are artefacts of how data was recorded, not findings in the patient.

The metadata encoder (:mod:`core.metadata`) adds a ``"<column> missing"`` indicator for a
numeric column with gaps, and one-hot ``"<column>=(missing)"`` for a categorical one. When such a
feature is among a model's strongest drivers, what predicts the label is *whether the value was
recorded* (often: which hospital or dataset the scan came from), not the value itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.metadata import MISSING

MISSING_SUFFIX = " missing"


def missingness_column(feature: str) -> str | None:
    """The metadata column whose missingness ``feature`` encodes, else None.

    "age missing" -> "age"; "sex=(missing)" -> "sex"; "age", "sex=F", "PC1" -> None.
    """
    name = str(feature)
    if name.endswith(MISSING_SUFFIX) and len(name) > len(MISSING_SUFFIX):
        return name[: -len(MISSING_SUFFIX)]
    if name.endswith(f"={MISSING}") and len(name) > len(MISSING) + 1:
        return name[: -len(MISSING) - 1]
    return None


def artefact_warnings(top_features: Iterable[str], *, target: str | None = None) -> list[str]:
    """Plain warnings for missingness features among ``top_features`` (strongest first).

    target : the label being predicted, for the sentence (e.g. "COVID-19").
    Returns one sentence per flagged feature, in the given order, e.g. for ["age missing"]:
    "'age missing' is the strongest driver: whether age was recorded, not the patient's age, is
    what predicts COVID-19. This usually reflects where the scans came from (a data-collection
    artefact), not disease."
    """
    warnings = []
    for rank, feature in enumerate(top_features):
        column = missingness_column(feature)
        if column is None:
            continue
        position = "the strongest driver" if rank == 0 else f"driver number {rank + 1}"
        what = f"predicts {target}" if target else "drives the prediction"
        warnings.append(
            f"'{feature}' is {position}: whether {column} was recorded, not the patient's {column}, "
            f"is what {what}. This usually reflects where the "
            "scans came from (a data-collection artefact), not disease."
        )
    return warnings


__all__ = ["MISSING_SUFFIX", "artefact_warnings", "missingness_column"]
