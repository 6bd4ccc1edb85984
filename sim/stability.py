"""Whether a run was stable: the offered vs the sustained request rate, and a backlog that kept growing
(an arrival rate beyond capacity is reported unstable, not simulated forever)."""
from __future__ import annotations

import numpy as np

from .requests import RequestTable


def _rate(x: float) -> str:
    return f"{x:.2f} req/s" if np.isfinite(x) else "n/a"


def stability(table: RequestTable, window_s: float, end_s: float, aborted: str | None,
               concurrency: int | None = None) -> tuple[bool, str, float, float]:
    """Offered vs sustained request rate, and whether the backlog kept growing.

    A rate over less than a microsecond of simulated time is not a rate (NaN, "n/a"); a closed
    loop has no offered rate (the clients' pace is an outcome), so it names its clients instead.
    """
    arrived = np.isfinite(table.arrival_s)
    n_arrived = int(arrived.sum())
    finished = np.isfinite(table.finish_s)
    span = window_s if window_s > 0 else end_s
    offered = n_arrived / span if span >= 1e-6 and concurrency is None else float("nan")
    load = f"offered {_rate(offered)}" if concurrency is None else f"closed loop of {concurrency} clients"
    if aborted:
        sustained = finished.sum() / end_s if end_s >= 1e-6 else float("nan")
        return False, f"unstable: {aborted}; {load}, sustained ~{_rate(sustained)}", offered, sustained
    # A queue that kept growing leaves many requests not yet *scheduled* when arrivals stop
    # (requests merely in service then are normal and not counted).
    done_in_window = int((table.finish_s <= window_s).sum()) if window_s > 0 else int(finished.sum())
    sustained = done_in_window / span if span >= 1e-6 else float("nan")
    queued_at_end = int(((table.arrival_s <= window_s) & ~(table.scheduled_s <= window_s) & ~table.failed).sum())
    drain_s = end_s - window_s
    if window_s > 0 and queued_at_end > max(50, 0.05 * n_arrived) and drain_s > 0.1 * window_s:
        return (False, f"unstable: {load}, sustained ~{_rate(sustained)} "
                       f"({queued_at_end} requests still waiting when arrivals stopped; draining took {drain_s:.0f} s)",
                offered, sustained)
    return True, "ok", offered, sustained
