"""The engine step for a small batch (sim/engine.py's `Replica._execute`, one common case): no
speculative decoding, no static padding, no step or token log, a KV pool that only counts blocks,
and at most `SMALL` running sequences: the most frequent step in a lightly loaded replica.

Same arithmetic, same order, same results as `_execute` (benchmarks/output_hashes.py checks it
bit for bit), but the per-sequence state of the step is read once into plain Python lists: on a
few sequences a loop of integer operations costs less than the ~100 numpy calls on tiny arrays
that the general path makes per decision. Per-step arrays (one entry per fast-forwarded step)
stay numpy where they are hundreds of steps long.

Where the next arrival's time is known in advance (one replica, an open loop, no ingress jitter:
`Simulation.next_submit_s`) and it will interrupt the run (the queue is empty), the run is priced
only up to the step in flight when it arrives, a few steps at a time on plain floats
(`decode_steps_scalar`, the cost model's vectorised numbers bit for bit), and the engine sleeps
until that step ends: where the arrival would otherwise cut the run short (`Replica._cut_short`),
the same wake-up without the cut's events, and without pricing the hundreds of steps it would drop.
"""
from __future__ import annotations

from itertools import accumulate
from typing import TYPE_CHECKING, Any

import numpy as np

from .clock import sleep
from .fast_forward import MAX_HORIZON, MIN_HORIZON, index
from .kv_cache import SMALL
from .open_run import OpenRun

if TYPE_CHECKING:
    from .engine import Replica
    from .schedulers import StepPlan

_INF = float("inf")


def fits(replica: "Replica", plan: "StepPlan") -> bool:
    """May `execute_small` run this step?"""
    return replica.running.n <= SMALL and replica.small_steps and not plan.padded


def small_steps(replica: "Replica") -> bool:
    """May `execute_small` run this replica's steps at all (no drafts, no step or token log, a KV pool
    that only counts blocks)?"""
    return (replica.spec is None and replica.step_log is None and replica.token_log is None
            and not replica.kv.tracks_block_order)


