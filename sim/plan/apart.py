"""Each candidate's search in its own rounds, all of them sharing the workers.

A search asks for points in rounds (search.rounds): its next round depends on the verdicts of the
last, and only of its own candidate's points. Run in lockstep, every candidate would wait for the
slowest candidate's round (a close call's third seed, a large fleet) before asking for more, and the
workers would idle at the end of each round. Here a candidate's next round starts as soon as its own
last one is done, while the other candidates' simulations run. Every search asks for the same points
in the same order as in lockstep, so the plan, its points and its counts are the same; only the wall
time changes (with one worker, not at all).

Seeds run ahead: a full point's first seed may come out close to its bound, and then its next seeds
are asked for one round at a time, each waiting for the last. Where a worker would otherwise idle, the
next seeds of the full points in flight are started ahead of the question; a round that asks for one
takes its sample (or waits for it), and one never asked for is dropped. The answers are the same: a
seed's sample does not depend on when it ran. The plan counts only the simulations its points used.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from .search import Points, Sample, Search, Task, rounds


class _Round:
    """One search's round in flight: its tasks, their samples as they arrive, how many are missing."""

    __slots__ = ("todo", "samples", "missing")

    def __init__(self, todo: list, samples: list, missing: int):
        self.todo, self.samples, self.missing = todo, samples, missing


def drive_apart(searches: list[Search], points: Points, backend, done: Callable[[], None] = lambda: None,
                planned: Callable[[int], None] = lambda n: None, cache=None, key_of: Callable[[Task], str] | None = None,
                slots: int = 1, stats: dict | None = None) -> list[object]:
    """Run every search to completion, each in its own rounds; their results in order.

    `backend` has submit / ready / result (sim/plan/backend.py); `slots` is how many simulations it runs
    at once (above 1, seeds run ahead where a slot is free). `planned(n)` hears of each round's n
    simulations as it starts and `done()` of each one as it ends (a sample from `cache` counts too: get/put
    by `key_of(task)`). `stats`, if given, receives how many seeds ran ahead and were used or not."""
    steppers = [rounds(s, points) for s in searches]
    results: list[object] = [None] * len(searches)
    in_flight: dict[int, _Round] = {}
    owner: dict[object, tuple[int, int]] = {}  # handle of a round's task -> (search, position in its round)
    order: list[object] = []  # handles in flight, in the order they were started
    ahead: dict[tuple, object] = {}  # seed run ahead, not yet asked for -> its handle (while it runs)
    ahead_done: dict[tuple, Sample] = {}  # ... -> its sample (once it ran)
    ahead_key: dict[object, tuple] = {}  # handle of a seed run ahead -> its key
    queue: list[tuple[tuple, Task]] = []  # seeds to run ahead when a slot is free
    started: set[tuple] = set()  # every (point, seed, screening) started so far
    count = {"used": 0, "unused": 0}
    max_seeds, first_seed = points.cfg.max_seeds, points.seed

    def start(task: Task) -> object:
        handle = backend.submit(task)
        order.append(handle)
        return handle

    def fill() -> None:
        """Start seeds ahead while two slots are free: one stays for the rounds' own next simulation (a seed
        ahead that takes the last free slot makes a needed one wait: slower on two workers, measured)."""
        while queue and len(order) < slots - 1:
            sk, task = queue.pop(0)
            if sk not in started and sk[0] not in points.verdicts:  # (a point already settled asks for no more)
                started.add(sk)
                handle = start(task)
                ahead[sk], ahead_key[handle] = handle, sk

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
            for j, (key, task) in enumerate(todo):
                sk = (key, task.seed, task.screening)
                hit = cache.get(key_of(task)) if cache is not None else None
                if hit is None and sk in ahead_done:  # ran ahead, finished: asked for now
                    hit = ahead_done.pop(sk)
                    count["used"] += 1
                    if cache is not None:
                        cache.put(key_of(task), hit)
                if hit is not None:
                    got[j] = hit
                    done()
                    continue
                if sk in ahead:  # running ahead: this round waits for it
                    handle = ahead.pop(sk)
                    del ahead_key[handle]
                    count["used"] += 1
                else:
                    started.add(sk)
                    handle = start(task)
                owner[handle] = (i, j)
                missing += 1
                if slots > 1 and not task.screening and task.seed == first_seed:
                    queue.extend(((key, first_seed + k, False), dataclasses.replace(task, seed=first_seed + k))
                                 for k in range(1, max_seeds))
            if missing:
                in_flight[i] = _Round(todo, got, missing)
                return
            samples = got  # every one answered already: the next round at once

    for i in range(len(steppers)):
        advance(i, None)
    fill()
    while owner:
        for handle in backend.ready(order):
            order.remove(handle)
            sample = backend.result(handle)
            if handle in ahead_key:  # a seed run ahead that no round has asked for yet
                sk = ahead_key.pop(handle)
                del ahead[sk]
                ahead_done[sk] = sample
                continue
            i, j = owner.pop(handle)
            r = in_flight[i]
            if cache is not None:
                cache.put(key_of(r.todo[j][1]), sample)
            r.samples[j] = sample
            r.missing -= 1
            done()
            if not r.missing:
                del in_flight[i]
                advance(i, r.samples)
        if owner:  # (no search waits any more: nothing to run ahead for)
            fill()
    count["unused"] = len(ahead_done) + len(ahead)
    if stats is not None:
        stats.update(count)
    return results
