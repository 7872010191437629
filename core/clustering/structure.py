"""Plain-language reading of clustering scores for people who are not data scientists.

Silhouette bands follow Kaufman & Rousseeuw (1990), *Finding Groups in Data*, ch. 2: an
average silhouette width above 0.70 is a strong structure, 0.51-0.70 a reasonable one,
0.26-0.50 weak (possibly artificial), and 0.25 or less no substantial structure.
"""

from __future__ import annotations

import math

# (lower bound, verdict, meaning), checked from the top: silhouette > bound gives that verdict.
SILHOUETTE_BANDS = (
    (0.70, "strong", "the groups are clearly separated"),
    (0.50, "reasonable", "the groups are reasonably separated"),
    (0.25, "weak", "the groups overlap a lot and may be an artefact of the method"),
)
NO_STRUCTURE = ("none", "the scans do not fall into distinct groups; the clusters are an arbitrary split of one continuum")

# Readable names for the k-sweep scores, with the direction that is better.
SCORE_LABELS = {
    "silhouette": "Separation (silhouette, higher is better)",
    "davies_bouldin": "Overlap (Davies-Bouldin, lower is better)",
    "calinski_harabasz": "Compactness (Calinski-Harabasz, higher is better)",
}


def structure_verdict(silhouette: float) -> str:
    """"strong", "reasonable", "weak" or "none" for a mean silhouette in [-1, 1]; "unknown"
    when it is NaN/None (e.g. one cluster, or everything noise).
    Raises ValueError for a finite value outside [-1, 1]."""
    if silhouette is None or (isinstance(silhouette, float) and math.isnan(silhouette)):
        return "unknown"
    value = float(silhouette)
    if math.isnan(value):
        return "unknown"
    if not -1.0 <= value <= 1.0:
        raise ValueError(f"silhouette={value} must be in [-1, 1]")
    for bound, verdict, _ in SILHOUETTE_BANDS:
        if value > bound:
            return verdict
    return NO_STRUCTURE[0]


def structure_sentence(silhouette: float) -> str:
    """One plain sentence on whether the clustering found real structure.

    silhouette : mean silhouette width of the clustering (NaN when it could not be scored).
    E.g. 0.025 -> "No real structure: the scans do not fall into distinct groups; ...
    (silhouette 0.03; below 0.25 means no substantial structure)."
    """
    verdict = structure_verdict(silhouette)
    if verdict == "unknown":
        return "Whether there is real structure cannot be judged: the clustering could not be scored."
    value = float(silhouette)
    if verdict == "none":
        return (f"No real structure: {NO_STRUCTURE[1]} (silhouette {value:.2g}; "
                "below 0.25 means no substantial structure).")
    bound, _, meaning = next(band for band in SILHOUETTE_BANDS if band[1] == verdict)
    upper = {"weak": "0.25-0.50", "reasonable": "0.50-0.70", "strong": "above 0.70"}[verdict]
    return f"{verdict.capitalize()} structure: {meaning} (silhouette {value:.2g}; {upper} is {verdict})."


def suggestion_sentence(best_k: int | None, best_silhouette: float) -> str:
    """The k the sweep suggests, and whether that suggestion means much."""
    if best_k is None:
        return "The sweep could not score any k, so it suggests none."
    verdict = structure_verdict(best_silhouette)
    text = f"Suggested number of clusters: {best_k} (best separation in the sweep)."
    if verdict in ("none", "weak"):
        text += (f" Even at k = {best_k} the separation is {'absent' if verdict == 'none' else 'weak'}, "
                 "so no k gives clearly distinct groups.")
    return text


__all__ = ["SCORE_LABELS", "SILHOUETTE_BANDS", "structure_sentence", "structure_verdict",
           "suggestion_sentence"]
