"""Decompose servesim's timing error on a timed run of the real engine (timed_engine.py).

With the step trace fixed (parity: servesim schedules what vLLM schedules), a request's latency
is the sum of the step times from its arrival to its token, plus the host time between steps.
`replay` rebuilds those latencies on the measured schedule from any step times, so one can
swap the measured step times for the cost model's, or drop the host time between steps, and
see how much each moves the latencies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .trace import ParityCase, Request, StepRecord


@dataclass(frozen=True)
class TimedRun:
    """A timed run: steps in order and requests by index (times in s from the run's start)."""

    arrival_s: np.ndarray  # when each request was due
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    added_step: np.ndarray  # steps run before it was added (its arrival step)
    first_token_s: np.ndarray  # the engine returned its first token
    finish_s: np.ndarray
    step_start_s: np.ndarray
    step_time_s: np.ndarray
    cpu_time_s: np.ndarray  # CPU time of the engine process in each step (all its threads)
    records: list[StepRecord]
    seqs: list[list[tuple[int, int, int]]]  # per step: (chunk, computed before, prompt) per request
    num_blocks: int
    block_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int

    @classmethod
    def from_worker(cls, out: dict, arrival_s, prompt_tokens, output_tokens) -> "TimedRun":
        e, r, steps = out["engine"], out["requests"], out["steps"]
        records = [StepRecord(step=k, scheduled=tuple(map(tuple, s["scheduled"])), admitted=tuple(s["admitted"]),
                              preempted=tuple(s["preempted"]), finished=tuple(s["finished"]), kv_blocks=s["kv_blocks"])
                   for k, s in enumerate(steps)]
        return cls(arrival_s=np.asarray(arrival_s, float), prompt_tokens=np.asarray(prompt_tokens, np.int64),
                   output_tokens=np.asarray(output_tokens, np.int64), added_step=np.asarray(r["added_step"], np.int64),
                   first_token_s=np.asarray(r["first_token_s"], float), finish_s=np.asarray(r["finish_s"], float),
                   step_start_s=np.array([s["t_start_s"] for s in steps]),
                   step_time_s=np.array([s["step_time_s"] for s in steps]),
                   cpu_time_s=np.array([s["cpu_time_s"] for s in steps]), records=records,
                   seqs=[[tuple(x) for x in s["seqs"]] for s in steps], num_blocks=e["num_blocks"],
                   block_size=e["block_size"], max_model_len=e["max_model_len"], max_num_seqs=e["max_num_seqs"],
                   max_num_batched_tokens=e["max_num_batched_tokens"])

    def parity_case(self) -> ParityCase:
        """The run as a parity case: each request arrives at the step it was added before."""
        reqs = tuple(Request(int(s), int(p), int(o)) for s, p, o in
                     zip(self.added_step, self.prompt_tokens, self.output_tokens))
        return ParityCase(requests=reqs, max_num_seqs=self.max_num_seqs,
                          max_num_batched_tokens=self.max_num_batched_tokens, chunked_prefill=True,
                          block_size=self.block_size, num_blocks=self.num_blocks, max_model_len=self.max_model_len,
                          name="timed-run")

    def token_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """Per request, the step that sampled its first token and the step that finished it."""
        n = len(self.arrival_s)
        first, last = np.full(n, -1), np.full(n, -1)
        done = np.zeros(n, dtype=np.int64)
        for k, rec in enumerate(self.records):
            for i, c in rec.scheduled:
                done[i] += c
                if first[i] < 0 and done[i] >= self.prompt_tokens[i]:
                    first[i] = k
            for i in rec.preempted:
                done[i] = 0
            for i in rec.finished:
                last[i] = k
        return first, last

    def host_gap_s(self) -> np.ndarray:
        """Per step, the wall time between the previous step's end (or, when the engine was idle,
        the arrival that woke it) and its start: the engine loop's own work outside the step."""
        ready = self.ready_s()
        prev_end = np.concatenate([[-np.inf], self.step_start_s[:-1] + self.step_time_s[:-1]])
        return np.maximum(self.step_start_s - np.maximum(prev_end, ready), 0.0)

    def ready_s(self) -> np.ndarray:
        """Per step, the latest arrival among the requests added just before it (-inf when none)."""
        ready = np.full(len(self.records), -np.inf)
        np.maximum.at(ready, np.minimum(self.added_step, len(ready) - 1), self.arrival_s)
        return ready


def replay(run: TimedRun, step_time_s: np.ndarray, host_gap_s: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """TTFT and E2E per request on the run's own schedule with these step times: step k starts when
    step k-1 has ended plus its host gap, and not before the requests added for it arrived."""
    ready = run.ready_s()
    gap = np.broadcast_to(np.asarray(host_gap_s, float), ready.shape)
    end = np.empty(len(ready))
    t = -np.inf
    for k in range(len(ready)):
        t = max(t + gap[k], ready[k]) + step_time_s[k]
        end[k] = t
    first, last = run.token_steps()
    return end[first] - run.arrival_s, end[last] - run.arrival_s


def pct_error(pred: np.ndarray, real: np.ndarray) -> np.ndarray:
    return 100.0 * (np.asarray(pred) - np.asarray(real)) / np.asarray(real)
