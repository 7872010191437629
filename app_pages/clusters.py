"""Clusters: choose an algorithm and its parameters; scores, a k sweep, and per-cluster
size, most central scans, metadata and ground-truth mix."""

from __future__ import annotations

import numpy as np
import plotly.express as px
import streamlit as st

from core.clustering import (
    ALGORITHMS,
    SCORE_LABELS,
    get_algorithm,
    structure_sentence,
    structure_verdict,
    suggestion_sentence,
)
from core.clustering.runs import suggested_k
from core.columns import DESCRIBING_COLUMNS
from core.encoders import WeightsUnavailableError
from core.ingest.imported import has_images, no_images_message
from ui import charts, data, state, widgets

widgets.page_header("Clusters")
dataset = data.current_dataset()
encoder, level = st.session_state["encoder"], st.session_state["level"]

with st.sidebar:
    st.markdown("#### Clustering")
    algorithm = state.choice("Algorithm", list(ALGORITHMS), "algorithm",
                             help="; ".join(f"{n}: {s.description}" for n, s in ALGORITHMS.items()))
    spec = get_algorithm(algorithm)
    params = {}
    for param in spec.params:
        label, key = param.name, f"clusters_{algorithm}_{param.name}"
        if param.name == "k":
            params["k"] = int(st.slider("k (clusters)", 2, int(param.ui_high or 20), int(st.session_state["k"]), key="clusters_k"))
            if params["k"] != st.session_state["k"]:
                state.remember("k", params["k"])
        elif param.kind == "choice":
            params[param.name] = st.selectbox(label, list(param.choices), index=list(param.choices).index(param.default), key=key, help=param.help)
        elif param.allow_none and param.default is None:
            continue
        elif param.kind == "int":
            params[param.name] = int(st.number_input(label, int(param.low or 0), int(param.high or param.ui_high or 10_000), int(param.default), key=key, help=param.help))
        else:
            params[param.name] = float(st.number_input(label, float(param.low or 0.0), float(param.high or param.ui_high or 1e6), float(param.default), key=key, help=param.help, format="%.4g"))

st.session_state.setdefault("cluster_params", {})[algorithm] = {k: v for k, v in params.items() if k != "k"}
try:
    cohort = data.cohort(dataset, encoder, level)
    cluster_key, result = data.current_clustering(cohort)
except WeightsUnavailableError as error:
    st.error(f"{error}\n\nPick another encoder in the sidebar.")
    st.stop()
except ValueError as error:
    st.error(f"{error}\n\nChange the parameters in the sidebar.")
    st.stop()

scores = result.scores
silhouette = scores.get("silhouette", np.nan)
sentence = structure_sentence(silhouette)
(st.success if structure_verdict(silhouette) in ("strong", "reasonable") else st.warning)(sentence)
st.metric("Clusters found", result.n_clusters)
if result.n_noise:
    st.caption(f"{result.n_noise} {level}s fit no group (labelled noise, -1).")

if spec.takes_k:
    with st.expander("How many groups? (a sweep over k)", expanded=False):
        # A background job (a worker process for a large cohort): its progress shows here while
        # the rest of the page draws; the page reruns when it ends.
        asked = st.button("Try k = 2-10 and compare", key="clusters_sweep_run")
        try:
            sweep = data.sweep(cohort, algorithm, compute=asked)
        except ValueError as error:
            sweep = None
            st.info(f"No sweep for this clustering: {error}")
        if sweep is None:
            st.caption("Clusters the cohort once per k and scores each, in the background; saved for next time.")
        else:
            best = suggested_k(sweep)
            best_silhouette = float(sweep.loc[sweep["k"] == best, "silhouette"].iloc[0]) if best is not None else np.nan
            st.markdown(suggestion_sentence(best, best_silhouette))
            long = sweep.melt(id_vars="k", value_vars=list(SCORE_LABELS), var_name="score")
            long["score"] = long["score"].map(SCORE_LABELS)
            figure = px.line(long, x="k", y="value", facet_row="score", markers=True, height=560,
                             labels={"k": "number of groups (k)"})
            figure.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
            figure.update_yaxes(matches=None, title_text="")
            st.plotly_chart(charts.readable(figure), key="clusters_sweep")

