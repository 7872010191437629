"""Fairness: per-subgroup AUC, TPR, FPR, precision and selection rate of the last classifier,
next to each group's share of the data. Small groups are flagged."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from ui import data

st.title("Fairness")
key = st.session_state.get("classifier_job")
job = data.job_runner().get(key) if key else None
if job is None or not job.done or job.error is not None:
    st.info("Train a binary classifier on the **Classifiers** page first (pick a positive class).")
    st.stop()
study = job.result()
if study.fairness is None:
    st.info("Fairness breakdowns need a binary target: pick a positive class on **Classifiers**.")
    st.stop()

table = study.fairness
attributes = [a for a in table["attribute"].unique() if a != "overall"]
attribute = st.selectbox("Group by", attributes, key="fairness_attribute")
rows = table[table["attribute"].isin(["overall", attribute])]
metric = st.radio("Metric", ["auc", "tpr", "fpr", "precision", "selection_rate"], horizontal=True, key="fairness_metric")
shown = rows[rows["attribute"] == attribute].sort_values("count", ascending=False)
error = {}
if f"{metric}_lo" in shown:
    error = {"error_y": shown[f"{metric}_hi"] - shown[metric], "error_y_minus": shown[metric] - shown[f"{metric}_lo"]}
figure = px.bar(shown, x="group", y=metric, color="small", hover_data=["count", "share"],
                color_discrete_map={True: "#d62728", False: "#1f77b4"}, height=380, **error)
overall = rows.loc[rows["attribute"] == "overall", metric]
if len(overall):
    figure.add_hline(y=float(overall.iloc[0]), line_dash="dot", annotation_text="overall")
st.plotly_chart(figure, key="fairness_bars")
share = px.bar(shown, x="group", y="share", title="Share of the data (representation)", height=260)
st.plotly_chart(share, key="fairness_share")
st.caption("Red bars: groups with fewer than 20 rows; their numbers are unreliable (see the intervals).")
st.dataframe(rows, hide_index=True, width="stretch")
