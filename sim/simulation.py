"""run(scenario) -> Results: build the replicas from a scenario, drive them with SimPy, collect records.

Data flow: Scenario -> Workload (arrays) -> Simulation (SimPy: arrivals process,
router, one engine process per replica) -> RequestTable + per-replica time series
-> Results (flat records). Metrics are computed from Results elsewhere (metrics.py).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import simpy

from .clock import sleep
from .cost_model import CostModel
from .cost_select import select_cost_model
from .engine import Replica
from .histogram import LogHistogram
from .kv_cache import KVCache
from .prefix_cache import prefix_cache_for
from .memory import MemoryPlan, plan_memory
from .requests import RequestTable
from .rng import stream
from .router import ROUTERS, LoadBoard
from .scenario import Scenario
from .schedulers import SCHEDULERS
from .speculative import Speculation
from .stability import stability
from .steplog import TokenTimes
from .workload import Workload, generate_workload

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.25  # wall seconds between progress calls (when a caller asks for them)
EVENTS_PER_CLOCK_READ = 256  # SimPy events between two reads of the wall clock while reporting progress

# on_progress(finished_requests, total_requests) -> False to stop the run (None or True: go on).
ProgressCallback = Callable[[int, int], "bool | None"]


class RunStopped(Exception):
    """The caller's progress callback asked the run to stop. A stopped run returns no Results:
    its percentiles would describe only the requests that happened to finish first."""

    def __init__(self, finished: int, total: int, sim_time_s: float):
        super().__init__(f"stopped after {finished:,} of {total:,} requests finished "
                         f"({sim_time_s:,.1f} s of simulated time); no results")
        self.finished, self.total, self.sim_time_s = finished, total, sim_time_s


TIMESERIES_COLUMNS = ("replica", "time_s", "waiting", "running", "kv_blocks_used")


@dataclass
class Results:
    """Everything a run produced. `requests` is one flat record per request (a DataFrame built from
    `table` on first use: pandas is imported only by a caller that wants frames)."""

    scenario: Scenario
    seed: int
    table: RequestTable  # the per-request arrays the run filled
    timeseries_columns: dict[str, np.ndarray]  # TIMESERIES_COLUMNS -> one array each, replica by replica
    itl: LogHistogram
    replica_busy_s: np.ndarray
    memory: MemoryPlan
    cost_model_name: str
    arrival_window_s: float  # time over which requests arrived
    end_s: float  # simulated time when the run ended
    stable: bool
    status: str  # "ok" or why the run is unstable
    offered_rate_per_s: float
    sustained_rate_per_s: float
    wall_s: float
    notes: list[str] = field(default_factory=list)
    cost_model_accuracy: str = ""  # how far runs priced like this were from measured ones (sim/accuracy.py)
    steps: pd.DataFrame | None = None  # run(record_steps=True): replica, start_s, duration_s, num_seqs, prefill/decode tokens
    token_times: TokenTimes | None = None  # run(record_token_times=True): each request's chunk times

    @property
    def num_gpus(self) -> int:
        return self.scenario.num_gpus

    @cached_property
    def requests(self) -> "pd.DataFrame":
        return self.table.to_frame()

    @cached_property
    def timeseries(self) -> "pd.DataFrame":
        """replica, time_s, waiting, running, kv_blocks_used: one row per scheduling decision."""
        import pandas as pd

        return pd.DataFrame(self.timeseries_columns)


def build_cost_model(scenario: Scenario) -> tuple[CostModel, str, int | None]:
    """The scenario's cost model, a short description, and a measured KV block count if the profile has one
    (sim/cost_select.py decides; this keeps the three-value form its callers use)."""
    choice = select_cost_model(scenario)
    return choice.cost, choice.name, choice.num_kv_blocks


def build_memory(scenario: Scenario, measured_blocks: int | None = None) -> MemoryPlan:
    s = scenario.serving
    sched = s.scheduler
    return plan_memory(model=scenario.model_spec, gpu=scenario.gpu_spec, tp=s.tensor_parallel,
                       weight_dtype=s.quantization.weights, kv_dtype=s.quantization.kv_cache,
                       gpu_memory_utilization=scenario.gpu_memory_utilization, block_size_tokens=s.block_size_tokens,
                       max_num_batched_tokens=sched.max_num_batched_tokens, max_num_seqs=sched.max_num_seqs,
                       max_model_len=scenario.max_model_len, overhead_bytes=scenario.overhead_bytes,
                       draft=scenario.draft_spec,
                       draft_weight_bytes=scenario.drafter.own_weight_bytes if scenario.drafter else None,
                       num_kv_blocks_override=s.num_kv_blocks if s.num_kv_blocks is not None else measured_blocks)


class Simulation:
    """The SimPy world of one run: arrivals, router, replicas, and the stop rules."""

    def __init__(self, scenario: Scenario, workload: Workload, seed: int, cost_model: CostModel | None = None,
                 record_steps: bool = False, record_token_times: bool = False):
        self.scenario = scenario
        self.record_steps = record_steps  # every step of every replica (a Chrome trace; sim/steplog.py)
        self.record_token_times = record_token_times  # when each request received tokens (real ITLs)
        self.seed = seed
        self.workload = workload
        self.env = simpy.Environment()
        self.table = RequestTable(workload)
        self.itl = LogHistogram()
        self.queued = 0  # arrived, never yet scheduled (the backlog)
        self.completed = 0
        self.next_req = 0  # closed loop: next request id to hand to a client
        self.aborted_reason: str | None = None
        s = scenario.serving
        choice = select_cost_model(scenario)
        self.cost, self.cost_name, measured_blocks = choice.cost, choice.name, choice.num_kv_blocks
        self.cost_accuracy = choice.accuracy
        self.notes: list[str] = list(choice.notes)  # what the run's report lists under "note:"
        if cost_model is not None:  # a caller's own step pricing (e.g. a fit trying candidate terms)
            self.cost, self.cost_name = cost_model, f"{type(cost_model).__name__} given by the caller"
            self.cost_accuracy = ""
        self.memory = build_memory(scenario, measured_blocks)
        n = len(workload)
        # A request whose prompt + output exceeds max_model_len fails on arrival, as vLLM's server
        # refuses it (HTTP 400); it is counted as failed and the run goes on.
        self.too_long = (workload.prompt_tokens + workload.output_tokens) > scenario.max_model_len
        self._any_too_long = bool(self.too_long.any())
        self._num_requests = n
        if self._any_too_long:
            longest = int((workload.prompt_tokens + workload.output_tokens).max())
            self.notes.append(f"{int(self.too_long.sum())} request(s) need more than serving.max_model_len = "
                              f"{scenario.max_model_len} tokens (prompt + output, up to {longest}); they fail on "
                              f"arrival, as vLLM refuses them")
        drafter = scenario.drafter
        sched_cfg = s.scheduler
        capacity = max(sched_cfg.max_num_seqs, sched_cfg.batch_size, 1)
        self.replicas = []
        # What least_outstanding reads, kept as runs are planned and requests routed and retired (sim/router.py).
        self.board = LoadBoard(s.replicas) if s.replicas > 1 and s.router == "least_outstanding" else None
        for i in range(s.replicas):
            spec = None
            if s.speculative is not None:
                spec = Speculation(s.speculative, drafter, scenario.gpu_spec, s.tensor_parallel,
                                   s.quantization.kv_cache, scenario.model_spec.vocab_size,
                                   stream(seed, "acceptance", i))
            if s.enable_prefix_caching:
                kv = prefix_cache_for(workload, self.memory.num_kv_blocks, s.block_size_tokens)
            else:
                kv = KVCache(self.memory.num_kv_blocks, s.block_size_tokens, n)
            self.replicas.append(Replica(i, self, SCHEDULERS[sched_cfg.policy](sched_cfg), kv, self.cost, spec,
                                         capacity, scenario.sim.record_timeseries))
        if scenario.engine.async_admission_lag:  # continuous and priority only (Scenario.validate)
            for rep in self.replicas:
                rep.admission_lag = rep.scheduler.lag = True
        self.route = ROUTERS[s.router](self.board)
        total_seqs = s.replicas * (sched_cfg.max_num_seqs if sched_cfg.policy in ("continuous", "priority")
                                   else sched_cfg.batch_size)
        self.max_queue = scenario.sim.max_queue_requests or max(2000, 8 * total_seqs)
        window = workload.duration_s if np.isfinite(workload.duration_s) else 0.0
        self.max_time_s = scenario.sim.max_sim_time_s or (20.0 * window + 3600.0)
        self.done = self.env.event()
        self.closed_loop = workload.concurrency is not None
        # Client -> engine delay per request (random, its own stream; none when the cost model has none).
        self.jitter_s = float(getattr(self.cost, "request_jitter_s", 0.0))
        self._jitter_rng = stream(seed, "request_jitter") if self.jitter_s > 0 else None
        self._jitter_left: list[float] = []  # drawn in blocks (the same numbers, in the same order), last first
        # When the next request reaches a replica, while known in advance (open loop, no ingress jitter, one
        # replica, the request not refused), else None: the engine ends a run there (sim/engine_small.py).
        self.next_submit_s: float | None = None
        # engine.api_server_per_request_s: the API server between client and engine (_reach_server).
        self.api_server_s = float(scenario.engine.api_server_per_request_s or 0.0)
        self._server_busy_until = -math.inf  # when the API server has handed over every request it has
        self._server_batch: list[int] = []  # requests it took while busy: handed over together
        arrivals_known = not self.closed_loop and self._jitter_rng is None and not self.api_server_s
        self._submits_foreseeable = arrivals_known and s.replicas == 1
        # The next arrival's time (any replica's; None when not known): runs are priced up to it and, when it
        # goes elsewhere or does not cut the run, on to the next (sim/open_run.py's OpenRun, listed while open).
        # With one replica the small step ends its runs at next_submit_s instead; the general step opens runs.
        self.next_arrival_s: float | None = None
        self.open_runs: list | None = [] if arrivals_known else None
        self.small_step_opens_runs = arrivals_known and s.replicas > 1

    # --- arrivals ------------------------------------------------------------
    def _issue(self, req: int) -> None:
        """The client sends request `req` now; the engine sees it now or after its ingress delay."""
        self.table.arrival_s[req] = self.env._now
        if self._any_too_long and self.too_long[req]:
            self.table.failed[req] = True
            # Its client hears the error at once; a zero delay keeps a run of failures from recursing.
            now = self.env.now
            self.env.timeout(0).callbacks.append(lambda _e: self.on_finish(np.array([now])))
            return
        self.queued += 1
        if self._jitter_rng is not None:
            if not self._jitter_left:
                self._jitter_left = self._jitter_rng.exponential(self.jitter_s, size=4096).tolist()[::-1]
            delay = self._jitter_left.pop()
            self.env.timeout(delay).callbacks.append(lambda _e, r=req: self._reach_server(r))
        else:
            self._reach_server(req)

    def _reach_server(self, req: int) -> None:
        """Request `req` reaches the API server (engine.api_server_per_request_s; 0: the engine, now). Found
        idle, the server takes it alone and hands it to the engine after api_server_s; found busy, it queues
        the request behind the others, api_server_s each, and hands over every request it took while busy
        together when it has none left."""
        if not self.api_server_s:
            self._submit(req)
            return
        now = self.env._now
        if self._server_busy_until <= now:
            self._server_busy_until = now + self.api_server_s
            self.env.timeout(self.api_server_s).callbacks.append(lambda _e, r=req: self._submit(r))
            return
        self._server_busy_until += self.api_server_s
        self._server_batch.append(req)
        until = self._server_busy_until
        self.env.timeout(until - now).callbacks.append(lambda _e, u=until: self._hand_over(u))

    def _hand_over(self, until: float) -> None:
        """The API server's work ends at `until`, unless more requests came since: hand its batch to the engine."""
        if until == self._server_busy_until and self._server_batch:
            batch, self._server_batch = self._server_batch, []
            for req in batch:
                self._submit(req)

    def _submit(self, req: int) -> None:
        self.replicas[self.route(self.replicas, req)].submit(req)
        if self.queued > self.max_queue and self.aborted_reason is None:
            self.aborted_reason = (f"backlog reached {self.queued} waiting requests "
                                   f"(sim.max_queue_requests = {self.max_queue})")
            if not self.done.triggered:
                self.done.succeed()

    def _open_loop(self):
        # Read as floats before _issue overwrites them: SimPy's clock then stays a float, not a numpy scalar
        # (whose arithmetic and comparisons, in every event and time sum, cost several times more).
        arrivals = self.table.arrival_s.tolist()
        foreseeable, open_runs = self._submits_foreseeable, self.open_runs
        env, issue, too_long, any_too_long = self.env, self._issue, self.too_long, self._any_too_long
        for req in range(len(arrivals)):
            now = env._now
            delay = arrivals[req] - now
            if delay > 0:
                at = now + delay  # the timeout's own time, as SimPy computes it
                if foreseeable and not (any_too_long and too_long[req]):
                    self.next_submit_s = at
                if open_runs is not None:
                    self.next_arrival_s = at
                    for run in open_runs[::-1]:  # (a run that reaches its horizon leaves the list)
                        run.extend(at)
                yield sleep(env, delay)
                self.next_submit_s = None
            if self.aborted_reason is not None:
                return
            issue(req)
        if open_runs is not None:  # no more arrivals: the open runs go to their horizons
            self.next_arrival_s = None
            for run in open_runs[::-1]:
                run.extend(float("inf"))

    def start_spread_s(self) -> float:
        """Closed loop: the window over which the clients send their first request (Workload.start_spread_s;
        None: one request's expected duration at full concurrency, from the cost model)."""
        w = self.workload
        if w.start_spread_s is not None:
            return float(w.start_spread_s)
        c = min(w.concurrency, len(w))
        P, O = float(np.mean(w.prompt_tokens)), float(np.mean(w.output_tokens))
        ctx = int(c * (P + O / 2))
        prefill = self.cost.step_time_s(int(P), 1, int(P * (P + 1) / 2), int(P), 1)
        decode = self.cost.step_time_s(c, c, ctx, ctx, c)
        return float(prefill + (O - 1) * decode + w.think_time_s)

    def _closed_loop(self):
        # Each client has one request in flight; a response (plus think time) triggers its next request.
        # Clients start out of phase: first sends uniform over the start spread (its own stream), in order.
        n = min(self.workload.concurrency, len(self.table))
        spread = self.start_spread_s()
        starts = np.sort(stream(self.seed, "client_start").uniform(0.0, spread, n)) if spread > 0 else np.zeros(n)
        for k in range(n):
            if starts[k] > self.env.now:
                yield self.env.timeout(starts[k] - self.env.now)
            # Early clients' follow-ups may already have taken the last requests: a late client then has none.
            if self.aborted_reason is not None or self.next_req >= len(self.table):
                return
            self._issue(self.next_req)
            self.next_req += 1
        yield self.env.timeout(0)

    def on_finish(self, finish_s: np.ndarray | list[float]) -> None:
        """The engine retired requests whose clients read their last token at `finish_s` (now, plus the
        cost model's response latency)."""
        self.completed += len(finish_s)
        if self.closed_loop:
            # Each finished client sends its next request after its think time. Continuous
            # batching wakes at every completion in closed loop, so finish == now there; a
            # static batch retires its members when the batch ends (a documented lag).
            for f in finish_s[: len(self.table) - self.next_req]:
                req = self.next_req
                self.next_req += 1
                delay = max(float(f) + self.workload.think_time_s - self.env.now, 0.0)
                if delay > 0:
                    self.env.timeout(delay).callbacks.append(lambda _e, r=req: self._issue(r))
                else:
                    self._issue(req)
        if self.completed == self._num_requests and not self.done.triggered:
            self.done.succeed()

    def _watchdog(self):
        yield self.env.timeout(self.max_time_s)
        if not self.done.triggered:
            self.aborted_reason = f"simulated time reached sim.max_sim_time_s = {self.max_time_s:.0f} s"
            self.done.succeed()

    def run(self, on_progress: ProgressCallback | None = None, every_s: float = PROGRESS_EVERY_S) -> None:
        """Simulate until every request finished or a stop rule fired; with `on_progress`, call it
        about every `every_s` wall seconds with (finished, total) requests (RunStopped if it says False)."""
        if len(self.table) == 0:
            return
        self.env.process(self._closed_loop() if self.workload.concurrency is not None else self._open_loop())
        self.env.process(self._watchdog())
        if on_progress is None:
            self.env.run(until=self.done)  # the plain loop: no per-event cost for progress
        else:
            self._run_reporting(on_progress, every_s)

    def _run_reporting(self, on_progress: ProgressCallback, every_s: float) -> None:
        """env.run(until=self.done), one event at a time, with a look at the wall clock every
        EVENTS_PER_CLOCK_READ events. Same events in the same order: the numbers do not change."""
        env, done, total = self.env, self.done, len(self.table)
        due = time.perf_counter() + every_s
        events = 0
        try:
            while not done.processed:
                env.step()
                events += 1
                if events % EVENTS_PER_CLOCK_READ == 0 and time.perf_counter() >= due:
                    if on_progress(self.completed, total) is False:
                        raise RunStopped(self.completed, total, float(env.now))
                    due = time.perf_counter() + every_s
        except simpy.core.EmptySchedule:  # as env.run(until=...) reports it
            raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {done}') from None


