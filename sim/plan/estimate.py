"""Analytic bracket for the planner: a replica's throughput at its best batch size, and the
latency floor at zero load. Both come from the scenario's own cost model and memory plan.

Continuous batching in steady state with B decoding sequences, mean prompt P and mean
output O tokens, and g tokens emitted per sequence-step (1; speculative: the mean acceptance length):
requests finish at B g / O per step, so each step also prefills B g P / O prompt tokens
(chunked prefill mixes them in). The step costs t(B) from the cost model; a replica then
serves mu(B) = B g / (O t(B)) requests/s with TPOT ~ t(B) / g. The best batch size is the
B that maximises mu subject to max_num_seqs, the KV cache (B (P + O/2) tokens resident)
and the TPOT bound. Static batching runs b requests per batch for the longest output of b.

This is only a starting point: the search confirms every answer by simulation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..scenario import Scenario
from ..simulation import build_cost_model, build_memory
from ..speculative import Speculation

_LENGTH_SAMPLES = 8192  # draws used for length quantiles and E[max of b outputs]


@dataclass(frozen=True)
class Estimate:
    """One replica, analytically. Rates in requests/s, times in seconds."""

    max_rate_per_s: float  # throughput at the best batch size
    best_batch: int  # decoding sequences per step at that throughput
    step_s: float  # step time at the best batch size
    ttft_floor_s: float  # TTFT of a prompt at the SLO percentile, alone on the replica
    tpot_floor_s: float  # TPOT at batch 1

    def replicas_for(self, rate_per_s: float, utilisation: float = 0.8) -> int:
        """Replicas to serve `rate_per_s` with each replica at `utilisation` of its max throughput."""
        return max(1, math.ceil(rate_per_s / (self.max_rate_per_s * utilisation)))


def _speculation(scenario: Scenario) -> Speculation:
    s = scenario.serving
    # Priced as simulation.Simulation prices drafting and rejection (its acceptance stream is unused here).
    return Speculation(s.speculative, scenario.drafter, scenario.gpu_spec, s.tensor_parallel,
                       s.quantization.kv_cache, scenario.model_spec.vocab_size, np.random.default_rng(0))


def _prefill_s(cost, prompt: int, chunk_tokens: int) -> float:
    """Seconds to prefill one prompt alone, in chunks of `chunk_tokens`."""
    t, done = 0.0, 0
    while done < prompt:
        L = min(chunk_tokens, prompt - done)
        last = done + L == prompt
        t += cost.step_time_s(L, 1 if last else 0, L * done + L * (L + 1) // 2, done + L, 1)
        done += L
    return t


def estimate(scenario: Scenario, percentile: float | None = None) -> Estimate:
    """Analytic capacity and latency floor of one replica of `scenario`; the floor is for a
    prompt at `percentile` (default: the scenario's SLO percentile).

    Raises ConfigError when the model does not fit or the cost-model profile does not match.
    """
    cost, _, measured_blocks = build_cost_model(scenario)
    memory = build_memory(scenario, measured_blocks)
    w = scenario.workload
    s = scenario.serving
    sched = s.scheduler
    P, O = w.prompt_tokens.mean_tokens, w.output_tokens.mean_tokens
    rng = np.random.default_rng(0)  # fixed: the estimate must not depend on the run's seed
    prompts = w.prompt_tokens.sample(rng, _LENGTH_SAMPLES)
    outputs = w.output_tokens.sample(rng, _LENGTH_SAMPLES)
    pct = scenario.slo.percentile if percentile is None else percentile
    prompt_q = int(np.percentile(prompts, pct))
    chunked = sched.policy in ("continuous", "priority") and sched.chunked_prefill
    ttft_floor = _prefill_s(cost, prompt_q, sched.max_num_batched_tokens if chunked else prompt_q)

    if sched.policy in ("fifo", "static"):
        b = 1 if sched.policy == "fifo" else sched.batch_size
        longest = outputs[: (len(outputs) // b) * b].reshape(-1, b).max(axis=1).mean()
        prefill = cost.step_time_s(int(b * P), b, int(b * P * (P + 1) / 2), int(b * P), b)
        ctx = P + longest / 2.0
        decode = cost.step_time_s(b, b, int(b * ctx), int(b * ctx), b)
        batch_s = prefill + longest * decode
        tpot_floor = cost.step_time_s(1, 1, int(P + O / 2), int(P + O / 2), 1)
        return Estimate(max_rate_per_s=b / batch_s, best_batch=b, step_s=decode, ttft_floor_s=ttft_floor,
                        tpot_floor_s=tpot_floor)

    spec = s.speculative
    k = spec.num_speculative_tokens if spec is not None else 0
    g = spec.mean_tokens_per_step if spec is not None else 1.0
    B = np.arange(1, sched.max_num_seqs + 1, dtype=np.float64)
    ctx = P + O / 2.0  # mean context of a decoding sequence
    finishing = B * g / O  # requests completing (and starting) per step
    new_tokens = B * (k + 1) + finishing * P
    pairs = B * (k + 1) * ctx + finishing * P * (P + 1) / 2.0
    kv_read = B * ctx + finishing * P
    t = cost.step_times_s(new_tokens, B * (k + 1) + finishing, pairs, kv_read, B + finishing)
    if spec is not None:
        t = t + _speculation(scenario).steps_extra_s(new_tokens, pairs, kv_read, B + finishing, B + finishing,
                                                     (B + finishing) * ctx, B)
    mu = B * g / (O * t)
    ok = B * (P + O / 2.0) <= memory.kv_capacity_tokens
    if scenario.slo.tpot_s is not None and ok.any():
        # Keep B where TPOT meets the bound; at B=1 the floor decides feasibility elsewhere.
        within = t / g <= scenario.slo.tpot_s
        if (ok & within).any():
            ok &= within
    ok[0] = True  # one sequence always fits (build_memory checked a max_model_len sequence)
    best = int(np.argmax(np.where(ok, mu, -1.0)))
    return Estimate(max_rate_per_s=float(mu[best]), best_batch=int(B[best]), step_s=float(t[best]),
                    ttft_floor_s=ttft_floor, tpot_floor_s=float(t[0] / g))
