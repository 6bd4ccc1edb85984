"""One replica's engine loop: a SimPy process that asks its scheduler for a step, prices
it with the cost model, lets simulated time pass, and applies the outcome.

Hot path by design: one SimPy event per scheduling decision, never one per token.
After the planned step, plain decode steps (no prefill, no admission possible) are
fast-forwarded in bulk (sim/fast_forward.py prices the run): their batch sizes and
context lengths are known in closed form (every running sequence adds one token per step
and leaves when its output is complete), so a whole run of steps is priced with one
vectorised cost-model call.
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
from .clock import call_soon, sleep
from .cost_model import CostModel
from .step_features import step_feature_sums, step_feature_values
from .engine_small import execute_small, fits, small_steps
from .fast_forward import MAX_HORIZON, MIN_HORIZON, index, plan_fast_forward, replay_kv
from .kv_cache import SMALL, KVCache
from .open_run import open_general, opens_general, step_in_flight
from .requests import RequestTable
from .schedulers import ContinuousScheduler, StepPlan, Wait
from .speculative import Speculation
from .steplog import StepLog, TokenLog, log_steps

if TYPE_CHECKING:
    from .simulation import Simulation

IDLE, BUSY, FAST_FORWARD = "idle", "busy", "fast_forward"
_NONE = np.empty(0)


_INF = np.full(1024, np.inf)
_INF.flags.writeable = False


def _inf(n: int) -> np.ndarray:
    """np.full(n, np.inf), copied from a shared array where it fits."""
    return _INF[:n].copy() if n <= len(_INF) else np.full(n, np.inf)


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
        self.response_latency_s = float(cost.response_latency_s)  # first_token_s / finish_s: when the client reads them
        # and per prompt token of the request (tokenisation; 0: the constant alone, the same bits as before)
        self.latency_per_prompt_token_s = float(getattr(cost, "response_latency_per_prompt_token_s", 0.0))
        # Decode steps priced on plain floats, where the cost model has that form (sim/engine_small.py).
        self.decode_steps_s = cost.decode_steps_scalar() if hasattr(cost, "decode_steps_scalar") else None
        self.spec = speculation
        self.decode_lookahead = speculation.k if speculation else 0
        self.running = RunningBatch(batch_capacity)
        self._outstanding = 0  # requests routed here and not yet retired by the engine loop
        self.board = sim.board  # the router's copy of `outstanding` (sim/router.py), with two or more replicas
        self._finishing_s: list[float] | np.ndarray = _NONE  # per running slot: finish time (s) planned in the run now in flight
        self.state = IDLE
        self.busy_s = 0.0
        self.preempted_any = False  # has any sequence here been preempted (and may resume mid-output)?
        self._wake: simpy.Event | None = None
        self.ff_horizon_steps = MIN_HORIZON
        self._run_start_s, self._run_ends, self._run_steps_done = 0.0, _NONE, 0  # the interruptible run in flight
        self._open_run = None  # that run, while priced only up to the next arrival (sim/open_run.py)
        # engine.async_admission_lag: when the last step started (None: the engine was idle before this decision)
        self.admission_lag = False
        self.last_step_start_s: float | None = None
        self.record_timeseries = record_timeseries
        self.ts_time_s, self.ts_waiting, self.ts_running, self.ts_kv_blocks = (array("d"), array("l"), array("l"), array("l"))
        self.itl = sim.itl  # shared inter-token-latency histogram
        self.step_log = StepLog() if sim.record_steps else None  # a Chrome trace's steps (sim/steplog.py)
        self.token_log = TokenLog() if sim.record_token_times else None  # real per-chunk times
        self.small_steps = small_steps(self)  # may sim/engine_small.py run its steps (with few sequences)?
        # May a small step take the next decision's KV blocks for the continuous scheduler's list path?
        self.takes_next_blocks = type(scheduler) is ContinuousScheduler and scheduler.max_tokens >= SMALL
        self.process = self.env.process(self._loop())

    @property
    def outstanding(self) -> int:
        """Requests routed here and not finished by now (waiting + running): what the router's board keeps
        for it as things happen (sim/router.py; tests/test_open_run.py checks they agree at every arrival)."""
        f = self._finishing_s
        now = self.env.now
        return self._outstanding - sum(1 for x in (f.tolist() if type(f) is np.ndarray else f) if x <= now)

    # --- mechanisms the scheduler calls -------------------------------------
    @property
    def now(self) -> float:
        return self.env.now

    def tokens_known(self, req: int) -> int:
        """Prompt + tokens generated so far: what a (re)started request must prefill."""
        t = self.table
        return t.prompt_tokens.item(req) + t.generated.item(req)  # .item: plain ints, no numpy scalars

    def admit(self, req: int, chunk: int, cached: int = 0) -> int:
        """Start `req` with `cached` tokens found in the prefix cache and `chunk` to compute now."""
        t = self.table
        if math.isnan(t.scheduled_s.item(req)):
            t.scheduled_s[req] = self.env._now
            t.prefix_hit_tokens[req] = cached
            self.sim.queued -= 1
        prompt = t.prompt_tokens.item(req)
        return self.running.add(req, prompt, t.output_tokens.item(req), prompt + t.generated.item(req),
                                t.priority.item(req), chunk, computed=cached)

    def preempt(self, slot: int) -> int:
        """Preemption by recompute: free the sequence's KV; it must prefill again later."""
        b = self.running
        req = int(b.req[slot])
        self.table.generated[req] = b.num_tokens[slot] - b.prompt[slot]
        self.table.preemptions[req] += 1
        self.preempted_any = True
        # A running sequence emitted its last token when the previous step ended, i.e. now.
        self.table.last_token_s[req] = self.env.now
        self.kv.free(req)
        keep = np.ones(b.n, dtype=bool)
        keep[slot] = False
        b.remove(keep)
        return req

    # --- arrivals ------------------------------------------------------------
    def submit(self, req: int) -> None:
        self.table.replica[req] = self.index
        self._outstanding += 1
        if self.board is not None:
            self.board.load[self.index] += 1
        self.scheduler.add(self, req)
        if self.state == IDLE:
            if self._wake is not None and not self._wake.triggered:
                self._wake.succeed()
        elif self.state == FAST_FORWARD and self.scheduler.should_interrupt(self, req):
            self.state = BUSY
            if self._open_run is not None:
                self._open_run.close()
            # Cut the run short at the end of the step in flight. Scheduled exactly as SimPy schedules
            # an interrupt (an urgent event now), so every event keeps its order; but the engine
            # is re-pointed at its new wake-up instead of having an exception thrown into it.
            call_soon(self.env, self._cut_short)

    def _cut_short(self, _event) -> None:
        """Wake the engine when the step in flight ends instead of when its fast-forward would."""
        env, proc = self.env, self.process
        # Compare absolute times, computed as SimPy computed the timeout's (start + delay): a cut at
        # the very instant the run ends has now == start + ends[-1] exactly, while now - start can
        # exceed ends[-1] by an ulp (and gave a negative delay).
        ends, start, now = self._run_ends, self._run_start_s, env.now
        if type(ends) is list:  # priced on floats (sim/open_run.py): the same search
            i, in_flight_end_s = step_in_flight(ends, start, now)
        else:
            ends_at = start + ends
            i = min(int(ends_at.searchsorted(now, side="left")), len(ends_at) - 1)  # step in flight ends at ends[i]
            in_flight_end_s = float(ends_at[i])
        self._run_steps_done = i + 1
        wake = sleep(env, max(in_flight_end_s - now, 0.0))
        proc._target.callbacks.remove(proc._resume)
        proc._target = wake
        wake.callbacks.append(proc._resume)

    def note_last_step(self, start: float, ends, steps_done: int) -> None:
        """engine.async_admission_lag: when the last of the `steps_done` steps of a run from `start` began
        (ends[k]: when step k ended, after `start`; step 0 began at `start`)."""
        self.last_step_start_s = start + (float(ends[steps_done - 2]) if steps_done >= 2 else 0.0)

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
            action = self.scheduler.schedule(self)
            self._record()  # after scheduling: KV blocks now include this step's allocation
            if action is None or isinstance(action, Wait):
                self.state = IDLE
                self._wake = env.event()
                if action is None:
                    yield self._wake
                else:
                    yield env.any_of([self._wake, env.timeout(max(action.until_s - env.now, 0.0))])
                self._wake = None
                self.last_step_start_s = None
                continue
            self.state = BUSY
            yield from (execute_small(self, action) if fits(self, action) else self._execute(action))

    def _execute(self, plan: StepPlan):
        env, b, t = self.env, self.running, self.table
        req_a, prompt_a, output_a, computed_a, num_tokens_a, _, chunk_a = b.forget_rows()  # arrays, written below
        start = env.now
        n = b.n
        reqs = req_a[:n]
        chunk, computed, num_tokens = chunk_a[:n], computed_a[:n], num_tokens_a[:n]
        output, prompt = output_a[:n], prompt_a[:n]
        generated = num_tokens - prompt
        todo = num_tokens - computed
        completes = chunk == todo  # the step reaches the last known token: it samples the next one
        decode = completes & (todo == 1)
        n_decode = int(np.count_nonzero(decode))
        n_completes = int(np.count_nonzero(completes))

        # ---- step 0: the scheduled step -----------------------------------
        spec = self.spec
        if n_decode == n and spec is None and not plan.padded:
            # Every sequence decodes one token (the common step): chunk 1, one sample, attending its
            # context + 1, so the features are sums of `computed` alone (step_feature_values' integers).
            ctx = sum(computed.tolist()) + n
            t0 = self.cost.step_time_s(n, n, ctx, ctx, n)
            computed_1 = computed + 1
            num_tokens_1 = num_tokens + 1
            remaining_1 = output - generated
            remaining_1 -= 1
        elif spec is None and not plan.padded and n <= SMALL:
            # Prefill chunks and decodes, no drafts, a few slots: the step's features as plain integer sums.
            new_tokens, pairs, kv_read_tokens = step_feature_sums(chunk.tolist(), computed.tolist())
            t0 = self.cost.step_time_s(new_tokens, n_completes, pairs, kv_read_tokens, int(np.count_nonzero(chunk)))
            computed_1 = computed + chunk
            num_tokens_1 = num_tokens + completes
            remaining_1 = output - generated
            remaining_1 -= completes
        else:
            t0, computed_1, num_tokens_1, remaining_1 = self._step_zero(plan, n_decode, decode, completes, chunk,
                                                                        computed, num_tokens, output, generated)
        finished_0 = remaining_1 == 0
        n_finished_0 = int(np.count_nonzero(finished_0))

        # ---- fast-forward: plain decode steps ------------------------------
        ff = run = None
        closed_loop_reply = self.sim.closed_loop and not plan.padded and n_finished_0 > 0  # its client acts now
        # "until_completion": waiting requests wait for a sequence to finish; one finishing in step 0
        # frees its slot and blocks for the very next step, so the scheduler decides again.
        freed_for_waiting = plan.follow == "until_completion" and n_finished_0 > 0
        if (plan.follow != "none" and n_completes == n and n_finished_0 < n and not closed_loop_reply
                and not freed_for_waiting):
            follow = "until_completion" if self.sim.closed_loop else plan.follow  # clients react to each response
            if plan.padded or not n_finished_0:  # every slot takes part
                slots, ff_args = index(0, n), (reqs, computed_1, remaining_1)
            else:
                slots = np.flatnonzero(~finished_0)
                ff_args = (reqs[slots], computed_1[slots], remaining_1[slots])
            if plan.interruptible and self.sim.next_arrival_s is not None and opens_general(self):
                ff, run = open_general(self, follow, slots, *ff_args, start, t0)  # sim/open_run.py
            else:
                cut_at = None
                if (spec is not None and plan.interruptible and self.sim.next_submit_s is not None
                        and not self.scheduler.num_waiting and self.step_log is None and self.token_log is None):
                    # The next request arrives at a known time and finds the queue empty, so it cuts the
                    # run short there (Scheduler.should_interrupt): price the run only that far.
                    cut_at = (start, t0, self.sim.next_submit_s)
                ff = plan_fast_forward(self, plan, follow, slots, *ff_args, cut_at=cut_at)
        # seconds after `start` each slot emits its last token
        finish_at = _inf(n)
        if n_finished_0:
            finish_at[finished_0] = t0
        if ff is None:
            ends = np.array([t0])
        else:
            ends = np.empty(len(ff.times) + 1)
            ends[0] = t0
            ff.times.cumsum(out=ends[1:])
            ends[1:] += t0
            within = ff.finish_step < len(ff.times)
            finish_at[ff.slots[within]] = ends[1 + ff.finish_step[within]]
        # Finishes inside the fast-forward happen at their own times, before the engine wakes: the router's
        # board counts them as they pass, so it sees the true load.
        if self.board is not None:
            self._finishing_s = start + finish_at  # per slot; inf where it does not finish in this run
            self.board.plan(self.index, self._outstanding, self._finishing_s)

        # ---- let time pass; an arrival may cut the fast-forward short ---------
        if run is not None:  # priced up to the next arrival: cut there, or priced on (sim/open_run.py)
            yield run.open()
            ff, ends = run.fast_forward(slots, ff_args[2])
            within = ff.finish_step < len(ff.times)
            finish_at[ff.slots[within]] = ends[1 + ff.finish_step[within]]
            steps_done = self._run_steps_done or len(ends)
        elif ff is not None and plan.interruptible:
            self.state = FAST_FORWARD
            self._run_start_s, self._run_ends, self._run_steps_done = start, ends, 0
            yield sleep(env, float(ends[-1]))
            steps_done = self._run_steps_done or len(ends)  # cut short (_cut_short), or step 0 + every fast-forward step
        else:
            yield sleep(env, float(ends[-1]))
            steps_done = len(ends)
        self.state = BUSY
        self.busy_s += float(ends[steps_done - 1])
        if self.admission_lag:
            self.note_last_step(start, ends, steps_done)
        if self.step_log is not None or self.token_log is not None:
            log_steps(self, start, ends, steps_done - 1, ff, reqs, chunk, decode, completes)

        # ---- apply step 0 ---------------------------------------------------
        if np.count_nonzero(generated) < n:  # someone had no token yet: those whose step 0 completed now have their first
            first = completes & (generated == 0)
            if np.count_nonzero(first):
                t.first_token_s[reqs[first]] = start + t0 + self.response_latency_s
                if self.latency_per_prompt_token_s:
                    t.first_token_s[reqs[first]] += self.latency_per_prompt_token_s * t.prompt_tokens[reqs[first]]
        if n_decode:
            self.itl.add_one(t0, n_decode)
        if n_completes > n_decode and self.preempted_any:
            resumed = completes & ~decode & (generated > 0)  # a preempted sequence's recompute finished
            if np.count_nonzero(resumed):
                gap = start + t0 - t.last_token_s[reqs[resumed]]
                self.itl.add(gap, np.ones(len(gap), dtype=np.int64))
        computed_a[:n] = computed_1
        num_tokens_a[:n] = num_tokens_1
        chunk_a[:n] = 0

        # ---- apply the fast-forward steps that happened ----------------------
        m = steps_done - 1
        if m > 0:
            emitted_ff = ff.emitted_after(m)
            if len(ff.slots) == n:  # every slot took part: slices, not fancy indexing
                computed_a[:n] += emitted_ff
                num_tokens_a[:n] += emitted_ff
            else:
                computed_a[ff.slots] += emitted_ff
                num_tokens_a[ff.slots] += emitted_ff
            self.itl.add(ff.times[:m], ff.active[:m])
            # Adapt how far ahead fast-forwards are priced to how far they usually get.
            self.ff_horizon_steps = (min(MAX_HORIZON, self.ff_horizon_steps * 2)
                                     if m == (ff.length if run is None else run.horizon)
                                     else max(MIN_HORIZON, 2 * m))

        if plan.padded:
            if ff is not None and m < len(ff.times):
                raise RuntimeError("a static batch was interrupted")
            finished = np.ones(n, dtype=bool)  # everybody leaves when the batch ends
        elif n_finished_0 or ff is not None:
            finished = finish_at <= ends[steps_done - 1]
        else:
            finished = None  # nobody finished in step 0 and no fast-forward was planned: nobody leaves
        self._finishing_s = _NONE
        replay = m > 0 and self.kv.tracks_block_order
        if replay:
            replay_kv(self, ff, m, computed_1, finished_0)
        if finished is not None and np.count_nonzero(finished):
            done_reqs = reqs[finished]
            done_s = start + finish_at[finished] + self.response_latency_s
            if self.latency_per_prompt_token_s:
                done_s = done_s + self.latency_per_prompt_token_s * t.prompt_tokens[done_reqs]
            t.finish_s[done_reqs] = done_s
            t.generated[done_reqs] = num_tokens_a[:n][finished] - prompt[finished]
            if not replay:
                self.kv.free_many(done_reqs)
            self._outstanding -= len(done_reqs)
            if self.board is not None:
                self.board.plan(self.index, self._outstanding, ())
            b.remove(~finished)
            self.sim.on_finish(done_s)
        elif self.board is not None:
            self.board.plan(self.index, self._outstanding, ())
        if m > 0 and b.n and not replay:
            # Blocks for the tokens the fast-forward computed, as vLLM took them step by step (the
            # look-ahead checked they fit). Taken now, before the next decision, so that decision
            # sees the pool as vLLM's would and does not hand them to someone else first.
            if not self.kv.allocate_many(req_a[:b.n], computed_a[:b.n]):
                raise RuntimeError("fast-forward outgrew the KV cache")  # steps_that_fit rules this out

    def _step_zero(self, plan: StepPlan, n_decode: int, decode: np.ndarray, completes: np.ndarray, chunk: np.ndarray,
                   computed: np.ndarray, num_tokens: np.ndarray, output: np.ndarray, generated: np.ndarray):
        """Step 0 in general (prefill chunks, speculative verifies, a padded batch): its seconds, and
        per slot the computed tokens, known tokens and tokens left to emit after it."""
        n, spec = len(chunk), self.spec
        emitted = completes.astype(np.int64)
        samples, chunk_cost = emitted, chunk
        if spec is not None and n_decode:
            # Decoding sequences verify k draft tokens (k+1 positions); 1..k+1 tokens come out.
            emitted = emitted.copy()
            emitted[decode] = spec.sample_tokens(n_decode)
            chunk_cost = np.where(decode, spec.k + 1, chunk)
            samples = np.where(decode, spec.k + 1, samples)
        ctx_cost = computed
        if plan.padded:
            # Padded static batch: every sequence costs as much as the longest.
            chunk_cost = np.full(n, chunk_cost.max())
            ctx_cost = np.full(n, computed.max())
        new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs = step_feature_values(chunk_cost, ctx_cost, samples)
        t0 = self.cost.step_time_s(new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs)
        if spec is not None:
            # The proposer runs over the step's tokens (prefill chunks too) and drafts for every
            # sequence that sampled; the rejection sampler reads the verified positions' logits.
            t0 += spec.step_extra_s(new_tokens, attn_pairs, kv_read_tokens, num_seqs,
                                    int(np.count_nonzero(completes)), int((computed + chunk)[completes].sum()),
                                    n_decode)
        if spec is not None:
            emitted = np.minimum(emitted, output - generated)  # a verify may accept past the end
            advance = np.where(decode, emitted, chunk)
        else:
            advance = chunk
        computed_1 = computed + advance
        num_tokens_1 = num_tokens + emitted
        remaining_1 = output - generated - emitted
        return t0, computed_1, num_tokens_1, remaining_1
