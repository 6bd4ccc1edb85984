"""Run servesim's own engine (sim/engine.py: its scheduler, KV cache and fast-forward) on a
parity case and read back the same per-step trace the vLLM driver records.

Steps become seconds: every step costs exactly 1 s (`UnitStepCost`), so the engine's steps
start at whole seconds. A request arriving at step s is handed to the replica half a step
early (s - 0.5) when the engine is busy, so it waits for the step boundary at s as in vLLM;
when the engine is idle it is handed over at s, which wakes the engine at s. Steps the engine
fast-forwards (plain decode, no scheduler call) are rebuilt from the batch at the last
scheduling decision and the requests' finish times.
"""
from __future__ import annotations

import numpy as np

from sim.engine import IDLE
from sim.scenario import scenario_from_dict
from sim.simulation import Simulation
from sim.workload import Workload

from .trace import ParityCase, StepRecord


class UnitStepCost:
    """Every engine step takes 1 s, whatever it computes."""

    response_latency_s = 0.0

    def step_times_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs):
        return np.ones(np.broadcast(new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs).shape)

    def step_time_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> float:
        return 1.0

    def decode_step_times_s(self, num_seqs, context_tokens):
        return np.ones(np.shape(num_seqs))


def scenario_for(case: ParityCase):
    """A one-replica servesim scenario with the case's engine limits (model and GPU only size
    the KV pool, which `num_kv_blocks` overrides)."""
    policy = {"fcfs": "continuous", "priority": "priority"}[case.policy]
    return scenario_from_dict({
        "name": case.name or "parity",
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1.0}, "num_requests": 1,
                     "prompt_tokens": {"kind": "constant", "value": 1},
                     "output_tokens": {"kind": "constant", "value": 1}},
        "model": "llama-3.1-8b",
        "hardware": {"gpu": "a100-80gb-sxm"},
        "serving": {"replicas": 1, "max_model_len": case.max_model_len, "block_size_tokens": case.block_size,
                    "num_kv_blocks": case.num_blocks, "enable_prefix_caching": case.enable_prefix_caching,
                    "scheduler": {"policy": policy, "max_num_seqs": case.max_num_seqs,
                                  "max_num_batched_tokens": case.max_num_batched_tokens,
                                  "chunked_prefill": case.chunked_prefill}},
        "sim": {"record_timeseries": False},
    })


class _Snapshot:
    """The batch right after one scheduler call at step `step`."""

    def __init__(self, step, reqs, chunk, computed, admitted, preempted, kv_blocks, held, holders):
        self.step, self.reqs, self.chunk, self.computed = step, reqs, chunk, computed
        self.admitted, self.preempted, self.kv_blocks = admitted, preempted, kv_blocks
        self.held = held  # per request: blocks held
        self.holders = holders  # (requests holding some blocks, how many blocks)


class _RecordingScheduler:
    """Wraps the replica's scheduler; snapshots the batch after each decision."""

    def __init__(self, inner, replica):
        self.inner, self.replica = inner, replica
        self.snapshots: list[_Snapshot] = []
        self.preempted: list[int] = []

    @property
    def num_waiting(self) -> int:
        return self.inner.num_waiting

    def add(self, replica, req):
        self.inner.add(replica, req)

    def should_interrupt(self, replica, req):
        return self.inner.should_interrupt(replica, req)

    def schedule(self, replica):
        b = replica.running
        before = set(b.view("req").tolist())
        self.preempted = []
        plan = self.inner.schedule(replica)
        reqs = b.view("req").tolist()
        kv = replica.kv
        self.snapshots.append(_Snapshot(
            step=int(round(replica.now)), reqs=reqs, chunk=b.view("chunk").tolist(),
            computed=b.view("computed").tolist(),
            admitted=sorted(set(reqs) - before), preempted=sorted(self.preempted),
            kv_blocks=kv.num_used_blocks, held=[kv.held_blocks(r) for r in reqs],
            holders=kv.blocks_by_holders(b.view("req"))))
        return plan


