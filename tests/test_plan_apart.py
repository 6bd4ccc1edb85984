"""sim/plan/apart.py: each candidate's search runs its own rounds while the others' simulations run,
and the plan is the same whatever order the simulations finish in."""
from __future__ import annotations

import os
import time

import pytest

from sim.plan import planner
from sim.plan.backend import LocalBackend
from sim.plan.search import simulate

from test_planner import small


class OrderedBackend:
    """A backend whose simulations finish in the order `pick` chooses among those started (each runs when
    it is reported finished); it logs every start and finish as (event, gpu, started before it)."""

    def __init__(self, pick):
        self.pick, self.started, self.log = pick, [], []

    def describe(self) -> str:
        return "ordered (test)"

    def submit(self, task, fn=simulate):
        handle = len(self.started)
        self.started.append((task, fn))
        self.log.append(("start", task.scenario.gpu_spec.name, handle))
        return handle

    def ready(self, handles):
        h = self.pick(handles, self.started)
        self.log.append(("end", self.started[h][0].scenario.gpu_spec.name, h))
        return [h]

    def result(self, handle):
        task, fn = self.started[handle]
        return fn(task)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def inline_plan():
    return planner.plan(small(), workers=1)


def _plan_on(backend, monkeypatch):
    monkeypatch.setattr(planner, "_backend", lambda workers, ray: backend)
    return planner.plan(small())


def test_the_plan_is_the_same_whatever_order_simulations_finish_in(inline_plan, monkeypatch):
    newest_first = OrderedBackend(lambda handles, started: handles[-1])
    p = _plan_on(newest_first, monkeypatch)
    assert p.to_dict(timing=False) == inline_plan.to_dict(timing=False)
    assert len(newest_first.started) == inline_plan.points_simulated


def test_a_candidate_goes_on_while_another_candidates_simulation_runs(inline_plan, monkeypatch):
    # The H100 candidate's one simulation finishes only when nothing else is left: in lockstep rounds the
    # A100 candidate could never start its second round before that simulation ended.
    def h100_last(handles, started):
        others = [h for h in handles if started[h][0].scenario.gpu_spec.name != "h100-sxm"]
        return (others or handles)[0]
    backend = OrderedBackend(h100_last)
    p = _plan_on(backend, monkeypatch)
    assert p.to_dict(timing=False) == inline_plan.to_dict(timing=False)
    h100_end = next(k for k, (ev, gpu, _) in enumerate(backend.log) if ev == "end" and gpu == "h100-sxm")
    a100_ends_before = sum(1 for ev, gpu, _ in backend.log[:h100_end] if ev == "end" and gpu == "a100-80gb-sxm")
    a100_runs = next(c.points_simulated for c in inline_plan.candidates if c.name == "a100")
    assert a100_runs > 2 and a100_ends_before == a100_runs  # the A100's whole search ran meanwhile


def test_seeds_run_ahead_change_nothing_but_the_wait(monkeypatch):
    # Every full point a close call (close_call 0.9): each asks for its seeds one round at a time, and a
    # backend with free slots runs them ahead. Finishing newest first, and with the first seeds held to
    # the end, the plan is the inline one, and seeds run ahead were taken by the rounds that asked.
    close = small(**{"plan.close_call": 0.9})
    inline = planner.plan(close, workers=1)
    assert any(c.seeds > 1 for c in inline.candidates if c.feasible), "no close call to run ahead"
    for pick in (lambda handles, started: handles[-1],
                 lambda handles, started: next((h for h in handles if started[h][0].seed != 3), handles[0])):
        backend = OrderedBackend(pick)
        backend.slots = 4
        monkeypatch.setattr(planner, "_backend", lambda workers, ray: backend)
        p = planner.plan(close)
        assert p.to_dict(timing=False) == inline.to_dict(timing=False)
        used = int(p.backend.split("seeds run ahead: ")[1].split(" used")[0])
        assert used > 0
        assert len(backend.started) >= inline.points_simulated


def _sleep_s(seconds):
    time.sleep(seconds)
    return seconds


def _gone(pid: int) -> bool:
    """The process ended: reaped (no such pid) or a zombie waiting to be. Asked of the kernel, not of the
    Process object: the pool's own thread may reap the worker first, and then `Process.is_alive()` of the
    test's copy keeps saying True (its waitpid gets ECHILD, which multiprocessing reads as 'not yet')."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except (FileNotFoundError, ProcessLookupError):  # reaped between the two questions
        return True


def test_a_pool_closed_with_a_simulation_still_running_does_not_wait_for_it():
    # A seed run ahead and never asked for may still run when the plan is done: close() stops its worker.
    backend = LocalBackend(2)
    done = backend.submit(0.0, fn=_sleep_s)
    assert backend.ready([done]) == [done] and backend.result(done) == 0.0
    backend.submit(30.0, fn=_sleep_s)
    pids = [w.pid for w in backend._pool._processes.values()]
    t0 = time.perf_counter()
    backend.close()
    while not all(_gone(pid) for pid in pids) and time.perf_counter() - t0 < 10.0:
        time.sleep(0.05)
    assert time.perf_counter() - t0 < 10.0 and all(_gone(pid) for pid in pids)
