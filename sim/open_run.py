"""Runs priced only as far as the next arrival (sim/engine_small.py's case for one replica).

With one replica the next arrival's time is known and so is its replica: the small-batch step ends its
run there. With several, the arrival times are still known in advance (an open loop, no ingress jitter),
but not which replica the router will pick; and the general step (large batches, chunked prefill), on
one replica too, does not know whether the arrival will find the queue empty and cut its run. A run is then priced, on plain floats, up to the step in
flight when the next request arrives (any replica's) and left open: the engine waits on an event
that is not scheduled yet. At that arrival, either the router sends the request here and it cuts the
run (`Replica._cut_short`, as for any run), or the request goes elsewhere (or waits in the queue) and
the run's pricing resumes where it stopped, up to the step in flight at the arrival after (`Simulation._open_loop`
calls `extend`). Once the run reaches its horizon the engine's wake-up is scheduled at the time the
general path's timeout has (start + the last step's end), and the run stays interruptible.

Every number is the general path's: the steps are the vectorised cost model's, bit for bit
(`decode_steps_scalar`), summed in np.cumsum's order; what the router reads (`Replica.outstanding`)
needs only the finishes up to now, which are always priced. A run that grows past OPEN_RUN_MAX_STEPS
priced steps prices the rest of its horizon vectorised in one go (a step on floats costs ~0.45 us,
a vectorised run ~50 us).
"""
from __future__ import annotations

import math
from heapq import heappush
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np
from simpy.events import NORMAL

from .fast_forward import FastForward, index

if TYPE_CHECKING:
    from .engine import Replica

_INF = float("inf")
OPEN_RUN_MAX_STEPS = 192  # steps priced on floats before the rest of the horizon is priced vectorised
OPEN_RUN_BLOCK_STEPS = 16  # steps priced per call of the float form


class OpenRun:
    """The decode steps after step 0 of one replica's run, priced on demand. Step i (0-based) runs the
    sequences with more than i tokens left; each attends its cached tokens plus i + 1."""

    __slots__ = ("rep", "steps_s", "start", "t0", "horizon", "rs", "cs", "slot_of", "seg", "B", "left", "stop",
                 "total", "times", "active", "ends", "shown", "wake")

    def __init__(self, rep: "Replica", rs: list, cs: list, slot_of: list, horizon: int, start: float, t0: float):
        """rs[k], cs[k]: tokens left to emit and cached of batch slot slot_of[k], fewest tokens left first."""
        self.rep, self.steps_s, self.start, self.t0, self.horizon = rep, rep.decode_steps_s, start, t0, horizon
        self.rs, self.cs, self.slot_of = rs, cs, slot_of  # segments between finishes: one sequence fewer each
        self.seg, self.B, self.left = 0, len(rs), sum(cs)
        self.stop = min(rs[0], horizon)  # the current segment ends before this step
        self.total = 0.0  # running sum of the step times (np.cumsum's order)
        self.times: list[float] = []
        self.active: list[int] = []
        self.ends = [t0]  # ends[i]: when step i ends, in seconds after `start` (step 0: the scheduled one)
        self.shown = -1  # finishes rs[:shown] are where the router reads them (-1: not yet open)
        self.wake = None  # the event the engine waits on while the run is open

    @classmethod
    def of_lists(cls, rep: "Replica", slots, rs: list, cs: list, horizon: int, start: float, t0: float) -> "OpenRun":
        order = sorted(range(len(rs)), key=rs.__getitem__)
        return cls(rep, [rs[k] for k in order], [cs[k] for k in order], [slots[k] for k in order], horizon, start, t0)

    @property
    def complete(self) -> bool:
        return len(self.times) == self.horizon

    def price_to(self, arrival_s: float) -> None:
        """Price blocks of steps until one ends at or after `arrival_s` (the step in flight then; a few
        past it may be priced too, as the general path prices its whole horizon) or to the horizon."""
        start, ends = self.start, self.ends
        if start + ends[-1] >= arrival_s:
            return
        t0, times, active, steps_s = self.t0, self.times, self.active, self.steps_s
        i, total, B, stop, H = len(times), self.total, self.B, self.stop, self.horizon
        while True:
            while i == stop:  # the segment is done: its fewest-steps sequence leaves
                if stop == H:
                    break
                self.left -= self.cs[self.seg]
                self.seg += 1
                B -= 1
                stop = min(self.rs[self.seg], H)
            if i == H or i >= OPEN_RUN_MAX_STEPS:
                break
            # Steps until the arrival at the last step's length, and two more (steps lengthen as the
            # context grows), or a block at least: mostly one block reaches the arrival's step.
            last_s = times[-1] if times else t0
            want = (arrival_s - (start + ends[-1])) / last_s + 2.0 if last_s > 0 else math.inf  # inf: to the horizon
            count = stop - i if want >= stop - i else int(want) if want > OPEN_RUN_BLOCK_STEPS else OPEN_RUN_BLOCK_STEPS
            if count > stop - i:
                count = stop - i
            block = steps_s(B, self.left + B * (i + 1), count)
            sums = list(accumulate(block, initial=total))  # the running sum, step by step
            total = sums[-1]
            del sums[0]
            block_ends = [x + t0 for x in sums]
            times += block
            active += [B] * len(block)
            ends += block_ends
            i += len(block)
            if start + block_ends[-1] >= arrival_s:
                break
        self.total, self.B, self.stop = total, B, stop
        if i < H and start + ends[-1] < arrival_s:  # priced OPEN_RUN_MAX_STEPS on floats: the rest at once
            self._price_rest_vectorised()
        if self.shown >= 0:
            self._show_finishes()

    def _price_rest_vectorised(self) -> None:
        """Steps len(times)..horizon - 1 in one cost-model call (as _price's vectorised form), appended."""
        i, H, rs, cs = len(self.times), self.horizon, self.rs, self.cs
        B, left, k, stop = self.B, self.left, self.seg, self.stop
        counts, lefts, lengths = [B], [left], [stop - i]
        while stop < H:  # the later segments: one sequence fewer each
            left -= cs[k]
            B -= 1
            k += 1
            counts.append(B)
            lefts.append(left)
            lengths.append(min(rs[k], H) - stop)
            stop = min(rs[k], H)
        active, ctx = np.array([counts, lefts], dtype=np.int64).repeat(lengths, axis=1)
        ctx += active * index(i + 1, H + 1)
        times = np.asarray(self.rep.cost.decode_step_times_s(active, ctx), dtype=np.float64)
        sums = np.empty(len(times) + 1)
        sums[0] = self.total
        sums[1:] = times
        ends = sums.cumsum()  # the running sum goes on from the steps priced on floats, in the same order
        ends += self.t0
        self.times += times.tolist()
        self.active += active.tolist()
        self.ends += ends[1:].tolist()

    # ---- the engine's side ----------------------------------------------------
    def open(self):
        """The event the engine waits on (not scheduled yet); the run is in flight and may be cut."""
        rep = self.rep
        rep.state = "fast_forward"
        rep._run_start_s, rep._run_ends, rep._run_steps_done = self.start, self.ends, 0
        self.shown = 0
        self._show_finishes()
        self.wake = self.rep.env.event()
        self.rep.sim.open_runs.append(self)
        self.rep._open_run = self
        return self.wake

    def _show_finishes(self) -> None:
        """Put the finishes priced so far where the router reads them (`Replica._finishing_s`): slot
        slot_of[k] emits its last token in step rs[k] - 1, which ends at ends[rs[k]]."""
        rs, k, P, board = self.rs, self.shown, len(self.times), self.rep.board
        if board is not None and k < len(rs) and rs[k] <= P:  # (no board: no router reads them)
            rep, slot_of, start, ends = self.rep, self.slot_of, self.start, self.ends
            fin = rep._finishing_s
            while k < len(rs) and rs[k] <= P:
                j, t = slot_of[k], start + ends[rs[k]]
                if fin[j] == _INF:  # (the small step wrote those priced before it opened)
                    board.add(rep.index, t)
                fin[j] = t
                k += 1
            self.shown = k

    def fast_forward(self, slots: np.ndarray, r: np.ndarray) -> tuple[FastForward, np.ndarray]:
        """The steps priced, as plan_fast_forward's FastForward (for the general step), and their ends."""
        return FastForward(times=np.array(self.times), slots=slots, active=np.array(self.active, dtype=np.int64),
                           finish_step=r - 1, cum_tokens=None, remaining=r), np.array(self.ends)

    def extend(self, arrival_s: float) -> None:
        """The arrival before went elsewhere: price on up to the step in flight at the next one, at
        `arrival_s` (inf: to the horizon); once at the horizon, schedule the engine's wake-up."""
        if self.start + self.ends[-1] >= arrival_s:
            return
        self.price_to(arrival_s)
        if len(self.times) == self.horizon:
            self.close()
            # As env.timeout(ends[-1]) at the run's start would have scheduled it (an event id taken now).
            env, wake = self.rep.env, self.wake
            wake._ok, wake._value = True, None
            heappush(env._queue, (self.start + self.ends[-1], NORMAL, next(env._eid), wake))

    def close(self) -> None:
        """No more extending: the run reached its horizon, or an arrival cut it."""
        self.rep.sim.open_runs.remove(self)
        self.rep._open_run = None


