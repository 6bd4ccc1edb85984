"""Where the planner's simulations run: in this process, on a local process pool, or on Ray.

A backend maps a task function (`search.simulate` by default; `windows.run_window` for
windowed runs) over a list of tasks and returns the results in task order; or, one task at a
time, `submit` starts one and `ready` waits until some have finished (sim/plan/apart.py keeps
the workers busy with several searches' rounds that way). Every task carries its own seed, so
the backend changes wall time only, never a number. Ray is an optional extra
(``pip install 'servesim[ray]'``).
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from typing import Callable

from ..configio import ConfigError
from .search import Sample, Task, simulate


class LocalBackend:
    """A process pool of `workers` (default: the CPU count); one worker or one task runs inline."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None
        self._started: list[Future] = []  # by submit: what close() finds still running is abandoned

    def describe(self) -> str:
        return f"local, {self.workers} worker{'s' if self.workers > 1 else ''}"

    @property
    def slots(self) -> int:
        """How many tasks run at once."""
        return self.workers

    def map(self, tasks: list[Task], done: Callable[[], None], fn: Callable = simulate) -> list[Sample]:
        if self.workers == 1 or len(tasks) == 1:
            out = []
            for t in tasks:
                out.append(fn(t))
                done()
            return out
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        futures = {self._pool.submit(fn, t): i for i, t in enumerate(tasks)}
        out: list[Sample | None] = [None] * len(tasks)
        for f in as_completed(futures):
            out[futures[f]] = f.result()
            done()
        return out

    def submit(self, task: Task, fn: Callable = simulate) -> Future:
        """Start one task (inline with one worker: run now); its Future."""
        if self.workers == 1:
            f: Future = Future()
            f.set_result(fn(task))
            return f
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        f = self._pool.submit(fn, task)
        self._started = [x for x in self._started if not x.done()] + [f]
        return f

    def ready(self, handles: list[Future]) -> list[Future]:
        """Wait until one or more of `handles` have finished; those, in the order given."""
        done = wait(handles, return_when=FIRST_COMPLETED).done
        return [h for h in handles if h in done]

    @staticmethod
    def result(handle: Future) -> Sample:
        return handle.result()

    def close(self) -> None:
        # Tasks not yet started are cancelled: after an error (or a stop from the caller's progress
        # callback) in the middle of a round, waiting for the rest of the round would only waste time.
        # One still running (a seed run ahead and not needed, a round's other tasks after an error) is
        # not waited for: its worker is stopped (the pool has no public call for it before Python 3.14).
        if self._pool is not None:
            running = any(not f.done() for f in self._started)
            workers = list((getattr(self._pool, "_processes", None) or {}).values())  # (shutdown forgets them)
            self._pool.shutdown(wait=not running, cancel_futures=True)
            if running:
                for proc in workers:
                    proc.kill()  # (SIGKILL: a handler a parent installed, e.g. Ray's, cannot keep it)
            self._pool = None
            self._started = []


class RayBackend:
    """Tasks as Ray remote functions on the cluster at `address` (None or "local": start one here)."""

    def __init__(self, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray: Ray is not installed; pip install 'servesim[ray]'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=None if address in (None, "", "local") else address, include_dashboard=False,
                     log_to_driver=False)
        self._remotes: dict[Callable, object] = {}
        self.address = address or "local"

    def describe(self) -> str:
        return f"ray ({self.address}, {self.slots} CPUs)"

    @property
    def slots(self) -> int:
        """How many tasks run at once: the cluster's CPUs."""
        return int(self._ray.cluster_resources().get("CPU", 0))

    def map(self, tasks: list[Task], done: Callable[[], None], fn: Callable = simulate) -> list[Sample]:
        ray = self._ray
        remote = self._remotes.setdefault(fn, ray.remote(fn))
        refs = [remote.remote(t) for t in tasks]
        index = {r: i for i, r in enumerate(refs)}
        out: list[Sample | None] = [None] * len(tasks)
        remaining = list(refs)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            for r in ready:
                out[index[r]] = ray.get(r)
                done()
        return out

    def submit(self, task: Task, fn: Callable = simulate):
        """Start one task on the cluster; its object reference."""
        return self._remotes.setdefault(fn, self._ray.remote(fn)).remote(task)

    def ready(self, handles: list) -> list:
        """Wait until one or more of `handles` have finished; those, in the order given."""
        done, _ = self._ray.wait(handles, num_returns=1)
        done, _ = self._ray.wait(handles, num_returns=len(handles), timeout=0)  # and any others by now
        finished = set(done)
        return [h for h in handles if h in finished]

    def result(self, handle) -> Sample:
        return self._ray.get(handle)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