with st.expander("Advanced: algorithm scores and notes"):
    c1, c2, c3 = st.columns(3)
    c1.metric("Silhouette (higher is better)", f"{silhouette:.3f}")
    c2.metric("Davies-Bouldin (lower is better)", f"{scores.get('davies_bouldin', np.nan):.3f}")
    c3.metric("Calinski-Harabasz (higher is better)", f"{scores.get('calinski_harabasz', np.nan):.0f}")
    st.caption(f"Algorithm: {result.algorithm}. Silhouette bands (Kaufman & Rousseeuw): below 0.25 no "
               "substantial structure, 0.25-0.50 weak, 0.50-0.70 reasonable, above 0.70 strong.")
    for note in result.notes:
        st.caption(note)

table = cohort.table
label_column = "label" if table["label"].notna().any() else None
summary = data.cluster_table(cluster_key)
st.subheader("Per cluster")
# Ground truth first; columns with nothing in them (e.g. modality at patient level) left out.
shown = summary.replace("", np.nan).dropna(axis=1, how="all").round(1)
first = [c for c in ("cluster", "size", "label_top", "label_share", "label_mix") if c in shown.columns]
st.dataframe(shown, hide_index=True, width="stretch", column_order=[*first, *[c for c in shown.columns if c not in first]])

if label_column:
    figure = charts.cluster_mix_figure(dataset.token, cluster_key, result.labels, table["label"])
    st.markdown("**Ground truth mix** (rows: clusters)")
    st.plotly_chart(figure, key="clusters_mix")

with st.expander("What drives these clusters? Metadata that predicts membership (SHAP)"):
    asked = st.button("Find what drives the clusters", key="clusters_drivers_run")
    try:
        drivers = data.cluster_drivers(cohort, cluster_key, result.labels, compute=asked)
    except ValueError as error:
        drivers = None
        st.info(f"No drivers for this clustering: {error}")
    if drivers is None:
        st.caption("A random forest learns each row's cluster from its metadata, in the background; "
                   "saved for next time.")
    else:
        accuracy, baseline = drivers.attrs.get("cv_accuracy", float("nan")), drivers.attrs.get("baseline_accuracy", float("nan"))
        st.caption(f"A random forest predicts the cluster from metadata with cross-validated accuracy {accuracy:.2f} "
                   f"(largest cluster alone: {baseline:.2f}). High accuracy means clusters track metadata such as "
                   "view, scanner or sex rather than disease.")
        for note in drivers.attrs.get("notes") or ():
            st.caption(f"Note: {note}.")
        top = drivers.sort_values("mean_abs_shap", ascending=False).groupby("cluster").head(5)
        st.plotly_chart(charts.readable(px.bar(top, x="mean_abs_shap", y="column", color="cluster", orientation="h", barmode="group",
                               height=360, labels={"mean_abs_shap": "mean |SHAP|", "column": ""})), key="clusters_drivers")

st.subheader("Most central scans per cluster")
pixels = has_images(dataset)
if not pixels:  # imported vectors: the central rows as a table instead of scans
    st.info(no_images_message(dataset), icon=":material/hide_image:")
for cluster_id, scans in charts.central_scans(dataset.token, cluster_key, dataset, cohort, result.labels).items():
    st.markdown(f"**Cluster {cluster_id}** ({int((result.labels == cluster_id).sum())} {level}s)")
    if pixels:
        widgets.gallery(scans, columns=5, limit=5, key=f"clusters_medoids_{cluster_id}")
    else:
        st.dataframe(scans[[c for c in DESCRIBING_COLUMNS if c in scans]], hide_index=True, width="stretch")
st.caption("Next: **Label** maps each cluster to a disease and an ICD-10-CM code.")
