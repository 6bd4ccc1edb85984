"""Routers: which replica gets an arriving request. A router is a function of the replicas' state."""
from __future__ import annotations

from heapq import heappop, heappush
from typing import Callable, Sequence

_INF = float("inf")


def round_robin(board: "LoadBoard | None" = None) -> Callable[[Sequence, int], int]:
    counter = {"next": 0}

    def route(replicas: Sequence, req: int) -> int:
        i = counter["next"]
        counter["next"] = (i + 1) % len(replicas)
        return i

    return route


class LoadBoard:
    """Each replica's requests routed and not finished by now (`Replica.outstanding`), kept as things happen
    instead of asked of every replica at every arrival.

    A replica's count rises when a request is routed to it, is set when its engine plans a run (the requests
    it holds; the run's planned finishes go on one heap for all replicas, under the run's version) or retires
    requests (a new version: the old run's finishes no longer count), and drops as the arrivals' clock
    passes a finish of its current run. `least(now)` pops the finishes up to now and takes the smallest
    count, lowest index on ties: what asking every replica's `outstanding` gives (tests/test_open_run.py
    checks it at every arrival), at a cost that does not grow with each replica asked."""

    __slots__ = ("load", "version", "heap")

    def __init__(self, replicas: int):
        self.load = [0] * replicas
        self.version = [0] * replicas
        self.heap: list[tuple[float, int, int]] = []

    def plan(self, r: int, outstanding: int, finishes) -> None:
        """Replica r holds `outstanding` requests; `finishes` (seconds; inf: not in this run) are the times
        its run in flight retires them (a list or an array; none when it retires them now)."""
        v = self.version[r] = self.version[r] + 1
        self.load[r] = outstanding
        heap = self.heap
        for t in (finishes.tolist() if hasattr(finishes, "tolist") else finishes):
            if t < _INF:
                heappush(heap, (t, r, v))

    def add(self, r: int, t: float) -> None:
        """One more finish of replica r's run in flight, priced later (sim/open_run.py)."""
        heappush(self.heap, (t, r, self.version[r]))

    def least(self, now: float) -> int:
        heap, load, version = self.heap, self.load, self.version
        while heap and heap[0][0] <= now:
            _, r, v = heappop(heap)
            if v == version[r]:
                load[r] -= 1
        return load.index(min(load))


def least_outstanding(board: LoadBoard | None = None) -> Callable[[Sequence, int], int]:
    """Fewest requests waiting or running; ties go to the lowest index (deterministic). With a board (the
    simulation keeps one where it has two or more replicas) the counts are the board's."""
    def route(replicas: Sequence, req: int) -> int:
        if len(replicas) == 1:
            return 0
        best, best_load = 0, replicas[0].outstanding
        for i in range(1, len(replicas)):
            load = replicas[i].outstanding
            if load < best_load:
                best, best_load = i, load
        return best

    if board is None:
        return route
    return lambda replicas, req: board.least(replicas[0].env._now)


ROUTERS = {"round_robin": round_robin, "least_outstanding": least_outstanding}
