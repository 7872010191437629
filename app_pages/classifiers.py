"""Classifiers: cross-validated models on embeddings (+ metadata, + report text), per-class
AUC/F1 with CIs, ROC curves, confusion matrix, and what each modality adds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.classify.models import MODELS
from core.classify.study import classifier_study, study_key
from core.encoders import DEFAULT_TEXT_ENCODER
from core.explain import SUPPORTED_CAM_ENCODERS, shap_beeswarm_figure, shap_waterfall_figure
from ui import data, widgets
from ui.jobs import wait_for


def interval(value: float, lo: float, hi: float) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{value:.3f} ({lo:.3f}-{hi:.3f})" if np.isfinite(lo) and np.isfinite(hi) else f"{value:.3f}"


def with_intervals(table: pd.DataFrame, metrics: dict[str, tuple[str, str]]) -> pd.DataFrame:
    """Each metric ``column`` and its ``<stem>_lo``/``<stem>_hi`` bounds become one readable
    column, "0.912 (0.851-0.960)", titled by the ``metrics`` key, where ``column`` was."""
    out = table.copy()
    for title, (column, stem) in metrics.items():
        where = out.columns.get_loc(column)
        value, lo, hi = out.pop(column), out.pop(f"{stem}_lo"), out.pop(f"{stem}_hi")
        out.insert(where, title, [interval(*v) for v in zip(value, lo, hi, strict=True)])
    return out


st.title("Classifiers")
dataset = data.current_dataset()
images = dataset.images
candidates = [c for c in images.columns if c not in ("image_id", "sha256", "path", "frame", "n_frames", "rows", "columns", "text", "patient_id")
              and 2 <= images[c].nunique() <= 50]
if not candidates:
    st.info("This dataset has no label column to learn (a column with 2-50 distinct values).")
    st.stop()

c1, c2, c3 = st.columns(3)
target = c1.selectbox("Target column", candidates, index=candidates.index("label") if "label" in candidates else 0, key="classifiers_target")
values = sorted(images[target].dropna().astype(str).unique())
positive = c2.selectbox("Positive class (binary) or all classes", ["(all classes)", *values], key="classifiers_positive")
model = c3.selectbox("Model", list(MODELS), key="classifiers_model")
c4, c5, c6 = st.columns(3)
use_text = c4.checkbox(f"Add report text ({DEFAULT_TEXT_ENCODER})", value=bool(images["text"].notna().any()), key="classifiers_text")
use_meta = c5.checkbox("Add age and sex", value=True, key="classifiers_meta")
mask = c6.checkbox("Mask label words in the text", value=False, key="classifiers_mask",
                   help="Notes often name the finding ('COVID-19 positive'); masking shows what the text adds beyond that")
config = dict(target_column=target, positive=None if positive == "(all classes)" else positive,
              encoder=st.session_state["encoder"], use_text=use_text, metadata=("age", "sex") if use_meta else (),
              model=model, level=st.session_state["level"], mask_leaking_words=mask)
key = study_key(dataset, **config)
runner = data.job_runner()
if st.button("Train and evaluate", type="primary", key="classifiers_run"):
    runner.submit(key, classifier_study, dataset, **config)
st.session_state["classifier_job"] = key


job = wait_for(key)
if job is None:
    st.caption("Patient-grouped 5-fold cross-validation: no patient is in both training and test folds.")
    st.stop()
if job.error is not None:
    st.error(f"Training failed: {job.error}. Pick another target or positive class.")
    st.stop()
study = job.result()
report = study.report
# SHAP and Grad-CAM explain one class: a binary target's positive class, or the user's pick.
classes = list(report.target.classes)
explained = classes[-1]
if report.kind == "multiclass":
    explained = st.selectbox("Explain class (SHAP, Grad-CAM)", classes, index=len(classes) - 1, key="classifiers_explain")
st.subheader(f"Per class ({report.kind}, {report.model})")
metrics = {"AUC": ("auc", "auc"), "sensitivity (recall)": ("recall", "recall"), "precision": ("precision", "precision"),
           "F1": ("f1", "f1"), "accuracy": ("accuracy", "accuracy")}
st.dataframe(with_intervals(report.per_class, metrics), hide_index=True, width="stretch")
st.caption("Each metric with its 95% bootstrap interval over patients. Threshold chosen on validation folds (Youden's J).")
if study.leakage is not None and study.leakage.flagged:
    st.warning("Label leakage: " + "; ".join(study.leakage.flags) + ". Tick 'Mask label words' and retrain.")
left, right = st.columns(2)
roc = go.Figure()
for name, curve in report.roc.items():
    if len(curve) and (report.kind != "binary" or name == explained):  # a binary negative's curve mirrors it
        roc.add_scatter(x=curve["fpr"], y=curve["tpr"], mode="lines", name=str(name))
roc.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, showlegend=False)
roc.update_layout(title="ROC curves", xaxis_title="false positive rate", yaxis_title="true positive rate", height=380)
pr = go.Figure()
for name, curve in report.pr.items():
    if len(curve) and (report.kind != "binary" or name == explained):
        pr.add_scatter(x=curve["recall"], y=curve["precision"], mode="lines", name=str(name))
pr.update_layout(title="Precision-recall curves", xaxis_title="recall (sensitivity)", yaxis_title="precision", height=380)
roc_tab, pr_tab = left.tabs(["ROC", "Precision-recall"])
roc_tab.plotly_chart(roc, key="classifiers_roc")
pr_tab.plotly_chart(pr, key="classifiers_pr")
right.plotly_chart(px.imshow(report.confusion, text_auto=True, color_continuous_scale="Blues", title="Confusion matrix",
                             labels={"x": "predicted", "y": "true"}, height=380), key="classifiers_confusion")
st.subheader("What each modality adds")
comparison = with_intervals(study.comparison, {"AUC": ("mean_auc", "auc"), "F1": ("mean_f1", "f1")})
if report.kind == "binary":  # its per-class AUCs repeat the AUC column
    comparison = comparison.drop(columns=[c for c in comparison if c.startswith("auc:")])
st.dataframe(comparison, hide_index=True, width="stretch")
for note in study.notes:
    st.caption(note)

st.subheader("Why: SHAP over metadata and embedding components")
shap_result = data.shap_for_study(key, study)
positive_class = explained if explained in shap_result.classes else shap_result.classes[-1]
st.caption("A simple logistic model on the metadata and the first 10 principal components (PC1-PC10) of the image "
           "embeddings. A PC is not a named finding: for CNN encoders, Grad-CAM below shows where in the scan the network looks.")
st.plotly_chart(shap_beeswarm_figure(shap_result, class_label=positive_class), key="classifiers_beeswarm")
rows = study.table.reset_index(drop=True)
row = st.selectbox("Explain one row", range(len(rows)), key="classifiers_row",
                   format_func=lambda i: f"{rows.at[i, 'patient_id']} · {rows.at[i, config['target_column']]}")
try:
    st.plotly_chart(shap_waterfall_figure(shap_result, row, class_label=positive_class), key="classifiers_waterfall")
except ValueError as error:
    st.info(f"No explanation for this row: {error}")
if st.session_state["encoder"] in SUPPORTED_CAM_ENCODERS:
    scans = data.representative_images(dataset, rows.iloc[[row]], config["level"])
    scan = scans.iloc[0]
    heat = data.gradcam_for(key, study, str(scan["path"]), int(scan["frame"]), classes.index(explained))
    if heat is not None:
        image, overlay = heat
        st.subheader("Where the network looks: Grad-CAM")
        a, b, _ = st.columns([1, 1, 1])
        a.image(image, caption=widgets.scan_label(scan), clamp=True, width="stretch")
        b.image(overlay, caption=f"Grad-CAM towards '{explained}' ({st.session_state['encoder']} + linear head)", width="stretch")
st.caption("Fairness breakdowns for this model are on the **Fairness** page.")
