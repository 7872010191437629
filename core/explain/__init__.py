"""Explanations: why a classifier decided, what drives clusters, where a CNN looked, and
which cases are alike.

- :mod:`core.explain.shap_values`: :func:`shap_explanation` -> :class:`ShapResult` (SHAP over
  metadata columns + embedding principal components).
- :mod:`core.explain.figures`: :func:`shap_beeswarm_figure`, :func:`shap_waterfall_figure`
  (Plotly).
- :mod:`core.explain.artefacts`: :func:`artefact_warnings` (missingness among the top drivers).
- :mod:`core.explain.drivers`: :func:`cluster_drivers` (metadata columns that predict
  cluster membership, with cross-validated accuracy).
- :mod:`core.explain.gradcam`: :func:`gradcam_heatmap` / :func:`gradcam_with_encoder`,
  :func:`overlay_heatmap` (Grad-CAM for CNN encoders + a linear head).
- :mod:`core.explain.similar`: :class:`SimilarCases` (nearest neighbours in embedding space).
- :mod:`core.explain.report_draft`: ``draft_report`` (a report draft from the sentences the
  notes of the most similar cases share; not a diagnosis), ``evaluate_drafts``.
- :mod:`core.metadata`: :func:`encode_metadata` (metadata -> numeric features; the one encoder).
- :mod:`core.explain.study`: :func:`study_shap`, :func:`gradcam_head`, :func:`study_gradcam`
  (the explanations of a classifier study, kept in the run store).

shap, torch and pytorch-grad-cam are imported only when a function needs them.
"""

from __future__ import annotations

from core.explain.artefacts import artefact_warnings, missingness_column
from core.explain.drivers import cluster_drivers
from core.explain.figures import shap_beeswarm_figure, shap_waterfall_figure
from core.explain.shap_values import ShapResult, shap_explanation
from core.explain.similar import SimilarCases
from core.explain.study import GradcamHead, gradcam_head, shap_metadata, study_gradcam, study_shap
from core.metadata import EncodedMetadata, encode_metadata

__all__ = [
    "CAM_LAYERS",
    "CamNetwork",
    "SUPPORTED_CAM_ENCODERS",
    "EncodedMetadata",
    "GradcamHead",
    "ShapResult",
    "SimilarCases",
    "artefact_warnings",
    "cluster_drivers",
    "build_cam_network",
    "encode_metadata",
    "gradcam_head",
    "gradcam_heatmap",
    "gradcam_with_encoder",
    "missingness_column",
    "overlay_heatmap",
    "shap_beeswarm_figure",
    "shap_explanation",
    "shap_metadata",
    "shap_waterfall_figure",
    "study_gradcam",
    "study_shap",
]

_GRADCAM_NAMES = {
    "CAM_LAYERS", "CamNetwork", "SUPPORTED_CAM_ENCODERS", "build_cam_network", "gradcam_heatmap",
    "gradcam_with_encoder", "overlay_heatmap",
}


def __getattr__(name: str):
    # Grad-CAM pulls in torch and the encoder registry; SHAP tables and similar-case search
    # should not pay for that on import.
    if name in _GRADCAM_NAMES:
        from core.explain import gradcam

        return getattr(gradcam, name)
    raise AttributeError(f"module 'core.explain' has no attribute {name!r}")