def sim_trace(case: ParityCase) -> list[StepRecord]:
    """Run the case through servesim's engine; one record per step that did anything."""
    n = len(case.requests)
    steps = np.array([r.arrival_step for r in case.requests], dtype=np.float64)
    order = np.argsort(steps, kind="stable")
    if not np.array_equal(order, np.arange(n)):
        raise ValueError("parity case requests must be sorted by arrival step")
    workload = Workload(arrival_s=steps, prompt_tokens=np.array([r.prompt_tokens for r in case.requests]),
                        output_tokens=np.array([r.output_tokens for r in case.requests]),
                        priority=np.array([r.priority for r in case.requests]), priority_names={},
                        duration_s=float(steps.max(initial=0.0)),
                        prefix_group=np.array([r.prefix_group for r in case.requests], dtype=np.int64),
                        prefix_tokens=np.array([r.prefix_tokens for r in case.requests], dtype=np.int64))
    sim = Simulation(scenario_for(case), workload, seed=0, cost_model=UnitStepCost())
    replica = sim.replicas[0]
    recorder = _RecordingScheduler(replica.scheduler, replica)
    replica.scheduler = recorder
    preempt = replica.preempt

    def recording_preempt(slot):
        req = preempt(slot)
        recorder.preempted.append(req)
        return req
    replica.preempt = recording_preempt

    def arrivals():
        env = sim.env
        i = 0
        while i < n:
            s = case.requests[i].arrival_step
            if s - 0.5 > env.now:
                yield env.timeout(s - 0.5 - env.now)
            if replica.state == IDLE and s > env.now:
                yield env.timeout(s - env.now)  # an idle engine wakes at the arrival itself
            while i < n and case.requests[i].arrival_step == s:
                sim._issue(i)
                i += 1

    if n:
        sim.env.process(arrivals())
        sim.env.run(until=sim.done)
    return _records(case, recorder.snapshots, sim.table.finish_s, replica.kv.block_size_tokens)


def _records(case: ParityCase, snaps: list[_Snapshot], finish_s: np.ndarray, block_size: int) -> list[StepRecord]:
    finish_step = {i: int(round(f)) - 1 for i, f in enumerate(finish_s) if np.isfinite(f)}
    blocks = lambda tokens: -(-tokens // block_size)
    by_step: dict[int, list[int]] = {}
    for req, s in finish_step.items():
        by_step.setdefault(s, []).append(req)
    records = []
    snaps = [s for s in snaps if s.reqs or s.preempted]  # a call that found nothing to run
    for k, snap in enumerate(snaps):
        nxt = snaps[k + 1].step if k + 1 < len(snaps) else max(finish_step.values(), default=snap.step) + 1
        sched = tuple(sorted((r, c) for r, c in zip(snap.reqs, snap.chunk) if c > 0))
        cached = tuple((r, comp) for r, comp in zip(snap.reqs, snap.computed) if r in snap.admitted and comp > 0)
        records.append(StepRecord(step=snap.step, scheduled=sched, admitted=tuple(snap.admitted), cached=tuple(sorted(cached)),
                                  preempted=tuple(snap.preempted), finished=tuple(sorted(by_step.get(snap.step, ()))),
                                  kv_blocks=snap.kv_blocks))
        # Fast-forwarded decode steps until the next decision: every member of the batch
        # that has not finished computes one token per step. Blocks a member takes in them are
        # its own (and leave with it); a block held at the decision leaves with its last holder.
        after = {r: comp + c for r, c, comp in zip(snap.reqs, snap.chunk, snap.computed)}
        held = dict(zip(snap.reqs, snap.held))
        for step in range(snap.step + 1, nxt):
            active = sorted(r for r in snap.reqs if finish_step.get(r, step) >= step)
            if not active:
                continue
            grown = lambda r, k: blocks(after[r] + (k - snap.step - 1) + 1) - held[r]
            freed = sum(n for hs, n in snap.holders if all(finish_step.get(r, step) < step for r in hs))
            used = snap.kv_blocks + sum(grown(r, step) for r in active) - freed
            records.append(StepRecord(step=step, scheduled=tuple((r, 1) for r in active),
                                      finished=tuple(sorted(by_step.get(step, ()))), kv_blocks=used))
    return records
