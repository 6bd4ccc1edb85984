"""Speculative decoding as vLLM configures it: a proposer drafts k tokens, the target verifies k+1.

Methods (vLLM's `speculative_config.method`) and what one step's drafting costs here:

    draft_model  a separate small model. Its first pass runs over every token the target computed
                 in the step (prefill chunks included: the draft keeps its own KV of the prompt),
                 then k-1 single-token passes over the sequences that sample.
    eagle        a one-decoder-layer head fed the target's hidden states; it shares the target's
                 embedding and LM head. Passes as for draft_model, each ~ one layer + the LM head.
    eagle3       as eagle, but the head has its own LM head over a 32k draft vocabulary.
    mtp          the model's own multi-token-prediction layer(s) (DeepSeek-V3 style): one decoder
                 layer of the target's shape per pass, shared embedding and LM head.
    ngram        prompt lookup on the CPU (vLLM's numba matcher): no GPU work, a few microseconds
                 per sequence.

Acceptance. A step drafts k tokens per decoding sequence and accepts the longest prefix the
target agrees with, plus one bonus token from the target: it emits 1 + A tokens, A in 0..k.
servesim describes A by per-position rates p_i = P(A >= i), non-increasing, as vLLM reports
them ("Per-position acceptance rate"). The usual one-number summary is a chain where every
draft token is accepted with probability alpha given the previous one was: p_i = alpha^i.
vLLM's logged numbers convert to alpha as follows (docs/speculative.md):

    E[A]                      = sum_i p_i                    = alpha (1 - alpha^k) / (1 - alpha)
    draft acceptance rate     = accepted / drafted           = E[A] / k
    mean acceptance length    = 1 + accepted / drafts        = 1 + E[A] = (1 - alpha^(k+1)) / (1 - alpha)

Verify and rejection cost. The target computes k+1 positions per decoding sequence (and their
logits), and each counts against max_num_batched_tokens as in vLLM's scheduler. At small batch
the step is bound by streaming the weights and the extra positions are nearly free; at large
batch it is compute-bound, costs ~(k+1)x, and the rejected positions are wasted work, so the
speed-up shrinks with load and turns into a slowdown once k+1 verified positions cost more than
the 1 + E[A] tokens they emit. The rejection sampler reads the verified positions' logits over
the whole vocabulary.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .catalog import GpuSpec, ModelSpec, resolve_model
from .configio import ConfigError, require, short_repr
from .cost_model import RooflineCostModel, RooflineParams
from .memory import weight_bytes

SpecMethod = Literal["draft_model", "eagle", "eagle3", "mtp", "ngram"]
METHODS: tuple[str, ...] = ("draft_model", "eagle", "eagle3", "mtp", "ngram")
HEAD_METHODS = ("eagle", "eagle3", "mtp")  # a light head on the target's hidden states
ACCEPTANCE_KEYS = ("acceptance_rate", "draft_acceptance_rate", "mean_acceptance_length",
                   "per_position_acceptance_rates")
DEFAULT_ALPHA = 0.7  # when no acceptance is given (servesim's long-standing default)

# A draft pass runs inside the target's step under CUDA graphs: kernel launches only, no scheduling.
DRAFT_STEP_OVERHEAD_S = 5e-4
# EAGLE-3 heads predict over a reduced draft vocabulary (draft_vocab_size in the released Llama-3
# heads' config.json: 32000) with their own LM head; the ids map back to the target's vocabulary.
EAGLE3_DRAFT_VOCAB = 32_000
# vLLM's n-gram proposer (v1/spec_decode/ngram_proposer.py) matches the last few tokens against the
# context with a numba KMP on the CPU. Assumed ~10 us per sequence and step (a few thousand tokens
# scanned): an estimate, not a measurement; it is negligible next to any GPU step.
NGRAM_S_PER_SEQ = 1e-5
# The rejection sampler turns each verified position's fp32 logits into probabilities and compares
# them with the draft's: ~3 passes of 4 bytes per vocabulary entry (read logits, write and read
# probabilities). An estimate from the kernel's structure (v1/sample/rejection_sampler.py).
REJECTION_BYTES_PER_LOGIT = 12.0


def mean_accepted(k: int, alpha: float) -> float:
    """E[A]: accepted draft tokens per step in the chain model (0..k)."""
    if alpha >= 1.0:
        return float(k)
    return alpha * (1.0 - alpha ** k) / (1.0 - alpha)


def mean_tokens_per_step(k: int, alpha: float) -> float:
    """Tokens a sequence emits per verify step in the chain model: vLLM's mean acceptance length."""
    return 1.0 + mean_accepted(k, alpha)


