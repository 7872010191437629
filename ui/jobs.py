"""Show a background job's progress without blocking the page; rerun the page when it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import wait

import streamlit as st

from ui import data

# A job that finishes this quickly (e.g. embeddings read from the cache) shows no progress bar.
QUICK_S = 3.0


def wait_for(key: str | None, *, intro: str | None = None, until: Callable[[], bool] | None = None):
    """The finished job for ``key``, or None (nothing started: caller shows its hint); with
    ``until``, the job (finished or not) as soon as ``until()`` is true.

    While the job runs, ``intro`` (markdown: what is happening, the steps and how long they
    take) and a progress bar that refreshes every 2 s are shown in the main area and the rest
    of the page stops; when it finishes the whole page reruns once to show the results.
    """
    job = data.job_runner().get(key) if key else None
    if job is None:
        record = data.job_runner().record(key) if key else None
        if record is not None and record.status == "interrupted":
            st.warning(f"This job was {record.message}; start it again to finish it.")
        return None

    def ready() -> bool:
        return job.done or (until is not None and until())

    # The intro is drawn before the short wait, so that a first start never shows an empty page.
    shown = st.empty() if intro and not job.done else None
    if shown is not None:
        shown.markdown(intro)
    deadline = time.monotonic() + QUICK_S
    while not ready() and job.future is not None and time.monotonic() < deadline:
        wait([job.future], timeout=0.1)
    if ready():
        if shown is not None:
            shown.empty()
    else:

        @st.fragment(run_every=2)
        def progress() -> None:
            if ready():
                st.rerun()
            st.progress(job.fraction, text=job.message)

        progress()
        st.stop()
    return job


def rerun_when_done(key: str | None, *, shown_while_running: bool = False) -> None:
    """Rerun the whole page once job ``key`` ends; draws nothing and never stops the page (the
    caller shows what it has meanwhile). No-op when there is no such job or it has ended, unless
    ``shown_while_running``: the caller drew what it has because the job was running, so a job
    that ended since (a short one can end while the page draws) reruns the page at once."""
    job = data.job_runner().get(key) if key else None
    if job is None:
        return
    if job.done:
        if shown_while_running:
            st.rerun()
        return

    @st.fragment(run_every=2)
    def watch() -> None:
        if job.done:
            st.rerun()

    watch()


def interrupted(key: str | None):
    """The journal's record of job ``key`` when a server restart interrupted it and nothing has
    started it again since (this server runs no such job), else None."""
    if not key or data.job_runner().get(key) is not None:
        return None
    record = data.job_runner().record(key)
    return record if record is not None and record.status == "interrupted" else None


def offer_restart(key: str | None, start: Callable[[], object], *, what: str, button_key: str) -> bool:
    """When job ``key`` was interrupted by a server restart: say so ("interrupted at N%") with
    a button that starts it again (``start()``, then the page reruns). Not started on its own:
    a job that took the last server down (out of memory) must not take this one down too.
    Returns whether the notice was shown."""
    record = interrupted(key)
    if record is None:
        return False
    prefix = f"interrupted by a server restart at {record.fraction:.0%} ("
    last = record.message[len(prefix):-1] if record.message.startswith(prefix) else record.message
    st.warning(f"{what} was interrupted by a server restart at {record.fraction:.0%} "
               f"(last step: {last}).", icon=":material/restart_alt:")
    if st.button("Start it again", key=button_key):
        start()
        st.rerun()
    return True


def stop_if_failed(job, start: Callable[[], object], *, what: str, button_key: str) -> None:
    """Nothing when ``job`` succeeded. A ValueError (bad parameters, a size an algorithm refuses)
    is raised for the page to show with its next step; any other failure (a worker process that
    was killed or ran out of memory) is shown with a button that starts the job again, and the
    page stops."""
    error = job.error
    if error is None:
        return
    if isinstance(error, ValueError):
        raise error
    st.error(f"{what} failed: {error}")
    if st.button("Start it again", key=button_key):
        start()
        st.rerun()
    st.stop()


def show_progress(job) -> None:
    """``job``'s progress bar where the caller is (an expander, a column), refreshed every 2 s;
    the whole page reruns once when the job ends. Never stops the page: the rest of it draws as
    usual meanwhile."""

    @st.fragment(run_every=2)
    def progress() -> None:
        if job.done:
            st.rerun()
        st.progress(min(max(float(job.fraction), 0.0), 1.0), text=job.message)

    progress()


def on_request(key: str, *, stored: Callable[[], object | None], start: Callable[..., object],
               asked: bool, what: str, button_key: str, quick: bool = True):
    """A result that a background job computes when the user asks (``asked``: their button).

    Returns ``stored()`` when it is stored (a named run: reloaded, never recomputed), else None:
    nothing asked yet (the caller shows its button's hint), or the job is running (its progress
    bar is drawn here by ``show_progress``; the rest of the page draws as usual and the page
    reruns when the job ends). ``start(rerun=...)`` starts the job (``data.job_runner().submit``);
    asking again after a failure starts it again. A job a server restart interrupted is said and
    offered again with a button (``offer_restart``), not restarted on its own. The job's
    ValueError (a refusal: bad parameters, a size refused) is raised for the caller to show as a
    message; any other failure (a worker process killed, out of memory) is shown here with a
    button that starts it again. ``quick``: right after the click, wait up to ``QUICK_S`` for a
    job that may be that quick (a small cohort's, in a thread), so its result shows at once."""
    found = stored()
    if found is not None:
        return found
    job = data.job_runner().get(key)
    started_now = False
    if asked and (job is None or job.done):
        job, started_now = start(rerun=True), True
    elif job is None:
        offer_restart(key, lambda: start(rerun=False), what=what, button_key=f"{button_key}_restart")
        return None
    if started_now and quick and job.future is not None:
        wait([job.future], timeout=QUICK_S)
    if job.done:
        if job.error is None:
            return stored()
        if isinstance(job.error, ValueError):
            raise job.error
        st.error(f"{what} failed: {job.error}")
        if st.button("Start it again", key=f"{button_key}_retry"):
            start(rerun=True)
            st.rerun()
        return None
    show_progress(job)
    return None


def show_clustering_wait(waiting, *, button_key: str) -> None:
    """Say why the clustering is not there yet (``data.ClusteringWait``), without stopping the
    page: running (the note; the page reruns when the job ends), interrupted by a server restart
    (offered again with a button), failed (the reason, with a button that starts it again) or
    refused (the reason and where to change the parameters)."""
    if waiting.status == "running":
        st.info(waiting.note, icon=":material/hourglass_top:")
        rerun_when_done(waiting.job_key, shown_while_running=True)
    elif waiting.status == "interrupted":
        offer_restart(waiting.job_key, waiting.restart, what=f"Clustering ({waiting.algorithm})",
                      button_key=button_key)
    elif waiting.status == "failed":
        st.error(f"Clustering ({waiting.algorithm}) failed: {waiting.note}")
        if st.button("Start it again", key=f"{button_key}_retry"):
            waiting.restart()
            st.rerun()
    else:
        st.warning(f"No clustering: {waiting.note}. Change the parameters on the Clusters page.")
