"""A step's five features (sim/cost_model.py's docstring names them) from what each sequence computes
in it: the chunk of tokens it computes and the context it has cached, and how many positions it samples."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .cost_model import CostModel


@dataclass(frozen=True)
class StepFeatures:
    new_tokens: int
    sampled: int
    attn_pairs: int
    kv_read_tokens: int
    num_seqs: int


def step_features(chunk_tokens: np.ndarray, context_tokens: np.ndarray, samples: np.ndarray) -> StepFeatures:
    """Features of one step where sequence j computes chunk_tokens[j] new tokens on top of
    context_tokens[j] cached ones, and samples[j] is how many positions it samples (0 for a
    prefill chunk that does not finish the prompt, 1 otherwise, k+1 for a speculative verify)."""
    return StepFeatures(*step_feature_values(chunk_tokens, context_tokens, samples))


PLAIN_SUMS_MAX = 24  # up to this many sequences, a loop over plain integers beats numpy's per-call cost


def step_feature_values(chunk_tokens: np.ndarray, context_tokens: np.ndarray,
                        samples: np.ndarray) -> tuple[int, int, int, int, int]:
    """step_features as a plain tuple (new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs):
    the engine's per-decision call, without building a frozen dataclass each step."""
    L = np.asarray(chunk_tokens, dtype=np.int64)
    c = np.asarray(context_tokens, dtype=np.int64)
    if len(L) <= PLAIN_SUMS_MAX:
        new_tokens, attn_pairs, kv_read_tokens = step_feature_sums(L.tolist(), c.tolist())
    else:  # the same sums, vectorised: cheaper than a Python loop over many sequences
        new_tokens = sum(L.tolist())
        attn_pairs = sum((L * c + L * (L + 1) // 2).tolist())
        kv_read_tokens = sum(c.tolist()) + new_tokens
    return new_tokens, int(sum(np.asarray(samples).tolist())), attn_pairs, kv_read_tokens, int(np.count_nonzero(L))


def step_feature_sums(chunk_tokens: list[int], context_tokens: list[int]) -> tuple[int, int, int]:
    """(new_tokens, attn_pairs, kv_read_tokens) of a step from each sequence's chunk and cached context
    as plain integers: sequence j computes L = chunk_tokens[j] tokens after c = context_tokens[j], so
    it attends L * c + L * (L + 1) / 2 query-key pairs (causal) and reads c + L tokens of KV cache.
    The engine calls this on a few sequences; sums of integers, so exact in any order."""
    new_tokens = attn_pairs = kv_read = 0
    for L, c in zip(chunk_tokens, context_tokens):
        new_tokens += L
        attn_pairs += L * c + L * (L + 1) // 2
        kv_read += c
    return new_tokens, attn_pairs, kv_read + new_tokens


def price(cost: CostModel, f: StepFeatures) -> float:
    return float(cost.step_times_s(f.new_tokens, f.sampled, f.attn_pairs, f.kv_read_tokens, f.num_seqs))