def alpha_for_mean_accepted(k: int, accepted: float) -> float:
    """The chain probability alpha whose E[A] over k drafts is `accepted` (0 <= accepted <= k)."""
    if accepted >= k:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):  # E[A] rises with alpha; 60 halvings reach float precision
        mid = 0.5 * (lo + hi)
        if mean_accepted(k, mid) < accepted:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class SpeculativeConfig:
    """Scenario `serving.speculative`. Give at most one acceptance key (default: acceptance_rate 0.7):

    acceptance_rate                chain probability alpha that a draft token is accepted given the
                                   previous one was (servesim's original key; not vLLM's "acceptance rate")
    draft_acceptance_rate          vLLM's "Avg Draft acceptance rate": accepted / drafted, 0..1
    mean_acceptance_length         vLLM's "Mean acceptance length": 1 + accepted per step, 1..k+1
    per_position_acceptance_rates  vLLM's "Per-position acceptance rate": k non-increasing P(A >= i)
    """

    method: SpecMethod = "draft_model"
    draft_model: str | dict[str, Any] | None = None  # draft_model: catalog name, inline ModelSpec or config.json
    num_speculative_tokens: int = 4  # k draft tokens proposed per step
    acceptance_rate: float | None = None
    draft_acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None
    per_position_acceptance_rates: tuple[float, ...] | None = None
    draft_layers: int = 1  # eagle / eagle3 / mtp: decoder layers in the head (MTP: num_nextn_predict_layers)

    def validate(self, path: str) -> None:
        k = self.num_speculative_tokens
        require(1 <= k <= 16, f"{path}.num_speculative_tokens", k, "allowed 1..16")
        require(1 <= self.draft_layers <= 8, f"{path}.draft_layers", self.draft_layers, "allowed 1..8")
        if self.method == "draft_model":
            require(self.draft_model is not None, f"{path}.draft_model", None,
                    "method draft_model needs a draft model (catalog name, inline mapping or config.json)")
        else:
            require(self.draft_model is None, f"{path}.draft_model", self.draft_model,
                    f"only method draft_model takes a draft model; {self.method} "
                    + ("proposes on the CPU from the context" if self.method == "ngram"
                       else "is a head of the target's shape (set draft_layers)"))
        given = [key for key in ACCEPTANCE_KEYS if getattr(self, key) is not None]
        require(len(given) <= 1, f"{path}.{given[-1] if given else ''}", "set",
                f"give one acceptance measure, not {' and '.join(given)}")
        if self.acceptance_rate is not None:
            require(0.0 <= self.acceptance_rate < 1.0, f"{path}.acceptance_rate", self.acceptance_rate,
                    "allowed 0 <= alpha < 1 (per-token chain probability)")
        if self.draft_acceptance_rate is not None:
            require(0.0 <= self.draft_acceptance_rate <= 1.0, f"{path}.draft_acceptance_rate",
                    self.draft_acceptance_rate, "allowed 0..1 (accepted / drafted, as vLLM logs it)")
        if self.mean_acceptance_length is not None:
            require(1.0 <= self.mean_acceptance_length <= k + 1, f"{path}.mean_acceptance_length",
                    self.mean_acceptance_length, f"allowed 1 .. num_speculative_tokens + 1 = {k + 1}")
        rates = self.per_position_acceptance_rates
        if rates is not None:
            where = f"{path}.per_position_acceptance_rates"
            require(len(rates) == k, where, list(rates), f"needs num_speculative_tokens = {k} entries")
            require(all(0.0 <= p <= 1.0 for p in rates), where, list(rates), "each entry allowed 0..1")
            require(all(b <= a for a, b in zip(rates, rates[1:])), where, list(rates),
                    "must be non-increasing (P(at least i accepted) cannot grow with i)")

    @property
    def alpha(self) -> float | None:
        """The chain probability, or None when per-position rates are given."""
        k = self.num_speculative_tokens
        if self.per_position_acceptance_rates is not None:
            return None
        if self.draft_acceptance_rate is not None:
            return alpha_for_mean_accepted(k, self.draft_acceptance_rate * k)
        if self.mean_acceptance_length is not None:
            return alpha_for_mean_accepted(k, self.mean_acceptance_length - 1.0)
        return DEFAULT_ALPHA if self.acceptance_rate is None else self.acceptance_rate

    @property
    def position_rates(self) -> np.ndarray:
        """p_i = P(A >= i) for i = 1..k."""
        if self.per_position_acceptance_rates is not None:
            return np.asarray(self.per_position_acceptance_rates, dtype=np.float64)
        return self.alpha ** np.arange(1, self.num_speculative_tokens + 1, dtype=np.float64)

    @property
    def mean_tokens_per_step(self) -> float:
        """1 + E[A]: vLLM's mean acceptance length."""
        alpha = self.alpha
        if alpha is not None:
            return mean_tokens_per_step(self.num_speculative_tokens, alpha)
        return 1.0 + float(self.position_rates.sum())

    def describe(self) -> str:
        """One line: method, k and acceptance in vLLM's terms."""
        k = self.num_speculative_tokens
        length = self.mean_tokens_per_step
        return (f"speculative {self.method} k={k}, draft acceptance rate {(length - 1.0) / k:.2f}, "
                f"mean acceptance length {length:.2f}")


