"""Speculative decoding: a draft model proposes k tokens, the target verifies k+1 positions.

Each draft token is accepted with probability alpha given the previous one was, so a
step emits 1 + L tokens with L ~ min(Geometric, k): mean (1 - alpha^(k+1)) / (1 - alpha).
A step costs k draft decode steps plus one target step over k+1 tokens per sequence.
At small batch the target step is bound by weight streaming and verifying k+1 tokens
is nearly free; at large batch it is compute-bound and costs ~(k+1)x, which is why
the speed-up shrinks (and can invert) as the batch grows.
"""
from __future__ import annotations

import numpy as np

from .cost_model import CostModel


def mean_tokens_per_step(k: int, alpha: float) -> float:
    return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


class Speculation:
    def __init__(self, k: int, alpha: float, draft_cost: CostModel, rng: np.random.Generator):
        self.k, self.alpha, self.draft_cost, self.rng = k, alpha, draft_cost, rng

    def sample_tokens(self, size) -> np.ndarray:
        """Tokens emitted per sequence-step, each in 1..k+1."""
        if self.alpha <= 0.0:
            return np.ones(size, dtype=np.int64)
        accepted = np.minimum(self.rng.geometric(1.0 - self.alpha, size=size) - 1, self.k)
        return accepted.astype(np.int64) + 1

    def draft_times_s(self, num_seqs, context_tokens) -> np.ndarray:
        """k draft decode steps over `num_seqs` sequences (0 where no sequence runs)."""
        B = np.asarray(num_seqs)
        t = self.draft_cost.step_times_s(B, B, context_tokens, context_tokens, B)
        return np.where(B > 0, self.k * t, 0.0)

    def draft_time_s(self, num_seqs: int, context_tokens: int) -> float:
        return float(self.draft_times_s(num_seqs, context_tokens))
