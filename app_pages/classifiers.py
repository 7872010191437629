"""Classifiers: cross-validated models on embeddings (+ metadata, + report text), per-class
AUC/F1 with CIs, ROC curves, confusion matrix, and what each modality adds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.audit.runs import latest_audit
from core.classify.clinical import CLINICAL_LABELS, clinical_metrics, headline
from core.classify.duplicates import duplicate_leakage, merged_groups_run
from core.classify.models import MODELS
from core.classify.runs import (
    describe_run,
    find_run,
    load_study,
    run_time,
    study_runs,
)
from core.classify.study import study_config, train_study
from core.columns import target_candidates
from core.encoders import DEFAULT_TEXT_ENCODER
from core.explain import (
    SUPPORTED_CAM_ENCODERS,
    artefact_warnings,
    shap_beeswarm_figure,
    shap_waterfall_figure,
)
from core.ingest.imported import has_images, no_images_message
from ui import charts, data, finetune, widgets
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


def answer_table(report, clinical: pd.DataFrame, level: str) -> pd.DataFrame:
    """Per class: how many, AUC, sensitivity, specificity, PPV, NPV, each with its interval.
    A binary target shows its positive class only (the negative row mirrors it)."""
    auc = report.per_class.set_index("class")
    rows = (clinical if report.kind != "binary" else clinical.iloc[[-1]]).reset_index(drop=True)
    table = pd.DataFrame({"class": rows["class"], "n_rows": auc.loc[rows["class"], "n_rows"].to_numpy(),
                          "support": auc.loc[rows["class"], "support"].to_numpy()})
    table["AUC"] = [interval(*auc.loc[c, ["auc", "auc_lo", "auc_hi"]]) for c in rows["class"]]
    for metric, title in CLINICAL_LABELS.items():
        table[title] = [interval(*v) for v in rows[[metric, f"{metric}_lo", f"{metric}_hi"]].to_numpy()]
    return table.rename(columns={"n_rows": f"{level}s", "support": "with this class"})


@st.cache_data(show_spinner="Scoring sensitivity, specificity, PPV and NPV...", max_entries=16)
def clinical_table(key: str, created: str, _study) -> pd.DataFrame:
    """Sensitivity, specificity, PPV, NPV with patient-bootstrap intervals for saved run ``key``."""
    return clinical_metrics(_study.report, _study.table["patient_id"].astype(str).to_numpy())


def show_run(key: str) -> None:
    """Show saved run ``key`` here, and on the Fairness page and the scan viewer."""
    st.session_state["classifier_run"] = key


@st.cache_resource(show_spinner="Loading the saved run...", max_entries=8)
def load_run(key: str, created: str):
    """The saved study ``key`` (``created`` tells a replaced run from the one cached)."""
    return load_study(key)


widgets.page_header("Classifiers")
dataset = data.current_dataset()
images = dataset.images
candidates = target_candidates(images)
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
config = study_config(target_column=target, positive=None if positive == "(all classes)" else positive,
                      encoder=st.session_state["encoder"], use_text=use_text,
                      metadata=("age", "sex") if use_meta else (), model=model, level=st.session_state["level"],
                      mask_leaking_words=mask)
saved = find_run(dataset, config)
runner = data.job_runner()
left, right, _ = st.columns([2, 2, 3])
reuse = saved is not None and left.button(f"Reuse the run from {run_time(saved)}", type="primary", key="classifiers_reuse")
compute = right.button("Compute again" if saved is not None else "Train and evaluate",
                       type="secondary" if saved is not None else "primary", key="classifiers_run")
if reuse:
    show_run(saved.key)
if compute:
    # "Compute again" replaces the saved run; a second click while it runs joins the same job.
    job_key = f"{dataset.token}|{json.dumps(config, sort_keys=True)}|{saved.created if saved else ''}"
    runner.submit(job_key, train_study, dataset, force=saved is not None, **config)
    st.session_state["classifiers_job"] = job_key
st.caption("Patient-grouped 5-fold cross-validation: no patient is in both training and test folds. "
           "Every run is saved and listed below, also after a restart.")
with st.expander("Fine-tune the CNN on this label (slow on a CPU)", expanded=bool(st.session_state.get("classifiers_ft_job"))):
    finetune.panel(dataset, target=target, positive=None if positive == "(all classes)" else positive,
                   encoder=st.session_state["encoder"])

job = wait_for(st.session_state.get("classifiers_job"))
if job is not None:
    st.session_state["classifiers_job"] = None
    if job.error is not None:
        st.error(f"Training failed: {job.error}. Pick another target or positive class.")
        st.stop()
    show_run(job.result())

saved_runs = {run.key: run for run in study_runs(dataset)}
if st.session_state.get("classifier_run") in saved_runs:
    st.session_state["classifiers_saved"] = st.session_state["classifier_run"]
st.selectbox("Saved runs for this dataset", list(saved_runs), index=None, key="classifiers_saved",
             format_func=lambda k: describe_run(saved_runs[k]), placeholder="Open a saved run",
             on_change=lambda: show_run(st.session_state["classifiers_saved"]))
shown = st.session_state.get("classifier_run")
if shown not in saved_runs:
    st.stop()
study = load_run(shown, saved_runs[shown].created)
report = study.report
# SHAP and Grad-CAM explain one class: a binary target's positive class, or the user's pick.
classes = list(report.target.classes)
explained = classes[-1]
if report.kind == "multiclass":
    explained = st.selectbox("Class to summarise and explain", classes, index=len(classes) - 1, key="classifiers_explain")
level = study.config["level"]
clinical = clinical_table(shown, saved_runs[shown].created, study)
st.markdown(f"#### {headline(clinical[clinical['class'] == explained].iloc[0], unit=level)}")
try:
    shap_result = data.shap_for_study(study.key, study)
    shap_error = None
except ValueError as error:
    shap_result, shap_error = None, error
if shap_result is not None:
    positive_class = explained if explained in shap_result.classes else shap_result.classes[-1]
    for warning in artefact_warnings(shap_result.mean_abs(positive_class).index[:5], target=explained):
        st.warning(warning)
if study.leakage is not None and study.leakage.flagged:
    st.warning("Label leakage: " + "; ".join(study.leakage.flags) + ". Tick 'Mask label words' and retrain.")
audit = latest_audit(data.whole_dataset())  # issue 13: duplicates (Quality page) on both sides of a CV split
crossing = duplicate_leakage(study.table, report.folds, audit.duplicates()[0]) if audit is not None and report.folds.ndim == 1 else None
if crossing is not None and crossing.n_crossing:
    st.warning(f"{crossing.n_crossing} of {crossing.n_pairs} near-duplicate pairs (Quality page) sit in different "
               "cross-validation folds: the model is tested on pictures it trained on.")
    if st.button("Merge patients that share a duplicate into one CV group", key="classifiers_merge_duplicates"):
        merged = merged_groups_run(study, audit.duplicates()[0], audit_key=audit.key, thresholds={"default": True})
        st.caption(f"AUC {merged['auc_patient_groups']:.3f} with patient groups, {merged['auc_merged_groups']:.3f} with "
                   f"{merged['merged_patients']} patient(s) merged into groups that share a duplicate.")

st.subheader(f"Per class ({report.kind}, {report.model})")
same = saved is not None and saved.key == shown
st.caption(f"Saved run: {describe_run(saved_runs[shown])}" + ("" if same else " (not the settings above)"))
st.dataframe(answer_table(report, clinical, level), hide_index=True, width="stretch")
st.caption("Each number with its 95% interval over patients (bootstrap). Sensitivity: share of those with the "
           "condition that the model finds. Specificity: share of those without it that it clears. PPV: how often "
           "a positive call is right. NPV: how often a negative call is right (both depend on how common the "
           "condition is in this data). AUC: how well the scores rank cases above non-cases (0.5 = chance).")
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
roc_tab.plotly_chart(charts.readable(roc), key="classifiers_roc")
pr_tab.plotly_chart(charts.readable(pr), key="classifiers_pr")
right.plotly_chart(charts.readable(px.imshow(report.confusion, text_auto=True, color_continuous_scale="Blues", title="Confusion matrix",
                             labels={"x": "predicted", "y": "true"}, height=380)), key="classifiers_confusion")
st.subheader("What each modality adds")
finetuned = finetune.comparison_rows(dataset, study)  # saved fine-tuning runs on these same folds
table = study.comparison if finetuned.empty else pd.concat([study.comparison, finetuned], ignore_index=True).sort_values(
    "mean_auc", ascending=False, kind="stable").assign(rank=lambda t: np.arange(1, len(t) + 1))
comparison = with_intervals(table, {"AUC": ("mean_auc", "auc"), "F1": ("mean_f1", "f1")})
if report.kind == "binary":  # its per-class AUCs repeat the AUC column
    comparison = comparison.drop(columns=[c for c in comparison if c.startswith("auc:")])
st.dataframe(comparison, hide_index=True, width="stretch")
for note in study.notes:
    st.caption(note)

with st.expander("How the model decides (SHAP, principal components, threshold, Grad-CAM)", expanded=False):
    metrics = {"AUC": ("auc", "auc"), "sensitivity (recall)": ("recall", "recall"), "precision": ("precision", "precision"),
               "F1": ("f1", "f1"), "accuracy": ("accuracy", "accuracy")}
    st.dataframe(with_intervals(report.per_class, metrics), hide_index=True, width="stretch")
    st.caption("All metrics per class with 95% bootstrap intervals. The yes/no threshold is chosen on validation "
               "folds to maximise Youden's J (sensitivity + specificity - 1).")
    if shap_result is None:
        st.info(f"No SHAP explanation for this run: {shap_error}")
    else:
        st.markdown("**Why: SHAP over metadata and embedding components**")
        st.caption("A simple logistic model on the metadata and the first 10 principal components (PC1-PC10) of the image "
                   "embeddings. A PC is not a named finding: for CNN encoders, Grad-CAM below shows where in the scan the network looks.")
        st.plotly_chart(charts.readable(shap_beeswarm_figure(shap_result, class_label=positive_class)), key="classifiers_beeswarm")
        rows = study.table.reset_index(drop=True)
        label_column = report.target.columns[0]
        row = st.selectbox("Explain one row", range(len(rows)), key="classifiers_row",
                           format_func=lambda i: f"{rows.at[i, 'patient_id']} · {rows.at[i, label_column]}")
        try:
            st.plotly_chart(charts.readable(shap_waterfall_figure(shap_result, row, class_label=positive_class)), key="classifiers_waterfall")
        except ValueError as error:
            st.info(f"No explanation for this row: {error}")
        encoder = study.config["encoder"]
        if not has_images(dataset):
            st.caption(f"No Grad-CAM: {no_images_message(dataset)}")
        elif encoder in SUPPORTED_CAM_ENCODERS:
            scans = data.representative_images(dataset, rows.iloc[[row]], level)
            scan = scans.iloc[0]
            heat = data.gradcam_for(study.key, study, str(scan["path"]), int(scan["frame"]), classes.index(explained))
            if heat is not None:
                image, overlay = heat
                st.markdown("**Where the network looks: Grad-CAM**")
                a, b, _ = st.columns([1, 1, 1])
                a.image(image, caption=widgets.scan_label(scan), clamp=True, width="stretch")
                b.image(overlay, caption=f"Grad-CAM towards '{explained}' ({encoder} + linear head)", width="stretch")
st.caption("Fairness breakdowns for this model are on the **Fairness** page.")
