"""Long runs on a page: a progress bar, a Stop button, and what a stop leaves on the page.

How Stop reaches a running script: a click asks Streamlit for a rerun, and the running
script learns of it at its next call that sends something to the browser, where Streamlit
raises its rerun exception. Here that call is the progress bar's next update (sim.simulation
calls back about every quarter second of wall time; the planner after each simulation), so
the exception ends the simulation where it is. The rerun then calls the button's on_click
before the page script: it drops the job and records how far the run got, so the page says
"stopped" instead of starting the job again. Any other click during a run also interrupts
it; the job is still there, so that rerun starts it again.

Session keys, for a page `name`: "{name}.progress" (finished, total) of the running job,
"{name}.stopped" {"finished", "total", "unit"} after a stop.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import streamlit as st

T = TypeVar("T")


def _stop(name: str, job_key: str, unit: str) -> None:
    """on_click of Stop (runs first in the rerun the click causes)."""
    st.session_state.pop(job_key, None)
    finished, total = st.session_state.pop(f"{name}.progress", (0, 0))
    st.session_state[f"{name}.stopped"] = {"finished": finished, "total": total, "unit": unit}


def forget_stop(name: str) -> None:
    """A new job starts: the page no longer says the previous one was stopped."""
    st.session_state.pop(f"{name}.stopped", None)
    st.session_state.pop(f"{name}.progress", None)


def run_with_stop(name: str, job_key: str, what: str, unit: str, work: Callable[[Callable[[int, int], Any]], T]) -> T:
    """`work(on_progress)` under a progress bar ("{what}: 1,200 of 20,000 {unit}") and a Stop button.

    Stop drops st.session_state[job_key] (see the module docstring); both disappear when `work` returns.
    """
    st.session_state[f"{name}.progress"] = (0, 0)
    slot = st.empty()
    with slot.container():
        bar = st.progress(0.0, text=f"{what}…")
        st.button("Stop", key=f"{name}.stop", icon=":material/stop:", on_click=_stop, args=(name, job_key, unit),
                  help="End this run now; nothing of it is shown (its numbers would cover only its start).")

    def report(finished: int, total: int) -> None:
        st.session_state[f"{name}.progress"] = (finished, total)
        bar.progress(min(finished / max(total, 1), 1.0), text=f"{what}: {finished:,} of {total:,} {unit}")

    try:
        out = work(report)
    except Exception:  # an error to show; Streamlit's own stop/rerun (BaseException) leaves the page to the rerun
        slot.empty()
        st.session_state.pop(f"{name}.progress", None)
        raise
    slot.empty()
    st.session_state.pop(f"{name}.progress", None)
    return out


def stopped_notice(name: str, again: str) -> bool:
    """Say that the last job was stopped, if it was; True when it was."""
    stopped = st.session_state.get(f"{name}.stopped")
    if stopped is None:
        return False
    done = (f" after {stopped['finished']:,} of {stopped['total']:,} {stopped['unit']}" if stopped["total"] else "")
    st.warning(f"Stopped{done}. No results: a stopped run's numbers would describe only its start. {again}",
               icon=":material/stop_circle:")
    return True
