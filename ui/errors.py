"""Users never see a traceback: an error shows a short message and an id; the traceback goes to
the server log under that id."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable

import streamlit as st

_LOG = logging.getLogger("scanatlas.errors")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (the server log)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


if not _LOG.handlers:
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _LOG.addHandler(_handler)
    _LOG.setLevel(logging.INFO)
    _LOG.propagate = False


def report(error: BaseException) -> str:
    """Log ``error`` with its traceback under a new id, show the user a short message, and
    return the id. A ``PermissionError`` is a refusal, not a fault: shown as it is."""
    if isinstance(error, PermissionError):
        st.warning(f"Not allowed: {error}")
        return ""
    error_id = uuid.uuid4().hex[:10]
    _LOG.error("error id %s: %s", error_id, error, exc_info=error)
    st.error(f"Something went wrong and this step did not finish (error id {error_id}). "
             "Nothing saved before is lost. Give the id to your administrator: the server log has the details.")
    return error_id


def run_safely(run: Callable[[], object]) -> None:
    """Call ``run`` (a page); any exception is reported, never shown as a traceback.
    Streamlit's own stop/rerun signals are BaseException and pass through."""
    try:
        run()
    except Exception as error:  # noqa: BLE001 - the boundary where every fault is caught
        report(error)
