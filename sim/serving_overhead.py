"""What serving adds to an engine step measured in-process: ServingOverhead (the engine's own time per
step and per sequence, overlapped with the kernels or after them, the host floor, the response latency
and the request jitter). sim/cost_model.ProfileCostModel applies it; calibration/ fits it."""
from __future__ import annotations

from dataclasses import dataclass


# Terms of a serving-overhead fit (calibration/serving.py), in the order of ServingOverhead's fields.
SERVING_TERMS = ("compute_scale", "step_overhead_s", "per_seq_overhead_s", "host_per_seq_s", "response_latency_s")


@dataclass(frozen=True)
class ServingOverhead:
    """What serving adds to an engine step measured in-process (calibration/serving.py fits it on a
    closed-loop sweep of the real server, never on a validation replay):

        t_served = max(compute_scale * t_profile + step_overhead_s + per_seq_overhead_s * num_seqs,
                       host_per_seq_s * num_seqs)

    With `overlap` the engine's time per step runs BESIDE the kernels instead of after them:

        t_served = max(exposed_step_s + max(compute_scale * t_profile, step_overhead_s + per_seq_overhead_s * num_seqs),
                       host_per_seq_s * num_seqs)

    This is vLLM's async scheduling (the default from vLLM 0.14 on; off by default in 0.12 and 0.13):
    the engine core keeps two batches in flight, schedules step N+1 and processes step N's output on
    the CPU while the GPU runs step N, so a step is as long as the longer of the two. Engine time shows
    at small batches (short kernels) and hides behind large ones. `exposed_step_s` is the part of each
    step no overlap hides (the hand-over between the two: launching the step, waiting for its sampled
    tokens); in the additive form it is simply added too (the same as more step_overhead_s).

    The floor is the host's throughput: the engine core and the API server handle every sequence's
    token each step on the CPU cores left to them, and once that takes longer than the model's step,
    steps wait for it (on a small host this is the knee where latency climbs with concurrency).
    Plus `response_latency_s` between a token leaving the engine and the client reading it (HTTP,
    the API server's output handling, streaming), which moves TTFT and E2E but not TPOT; and on
    the way in, a random delay per request between the client sending it and the engine seeing it
    (HTTP, tokenisation, the API server's queue), exponential with mean `request_jitter_s` and
    drawn from its own seeded stream (sim/simulation.py). It moves TTFT. (It was once meant to keep
    closed-loop clients with equal lengths from staying in lockstep; vLLM's step log on a real server
    shows their waves persisting instead, each split as the API server hands it over: the scenario's
    engine.api_server_per_request_s, docs/step_sequence_cpu.md.)

    `response_latency_per_prompt_token_s` x the prompt's tokens is added to a request's response
    latency (TTFT and E2E move, TPOT does not): the API server tokenises the prompt in its own process,
    outside the engine's steps, before the engine sees it (0, the default: a constant latency).
    """

    compute_scale: float = 1.0  # the served worker's step / the in-process sweep's (contention for the cores)
    step_overhead_s: float = 0.0  # engine-core <-> worker IPC, output serialisation, per step
    per_seq_overhead_s: float = 0.0  # per sequence in the step (output processing, streaming)
    host_per_seq_s: float = 0.0  # host time per sequence per step: the floor above (0: no floor)
    response_latency_s: float = 0.0  # engine -> client, per response
    response_latency_per_prompt_token_s: float = 0.0  # more response latency per prompt token (tokenisation)
    request_jitter_s: float = 0.0  # client -> engine, per request: mean of an exponential delay (0: none)
    overlap: bool = False  # True: engine time overlaps the kernels (max, not sum; vLLM async scheduling)
    exposed_step_s: float = 0.0  # per step, never overlapped (added in either form)

    def __post_init__(self):
        if not isinstance(self.overlap, bool):
            raise ValueError(f"ServingOverhead.overlap must be true or false, got {self.overlap!r}")
        per_tok = self.response_latency_per_prompt_token_s
        if isinstance(per_tok, bool) or not isinstance(per_tok, (int, float)) or not per_tok >= 0:
            raise ValueError("ServingOverhead.response_latency_per_prompt_token_s must be a number >= 0, "
                             f"got {per_tok!r}")

    def scaled(self, coefficients: dict[str, float]) -> dict[str, float]:
        """Profile coefficients times compute_scale alone: the kernels of an overlapped step."""
        return {k: float(v) * self.compute_scale for k, v in coefficients.items()}

    def apply(self, coefficients: dict[str, float]) -> dict[str, float]:
        """Profile coefficients with the served step's terms folded in (the additive form; an
        overlapped step cannot be folded into the profile's formula: ProfileCostModel takes the max)."""
        if self.overlap:
            raise ValueError("ServingOverhead.apply: an overlapped step is not a sum; use scaled() and take the max")
        c = self.scaled(coefficients)
        c["overhead_s"] += self.step_overhead_s + self.exposed_step_s
        c["per_seq_s"] += self.per_seq_overhead_s
        return c
