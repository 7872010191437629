"""The Classifiers page's fine-tuning panel: start a fine-tuning run in the background (labeler or
admin), follow it (split, epoch, loss, validation AUC), cancel it, and show saved runs as rows of
the comparison table. The work is ``core.finetune.study.finetune_study``."""

from __future__ import annotations

import json
import threading

import numpy as np
import pandas as pd
import streamlit as st

from core.finetune import FineTuneCancelled
from core.finetune.study import finetune_runs, load_finetune
from core.ingest import Dataset
from ui import auth

IMAGE_SIZES = (96, 128, 160, 224)


@st.cache_resource(show_spinner=False)
def _runner():
    """Fine-tuning runs take minutes to hours: they get their own worker, one at a time per
    server, so that they never hold back the shared runner's embeddings and studies."""
    from core.jobs import JobRunner

    return JobRunner(max_workers=1)


@st.cache_resource(show_spinner=False)
def _cancel_events() -> dict[str, threading.Event]:
    """One cancel flag per fine-tuning job, shared by every session of the server."""
    return {}


@st.cache_resource(show_spinner="Loading the fine-tuning run...", max_entries=8)
def _load(key: str, created: str):
    return load_finetune(key)


def _work(dataset: Dataset, user, options: dict, event: threading.Event, *, progress):
    from core.finetune.study import finetune_study

    return finetune_study(dataset, user=user, progress=progress, cancel=event, **options).key


def saved_results(dataset: Dataset, target: str, positive: str | None) -> list:
    """The saved fine-tuning runs of ``dataset`` for ``target == positive``, newest first."""
    runs = [r for r in finetune_runs(dataset)
            if r.config.get("target_column") == target and r.config.get("positive") == positive]
    return [_load(r.key, r.created) for r in runs]


def comparison_rows(dataset: Dataset, study) -> pd.DataFrame:
    """Fine-tuned rows to add to ``study``'s modality comparison: saved fine-tuning runs on the
    same target whose patient folds are exactly the study's (same rows, same folds)."""
    config = study.config
    if study.report.kind != "binary" or config.get("level") != "image":
        return pd.DataFrame()
    folds = np.asarray(study.report.folds)
    rows = [result.comparison[result.comparison["modality"].str.startswith("fine-tuned")]
            for result in saved_results(dataset, config["target_column"], config["positive"])
            if result.folds.shape == folds.shape and np.array_equal(result.folds, folds)]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def panel(dataset: Dataset, *, target: str, positive: str | None, encoder: str) -> None:
    """Start / follow / cancel a fine-tuning run and show the newest saved one."""
    st.subheader("Fine-tuning the CNN")
    st.caption("Trains the whole network on this label (flips and small rotations, early stopping on "
               "a validation split of the training patients) on the same patient folds as the linear "
               "models, and compares it with the frozen encoder + logistic regression. Minutes per "
               "epoch on a CPU; a GPU is used with mixed precision when present. Each epoch is saved, "
               "so a stopped run continues where it stopped.")
    if positive is None:
        st.info("Fine-tuning is binary: pick a positive class above.")
        return
    runner = _runner()
    job_key = st.session_state.get("classifiers_ft_job")
    job = runner.get(job_key) if job_key else None
    if auth.can("finetune"):
        c1, c2, c3 = st.columns(3)
        epochs = c1.number_input("Epochs (at most)", 1, 50, 5, key="classifiers_ft_epochs")
        size = c2.selectbox("Image size (px)", IMAGE_SIZES, index=len(IMAGE_SIZES) - 1, key="classifiers_ft_size",
                            help="Smaller trains several times faster on a CPU; the encoder made from the run uses this size")
        device = c3.selectbox("Device", ["auto", "cpu"], key="classifiers_ft_device")
        options = {"encoder": encoder, "positive": positive, "target_column": target, "epochs": int(epochs),
                   "image_size": int(size), "device": device}
        running = job is not None and not job.done
        if st.button(f"Fine-tune {encoder}", disabled=running, key="classifiers_ft_start"):
            key = f"finetune|{dataset.token}|{json.dumps(options, sort_keys=True)}"
            event = _cancel_events().setdefault(key, threading.Event())
            event.clear()
            runner.submit(key, _work, dataset, auth.current_user(), options, event, rerun=True)
            st.session_state["classifiers_ft_job"] = job_key = key
            job = runner.get(key)
    else:
        st.caption("Starting a fine-tuning run needs the labeler or admin role.")
    if job is not None and not job.done:
        _follow(job, job_key)
    elif job is not None and job.error is not None:
        if isinstance(job.error, FineTuneCancelled):
            st.info("Fine-tuning was cancelled. The completed epochs are saved: start it again to continue.")
        else:
            st.error(f"Fine-tuning failed: {job.error}")
    results = saved_results(dataset, target, positive)
    if not results:
        st.caption("No saved fine-tuning run for this target yet.")
        return
    _show(results[0])


def _follow(job, job_key: str) -> None:
    @st.fragment(run_every=2)
    def progress() -> None:
        if job.done:
            st.rerun()
        st.progress(min(job.fraction, 1.0), text=job.message)
        if auth.can("finetune") and st.button("Cancel fine-tuning", key="classifiers_ft_cancel"):
            _cancel_events().setdefault(job_key, threading.Event()).set()
            st.caption("Stopping after the current batch...")

    progress()


def _interval(value: float, lo: float, hi: float) -> str:
    if not np.isfinite(value):
        return "-"
    return f"{value:.3f} ({lo:.3f}-{hi:.3f})" if np.isfinite(lo) and np.isfinite(hi) else f"{value:.3f}"


def _show(result) -> None:
    table = result.comparison
    st.dataframe(pd.DataFrame({
        "model": table["modality"], "images": table["n_rows"],
        "AUC": [_interval(*v) for v in table[["mean_auc", "auc_lo", "auc_hi"]].to_numpy()],
        "F1": [_interval(*v) for v in table[["mean_f1", "f1_lo", "f1_hi"]].to_numpy()],
    }), hide_index=True, width="stretch")
    timing, config = result.timing, result.config
    st.caption(f"Run {result.key} of {result.created}: at most {config['epochs']} epochs at {config['image_size']} px, "
               f"{timing.get('epochs_run', 0)} epochs trained in {timing.get('train_seconds', 0) / 60:.1f} min on "
               f"{timing.get('device', '?')}. Same patients in the same folds for both rows; 95% intervals over "
               "patients (bootstrap).")
    with st.expander("Loss and validation AUC per epoch", expanded=False):
        st.dataframe(result.history, hide_index=True, width="stretch")
    if result.encoder_name:
        st.caption(f"The fine-tuned network is the encoder **{result.encoder_name}**: pick it under *Image "
                   "encoder* in the sidebar to embed and map the fine-tuned space.")
    for note in result.notes:
        st.caption(note)


__all__ = ["comparison_rows", "panel", "saved_results"]