def execute_small(rep: "Replica", plan: "StepPlan"):
    """One scheduled step and the run of plain decode steps after it (see `Replica._execute`)."""
    env, b, t, sim = rep.env, rep.running, rep.table, rep.sim
    start = env._now
    n = b.n
    reqs, prompt, output, computed, num_tokens, level, chunk = b.rows()

    # ---- step 0: its features as integer sums, per slot what it leaves -------
    new_tokens = pairs = kv_read = n_sched = n_decode = n_completes = 0
    comp1, nt1, rem1, first, resumed = [], [], [], [], []
    for j in range(n):
        L, c, nt = chunk[j], computed[j], num_tokens[j]
        g = nt - prompt[j]
        todo = nt - c
        new_tokens += L
        pairs += L * c + L * (L + 1) // 2
        kv_read += c
        if L:
            n_sched += 1
        r = output[j] - g
        if L == todo:  # the step reaches the last known token: it samples the next one
            n_completes += 1
            if todo == 1:
                n_decode += 1
            elif g > 0:
                resumed.append(j)  # a preempted sequence's recompute finished
            if g == 0:
                first.append(j)
            nt += 1
            r -= 1
        comp1.append(c + L)
        nt1.append(nt)
        rem1.append(r)
    t0 = rep.cost.step_time_s(new_tokens, n_completes, pairs, kv_read + new_tokens, n_sched)
    n_finished_0 = rem1.count(0)

    # ---- fast-forward: plain decode steps ----------------------------------
    ff: Any = None  # (Any: these names hold a list or an array, a tuple or None, by path)
    times: Any = None
    ends: Any = None
    slots: Any = None
    in_flight: Any = None
    closed_loop_reply = sim.closed_loop and n_finished_0 > 0
    freed_for_waiting = plan.follow == "until_completion" and n_finished_0 > 0
    if (plan.follow != "none" and n_completes == n and n_finished_0 < n and not closed_loop_reply
            and not freed_for_waiting):
        follow = "until_completion" if sim.closed_loop else plan.follow
        slots = range(n) if not n_finished_0 else [j for j in range(n) if rem1[j]]
        # A request that finds the queue empty interrupts an interruptible run (Scheduler.should_interrupt):
        # when its arrival time is known now, the run ends at the step in flight then.
        arrival_s = sim.next_submit_s if plan.interruptible and not rep.scheduler.num_waiting else None
        # Two or more replicas: the next arrival's time is known, not its replica (sim/open_run.py).
        open_s = (sim.next_arrival_s if plan.interruptible and rep.decode_steps_s is not None
                  and sim.small_step_opens_runs else None)
        ff = _price(rep, follow, slots, reqs, comp1, rem1, start, t0, arrival_s, open_s)
    finish_at = [t0 if r == 0 else _INF for r in rem1]  # seconds after `start` each slot emits its last token
    run: Any = None
    if ff is None:
        ends, last_end = None, t0
    else:
        times, active, slots, ends, H, in_flight = ff
        if type(in_flight) is OpenRun:
            run, in_flight = in_flight, None
        P = len(times)  # steps priced: H, or up to the one in flight when the next request arrives
        for j in slots:
            if rem1[j] <= P:  # finishes within the run, in fast-forward step rem1[j] - 1
                finish_at[j] = float(ends[rem1[j]])
        last_end = float(ends[-1])
    if rep.board is not None:  # where the router keeps a board of the replicas' loads (sim/router.py)
        rep._finishing_s = [start + f for f in finish_at]
        rep.board.plan(rep.index, rep._outstanding, rep._finishing_s)

    # ---- let time pass; an arrival may cut the fast-forward short ----------
    wake_s = None
    if ff is not None and in_flight is not None:
        # Wake where the arrival's cut would wake the engine (_cut_short's arithmetic, from its time), if
        # a timeout from now lands there exactly; else let the arrival cut the run short as usual.
        wake_s = arrival_s + max((start + ends[in_flight]) - arrival_s, 0.0)
        if start + (wake_s - start) != wake_s:
            wake_s = None
    if wake_s is not None:
        yield sleep(env, wake_s - start)
        steps_done = in_flight + 1
    elif run is not None:  # priced up to the next arrival: cut there, or priced on (OpenRun.extend)
        yield run.open()
        P, last_end = len(times), ends[-1]
        for j in slots:
            if rem1[j] <= P:
                finish_at[j] = ends[rem1[j]]
        steps_done = rep._run_steps_done or P + 1
    elif ff is not None and plan.interruptible:
        rep.state = "fast_forward"
        rep._run_start_s, rep._run_ends, rep._run_steps_done = start, np.asarray(ends), 0
        yield sleep(env, last_end)
        steps_done = rep._run_steps_done or P + 1
    else:
        yield sleep(env, last_end)
        steps_done = 1 if ff is None else P + 1
    rep.state = "busy"
    end = last_end if steps_done == (1 if ff is None else P + 1) else float(ends[steps_done - 1])
    rep.busy_s += end
    if rep.admission_lag:
        rep.note_last_step(start, ends, steps_done)

    # ---- apply step 0 --------------------------------------------------------
    if first:
        v = start + t0 + rep.response_latency_s
        for j in first:
            t.first_token_s[reqs[j]] = v
        if rep.latency_per_prompt_token_s:  # and per prompt token of the request (tokenisation)
            for j in first:
                t.first_token_s[reqs[j]] += rep.latency_per_prompt_token_s * int(t.prompt_tokens[reqs[j]])
    if n_decode:
        rep.itl.add_one(t0, n_decode)
    if resumed and rep.preempted_any:
        gap = start + t0 - t.last_token_s[[reqs[j] for j in resumed]]
        rep.itl.add(gap, np.ones(len(gap), dtype=np.int64))

    # ---- apply the fast-forward steps that happened ----------------------------
    m = steps_done - 1
    if m > 0:
        for j in slots:
            e = rem1[j] if rem1[j] < m else m
            comp1[j] += e
            nt1[j] += e
        if type(times) is list:  # priced a few steps at a time
            rep.itl.add_lists(times, active) if len(times) == m else rep.itl.add_lists(times[:m], active[:m])
        else:
            rep.itl.add(times[:m], active[:m])
        rep.ff_horizon_steps = min(MAX_HORIZON, rep.ff_horizon_steps * 2) if m == H else max(MIN_HORIZON, 2 * m)

    if rep.board is not None:
        rep._finishing_s = []
    kept: Any = range(n)
    if n_finished_0 or ff is not None:
        done = [j for j in range(n) if finish_at[j] <= end]
        if done:
            rl, finish_s, generated, free = rep.response_latency_s, t.finish_s, t.generated, rep.kv.free
            per_tok = rep.latency_per_prompt_token_s
            done_s = []
            for j in done:
                req = reqs[j]
                done_s.append(start + finish_at[j] + rl)
                if per_tok:
                    done_s[-1] += per_tok * int(t.prompt_tokens[req])
                finish_s[req] = done_s[-1]
                generated[req] = nt1[j] - prompt[j]
                free(req)
            rep._outstanding -= len(done)
            kept = [j for j in range(n) if finish_at[j] > end]
    if rep.board is not None:
        rep.board.plan(rep.index, rep._outstanding, ())
    if len(kept) == n:
        rows = [reqs, prompt, output, comp1, nt1, level, [0] * n]
        b.set_rows(rows)  # the slots after the step (no chunk): the batch keeps these lists
    else:
        rows = [[row[j] for j in kept] for row in (reqs, prompt, output, comp1, nt1, level)] + [[0] * len(kept)]
        b.set_rows(rows)
        sim.on_finish(done_s)
    if kept:
        # Blocks for the tokens the fast-forward computed, taken before the next decision (see _execute). Where
        # every slot decodes next (one token each), the blocks the scheduler takes first for that decision
        # (its known tokens) are taken now instead when they fit, in the same one pass (it then skips its own).
        if n_completes == n and rep.takes_next_blocks and rep.kv.allocate_lists(rows[0], rows[4]):
            b.blocks_for_known = True
        elif m > 0 and not rep.kv.allocate_lists(rows[0], rows[3]):
            raise RuntimeError("fast-forward outgrew the KV cache")


