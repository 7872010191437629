"""Fairness: per-subgroup AUC, TPR, FPR, precision and selection rate of a saved binary
classifier (the one open on Classifiers, else the newest), next to each group's share of the
data. Small groups are flagged. Reads the run store, so it works after a server restart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from core.classify.runs import describe_run, load_study, study_runs
from ui import data, widgets

METRICS = {"auc": "AUC", "tpr": "sensitivity (TPR)", "fpr": "false-positive rate (FPR)",
           "precision": "precision (PPV)", "selection_rate": "share predicted positive"}


@st.cache_resource(show_spinner="Loading the saved run...", max_entries=8)
def load_run(key: str, created: str):
    """The saved study ``key`` (``created`` tells a replaced run from the one cached)."""
    return load_study(key)


widgets.page_header("Fairness")
dataset = data.current_dataset()
saved_runs = {run.key: run for run in study_runs(dataset, binary_only=True)}
if not saved_runs:
    st.info("Train a binary classifier on the **Classifiers** page first (pick a positive class).")
    st.stop()
keys = list(saved_runs)
current = st.session_state.get("classifier_run")
default = keys.index(current) if current in keys else 0
chosen = st.selectbox("Classifier (saved runs, newest first)", keys, index=default,
                      format_func=lambda k: describe_run(saved_runs[k]))
if chosen != keys[default]:  # the user picked another run: open it on Classifiers too
    st.session_state["classifier_run"] = chosen
study = load_run(chosen, saved_runs[chosen].created)
if study.fairness is None:
    st.info("This run has no fairness breakdowns. Pick another run, or train a binary classifier on **Classifiers**.")
    st.stop()

config = study.config
inputs = " + ".join([config["encoder"], *(["report text"] if config["text"] else []), *config["metadata"]])
threshold = float(study.report.thresholds.iloc[-1])
rule = f", predicted positive when its out-of-fold score is >= {threshold:.2f}" if np.isfinite(threshold) else ""
st.caption(f"Model: {config['model']} on {inputs}. Target: {config['target']} = '{config['positive']}' against the rest{rule}.")

table = study.fairness
attributes = [a for a in table["attribute"].unique() if a != "overall"]
attribute = st.selectbox("Group by", attributes, key="fairness_attribute")
rows = table[table["attribute"].isin(["overall", attribute])]
metric = st.radio("Metric", list(METRICS), format_func=METRICS.get, horizontal=True, key="fairness_metric")
shown = rows[rows["attribute"] == attribute].sort_values("group")
shown = shown.assign(size=np.where(shown["small"], "fewer than 20 rows", "20 rows or more"))
error = {}
if f"{metric}_lo" in shown:
    error = {"error_y": shown[f"{metric}_hi"] - shown[metric], "error_y_minus": shown[metric] - shown[f"{metric}_lo"]}
figure = px.bar(shown, x="group", y=metric, color="size", hover_data=["count", "share"], labels={metric: METRICS[metric]},
                category_orders={"group": shown["group"].tolist()}, height=380, **error,
                color_discrete_map={"fewer than 20 rows": "#d62728", "20 rows or more": "#1f77b4"})
overall = rows.loc[rows["attribute"] == "overall", metric]
if len(overall):
    figure.add_hline(y=float(overall.iloc[0]), line_dash="dot", annotation_text="overall")
st.plotly_chart(figure, key="fairness_bars")
share = px.bar(shown, x="group", y="share", title="Share of the data (representation)", height=260)
st.plotly_chart(share, key="fairness_share")
st.caption("Red bars: groups with fewer than 20 rows; their numbers are unreliable (see the intervals). "
           "Gap: how far a group is behind the best group that is not small.")
columns = ["attribute", "group", "count", "share", "n_positive", "n_negative",
           *[c for c in (metric, f"{metric}_lo", f"{metric}_hi", f"{metric}_gap") if c in rows], "small", "note"]
st.dataframe(pd.concat([rows[rows["attribute"] == "overall"], shown])[columns], hide_index=True, width="stretch")
with st.expander("Every metric for these groups"):
    st.dataframe(rows, hide_index=True, width="stretch")