@dataclass(frozen=True)
class Drafter:
    """What a GPU-side proposer looks like to the cost model and to memory."""

    spec: ModelSpec  # the layers one draft pass runs and the LM head it samples from
    own_weight_bytes: int  # whole draft, bf16; weights shared with the target are not counted


def drafter_for(config: SpeculativeConfig, target: ModelSpec, path: str, resolve=resolve_model) -> Drafter | None:
    """The proposer's shape: the draft model, a head of the target's shape, or None (ngram)."""
    if config.method == "ngram":
        return None
    if config.method == "draft_model":
        draft = resolve(config.draft_model, f"{path}.draft_model")
        return Drafter(draft, weight_bytes(draft, "bf16"))
    layers = config.draft_layers
    vocab = EAGLE3_DRAFT_VOCAB if config.method == "eagle3" else target.vocab_size
    per_layer = target.attention_params_per_layer + target.num_experts * target.expert_params
    own = layers * per_layer
    if config.method == "eagle3":
        own += vocab * target.hidden_size + 3 * target.hidden_size * target.hidden_size  # own LM head, fused input
    elif config.method == "eagle":
        own += 2 * target.hidden_size * target.hidden_size  # fc over [embedding, hidden state]
    head = dataclasses.replace(target, name=f"{target.name} {config.method} head", num_layers=layers,
                               vocab_size=vocab, num_params=own + vocab * target.hidden_size,
                               sliding_window_tokens=0, num_sliding_layers=0, unquantized_params=0)
    return Drafter(head, 2 * own)


class Speculation:
    """One replica's speculative decoding at run time: tokens each verify emits (random, from the
    replica's acceptance stream) and the seconds drafting and rejection add to a step."""

    def __init__(self, config: SpeculativeConfig, drafter: Drafter | None, gpu: GpuSpec, tp: int, kv_dtype: str,
                 target_vocab: int, rng: np.random.Generator):
        self.k = config.num_speculative_tokens
        self.method = config.method
        self.alpha = config.alpha
        self._cdf_rates = config.position_rates  # used when alpha is None
        self.rng = rng
        self._geometric_scale = _geometric_by_exponential(rng, 1.0 - self.alpha) if self.alpha is not None else None
        self.draft_cost: RooflineCostModel | None = None
        if drafter is not None:
            self.draft_cost = RooflineCostModel(drafter.spec, gpu, tp=tp, weight_dtype="bf16", kv_dtype=kv_dtype,
                                                params=RooflineParams(step_overhead_s=DRAFT_STEP_OVERHEAD_S,
                                                                      per_seq_overhead_s=0.0))
        # The sampler sees the full vocabulary on every GPU (logits are gathered before sampling).
        self._rejection_s_per_position = REJECTION_BYTES_PER_LOGIT * target_vocab / gpu.hbm_bandwidth_bytes_per_s

    def sample_tokens(self, size) -> np.ndarray:
        """Tokens emitted per sequence-step, each in 1..k+1."""
        if self.alpha is not None:
            if self.alpha <= 0.0:
                return np.ones(size, dtype=np.int64)
            if self.alpha >= 1.0:
                return np.full(size, self.k + 1, dtype=np.int64)
            if self._geometric_scale is not None:
                # rng.geometric's own draws at ~1/5 of its cost (see _geometric_by_exponential):
                # tokens = min(geometric, k + 1) = min(ceil(E / -log1p(-p)), k + 1).
                e = self.rng.standard_exponential(size)
                e /= self._geometric_scale
                np.ceil(e, out=e)
                np.minimum(e, self.k + 1, out=e)
                return e.astype(np.int64)
            accepted = np.minimum(self.rng.geometric(1.0 - self.alpha, size=size) - 1, self.k)
            return accepted.astype(np.int64) + 1
        # A = #{i : u < p_i} has P(A >= i) = p_i because the p_i are non-increasing.
        u = self.rng.random(size)
        return 1 + (u[..., None] < self._cdf_rates).sum(axis=-1).astype(np.int64)

    def skip_tokens(self, count: int) -> None:
        """Draw what sample_tokens(count) draws and drop it: the stream ends up where it would."""
        if count <= 0 or self.alpha is not None and not 0.0 < self.alpha < 1.0:
            return
        if self.alpha is None:
            self.rng.random(count)
        elif self._geometric_scale is not None:
            self.rng.standard_exponential(count)
        else:
            self.rng.geometric(1.0 - self.alpha, size=count)

    def step_extra_s(self, new_tokens: int, attn_pairs: int, kv_read_tokens: int, num_seqs: int,
                     sampling_seqs: int, sampling_context_tokens: int, verifying_seqs: int) -> float:
        """Seconds drafting and rejection add to one step: the target computed `new_tokens` tokens
        for `num_seqs` sequences (features as the cost model takes them); `sampling_seqs` of them
        sample and get k drafts (attending `sampling_context_tokens` in all); `verifying_seqs`
        verified k drafts."""
        draft = self.draft_cost
        if draft is None or draft.model.is_moe:
            return float(self.steps_extra_s(new_tokens, attn_pairs, kv_read_tokens, num_seqs, sampling_seqs,
                                            sampling_context_tokens, verifying_seqs))
        # steps_extra_s's operations in its order, on floats (numpy costs ~1 us per operation on a scalar).
        S, ctx = sampling_seqs, sampling_context_tokens
        rejection = verifying_seqs * (self.k + 1) * self._rejection_s_per_position
        first = draft.step_times_float(new_tokens, S, attn_pairs, kv_read_tokens, num_seqs) if num_seqs > 0 else 0.0
        if self.k == 1:
            return first + rejection
        rest = draft.step_times_float(S, S, ctx, ctx, S) if S > 0 else 0.0
        return first + (self.k - 1) * rest + rejection

    def steps_extra_s(self, new_tokens, attn_pairs, kv_read_tokens, num_seqs, sampling_seqs,
                      sampling_context_tokens, verifying_seqs) -> np.ndarray:
        """`step_extra_s` over arrays of steps (the engine's fast-forward)."""
        S = np.asarray(sampling_seqs)
        rejection = np.asarray(verifying_seqs) * (self.k + 1) * self._rejection_s_per_position
        if self.draft_cost is None:  # n-gram: a CPU lookup per sequence
            return NGRAM_S_PER_SEQ * S + rejection
        # First pass: the step's tokens (a prefill chunk fills the proposer's KV even when nobody samples).
        first = np.where(np.asarray(num_seqs) > 0,
                         self.draft_cost.step_times_s(new_tokens, S, attn_pairs, kv_read_tokens, num_seqs), 0.0)
        if self.k == 1:
            return first + rejection
        ctx = sampling_context_tokens
        rest = np.where(S > 0, self.draft_cost.step_times_s(S, S, ctx, ctx, S), 0.0)  # one token per sampler
        return first + (self.k - 1) * rest + rejection