def run(scenario: Scenario, seed: int | None = None, workload: Workload | None = None,
        cost_model: CostModel | None = None, record_steps: bool = False, record_token_times: bool = False,
        on_progress: ProgressCallback | None = None, progress_every_s: float = PROGRESS_EVERY_S) -> Results:
    """Simulate `scenario` (with `seed`, default the scenario's) and return its records; `workload`
    and `cost_model`, when given, replace the scenario's (memory and KV capacity still come from it).
    `record_steps` keeps every engine step (`Results.steps`), `record_token_times` when each request
    received tokens (`Results.token_times`); neither changes a simulated number.

    `on_progress(finished, total)` is called about every `progress_every_s` wall seconds; when it
    returns False the run stops and raises RunStopped (no partial Results). Without it the run
    is the plain SimPy loop, and with it the numbers are the same."""
    seed = scenario.seed if seed is None else int(seed)
    wall0 = time.perf_counter()
    if workload is None:
        base = Path(scenario.base_dir) if scenario.base_dir else None
        workload = generate_workload(scenario.workload, seed, base)
    sim = Simulation(scenario, workload, seed, cost_model, record_steps, record_token_times)
    sim.run(on_progress, progress_every_s)
    table = sim.table
    end_s = float(sim.env.now)
    window = workload.duration_s if np.isfinite(workload.duration_s) else end_s
    stable, status, offered, sustained = stability(table, window, end_s, sim.aborted_reason, workload.concurrency)
    reps = sim.replicas
    ts = {"replica": np.repeat(np.array([r.index for r in reps], dtype=np.int64), [len(r.ts_time_s) for r in reps]),
          "time_s": np.concatenate([np.frombuffer(r.ts_time_s, dtype=np.float64) for r in reps]),
          "waiting": np.concatenate([np.asarray(r.ts_waiting, dtype=np.int64) for r in reps]),
          "running": np.concatenate([np.asarray(r.ts_running, dtype=np.int64) for r in reps]),
          "kv_blocks_used": np.concatenate([np.asarray(r.ts_kv_blocks, dtype=np.int64) for r in reps])}
    sim.itl.flush()
    results = Results(scenario=scenario, seed=seed, table=table, timeseries_columns=ts, itl=sim.itl,
                      replica_busy_s=np.array([r.busy_s for r in sim.replicas]), memory=sim.memory,
                      cost_model_name=sim.cost_name, arrival_window_s=float(window), end_s=end_s, stable=stable,
                      status=status, offered_rate_per_s=offered, sustained_rate_per_s=sustained,
                      wall_s=time.perf_counter() - wall0, notes=list(workload.notes) + sim.notes,
                      cost_model_accuracy=sim.cost_accuracy)
    if record_steps:
        import pandas as pd

        results.steps = pd.concat([r.step_log.frame(r.index) for r in sim.replicas], ignore_index=True)
    if record_token_times:
        results.token_times = TokenTimes.gather([r.token_log for r in sim.replicas], len(workload),
                                                float(sim.cost.response_latency_s),
                                                float(getattr(sim.cost, "response_latency_per_prompt_token_s", 0.0)),
                                                sim.table.prompt_tokens)
    _log_run(results, len(workload))
    return results


def _log_run(results: Results, num_requests: int) -> None:
    """The run's notes as log records (a note that starts with WARNING as a warning), and what ran."""
    for note in results.notes:
        if note.startswith("WARNING"):
            log.warning("%s", note.removeprefix("WARNING:").strip())
        else:
            log.info("%s", note)
    if not results.stable:
        log.info("%s: %s", results.scenario.name, results.status)
    log.debug("%s (seed %d): %d requests, %.1f s simulated in %.2f s wall; cost model %s; %d KV blocks per replica",
              results.scenario.name, results.seed, num_requests, results.end_s, results.wall_s,
              results.cost_model_name, results.memory.num_kv_blocks)
