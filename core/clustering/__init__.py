"""Clustering: algorithms and scores (``algorithms``), per-cluster summaries (``summary``) and
clusterings of a cohort as named runs (``runs``: import it explicitly, it is a task module)."""

from core.clustering.algorithms import (
    ALGORITHMS,
    NOISE,
    AlgorithmSpec,
    Clustering,
    ParamSpec,
    algorithm_table,
    cluster,
    clustering_scores,
    get_algorithm,
    k_sweep,
    resolve_params,
)
from core.clustering.structure import (
    SCORE_LABELS,
    structure_sentence,
    structure_verdict,
    suggestion_sentence,
)
from core.clustering.summary import cluster_medoids, cluster_summary

__all__ = [
    "ALGORITHMS", "NOISE", "AlgorithmSpec", "Clustering", "ParamSpec", "algorithm_table", "cluster",
    "cluster_medoids", "cluster_summary", "clustering_scores", "get_algorithm", "k_sweep", "resolve_params",
    "SCORE_LABELS", "structure_sentence", "structure_verdict", "suggestion_sentence",
]