def _price(rep: "Replica", follow: str, slots, reqs: list, c: list, r: list, start: float, t0: float,
           arrival_s: float | None, open_s: float | None = None):
    """fast_forward.plan_fast_forward for this case, on lists: (step times, active sequences per step,
    slots taking part, ends, horizon, in_flight), or None when no step fits. ends[i] is when step i ends,
    in seconds after `start` (step 0 is the scheduled step, t0 long); `horizon` is the steps the run may
    take. When the next request arrives at `arrival_s` (known), in_flight is the step in flight then (an
    index into ends, where the run stops; the steps after it are not priced), else None. When the next
    request (to any replica) arrives at `open_s`, the run is priced up to the step in flight then and
    in_flight is its OpenRun (sim/open_run.py), or None where the run ends before."""
    if type(slots) is range:  # every slot takes part: the lists as they are (none is changed here)
        rs, cs, slot_reqs = r, c, reqs
    else:
        rs, cs, slot_reqs = [r[j] for j in slots], [c[j] for j in slots], [reqs[j] for j in slots]
    if follow == "until_completion":
        horizon = min(x for x in rs if x > 0)
    else:
        horizon = min(max(rs), rep.ff_horizon_steps)
    horizon = rep.kv.steps_that_fit_lists(slot_reqs, [x + 1 for x in cs], rs, horizon)
    if horizon <= 0:
        return None
    if open_s is not None:
        run = OpenRun.of_lists(rep, slots, rs, cs, horizon, start, t0)
        run.price_to(open_s)
        return run.times, run.active, slots, run.ends, horizon, None if run.complete else run
    steps_s = rep.decode_steps_s
    if arrival_s is not None and steps_s is not None:
        first_s = steps_s(len(rs), sum(cs) + len(rs), 1)[0]
        # About PRICE_ONE_BY_ONE_STEPS steps or fewer to price (the horizon, or the steps until the arrival
        # at the first step's length): on floats.
        if horizon <= PRICE_ONE_BY_ONE_STEPS or (first_s > 0 and arrival_s - (start + t0) <= PRICE_ONE_BY_ONE_STEPS * first_s):
            run = _price_until(steps_s, cs, rs, horizon, start, t0, arrival_s, first_s)
            if run is not None:
                return (*run[:2], slots, run[2], horizon, run[3])
    ns = len(rs)
    if min(rs) >= horizon:
        # Nobody finishes within the horizon: every step runs all of them.
        active = np.full(horizon, ns, dtype=np.int64)
        ctx = sum(cs) + ns * index(1, horizon + 1)
    else:
        # Step i runs the slots with r > i; they attend their cached tokens plus i + 1.
        order = sorted(range(ns), key=rs.__getitem__)
        total = sum(cs)
        left, counts, lengths, prev = [total], [ns], [], 0
        for k, j in enumerate(order):
            x = rs[j] if rs[j] < horizon else horizon
            lengths.append(x - prev)
            prev = x
            left.append(left[-1] - cs[j])
            counts.append(ns - k - 1)
        lengths.append(horizon - prev)
        # Both per-step rows from one array and one repeat (numpy's per-call cost dominates here).
        active, ctx = np.array([counts, left], dtype=np.int64).repeat(lengths, axis=1)
        ctx += active * index(1, horizon + 1)
    times = np.asarray(rep.cost.decode_step_times_s(active, ctx), dtype=np.float64)
    ends = np.empty(horizon + 1)
    ends[0] = t0
    times.cumsum(out=ends[1:])
    ends[1:] += t0
    in_flight = None
    if arrival_s is not None:  # the first step still running when it arrives (searchsorted, as _cut_short)
        i = int((start + ends).searchsorted(arrival_s, side="left"))
        in_flight = i if i <= horizon else None
    return times, active, slots, ends, horizon, in_flight


