"""The default plan's wall time on N workers, from its simulations' measured CPU seconds (issue 15).

This machine has two cores, so a plan's wall time on 4, 8 or 16 cannot be timed here. Each distinct
simulation the plan asks for runs once, inline, and keeps its CPU seconds; a virtual pool of N workers then
replays the planner's own scheduling: a task starts when submitted if a worker is free, else when the first
one frees (in order), and runs for its measured CPU seconds. Three ways to schedule the same searches:

- lockstep: every candidate's round together, each round waiting for all of its simulations (the planner
  before sim/plan/apart.py);
- apart: each candidate's rounds on their own (sim/plan/apart.py), no seed run ahead;
- apart + ahead: and the next seeds of full points started where a worker would idle (the default).

The plans must come out identical (checked). The figures assume one simulation per core runs as fast as
alone, which a shared machine does not give: read them as the schedule's wall time, not a promise.

    python benchmarks/plan_workers.py [scenario] [--workers 1,2,4,8,16] [--set PATH=VALUE ...]
"""
from __future__ import annotations

import argparse
import heapq
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.plan import planner  # noqa: E402
from sim.plan.cache import task_key  # noqa: E402
from sim.plan.search import rounds, simulate, together  # noqa: E402


class Measured:
    """Each distinct task's sample and CPU seconds, run once."""

    def __init__(self):
        self.runs: dict[str, tuple[object, float]] = {}

    def get(self, task) -> tuple[object, float]:
        k = task_key(task)
        if k not in self.runs:
            c0 = time.process_time()
            sample = simulate(task)
            self.runs[k] = (sample, time.process_time() - c0)
        return self.runs[k]


class VirtualPool:
    """A backend (submit / ready / result) whose clock is the measured CPU seconds on `slots` workers."""

    def __init__(self, slots: int, measured: Measured):
        self.slots, self.measured = slots, measured
        self.now, self.started = 0.0, 0
        self.running: list[tuple[float, int]] = []  # (end, handle)
        self.waiting: list[int] = []
        self.info: dict[int, tuple[object, float]] = {}

    def describe(self) -> str:
        return f"virtual, {self.slots} workers"

    def submit(self, task, fn=None) -> int:
        h = self.started
        self.started += 1
        self.info[h] = self.measured.get(task)
        if len(self.running) < self.slots:
            heapq.heappush(self.running, (self.now + self.info[h][1], h))
        else:
            self.waiting.append(h)
        return h

    def ready(self, handles: list[int]) -> list[int]:
        end, h = heapq.heappop(self.running)
        self.now = end
        if self.waiting:
            nxt = self.waiting.pop(0)
            heapq.heappush(self.running, (self.now + self.info[nxt][1], nxt))
        return [h]

    def result(self, h: int):
        return self.info[h][0]

    def close(self) -> None:
        pass


def lockstep(searches, points, backend, done, planned, cache, key_of, slots, stats):
    """The planner's drive before sim/plan/apart.py: all candidates' rounds together."""
    def run_tasks(tasks):
        planned(len(tasks))
        hs = [backend.submit(t) for t in tasks]
        left = list(hs)
        while left:
            for h in backend.ready(left):
                left.remove(h)
                done()
        return [backend.result(h) for h in hs]
    steps = rounds(together(searches), points)
    try:
        todo = next(steps)
        while True:
            todo = steps.send(run_tasks([t for _, t in todo]))
    except StopIteration as stop:
        return stop.value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", nargs="?", default="scenarios/customer_support_1m_per_day.yaml")
    ap.add_argument("--workers", default="1,2,4,8,16")
    ap.add_argument("--set", action="append", default=[])
    a = ap.parse_args()
    measured = Measured()
    real_apart = planner.drive_apart

    def apart_no_ahead(*args):
        args = list(args)
        args[7] = 1  # slots: no seed run ahead (the pool still runs `slots` at once)
        return real_apart(*args)

    ways = {"lockstep": lockstep, "apart": apart_no_ahead, "apart + ahead": real_apart}
    reference = None
    print(f"| workers | {' | '.join(f'{w} wall s' for w in ways)} | simulations (apart + ahead: started) |")
    print("| ---: |" + " ---: |" * len(ways) + " --- |")
    for n in [int(x) for x in a.workers.split(",")]:
        walls, sims = [], ""
        for name, way in ways.items():
            pool = VirtualPool(n, measured)
            planner.drive_apart = way
            planner._backend = lambda workers, ray, pool=pool: pool
            p = planner.plan(a.scenario, a.set, cache=False)
            numbers = p.to_dict(timing=False)
            if reference is None:
                reference = numbers
            elif numbers != reference:
                print(f"plans differ ({name}, {n} workers)")
                return 1
            walls.append(pool.now)
            if name == "apart + ahead":
                sims = f"{p.points_simulated} ({pool.started})"
        print(f"| {n} | {' | '.join(f'{w:.1f}' for w in walls)} | {sims} |")
    total = sum(cpu for _, cpu in measured.runs.values())
    print(f"\n{len(measured.runs)} distinct simulations measured, {total:.1f} CPU s in all (this machine, one at a time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
