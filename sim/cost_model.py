"""The cost model: one engine step (a batch) -> seconds.

Every cost model sees a step through the same five features, so the analytic roofline
and a profile fitted on measured steps (calibration/) are interchangeable:

    new_tokens      tokens computed this step (prefill chunk tokens + decode tokens)
    sampled         positions whose logits are computed (one per sequence that emits)
    attn_pairs      query x key pairs of attention (causal: quadratic in a prefill chunk)
    kv_read_tokens  tokens of KV cache read by attention
    num_seqs        sequences in the step

`step_features` turns per-sequence work (chunk length and context already cached) into
those features. All arguments may be numpy arrays: the engine prices many decode steps
in one call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .catalog import GpuSpec, ModelSpec
from .memory import kv_bytes_per_token
from .quantization import matmul_tflops, weight_bytes_per_param


class CostModel(Protocol):
    def step_times_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> np.ndarray:
        """Seconds per step for each step described by the (broadcast) feature arrays."""
        ...


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
    L = np.asarray(chunk_tokens, dtype=np.int64)
    c = np.asarray(context_tokens, dtype=np.int64)
    pairs = L * c + L * (L + 1) // 2
    return StepFeatures(new_tokens=int(L.sum()), sampled=int(np.sum(samples)), attn_pairs=int(pairs.sum()),
                        kv_read_tokens=int((c + L).sum()), num_seqs=int(np.count_nonzero(L)))


def price(cost: CostModel, f: StepFeatures) -> float:
    return float(cost.step_times_s(f.new_tokens, f.sampled, f.attn_pairs, f.kv_read_tokens, f.num_seqs))


@dataclass(frozen=True)
class RooflineParams:
    """Efficiency factors and overheads of the analytic model (scenario `cost_model:`)."""

    compute_efficiency: float = 0.6  # achieved / peak tensor FLOP/s for GEMMs
    attention_efficiency: float = 0.4  # achieved / peak FLOP/s for attention kernels
    memory_efficiency: float = 0.8  # achieved / peak HBM bandwidth
    step_overhead_s: float = 0.003  # scheduler, sampling, kernel launches per step (CUDA graphs off)
    per_seq_overhead_s: float = 2.0e-5  # input preparation / sampling per sequence
    allreduce_latency_s: float = 1.0e-5  # per all-reduce call (NCCL small-message latency)


class RooflineCostModel:
    """max(compute, memory) per operator group, from catalog numbers alone.

    Linear layers: FLOPs 2 * active params per token vs. streaming the weights once per
    step (an MoE reads only the experts its tokens touch). Attention: FLOPs 4 * heads *
    head_dim per query-key pair per layer vs. reading the KV cache. Tensor parallelism
    divides both and adds two ring all-reduces of the activations per layer.
    """

    def __init__(self, model: ModelSpec, gpu: GpuSpec, *, tp: int, weight_dtype: str, kv_dtype: str,
                 params: RooflineParams = RooflineParams(), path: str = "serving.quantization.weights"):
        self.model, self.gpu, self.tp, self.params = model, gpu, tp, params
        self._linear_flops_per_s = matmul_tflops(gpu, weight_dtype, path) * 1e12 * params.compute_efficiency
        self._attn_flops_per_s = gpu.bf16_tflops * 1e12 * params.attention_efficiency
        self._bytes_per_s = gpu.hbm_bandwidth_bytes_per_s * params.memory_efficiency
        wb = weight_bytes_per_param(weight_dtype)
        self._attn_weight_bytes = model.num_layers * model.attention_params_per_layer * wb / tp
        self._expert_weight_bytes = model.num_layers * model.expert_params * wb / tp  # one expert, all layers
        self._head_bytes = model.lm_head_params * 2.0 / tp
        self._kv_bytes_per_token = kv_bytes_per_token(model, kv_dtype, tp)
        self._attn_flops_per_pair = 4.0 * model.num_layers * model.num_attention_heads * model.head_dim / tp

    def _weight_bytes_read(self, new_tokens):
        m = self.model
        if not m.is_moe:
            experts = 1.0
        else:
            # Expected distinct experts touched per layer when each token picks k of E uniformly.
            experts = m.num_experts * (1.0 - (1.0 - m.experts_per_token / m.num_experts) ** np.asarray(new_tokens))
        return self._attn_weight_bytes + experts * self._expert_weight_bytes + self._head_bytes

    def step_times_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> np.ndarray:
        m, p = self.model, self.params
        T = np.asarray(new_tokens, dtype=np.float64)
        linear_flops = 2.0 * m.active_linear_params * T / self.tp + 2.0 * m.lm_head_params * np.asarray(sampled) / self.tp
        t_linear = np.maximum(linear_flops / self._linear_flops_per_s, self._weight_bytes_read(T) / self._bytes_per_s)
        t_attn = np.maximum(self._attn_flops_per_pair * np.asarray(attn_pairs, dtype=np.float64) / self._attn_flops_per_s,
                            self._kv_bytes_per_token * np.asarray(kv_read_tokens, dtype=np.float64) / self._bytes_per_s)
        t = p.step_overhead_s + p.per_seq_overhead_s * np.asarray(num_seqs) + t_linear + t_attn
        if self.tp > 1:
            message_bytes = T * m.hidden_size * 2.0
            ring = 2.0 * (self.tp - 1) / self.tp * message_bytes / self.gpu.interconnect_bw_bytes_per_s
            t = t + 2 * m.num_layers * (ring + p.allreduce_latency_s)
        return t


# Coefficient names of a fitted profile, in the order of ProfileCostModel's formula.
PROFILE_COEFFICIENTS = ("overhead_s", "per_seq_s", "weights_s", "per_token_s", "per_pair_s", "per_kv_token_s",
                        "per_sample_s")


class ProfileCostModel:
    """A cost curve fitted on measured steps (calibration/fit.py), all coefficients >= 0:

        t = overhead_s + per_seq_s * num_seqs
            + max(weights_s, per_token_s * new_tokens)      # weight streaming floor vs. GEMM compute
            + per_pair_s * attn_pairs + per_kv_token_s * kv_read_tokens + per_sample_s * sampled
    """

    def __init__(self, coefficients: dict[str, float]):
        missing = [k for k in PROFILE_COEFFICIENTS if k not in coefficients]
        if missing:
            raise ValueError(f"profile coefficients missing {missing}; need {list(PROFILE_COEFFICIENTS)}")
        self.coefficients = {k: float(coefficients[k]) for k in PROFILE_COEFFICIENTS}

    def step_times_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> np.ndarray:
        c = self.coefficients
        T = np.asarray(new_tokens, dtype=np.float64)
        return (c["overhead_s"] + c["per_seq_s"] * np.asarray(num_seqs, dtype=np.float64)
                + np.maximum(c["weights_s"], c["per_token_s"] * T)
                + c["per_pair_s"] * np.asarray(attn_pairs, dtype=np.float64)
                + c["per_kv_token_s"] * np.asarray(kv_read_tokens, dtype=np.float64)
                + c["per_sample_s"] * np.asarray(sampled, dtype=np.float64))
