"""Optional per-step and per-token records of a run, kept only when asked for.

The engine prices runs of decode steps in bulk and keeps no per-token state; these logs are
what it writes on the side when a caller wants more: every step a replica ran (for a
Chrome/Perfetto trace) and every time a request received tokens (for real inter-token
latencies in `--save-detailed`). Neither changes a simulated number; off, they cost one
attribute test per scheduling decision.
"""
from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


class StepLog:
    """One replica's steps: start (s), duration (s), sequences, prefill and decode tokens computed."""

    def __init__(self):
        self.start_s, self.duration_s = array("d"), array("d")
        self.num_seqs, self.prefill_tokens, self.decode_tokens = array("q"), array("q"), array("q")

    def add(self, start_s: float, duration_s: float, num_seqs: int, prefill_tokens: int, decode_tokens: int) -> None:
        self.start_s.append(start_s)
        self.duration_s.append(duration_s)
        self.num_seqs.append(num_seqs)
        self.prefill_tokens.append(prefill_tokens)
        self.decode_tokens.append(decode_tokens)

    def add_decode_run(self, start_s: np.ndarray, duration_s: np.ndarray, num_seqs: np.ndarray,
                       tokens_per_seq: int) -> None:
        """A fast-forwarded run of decode steps (each sequence computes `tokens_per_seq` positions)."""
        self.start_s.extend(np.asarray(start_s, dtype=np.float64).tolist())
        self.duration_s.extend(np.asarray(duration_s, dtype=np.float64).tolist())
        seqs = np.asarray(num_seqs, dtype=np.int64)
        self.num_seqs.extend(seqs.tolist())
        self.prefill_tokens.extend([0] * len(seqs))
        self.decode_tokens.extend((seqs * tokens_per_seq).tolist())

    def frame(self, replica: int) -> pd.DataFrame:
        import pandas as pd  # only a run that records steps (a Chrome trace) builds this frame

        return pd.DataFrame({"replica": np.full(len(self.start_s), replica, dtype=np.int64),
                             "start_s": np.frombuffer(self.start_s, dtype=np.float64),
                             "duration_s": np.frombuffer(self.duration_s, dtype=np.float64),
                             "num_seqs": np.frombuffer(self.num_seqs, dtype=np.int64),
                             "prefill_tokens": np.frombuffer(self.prefill_tokens, dtype=np.int64),
                             "decode_tokens": np.frombuffer(self.decode_tokens, dtype=np.int64)})


class TokenLog:
    """When each request received tokens: one entry per (request, step) that emitted, as a
    streaming client sees chunks (a speculative step's several tokens arrive together)."""

    def __init__(self):
        self._reqs: list[np.ndarray] = []
        self._times: list[np.ndarray] = []

    def add(self, reqs: np.ndarray, time_s: float) -> None:
        if len(reqs):
            self._reqs.append(np.array(reqs, dtype=np.int64))
            self._times.append(np.full(len(reqs), time_s))

    def add_run(self, reqs: np.ndarray, step_end_s: np.ndarray, last_step: np.ndarray) -> None:
        """A run of steps ending at `step_end_s`; request j emits in steps 0..last_step[j]."""
        emits = np.arange(len(step_end_s))[:, None] <= np.asarray(last_step)[None, :]
        step, slot = np.nonzero(emits)  # step-major: chronological
        self._reqs.append(np.asarray(reqs, dtype=np.int64)[slot])
        self._times.append(np.asarray(step_end_s, dtype=np.float64)[step])

    def parts(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return self._reqs, self._times


@dataclass(frozen=True)
class TokenTimes:
    """Every request's chunk times (s, as the client reads them): request i's are
    times[offsets[i]:offsets[i + 1]], in order; the first is its first token."""

    offsets: np.ndarray
    times: np.ndarray

    @classmethod
    def gather(cls, logs: list[TokenLog], num_requests: int, response_latency_s: float,
               per_prompt_token_s: float = 0.0, prompt_tokens: np.ndarray | None = None) -> "TokenTimes":
        """Every replica's token log, per request in time order, as the client reads them: plus the
        response latency, and `per_prompt_token_s` x the request's `prompt_tokens` where that is not 0."""
        reqs, times = [], []
        for log in logs:
            r, t = log.parts()
            reqs += r
            times += t
        req = np.concatenate(reqs) if reqs else np.empty(0, dtype=np.int64)
        t = np.concatenate(times) if times else np.empty(0)
        order = np.argsort(req, kind="stable")  # a request lives on one replica: its entries are in time order
        counts = np.bincount(req, minlength=num_requests)
        offsets = np.concatenate(([0], np.cumsum(counts)))
        times = t[order] + response_latency_s
        if per_prompt_token_s:
            times = times + per_prompt_token_s * np.repeat(np.asarray(prompt_tokens, dtype=np.float64), counts)
        return cls(offsets=offsets, times=times)

    def of(self, request: int) -> np.ndarray:
        return self.times[self.offsets[request]:self.offsets[request + 1]]

    def itls(self, request: int) -> np.ndarray:
        """Gaps between successive chunks of `request` (s)."""
        return np.diff(self.of(request))


def log_steps(rep, start: float, ends: np.ndarray, m: int, ff, reqs: np.ndarray, chunk: np.ndarray,
              decode: np.ndarray, completes: np.ndarray) -> None:
    """Record a replica's step 0 and the m fast-forwarded steps that ran (sim/engine.py): the steps in its
    step log, and who received tokens when in its token log (either may be None)."""
    per_seq = rep.spec.k + 1 if rep.spec is not None else 1  # positions a decoding sequence computes
    if rep.step_log is not None:
        rep.step_log.add(start, float(ends[0]), int(np.count_nonzero(chunk)), int(chunk[~decode].sum()),
                         int(np.count_nonzero(decode)) * per_seq)
        if m > 0:
            rep.step_log.add_decode_run(start + ends[:m], ff.times[:m], ff.active[:m], per_seq)
    if rep.token_log is not None:
        rep.token_log.add(reqs[completes], start + float(ends[0]))
        if m > 0:
            rep.token_log.add_run(reqs[ff.slots], start + ends[1:m + 1], ff.finish_step)
