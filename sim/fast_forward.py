"""The engine's fast-forward: pricing, in one go, the run of plain decode steps that may follow a
scheduled step (sim/engine.py). Every running sequence adds one token per step (1..k+1 with
speculative decoding) and leaves when its output is complete, so the batch size and context of
each step are known in closed form and a whole run is priced with one vectorised cost-model call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .schedulers import StepPlan

if TYPE_CHECKING:
    from .engine import Replica

_TAKE, _FREE, _KEEP = 0, 1, 2  # KV events of a replayed fast-forward, in the order vLLM runs them within a step
MIN_HORIZON, MAX_HORIZON = 256, 4096  # a horizon shorter than ~256 steps costs more re-plans than it saves
_INDEX = np.arange(MAX_HORIZON + 2)  # read-only 0, 1, 2, ...: step and slot numbers without an allocation
_INDEX.flags.writeable = False


def index(start: int, stop: int) -> np.ndarray:
    """np.arange(start, stop), a view of a shared array where it fits."""
    return _INDEX[start:stop] if stop <= len(_INDEX) else np.arange(start, stop)


def plan_fast_forward(replica: "Replica", plan: StepPlan, follow: str, slots: np.ndarray, reqs: np.ndarray,
                  c: np.ndarray, r: np.ndarray, cut_at: tuple[float, float, float] | None = None
                  ) -> "FastForward | None":
    """Price the run of plain decode steps that may follow step 0.

    Slot j has c[j] tokens cached and r[j] tokens left to emit; in each step it computes
    one token (attending c[j] + i + 1 tokens in step i) until its output is complete.
    `cut_at` (speculative runs only): (start_s, t0_s, arrival_s) when an arrival at arrival_s is
    known to cut the run short; the run is then priced only a step past the one in flight then."""
    if replica.spec is not None:
        return _plan_speculative(replica, follow, slots, reqs, c, r, cut_at)
    if plan.padded:
        horizon = max(r.tolist())
    elif follow == "until_completion":
        horizon = min(x for x in r.tolist() if x > 0)
    else:
        horizon = min(max(r.tolist()), replica.ff_horizon_steps)
    if not plan.padded:
        horizon = replica.kv.steps_that_fit(reqs, c + 1, r, 1, horizon)
    if horizon <= 0:
        return None
    steps = index(0, horizon)
    if plan.padded:
        # Finished sequences stay as padding: the batch size and longest context set the cost.
        B = np.full(horizon, len(slots), dtype=np.int64)
        ctx = len(slots) * (int(c.max()) + steps + 1)
        active = (r[None, :] > steps[:, None]).sum(axis=1)
        times = replica.cost.decode_step_times_s(B, ctx)
    elif min(r.tolist()) >= horizon:
        # Nobody finishes within the horizon (always so for a single sequence): every step runs
        # all of them, each attending one more token than in the step before.
        active = np.full(horizon, len(slots), dtype=np.int64)
        ctx = sum(c.tolist()) + len(slots) * index(1, horizon + 1)
        times = replica.cost.decode_step_times_s(active, ctx)
    else:
        order = r.argsort(kind="stable")
        c_prefix = np.zeros(len(slots) + 1, dtype=np.int64)
        c[order].cumsum(out=c_prefix[1:])
        gone = r[order].searchsorted(steps, side="right")  # slots finished before step i
        active = len(slots) - gone
        ctx = (c_prefix[-1] - c_prefix[gone]) + active * index(1, horizon + 1)
        times = replica.cost.decode_step_times_s(active, ctx)
    return FastForward(times=np.asarray(times, dtype=np.float64), slots=slots, active=active,
                       finish_step=r - 1, cum_tokens=None, remaining=r)

def _plan_speculative(replica: "Replica", follow: str, slots: np.ndarray, reqs: np.ndarray, c: np.ndarray,
                      r: np.ndarray, cut_at: tuple[float, float, float] | None = None) -> "FastForward | None":
    """Speculative decoding: each step emits a random 1..k+1 tokens per sequence.

    The tokens of every step of the horizon are drawn (horizon x slots, step by step), whether the
    run gets that far or not: the acceptance stream must be where it always is for the next run.
    With `cut_at`, the steps after the one the arrival finds in flight are drawn but not priced:
    the arrival cuts the run there (Replica._cut_short), so their times are never read."""
    spec = replica.spec
    k = spec.k
    # Enough steps for the first to finish even at one token per step.
    rs = r.tolist()
    horizon = min(rs) if follow == "until_completion" else min(max(rs), replica.ff_horizon_steps)
    horizon = replica.kv.steps_that_fit(reqs, c + 1 + k, r, k + 1, horizon)
    if horizon <= 0:
        return None
    n = len(slots)
    if cut_at is None:
        return _price_speculative(replica, follow, c, r, slots, np.cumsum(spec.sample_tokens((horizon, n)), axis=0),
                                  horizon, horizon)
    start_s, t0_s, arrival_s = cut_at
    cum = np.empty((horizon, n), dtype=np.int64)
    drawn, rows = 0, 8
    while True:
        stop = min(horizon, drawn + rows)
        tokens = spec.sample_tokens((stop - drawn, n))
        tokens.cumsum(axis=0, out=cum[drawn:stop])
        if drawn:
            cum[drawn:stop] += cum[drawn - 1]
        drawn, rows = stop, rows * 2
        ff = _price_speculative(replica, follow, c, r, slots, cum[:drawn], horizon, drawn)
        if ff.steps is None:  # all drawn, or the run ends (until_completion) within them
            break
        # Ends as the engine computes them (Replica._execute): is the arrival's step in flight priced,
        # with one step to spare?
        ends_s = np.cumsum(ff.times)
        ends_s += t0_s
        if start_s + float(ends_s[-2]) >= arrival_s:
            break
    spec.skip_tokens((horizon - drawn) * n)
    return ff


def _price_speculative(replica: "Replica", follow: str, c: np.ndarray, r: np.ndarray, slots: np.ndarray,
                       cum: np.ndarray, horizon: int, drawn: int) -> "FastForward":
    """The first `drawn` of `horizon` steps of a speculative run whose slots have emitted cum[i] tokens
    after step i (cum: drawn x slots)."""
    k = replica.spec.k
    finished_by = cum >= r[None, :]
    whole = drawn == horizon
    if follow == "until_completion" and finished_by.any():
        drawn = int(np.argmax(finished_by.any(axis=1))) + 1  # the run ends when the first sequence finishes
        cum, finished_by, whole = cum[:drawn], finished_by[:drawn], True
    before = np.vstack([np.zeros((1, len(slots)), dtype=np.int64), cum[:-1]])
    running = before < r[None, :]
    B = running.sum(axis=1)
    ctx = ((c[None, :] + before + 1) * running).sum(axis=1)
    times = (replica.cost.step_times_s(B * (k + 1), B * (k + 1), ctx * (k + 1), ctx, B)
             + replica.spec.steps_extra_s(B * (k + 1), ctx * (k + 1), ctx, B, B, ctx + B, B))
    finish_step = np.where(finished_by.any(axis=0), np.argmax(finished_by, axis=0), drawn + 1)
    return FastForward(times=np.where(B > 0, times, 0.0), slots=slots, active=B, finish_step=finish_step,
                       cum_tokens=cum, remaining=r, steps=None if whole else horizon)


@dataclass
class FastForward:
    """A priced run of decode steps: step i takes times[i] s and `active[i]` sequences emit."""

    times: np.ndarray
    slots: np.ndarray  # running-batch slots taking part
    active: np.ndarray
    finish_step: np.ndarray  # per slot: the step in which it emits its last token
    cum_tokens: np.ndarray | None  # speculative: tokens emitted per slot after each step
    remaining: np.ndarray  # per slot: tokens left to emit before the run
    steps: int | None = None  # steps in the whole run, when more than len(times) were planned but not priced

    @property
    def length(self) -> int:
        """Steps in the run (those priced, unless the run was priced only up to an arrival's cut)."""
        return len(self.times) if self.steps is None else self.steps

    def emitted_after(self, m: int) -> np.ndarray:
        """Tokens each slot emitted in the first m steps."""
        if self.cum_tokens is None:
            return np.minimum(self.remaining, m)
        return np.minimum(self.cum_tokens[m - 1], self.remaining)


def replay_kv(replica: "Replica", ff: "FastForward", m: int, computed_1: np.ndarray, finished_0: np.ndarray) -> None:
    """KV blocks taken and freed by step 0's finishes and m fast-forwarded steps, in vLLM's
    order: within a step, new blocks (running order) before finishes free theirs (slot order).

    Only for a prefix cache, where the order decides which cached blocks are evicted; a plain
    pool only counts, and takes the blocks in one call instead."""
    kv, b, bs = replica.kv, replica.running, replica.kv.block_size_tokens
    reqs = b.req[:b.n].copy()
    # (step, what, slot, tokens it holds then); within a step: take blocks, then free, then keep.
    events = [(0, _FREE, int(s), None) for s in np.flatnonzero(finished_0)]  # registered when scheduled
    for s, c, r in zip(ff.slots.tolist(), computed_1[ff.slots].tolist(), ff.remaining.tolist()):
        if r == 0:
            continue  # finished in step 0 (a static batch keeps it as padding): freed above
        last = min(m, r)  # fast-forward steps this slot computes a token in
        # In step i (1-based) it computes position c + i - 1: a new block when that starts one.
        events.extend((i, _TAKE, s, c + i) for i in range((-c) % bs + 1, last + 1, bs))
        # It leaves after step r, or is still running: either way cache the blocks it filled.
        events.append((r, _FREE, s, c + r) if r <= m else (m, _KEEP, s, c + m))
    for _, what, s, tokens in sorted(events, key=lambda e: e[:3]):
        req = int(reqs[s])
        if tokens is not None and not kv.allocate(req, tokens):
            raise RuntimeError("fast-forward outgrew the KV cache")  # steps_that_fit rules this out
        if what == _FREE:
            kv.free(req)
