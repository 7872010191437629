"""Fairness: per-subgroup AUC, TPR, FPR, precision and selection rate of a saved binary
classifier (the one open on Classifiers, else the newest), next to each group's share of the
data. Small groups are hatched; too few cases: 'too few to judge'. Reads the run store, so it works after a server restart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.classify.runs import describe_run, load_study, study_runs
from core.fairness import MIN_GROUP, MIN_POSITIVES, TOO_FEW, judgeable, readable_fairness
from ui import charts, data, widgets

METRICS = {"auc": "AUC", "tpr": "sensitivity", "fpr": "false-positive rate",
           "precision": "PPV (precision)", "selection_rate": "share predicted positive"}


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
attribute = st.selectbox("Group by", attributes, key="fairness_attribute", format_func=lambda a: a.replace("_", " "))
rows = table[table["attribute"].isin(["overall", attribute])]
metric = st.radio("Metric", list(METRICS), format_func=METRICS.get, horizontal=True, key="fairness_metric")
shown = rows[rows["attribute"] == attribute].sort_values("group")
judged = np.array([judgeable(p, n, metric) for p, n in zip(shown["n_positive"], shown["n_negative"], strict=True)])
small = shown["small"].to_numpy(dtype=bool)
values = shown[metric].where(judged)  # no bar for a group too small to judge: "1-1" would look certain
figure = go.Figure(go.Bar(
    x=shown["group"], y=values, marker={"color": "#4c78a8", "pattern": {"shape": ["/" if s else "" for s in small],
                                                                        "fgcolor": "white",
                                                                        "fillmode": "overlay"}},
    customdata=np.c_[shown["count"], shown["n_positive"]], name=METRICS[metric],
    hovertemplate="%{x}: %{y:.2f}<br>%{customdata[0]} rows, %{customdata[1]} with the condition<extra></extra>",
    error_y={"type": "data", "array": (shown[f"{metric}_hi"] - shown[metric]).where(judged),
             "arrayminus": (shown[metric] - shown[f"{metric}_lo"]).where(judged)} if f"{metric}_lo" in shown else None,
))
for group in shown.loc[~judged, "group"]:
    figure.add_annotation(x=group, y=0, text=TOO_FEW, showarrow=False, yanchor="bottom", textangle=-90)
figure.update_layout(height=380, yaxis_title=METRICS[metric], xaxis_title=attribute.replace("_", " "), showlegend=False,
                     xaxis={"categoryorder": "array", "categoryarray": shown["group"].tolist()})
overall = rows.loc[rows["attribute"] == "overall", metric]
if len(overall):
    figure.add_hline(y=float(overall.iloc[0]), line_dash="dot", annotation_text="overall")
st.plotly_chart(charts.readable(figure), key="fairness_bars")
share = px.bar(shown, x="group", y="share", title="Share of the data (representation)", height=260,
               labels={"share": "share of data", "group": attribute.replace("_", " ")})
st.plotly_chart(charts.readable(share), key="fairness_share")
st.caption(f"Hatched bars: small groups (fewer than {MIN_GROUP} rows); "
           f"their numbers are uncertain (see the intervals). No bar, '{TOO_FEW}': fewer than {MIN_POSITIVES} "
           "patients with the condition (or without it, for the false-positive rate), too few for any estimate. "
           "'Behind the best group by': how far a group is behind the best group that is not small.")
st.dataframe(readable_fairness(pd.concat([rows[rows["attribute"] == "overall"], shown]), [metric]),
             hide_index=True, width="stretch")
with st.expander("Every metric for these groups"):
    st.dataframe(readable_fairness(rows), hide_index=True, width="stretch")
