"""Where n replicas stop meeting the SLO, guided by the margins already measured.

The autoscaled hours ask, for each replica count n below the peak fleet, for the first of the
sorted hourly rates that n replicas fail. A simulated verdict's ratio (the binding metric over its
bound; <= 1 meets) grows with the load per replica, rate / n. Between the most loaded point known to
meet and the least loaded one above it known to fail, the ratio is drawn as a queue's delay,
c / (x_max - x) in the load x, through both points, to guess where n replicas cross the bound
(points with n replicas themselves are preferred to other counts; the peak search's points seed the
guess). A straight line, or one in log(ratio), through a lightly loaded point and an overloaded one
crosses the bound too early: latency stays flat, then climbs steeply near capacity. The search
probes the rate just under the guess, then the one just over it: with a good guess two probes settle
a count, where a gallop from a fixed start spends more on points far from the edge. After two probes
that land on the same side it bisects: a guess that keeps missing to one side does not walk the
rates one by one.
"""
from __future__ import annotations

import bisect
import math
from typing import Callable

from .search import PointKey, Search, Verdict

Seen = list[tuple[int, float, Verdict]]  # (replicas, rate req/s, simulated verdict), shared by a candidate's searches


def _side(points: list[tuple[float, Verdict]], meets: bool, above: float = -math.inf):
    """The most loaded point that meets, or the least loaded failing one above `above`."""
    side = [(x, v) for x, v in points if v.meets == meets and x > above]
    if not side:
        return None
    return max(side, key=lambda p: p[0]) if meets else min(side, key=lambda p: p[0])


def crossing_load(seen: Seen, n: int) -> float | None:
    """Load per replica (req/s) at which n replicas are guessed to reach the bound; None without
    a point that meets and a more loaded one that fails."""
    every = [(rate / reps, v) for reps, rate, v in seen if v.simulated]
    same = [(rate / reps, v) for reps, rate, v in seen if v.simulated and reps == n]
    a = _side(same, True) or _side(every, True)
    if a is None:
        return None
    b = _side(same, False, a[0]) or _side(every, False, a[0])
    if b is None:
        return None
    (xa, va), (xb, vb) = a, b
    if 0 < va.ratio <= 1 < vb.ratio < math.inf:
        # ratio = c / (x_max - x), a queue's delay, through both points; where it reaches 1
        x_max = (vb.ratio * xb - va.ratio * xa) / (vb.ratio - va.ratio)
        return x_max - va.ratio * (x_max - xa)
    return xa  # the failing point did not keep up (ratio inf: no slope to follow), or a ratio of 0


def first_failing(rates: list[float], n: int, key_of: Callable[[int], PointKey], seen: Seen) -> Search:
    """Index of the first of `rates` (ascending) that n replicas fail, len(rates) if none; assumes a
    point that meets at a rate meets at every lower one. Appends what it simulates to `seen`."""
    a, b = -1, len(rates)  # largest index known to meet, smallest known to fail
    sides: list[bool] = []
    while b - a > 1:
        load = crossing_load(seen, n)
        if load is None or (len(sides) >= 2 and sides[-1] == sides[-2]):
            j = (a + b) // 2
        else:  # the highest rate guessed to meet, else the lowest left (guessed to fail)
            j = max(bisect.bisect_right(rates, load * n, a + 1, b) - 1, a + 1)
        (v,) = yield [key_of(j)]
        if v.simulated:
            seen.append((n, rates[j], v))
        sides.append(v.meets)
        if v.meets:
            a = j
        else:
            b = j
    return b