def _geometric_by_exponential(rng: np.random.Generator, p: float) -> float | None:
    """-log1p(-p) when rng.geometric(p) is ceil(standard_exponential / -log1p(-p)) draw for draw, else None.

    NumPy draws a geometric variate with p < 1/3 by inversion of one standard exponential
    (random_geometric_inversion: ceil(-E / log1p(-p))), but recomputes log1p(-p) for every variate,
    which costs ~5x the exponential itself. Drawing the exponentials and dividing gives the same
    numbers from the same stream. Checked here on a copy of the generator (values and the state
    after them), so a NumPy that draws otherwise keeps rng.geometric.
    """
    if not 0.0 < p < 0.33:  # NumPy switches to a sequential search at p >= 1/3
        return None
    scale = -math.log1p(-p)
    probe_a, probe_b = copy.deepcopy(rng), copy.deepcopy(rng)
    want = probe_a.geometric(p, size=4096)
    got = np.ceil(probe_b.standard_exponential(4096) / scale).astype(np.int64)
    if not np.array_equal(want, got) or probe_a.bit_generator.state != probe_b.bit_generator.state:
        return None
    return scale


def check_speculative(config: SpeculativeConfig, target: ModelSpec, tp: int, policy: str, path: str,
                      drafter: Drafter | None) -> None:
    """Scenario-level rules: scheduler, and a draft model that can stand in for the target."""
    require(policy in ("continuous", "priority"), path, "set",
            f"needs scheduler policy continuous or priority (got {policy!r})")
    if config.method != "draft_model" or drafter is None:
        return
    draft = drafter.spec
    require(draft.vocab_size == target.vocab_size, f"{path}.draft_model", draft.name,
            f"needs the target's vocabulary ({target.vocab_size} tokens), has {draft.vocab_size}")
    require(draft.num_attention_heads % tp == 0, f"{path}.draft_model", draft.name,
            f"its {draft.num_attention_heads} heads must divide by tensor_parallel {tp}")


def method_from_vllm(value: Any, label: str) -> str:
    """vLLM's method name, as servesim models it (vLLM's many `*_mtp` names are all `mtp`)."""
    name = str(value).strip().lower()
    if name.endswith("_mtp"):
        name = "mtp"
    if name not in METHODS:
        raise ConfigError(f"{label}: got {short_repr(value)}; servesim models methods {', '.join(METHODS)}")
    return name
