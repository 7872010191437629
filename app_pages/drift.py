"""Agreement (file and URL path: drift): do clusters found without labels agree with the
diagnoses? One clustering in detail, an encoders x algorithms study (background job), and
confounder checks."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core.audit.runs import cluster_summary, clusters_of_images, dominated_sentences, latest_audit
from core.columns import CONFOUNDER_COLUMNS
from core.drift.readable import readable_confounders, readable_grid
from core.drift.study import (
    STUDY_ALGORITHMS,
    clustering_drift,
    drift_study,
    drift_study_key,
    stored_drift_study,
)
from core.encoders import DEFAULT_DRIFT_ENCODERS, encoder_availability
from core.ingest.imported import imported_encoders
from core.labels.propagate import propagation_curve_run, score_proposals
from ui import charts, data, widgets
from ui.jobs import wait_for

widgets.page_header("Agreement")
dataset = data.current_dataset()
level = st.session_state["level"]
cohort = data.cohort(dataset, st.session_state["encoder"], level)
truth = cohort.table["label"]
if truth.notna().sum() == 0:
    st.info("This dataset has no diagnoses (ground-truth labels) to compare the clusters with. Try the demo cohort.")
    st.stop()
cluster_key, result = data.current_clustering(cohort)
current = clustering_drift(cohort, cluster_key, result.labels, dataset=dataset.name)
report = current.summary

st.caption("Do the clusters found without labels agree with the diagnoses? Each cluster is given the "
           "diagnosis it matches best; a row 'changes' when that diagnosis is not its own.")
st.subheader(f"Current clustering: {result.algorithm}, {result.n_clusters} clusters of {st.session_state['encoder']} embeddings")
scores = {
    "Labels that change": (f"{report['label_change_pct']:.1f}%", "Share of rows whose cluster's label is not their own (0% = the clusters reproduce the labels)."),
    "ARI": (f"{report['ari']:.3f}", "Adjusted Rand index: 1 = the same grouping as the labels, 0 = no better than chance."),
    "NMI": (f"{report['nmi']:.3f}", "Normalised mutual information: 1 = clusters and labels determine each other, 0 = independent."),
    "Purity": (f"{report['purity']:.3f}", "Share of rows that carry their cluster's most common label."),
    "Homogeneity": (f"{report['homogeneity']:.3f}", "1 = each cluster holds a single label."),
    "Completeness": (f"{report['completeness']:.3f}", "1 = each label falls in a single cluster."),
}
for column, (label, (value, meaning)) in zip(st.columns(len(scores)), scores.items(), strict=True):
    column.metric(label, value, help=meaning)
st.caption(f"Clusters mapped to labels by the {report['method']} method: "
           + ", ".join(f"C{k} -> {v}" for k, v in current.mapping.items()) + ". Choose the clustering on the **Clusters** page.")
contingency = current.contingency.rename(index=lambda k: "noise" if k == -1 else f"C{k}")
figure = px.imshow(contingency, text_auto=True, aspect="auto", color_continuous_scale="Blues",
                   labels={"x": "ground truth", "y": "cluster", "color": "rows"}, height=380)
st.plotly_chart(charts.readable(figure), key="drift_heatmap")

st.subheader("Confounders: do the clusters just track acquisition or demographics?")
checks = current.confounders
if checks.empty:
    st.caption("This dataset has none of these columns: " + ", ".join(CONFOUNDER_COLUMNS) + ".")
else:
    skipped = checks["note"].str.startswith("skipped")
    st.dataframe(readable_confounders(checks), hide_index=True, width="stretch")
    not_tested = "; ".join(f"{col}: {note.removeprefix('skipped: ')}" for col, note in checks.loc[skipped, ["column", "note"]].values)
    st.caption("Association: Cramér's V between cluster and column, 0 = unrelated, 1 = the clusters are that column. "
               "A column counts only when the association is strong (V >= 0.3) and unlikely by chance (p < 0.05)."
               + (f" Not tested: {not_tested}." if not_tested else ""))
    flagged = checks.loc[checks["flagged"].astype(bool), "column"].tolist()
    if flagged:
        st.warning(f"Clusters are strongly associated with **{', '.join(flagged)}** (Cramér's V >= 0.3, p < 0.05): "
                   "they may group scans by that rather than by disease.")
    else:
        st.caption("No tested column is strongly and significantly associated with the clusters.")

# The latest quality audit (Quality page): a cluster that is mostly one problem (all blurry, all
# copies from one duplicate set) may exist because of it, not because of disease.
audit = latest_audit(data.whole_dataset())
if audit is not None:
    image_clusters = clusters_of_images(audit.images, cohort.table, result.labels, cohort.level)
    dominated = dominated_sentences(cluster_summary(audit, clusters=image_clusters))
    if dominated:
        st.warning("The quality audit finds clusters that are mostly one problem, so they may group scans by that "
                   "problem rather than by disease: " + "; ".join(dominated) + ". See the **Quality** page.")
    else:
        st.caption("The latest quality audit finds no cluster that is mostly one problem (Quality page).")

st.subheader("Study: encoders x algorithms")
st.caption("Which embedding and clustering algorithm agree with the diagnoses best? Each pair is scored as above.")
available = encoder_availability()
usable = available.loc[available["weights_available"] & (available["kind"] == "image"), "name"].tolist()
usable = list(imported_encoders(dataset)) or usable  # an imported dataset: its own vectors only
encoders = st.multiselect("Encoders", usable, default=[e for e in DEFAULT_DRIFT_ENCODERS if e in usable] or usable[:1],
                          key="drift_encoders")
algorithms = st.multiselect("Algorithms", list(STUDY_ALGORITHMS) + ["dbscan"], default=list(STUDY_ALGORITHMS), key="drift_algorithms")
key = drift_study_key(dataset, encoders, algorithms, level, "label")
runner = data.job_runner()
saved = stored_drift_study(key) if encoders and algorithms else None
if saved is None and st.button("Run study", type="primary", key="drift_run", disabled=not (encoders and algorithms)):
    runner.submit(key, drift_study, dataset, encoders, algorithms=algorithms, level=level)

study = saved
if study is None:
    job = wait_for(key)
    if job is None:
        st.caption("Runs in the background; results are saved and reloaded next time.")
    elif job.error is not None:
        st.error(f"The study failed: {job.error}. Try fewer encoders or algorithms.")
    else:
        study = job.result()
if study is not None:
    grid = study.grid
    st.caption(f"Saved study from {pd.Timestamp(study.created).tz_convert(None):%Y-%m-%d %H:%M} UTC "
               f"(`scanatlas runs show {study.key}`).")
    st.dataframe(readable_grid(grid), hide_index=True, width="stretch")
    if {"encoder", "algorithm", "ari"} <= set(grid.columns):
        pivot = grid.pivot_table(index="encoder", columns="algorithm", values="ari")
        st.plotly_chart(charts.readable(px.imshow(pivot, text_auto=".2f", aspect="auto", color_continuous_scale="Greens",
                                  labels={"color": "ARI"}, title="ARI per encoder and algorithm", height=300)), key="drift_grid_heatmap")

st.subheader("Label propagation: how many hand labels does it take?")
st.caption("Hide the diagnoses, hand-label a random share of patients (5 draws per share), spread their labels to the "
           "rest over the embeddings (Label page, 'Proposed labels'), and score the proposals against the diagnoses. "
           "The dashed line gives every patient the commonest hand label.")
curve, curve_key, _ = propagation_curve_run(cohort.masked(), truth, cohort_key=cohort.key, dataset=dataset.name,
                                            compute=False)
if curve is None and st.button("Score label propagation", key="drift_propagation"):
    with st.spinner("Propagating labels from each share of hand-labelled patients..."):
        try:
            curve, curve_key, _ = propagation_curve_run(cohort.masked(), truth, cohort_key=cohort.key, dataset=dataset.name)
        except ValueError as error:
            st.error(f"Cannot score propagation: {error}")
if curve is not None:
    mean = curve.groupby("fraction").agg(accuracy=("accuracy", "mean"), sd=("accuracy", "std"),
                                         majority=("majority_accuracy", "mean"), labelled=("n_labelled", "mean")).reset_index()
    percent = (mean["fraction"] * 100).round(0)
    figure = go.Figure([
        go.Scatter(x=percent, y=mean["accuracy"], mode="lines+markers", name="propagated labels",
                   error_y={"type": "data", "array": mean["sd"].fillna(0)},
                   customdata=mean["labelled"], hovertemplate="%{x:.0f}% hand-labelled (%{customdata:.0f} patients): "
                   "accuracy %{y:.2f}<extra></extra>"),
        go.Scatter(x=percent, y=mean["majority"], mode="lines", name="commonest label (baseline)", line={"dash": "dash"}),
    ])
    figure.update_layout(xaxis_title="patients hand-labelled (%)", yaxis_title="accuracy on the other patients",
                         yaxis_range=[0, 1.02], height=360)
    st.plotly_chart(charts.readable(figure), key="drift_propagation_curve")
    st.caption(f"Saved run `{curve_key}`; error bars: one standard deviation over the draws.")
proposed = st.session_state.get(f"label_propagation::{dataset.name}::{cluster_key}")
if proposed is not None and len(proposed.open_proposals):
    st.markdown("**Your current proposals** (Label page) against the diagnoses, by confidence:")
    st.dataframe(score_proposals(proposed.open_proposals, cohort.table.set_index("patient_id")["label"].groupby(level=0).first()),
                 hide_index=True, width="stretch")
