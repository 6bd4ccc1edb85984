"""Long horizons in independent windows: a week of traffic as hour-long simulations that run in parallel.

One run of a week at 10M queries/day is 70M requests in one process. Split into windows of
`window_s` seconds, each window is an ordinary `run()` on its own slice of the same workload, so
windows can run on a process pool or a Ray cluster (the planner's backends) and memory stays
that of one window.

State across a boundary is carried by replay, not copied: a window starts empty and first
replays the arrivals of the `warmup_s` seconds before it (simulated, not scored), which rebuilds
the queue, the running batch and the KV use the boundary would have had. Its own requests then
run to completion, past the window's end if need be. What this leaves out, and so what windows
cost in accuracy: (1) state older than `warmup_s` (a backlog that took longer to build: choose
`warmup_s` above the longest queueing delay; an unstable window is reported as such), and (2) the
requests of the next window competing with this window's stragglers, which makes the last
requests of each window slightly optimistic. `benchmarks/week_windows.py` measures the
difference against one whole run.

The workload is drawn once, whole, with the scenario's seed (so windows see exactly the
requests a single run sees); each window runs with that same seed, which only matters for
random parts inside the engine (speculative acceptance).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .configio import ConfigError
from .scenario import Scenario
from .workload import Workload, generate_workload


@dataclass(frozen=True)
class WindowTask:
    """One window: the scenario, its slice of the workload (times from the slice's start), and
    which of the slice's requests are scored (the others are the warm-up replay)."""

    scenario: Scenario
    seed: int
    workload: Workload
    offset_s: float  # add to the slice's times to get the whole run's clock
    first_scored: int  # requests before this index are warm-up
    request_ids: np.ndarray  # the slice's rows in the whole workload


@dataclass
class WindowedResults:
    """Per-request records of every scored request (the whole run's clock and ids), one row per window."""

    requests: pd.DataFrame
    windows: pd.DataFrame  # window, start_s, end_s, requests, warmup_requests, stable, status, wall_s
    wall_s: float
    backend: str
    notes: list[str] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        return bool(self.windows["stable"].all())


def window_tasks(scenario: Scenario, window_s: float, warmup_s: float, seed: int | None = None,
                 workload: Workload | None = None) -> list[WindowTask]:
    """Cut the scenario's workload (drawn once) into windows of `window_s` with a `warmup_s` replay."""
    if not (math.isfinite(window_s) and window_s > 0):
        raise ConfigError(f"window_s: got {window_s!r}; must be a finite number of seconds > 0")
    if not (math.isfinite(warmup_s) and warmup_s >= 0):
        raise ConfigError(f"warmup_s: got {warmup_s!r}; must be a finite number of seconds >= 0")
    seed = scenario.seed if seed is None else int(seed)
    if workload is None:
        base = Path(scenario.base_dir) if scenario.base_dir else None
        workload = generate_workload(scenario.workload, seed, base)
    if workload.concurrency is not None:
        raise ConfigError("workload.arrival.kind: closed_loop has no arrival times to cut into windows; "
                          "use poisson, gamma, daily or trace arrivals")
    arrival = workload.arrival_s
    end = float(arrival[-1]) if len(arrival) else 0.0
    tasks = []
    for k in range(max(1, math.ceil((end + 1e-9) / window_s))):
        start_s, stop_s = k * window_s, (k + 1) * window_s
        lo = int(np.searchsorted(arrival, start_s - warmup_s, side="left"))
        first = int(np.searchsorted(arrival, start_s, side="left"))
        hi = int(np.searchsorted(arrival, stop_s, side="left"))
        if hi == first:
            continue  # nothing arrives in this window
        offset = float(arrival[lo])
        rows = slice(lo, hi)
        # Every per-request field sliced alike (hash_ids: the prefix-cache keys a trace may carry).
        part = dataclasses.replace(
            workload, arrival_s=arrival[rows] - offset, prompt_tokens=workload.prompt_tokens[rows],
            output_tokens=workload.output_tokens[rows], priority=workload.priority[rows],
            duration_s=float(stop_s - offset), notes=[],
            hash_ids=None if workload.hash_ids is None else workload.hash_ids[lo:hi],
            prefix_group=None if workload.prefix_group is None else workload.prefix_group[rows],
            prefix_tokens=None if workload.prefix_tokens is None else workload.prefix_tokens[rows])
        tasks.append(WindowTask(scenario=scenario, seed=seed, workload=part, offset_s=offset,
                                first_scored=first - lo, request_ids=np.arange(lo, hi)))
    return tasks


def run_window(task: WindowTask) -> dict:
    """Simulate one window (the function workers execute); its scored records on the whole run's clock."""
    from .simulation import run

    t0 = time.perf_counter()
    sc = dataclasses.replace(task.scenario, sim=dataclasses.replace(task.scenario.sim, record_timeseries=False))
    res = run(sc, seed=task.seed, workload=task.workload)
    req = res.requests.iloc[task.first_scored:].copy()
    for col in ("arrival_s", "scheduled_s", "first_token_s", "finish_s"):
        req[col] = req[col] + task.offset_s
    req["request_id"] = task.request_ids[task.first_scored:]
    return {"requests": req, "stable": res.stable, "status": res.status, "wall_s": time.perf_counter() - t0,
            "warmup_requests": task.first_scored}


def run_windowed(scenario: Scenario, window_s: float = 3600.0, warmup_s: float = 600.0, seed: int | None = None,
                 workers: int | None = 1, ray: str | bool | None = None) -> WindowedResults:
    """Simulate `scenario` window by window, on `workers` local processes or on Ray (as the planner does)."""
    from .plan.backend import LocalBackend, RayBackend

    wall0 = time.perf_counter()
    tasks = window_tasks(scenario, window_s, warmup_s, seed)
    backend = RayBackend(None if ray is True else ray) if ray not in (None, False) else LocalBackend(workers)
    try:
        outs = backend.map(tasks, lambda: None, fn=run_window)
        name = backend.describe()
    finally:
        backend.close()
    rows = []
    for k, (t, o) in enumerate(zip(tasks, outs)):
        rows.append({"window": k, "start_s": t.offset_s, "requests": len(o["requests"]),
                     "warmup_requests": o["warmup_requests"], "stable": o["stable"], "status": o["status"],
                     "wall_s": o["wall_s"]})
    requests = pd.concat([o["requests"] for o in outs], ignore_index=True) if outs else pd.DataFrame()
    notes = [f"{len(tasks)} windows of {window_s:g} s, each replaying the {warmup_s:g} s before it"]
    return WindowedResults(requests=requests, windows=pd.DataFrame(rows), wall_s=time.perf_counter() - wall0,
                           backend=name, notes=notes)
