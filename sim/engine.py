"""One replica's engine loop: a SimPy process that asks its scheduler for a step, prices
it with the cost model, lets simulated time pass, and applies the outcome.

Hot path by design: one SimPy event per scheduling decision, never one per token.
After the planned step, plain decode steps (no prefill, no admission possible) are
fast-forwarded in bulk: their batch sizes and context lengths are known in closed
form (every running sequence adds one token per step and leaves when its output is
complete), so a whole run of steps is priced with one vectorised cost-model call.
An arrival that could join the batch interrupts the fast-forward; the step in flight
completes and the scheduler decides again, exactly at a step boundary as in vLLM.
"""
from __future__ import annotations

import math
from array import array
from typing import TYPE_CHECKING

import numpy as np
import simpy

from .batch import RunningBatch
from .cost_model import CostModel, step_features
from .kv_cache import KVCache
from .requests import RequestTable
from .schedulers import StepPlan, Wait
from .speculative import Speculation

if TYPE_CHECKING:
    from .simulation import Simulation

IDLE, BUSY, FAST_FORWARD = "idle", "busy", "fast_forward"
MIN_HORIZON, MAX_HORIZON = 16, 4096


class Replica:
    def __init__(self, index: int, sim: "Simulation", scheduler, kv: KVCache, cost: CostModel,
                 speculation: Speculation | None, batch_capacity: int, record_timeseries: bool):
        self.index = index
        self.sim = sim
        self.env: simpy.Environment = sim.env
        self.table: RequestTable = sim.table
        self.scheduler = scheduler
        self.kv = kv
        self.cost = cost
        self.spec = speculation
        self.decode_lookahead = speculation.k if speculation else 0
        self.running = RunningBatch(batch_capacity)
        self.outstanding = 0  # requests routed here and not finished (waiting + running)
        self.state = IDLE
        self.busy_s = 0.0
        self._wake: simpy.Event | None = None
        self._horizon = 64
        self.record_timeseries = record_timeseries
        self.ts_time_s, self.ts_waiting, self.ts_running, self.ts_kv_blocks = (array("d"), array("l"), array("l"), array("l"))
        self.itl = sim.itl  # shared inter-token-latency histogram
        self.process = self.env.process(self._loop())

    # --- mechanisms the scheduler calls -------------------------------------
    @property
    def now(self) -> float:
        return self.env.now

    def tokens_known(self, req: int) -> int:
        """Prompt + tokens generated so far: what a (re)started request must prefill."""
        return int(self.table.prompt_tokens[req] + self.table.generated[req])

    def admit(self, req: int, chunk: int) -> int:
        t = self.table
        if math.isnan(t.scheduled_s[req]):
            t.scheduled_s[req] = self.env.now
            self.sim.queued -= 1
        return self.running.add(req, int(t.prompt_tokens[req]), int(t.output_tokens[req]), self.tokens_known(req),
                                int(t.priority[req]), chunk)

    def preempt(self, slot: int) -> int:
        """Preemption by recompute: free the sequence's KV; it must prefill again later."""
        b = self.running
        req = int(b.req[slot])
        self.table.generated[req] = b.num_tokens[slot] - b.prompt[slot]
        self.table.preemptions[req] += 1
        self.kv.free(req)
        keep = np.ones(b.n, dtype=bool)
        keep[slot] = False
        b.remove(keep)
        return req

    # --- arrivals ------------------------------------------------------------
    def submit(self, req: int) -> None:
        self.table.replica[req] = self.index
        self.outstanding += 1
        self.scheduler.add(self, req)
        if self.state == IDLE:
            if self._wake is not None and not self._wake.triggered:
                self._wake.succeed()
        elif self.state == FAST_FORWARD and self.scheduler.should_interrupt(self, req):
            self.state = BUSY
            self.process.interrupt()

    # --- the loop ------------------------------------------------------------
    def _record(self) -> None:
        if self.record_timeseries:
            self.ts_time_s.append(self.env.now)
            self.ts_waiting.append(self.scheduler.num_waiting)
            self.ts_running.append(self.running.n)
            self.ts_kv_blocks.append(self.kv.num_used_blocks)

    def _loop(self):
        env = self.env
        while True:
            self._record()
            action = self.scheduler.schedule(self)
            if action is None or isinstance(action, Wait):
                self.state = IDLE
                self._wake = env.event()
                if action is None:
                    yield self._wake
                else:
                    yield env.any_of([self._wake, env.timeout(max(action.until_s - env.now, 0.0))])
                self._wake = None
                continue
            self.state = BUSY
            yield from self._execute(action)

    def _execute(self, plan: StepPlan):
        env, b = self.env, self.running
        start = env.now
        n = b.n
        chunk = b.view("chunk").copy()
        computed = b.view("computed").copy()
        num_tokens = b.view("num_tokens").copy()
        output, prompt = b.view("output"), b.view("prompt")
        todo = num_tokens - computed
        is_decode = (todo == 1) & (chunk > 0)
        completes = (computed + chunk == num_tokens) & (chunk > 0)  # these sample a token this step

        # ---- step 0: the scheduled step -----------------------------------
        emitted = completes.astype(np.int64)
        advance = chunk.copy()
        samples = completes.astype(np.int64)
        if self.spec is not None and is_decode.any():
            # Decoding sequences verify k draft tokens (k+1 positions); 1..k+1 tokens come out.
            accepted = self.spec.sample_tokens(int(is_decode.sum()))
            emitted[is_decode] = accepted
            advance[is_decode] = accepted
            chunk_cost = np.where(is_decode, self.spec.k + 1, chunk)
            samples = np.where(is_decode, self.spec.k + 1, samples)
        else:
            chunk_cost = chunk
        if plan.padded:
            # Padded static batch: every sequence costs as much as the longest.
            sched = chunk > 0
            chunk_cost = np.where(sched, chunk_cost[sched].max(initial=0), 0)
            ctx_cost = np.where(sched, computed[sched].max(initial=0), 0)
        else:
            ctx_cost = computed
        f = step_features(chunk_cost, ctx_cost, samples)
        t0 = float(self.cost.step_times_s(f.new_tokens, f.sampled, f.attn_pairs, f.kv_read_tokens, f.num_seqs))
        if self.spec is not None and is_decode.any():
            t0 += self.spec.draft_time_s(int(is_decode.sum()), int((computed[is_decode] + 1).sum()))
        remaining_out = output - (num_tokens - prompt)  # tokens still to emit before step 0
        emitted = np.minimum(emitted, remaining_out)
        computed_1 = computed + advance
        num_tokens_1 = num_tokens + emitted
        remaining_1 = remaining_out - emitted
        finished_0 = (remaining_1 == 0) & (emitted > 0)

        # ---- fast-forward: plain decode steps ------------------------------
        alive = ~finished_0
        ff_ok = plan.follow != "none" and alive.any() and bool((num_tokens_1[alive] - computed_1[alive] == 1).all())
        if plan.padded:
            alive_slots = np.flatnonzero(alive | ~alive)  # padding keeps finished sequences in the batch
        else:
            alive_slots = np.flatnonzero(alive)
        ff = None
        if ff_ok:
            ff = self._plan_fast_forward(plan, alive_slots, computed_1, remaining_1)
        ends = np.array([t0]) if ff is None else np.concatenate([[t0], t0 + np.cumsum(ff["times"])])
        total = float(ends[-1])

        # ---- let time pass; an arrival may cut the fast-forward short ---------
        if ff is not None and plan.interruptible:
            self.state = FAST_FORWARD
        try:
            yield env.timeout(total)
            steps_done = len(ends)  # step 0 + every fast-forward step
        except simpy.Interrupt:
            elapsed = env.now - start
            i = int(np.searchsorted(ends, elapsed, side="left"))  # the step in flight ends at ends[i]
            i = min(i, len(ends) - 1)
            steps_done = i + 1
            yield env.timeout(float(ends[i]) - elapsed)
        self.state = BUSY
        self.busy_s += float(ends[steps_done - 1])

        # ---- apply step 0 ---------------------------------------------------
        t = self.table
        reqs = b.view("req")
        first = completes & (num_tokens - prompt == 0)
        t.first_token_s[reqs[first]] = start + t0
        itl_weight = int((is_decode & (emitted > 0)).sum())
        if itl_weight:
            self.itl.add(np.array([t0]), np.array([itl_weight]))
        finish_time = np.full(n, np.nan)
        finish_time[finished_0] = start + t0
        final_computed, final_tokens = computed_1, num_tokens_1

        # ---- apply the fast-forward steps that happened ----------------------
        m = steps_done - 1
        if ff is not None and m > 0:
            slots = ff["slots"]
            emitted_ff = ff["emitted_by_step"](m)  # tokens each slot emitted in the first m steps
            final_computed = computed_1.copy()
            final_tokens = num_tokens_1.copy()
            final_computed[slots] += emitted_ff
            final_tokens[slots] += emitted_ff
            done_step = ff["finish_step"]  # step index (0-based) at which each slot emits its last token
            done = done_step < m
            finish_time[slots[done]] = start + ends[1 + done_step[done]]
            active = ff["active"][:m]
            if active.any():
                self.itl.add(ff["times"][:m], active)
        b.computed[:n] = final_computed
        b.num_tokens[:n] = final_tokens
        b.chunk[:n] = 0

        finished = ~np.isnan(finish_time)
        if plan.padded and ff is not None and m < len(ff["times"]):
            raise RuntimeError("a static batch was interrupted")
        if plan.padded:
            # Static batch: everybody leaves when the batch ends (steps are never interrupted).
            finished = np.ones(n, dtype=bool)
        if finished.any():
            done_reqs = reqs[finished]
            t.finish_s[done_reqs] = finish_time[finished]
            t.generated[done_reqs] = final_tokens[finished] - prompt[finished]
            self.kv.free_many(done_reqs)
            self.outstanding -= len(done_reqs)
            b.remove(~finished)
            self.sim.on_finish(len(done_reqs))
        if not plan.padded and b.n:
            # Hold blocks for everything computed (the fast-forward checked they fit).
            if not self.kv.allocate_many(b.view("req"), b.view("computed")):
                raise RuntimeError("KV look-ahead admitted steps that do not fit")
        # Adapt how far ahead fast-forwards are priced to how far they usually get.
        if ff is not None:
            used, planned = m, len(ff["times"])
            self._horizon = min(MAX_HORIZON, self._horizon * 2) if used == planned else max(MIN_HORIZON, 2 * used)

    def _plan_fast_forward(self, plan: StepPlan, slots: np.ndarray, computed: np.ndarray, remaining: np.ndarray):
        """Price the run of plain decode steps that may follow step 0.

        Returns per-step times and, for the applying code, how many tokens each slot
        has emitted after m steps and at which step each slot finishes."""
        c = computed[slots]
        r = remaining[slots]
        real = r > 0  # padding slots (finished, static) have r == 0
        if self.spec is not None:
            return self._plan_speculative(plan, slots, c, r)
        r_steps = r  # one token per step
        if plan.padded:
            horizon = int(r.max())
        elif plan.follow == "until_completion":
            horizon = int(r[real].min())
        else:
            horizon = min(int(r.max()), self._horizon)
        if not plan.padded:
            reqs = self.running.req[slots]
            horizon = self.kv.steps_that_fit(reqs, c + 1, r_steps, 1, horizon)
        if horizon <= 0:
            return None
        steps = np.arange(horizon)
        if plan.padded:
            B = np.full(horizon, len(slots), dtype=np.int64)
            ctx = len(slots) * (int(c.max()) + steps + 1)
            active = (r[None, :] > steps[:, None]).sum(axis=1)
        else:
            order = np.argsort(r, kind="stable")
            r_sorted = r[order]
            c_prefix = np.concatenate([[0], np.cumsum(c[order])])
            gone = np.searchsorted(r_sorted, steps, side="right")  # slots finished before step i
            B = len(slots) - gone
            ctx = (c_prefix[-1] - c_prefix[gone]) + B * (steps + 1)
            active = B
        times = self.cost.step_times_s(B, B, ctx, ctx, B)
        finish_step = r - 1  # emits its last token in step r-1
        if plan.padded:
            finish_step = np.where(real, r - 1, -1)
        return {"times": np.asarray(times, dtype=np.float64), "slots": slots, "active": active,
                "finish_step": finish_step,
                "emitted_by_step": lambda m: np.minimum(r, m)}

    def _plan_speculative(self, plan: StepPlan, slots: np.ndarray, c: np.ndarray, r: np.ndarray):
        """Speculative decoding: each step emits a random 1..k+1 tokens per sequence."""
        k = self.spec.k
        if plan.follow == "until_completion":
            horizon = int(r.min())  # enough steps for the first to finish even at one token per step
        else:
            horizon = min(int(r.max()), self._horizon)
        reqs = self.running.req[slots]
        horizon = self.kv.steps_that_fit(reqs, c + 1 + k, r, k + 1, horizon)
        if horizon <= 0:
            return None
        acc = self.spec.sample_tokens((horizon, len(slots)))
        cum = np.cumsum(acc, axis=0)
        before = np.vstack([np.zeros((1, len(slots)), dtype=np.int64), cum[:-1]])
        active_m = before < r[None, :]
        if plan.follow == "until_completion":
            first_done = int(np.argmax((cum >= r[None, :]).any(axis=1))) if (cum >= r[None, :]).any() else horizon - 1
            horizon = first_done + 1
            active_m, cum, before = active_m[:horizon], cum[:horizon], before[:horizon]
        B = active_m.sum(axis=1)
        ctx = ((c[None, :] + before + 1) * active_m).sum(axis=1)
        times = self.cost.step_times_s(B * (k + 1), B * (k + 1), ctx * (k + 1), ctx, B) + self.spec.draft_times_s(B, ctx)
        keep = B > 0
        finished_by = cum >= r[None, :]
        finish_step = np.where(finished_by.any(axis=0), np.argmax(finished_by, axis=0), len(B) + 1)
        return {"times": np.where(keep, times, 0.0), "slots": slots, "active": B,
                "finish_step": finish_step,
                "emitted_by_step": lambda m: np.minimum(cum[m - 1], r)}
