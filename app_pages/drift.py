"""Drift: how far do unsupervised clusters fall from the real labels? One clustering in detail,
an encoders x algorithms study (background job), and confounder checks."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from core.drift import confounder_checks, drift_report
from core.encoders import encoder_availability
from core.settings import runs_root
from core.study import CONFOUNDER_COLUMNS, STUDY_ALGORITHMS, drift_study, study_key
from ui import data
from ui.jobs import wait_for

st.title("Drift")
dataset = data.current_dataset()
level = st.session_state["level"]
cohort = data.cohort(dataset, st.session_state["encoder"], level)
truth = cohort.table["label"]
if truth.notna().sum() == 0:
    st.info("This dataset has no ground-truth labels, so drift cannot be measured. Try the demo cohort.")
    st.stop()
_, result = data.current_clustering(cohort)

st.subheader(f"Current clustering: {result.algorithm}, {result.n_clusters} clusters")
report = drift_report(truth.to_numpy(dtype=object), result.labels)
c = st.columns(6)
c[0].metric("Labels that change", f"{report.label_change_pct:.1f}%")
c[1].metric("ARI", f"{report.ari:.3f}")
c[2].metric("NMI", f"{report.nmi:.3f}")
c[3].metric("Purity", f"{report.purity:.3f}")
c[4].metric("Homogeneity", f"{report.homogeneity:.3f}")
c[5].metric("Completeness", f"{report.completeness:.3f}")
st.caption(f"Clusters mapped to labels by the {report.method} method: "
           + ", ".join(f"C{k} -> {v}" for k, v in report.mapping.items()))
figure = px.imshow(report.contingency, text_auto=True, aspect="auto", color_continuous_scale="Blues",
                   labels={"x": "ground truth", "y": "cluster", "color": "count"}, height=380)
st.plotly_chart(figure, key="drift_heatmap")

st.subheader("Confounders: does a cluster just track view, modality, site or sex?")
columns = [col for col in CONFOUNDER_COLUMNS if col in cohort.table.columns]
checks = confounder_checks(result.labels, cohort.table, columns)
st.dataframe(checks, hide_index=True, width="stretch")
if "flagged" in checks and checks["flagged"].fillna(False).astype(bool).any():
    flagged = ", ".join(checks.loc[checks["flagged"].fillna(False).astype(bool), "column"])
    st.warning(f"Clusters are strongly associated with **{flagged}** (Cramér's V >= 0.3): they may track acquisition, not disease.")

st.subheader("Study: encoders x algorithms")
available = encoder_availability()
usable = available.loc[available["weights_available"], "name"].tolist()
encoders = st.multiselect("Encoders", usable, default=[e for e in ("efficientnet-lite0", "pixels") if e in usable], key="drift_encoders")
algorithms = st.multiselect("Algorithms", list(STUDY_ALGORITHMS) + ["dbscan"], default=list(STUDY_ALGORITHMS), key="drift_algorithms")
key = study_key(dataset, encoders, algorithms, level, "label")
runner = data.job_runner()
stored = (runs_root() / "drift" / key / "grid.csv").is_file()
if st.button("Run study", type="primary", key="drift_run", disabled=not (encoders and algorithms)) or (
    stored and runner.get(key) is None
):
    runner.submit(key, drift_study, dataset, encoders, algorithms=algorithms, level=level, runs_dir=runs_root())


job = wait_for(key)
if job is None:
    st.caption("Runs in the background; results are saved and reloaded next time.")
elif job.error is not None:
    st.error(f"The study failed: {job.error}. Try fewer encoders or algorithms.")
else:
    study = job.result()
    grid = study.grid
    st.dataframe(grid, hide_index=True, width="stretch")
    st.caption(f"Files (grid.csv and one labels CSV per combination): {study.folder}")
    if {"encoder", "algorithm", "ari"} <= set(grid.columns):
        pivot = grid.pivot_table(index="encoder", columns="algorithm", values="ari")
        st.plotly_chart(px.imshow(pivot, text_auto=".2f", aspect="auto", color_continuous_scale="Greens",
                                  labels={"color": "ARI"}, height=300), key="drift_grid_heatmap")