PRICE_ONE_BY_ONE_STEPS = 112  # up to about this many steps to price, blocks on floats cost less than numpy's calls
PRICE_ONE_BY_ONE_MAX_STEPS = 192  # where the estimate was short: give up, price vectorised
PRICE_BLOCK_STEPS = 4  # steps priced per call past the estimated step of the arrival


def _price_until(steps_s, cs: list, rs: list, horizon: int, start: float, t0: float, arrival_s: float,
                 first_s: float):
    """The run's steps priced on floats up to the one in flight at `arrival_s`: (times, active, ends,
    in_flight), in_flight None when the run ends before the arrival; None when more than
    PRICE_ONE_BY_ONE_MAX_STEPS steps would be needed. `first_s` is the first step's length: the block
    priced first reaches about two steps past the arrival at that length (steps lengthen as the context
    grows, little within a run), then blocks of PRICE_BLOCK_STEPS. The same numbers as the vectorised pricing: `steps_s` gives decode_step_times_s's bits, and
    the running sum (accumulate) adds in np.cumsum's order."""
    ends = [t0]
    if start + t0 >= arrival_s:
        return [], [], ends, 0
    steps = min(horizon, PRICE_ONE_BY_ONE_MAX_STEPS)
    want = int((arrival_s - (start + t0)) / first_s) + 2 if first_s > 0 else steps
    times, active = [], []
    B, left, i, total = len(rs), sum(cs), 0, 0.0
    # Segments between finishes: the batch size is fixed within one, and in step i each running
    # sequence attends its cached tokens plus i + 1.
    for last, c in sorted(zip(rs, cs)):  # (steps it runs, tokens cached before them), fewest steps first
        stop = last if last < steps else steps
        while i < stop:
            count = want - i if want - i > PRICE_BLOCK_STEPS else PRICE_BLOCK_STEPS
            if count > stop - i:
                count = stop - i
            block = steps_s(B, left + B * (i + 1), count)
            sums = list(accumulate(block, initial=total))  # the running sum, step by step
            total = sums[-1]
            del sums[0]
            block_ends = [x + t0 for x in sums]
            times += block
            if start + block_ends[-1] >= arrival_s:  # the step in flight then is in this block: the first
                k = count - 1  # that ends at or after it (searchsorted's, as _cut_short)
                while k and start + block_ends[k - 1] >= arrival_s:
                    k -= 1
                del times[i + k + 1:]
                ends += block_ends[:k + 1]
                active += [B] * (k + 1)
                return times, active, ends, i + k + 1
            ends += block_ends
            active += [B] * count
            i += count
        if stop == steps:
            break
        left -= c
        B -= 1
    return (times, active, ends, None) if len(times) == horizon else None
