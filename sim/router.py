"""Routers: which replica gets an arriving request. A router is a function of the replicas' state."""
from __future__ import annotations

from typing import Callable, Sequence


def round_robin() -> Callable[[Sequence, int], int]:
    counter = {"next": 0}

    def route(replicas: Sequence, req: int) -> int:
        i = counter["next"]
        counter["next"] = (i + 1) % len(replicas)
        return i

    return route


def least_outstanding() -> Callable[[Sequence, int], int]:
    def route(replicas: Sequence, req: int) -> int:
        # Fewest requests waiting or running; ties go to the lowest index (deterministic).
        if len(replicas) == 1:
            return 0
        best, best_load = 0, replicas[0].outstanding
        for i in range(1, len(replicas)):
            load = replicas[i].outstanding
            if load < best_load:
                best, best_load = i, load
        return best

    return route


ROUTERS = {"round_robin": round_robin, "least_outstanding": least_outstanding}
