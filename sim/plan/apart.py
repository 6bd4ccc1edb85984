"""Each candidate's search in its own rounds, all of them sharing the workers.

A search asks for points in rounds (search.rounds): its next round depends on the verdicts of the
last, and only of its own candidate's points. Run in lockstep, every candidate would wait for the
slowest candidate's round (a close call's third seed, a large fleet) before asking for more, and the
workers would idle at the end of each round. Here a candidate's next round starts as soon as its own
last one is done, while the other candidates' simulations run. Every search asks for the same points
in the same order as in lockstep, so the plan, its points and its counts are the same; only the wall
time changes (with one worker, not at all).
"""
from __future__ import annotations

from typing import Callable

from .search import Points, Sample, Search, Task, rounds


class _Round:
    """One search's round in flight: its tasks, their samples as they arrive, how many are missing."""

    __slots__ = ("todo", "samples", "missing")

    def __init__(self, todo: list, samples: list, missing: int):
        self.todo, self.samples, self.missing = todo, samples, missing


def drive_apart(searches: list[Search], points: Points, backend, done: Callable[[], None] = lambda: None,
                planned: Callable[[int], None] = lambda n: None, cache=None, key_of: Callable[[Task], str] | None = None
                ) -> list[object]:
    """Run every search to completion, each in its own rounds; their results in order.

    `backend` has submit / ready / result (sim/plan/backend.py). `planned(n)` hears of each round's n
    simulations as it starts and `done()` of each one as it ends (a sample from `cache` counts too:
    get/put by `key_of(task)`)."""
    steppers = [rounds(s, points) for s in searches]
    results: list[object] = [None] * len(searches)
    in_flight: dict[int, _Round] = {}
    owner: dict[object, tuple[int, int]] = {}  # handle -> (search, position in its round)
    order: list[object] = []  # handles in the order they were started

    def advance(i: int, samples: list[Sample] | None) -> None:
        """Send search i its round's samples (None: start it); start its next round, or record its result."""
        while True:
            try:
                todo = next(steppers[i]) if samples is None else steppers[i].send(samples)
            except StopIteration as stop:
                results[i] = stop.value
                return
            planned(len(todo))
            got: list[Sample | None] = [None] * len(todo)
            missing = 0
            for j, (_key, task) in enumerate(todo):
                hit = cache.get(key_of(task)) if cache is not None else None
                if hit is not None:
                    got[j] = hit
                    done()
                    continue
                handle = backend.submit(task)
                owner[handle] = (i, j)
                order.append(handle)
                missing += 1
            if missing:
                in_flight[i] = _Round(todo, got, missing)
                return
            samples = got  # every one answered from the cache: the next round at once

    for i in range(len(steppers)):
        advance(i, None)
    while order:
        for handle in backend.ready(order):
            i, j = owner.pop(handle)
            order.remove(handle)
            r = in_flight[i]
            sample = backend.result(handle)
            if cache is not None:
                cache.put(key_of(r.todo[j][1]), sample)
            r.samples[j] = sample
            r.missing -= 1
            done()
            if not r.missing:
                del in_flight[i]
                advance(i, r.samples)
    return results