def opens_general(rep: "Replica") -> bool:
    """May the general step (sim/engine.py) price its run as an OpenRun? Plain decode steps on a replica
    whose cost model has the float form, and nothing that reads the step-by-step arrays as they run."""
    return (rep.spec is None and rep.decode_steps_s is not None and not rep.kv.tracks_block_order
            and rep.step_log is None and rep.token_log is None)


def open_general(rep: "Replica", follow: str, slots: np.ndarray, reqs: np.ndarray, c: np.ndarray, r: np.ndarray,
                 start: float, t0: float, ) -> tuple[FastForward | None, OpenRun | None]:
    """plan_fast_forward's run (not padded, no drafts) priced up to the step in flight at the next
    arrival: (FastForward, None) where it reached its horizon first, (None, the open run) where it did
    not, (None, None) where no step fits."""
    order = r.argsort(kind="stable")  # fewest tokens left first
    rs = r[order].tolist()
    horizon = min(x for x in rs if x > 0) if follow == "until_completion" else min(rs[-1], rep.ff_horizon_steps)
    horizon = rep.kv.steps_that_fit(reqs, c + 1, r, 1, horizon)
    if horizon <= 0:
        return None, None
    run = OpenRun(rep, rs, c[order].tolist(), slots[order].tolist(), horizon, start, t0)
    run.price_to(rep.sim.next_arrival_s)
    if run.complete:
        return run.fast_forward(slots, r)[0], None
    return None, run


def step_in_flight(ends: list, start: float, now: float) -> tuple[int, float]:
    """The first step i with start + ends[i] >= now (the last one if none) and that time: numpy's
    searchsorted on start + ends, as Replica._cut_short does for an array, searched from the end."""
    i = len(ends) - 1
    while i and start + ends[i - 1] >= now:
        i -= 1
    return i, start + ends[i]
