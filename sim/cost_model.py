"""The cost model: one engine step (a batch) -> seconds.

Every cost model sees a step through the same five features, so the analytic roofline
and a profile fitted on measured steps (calibration/) are interchangeable:

    new_tokens      tokens computed this step (prefill chunk tokens + decode tokens)
    sampled         positions whose logits are computed (one per sequence that emits)
    attn_pairs      query x key pairs of attention (causal: quadratic in a prefill chunk)
    kv_read_tokens  tokens of KV cache read by attention
    num_seqs        sequences in the step

`sim/step_features.py` turns per-sequence work (chunk length and context already cached) into
those features. All arguments may be numpy arrays: the engine prices many decode steps
in one call.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .catalog import GpuSpec, ModelSpec
from .memory import kv_bytes_per_token
from .quantization import matmul_tflops, weight_bytes_per_param
from .serving_overhead import ServingOverhead


class CostModel(Protocol):
    response_latency_s: float  # seconds from a token leaving the engine to the client reading it
    response_latency_per_prompt_token_s: float  # more of it per prompt token of the request (tokenisation)
    request_jitter_s: float  # mean seconds from a client sending a request to the engine seeing it (random)

    def step_times_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> np.ndarray:
        """Seconds per step for each step described by the (broadcast) feature arrays."""
        ...

    def step_time_s(self, new_tokens: int, sampled: int, attn_pairs: int, kv_read_tokens: int, num_seqs: int) -> float:
        """One step, as a float (the engine's per-decision call)."""
        ...

    def decode_step_times_s(self, num_seqs: np.ndarray, context_tokens: np.ndarray) -> np.ndarray:
        """Plain decode steps (one token per sequence): seconds per step (the fast-forward's call)."""
        ...


class _ScalarFromArrays:
    """`step_time_s` and `decode_step_times_s` for cost models that only define `step_times_s`."""

    response_latency_s: float = 0.0  # engine -> client delay added to every response (ServingOverhead)
    response_latency_per_prompt_token_s: float = 0.0  # and per prompt token of its request (ServingOverhead)
    request_jitter_s: float = 0.0  # mean of the random client -> engine delay of each request (ServingOverhead)

    def step_time_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> float:
        return float(self.step_times_s(new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs))

    def decode_step_times_s(self, num_seqs: np.ndarray, context_tokens: np.ndarray) -> np.ndarray:
        """Plain decode steps: num_seqs[i] sequences, each computing and sampling one token,
        attending context_tokens[i] tokens in total (the engine's fast-forward)."""
        return self.step_times_s(num_seqs, num_seqs, context_tokens, context_tokens, num_seqs)

    def decode_steps_scalar(self) -> Callable[[int, int, int], list[float]] | None:
        """f(num_seqs, context_tokens, count) -> seconds of `count` decode steps of num_seqs sequences, the
        first attending context_tokens tokens and each next one num_seqs more: decode_step_times_s's numbers
        on plain floats, bit for bit, for a caller that prices a few steps at a time; None where a model
        has no such form."""
        return None


@dataclass(frozen=True)
class RooflineParams:
    """Efficiency factors and overheads of the analytic model (scenario `cost_model:`)."""

    compute_efficiency: float = 0.6  # achieved / peak tensor FLOP/s for GEMMs
    attention_efficiency: float = 0.4  # achieved / peak FLOP/s for attention kernels
    memory_efficiency: float = 0.8  # achieved / peak HBM bandwidth
    step_overhead_s: float = 0.003  # scheduler, sampling, kernel launches per step (CUDA graphs off)
    per_seq_overhead_s: float = 2.0e-5  # input preparation / sampling per sequence
    allreduce_latency_s: float = 1.0e-5  # per all-reduce call (NCCL small-message latency)
    # The API server's, not the GPU's: engine -> client delay of every response and the mean random
    # client -> engine delay of each request. 0 here; sim/cost_select.roofline_defaults takes them from the
    # engine terms of the scenario's vLLM version, as a profile-priced run gets them (ServingOverhead).
    response_latency_s: float = 0.0
    request_jitter_s: float = 0.0


class RooflineCostModel(_ScalarFromArrays):
    """max(compute, memory) per operator group, from catalog numbers alone.

    Linear layers: FLOPs 2 * active params per token vs. streaming the weights once per
    step (an MoE reads only the experts its tokens touch). Attention: FLOPs 4 * heads *
    head_dim per query-key pair per layer vs. reading the KV cache. Tensor parallelism
    divides both and adds two ring all-reduces of the activations per layer.
    """

    def __init__(self, model: ModelSpec, gpu: GpuSpec, *, tp: int, weight_dtype: str, kv_dtype: str,
                 params: RooflineParams = RooflineParams(), path: str = "serving.quantization.weights"):
        self.model, self.gpu, self.tp, self.params = model, gpu, tp, params
        self.response_latency_s, self.request_jitter_s = params.response_latency_s, params.request_jitter_s
        self._linear_flops_per_s = matmul_tflops(gpu, weight_dtype, path) * 1e12 * params.compute_efficiency
        self._attn_flops_per_s = gpu.bf16_tflops * 1e12 * params.attention_efficiency
        self._bytes_per_s = gpu.hbm_bandwidth_bytes_per_s * params.memory_efficiency
        wb = weight_bytes_per_param(weight_dtype)
        self._attn_weight_bytes = model.num_layers * model.attention_params_per_layer * wb / tp
        self._expert_weight_bytes = model.num_layers * model.expert_params * wb / tp  # one expert, all layers
        self._head_bytes = model.lm_head_params * 2.0 / tp
        self._kv_bytes_per_token = kv_bytes_per_token(model, kv_dtype, tp)
        self._attn_flops_per_pair = 4.0 * model.num_layers * model.num_attention_heads * model.head_dim / tp

        # Seconds per unit of each feature (precomputed: the engine prices millions of steps).
        self._s_per_token = 2.0 * model.active_linear_params / tp / self._linear_flops_per_s
        self._s_per_sample = 2.0 * model.lm_head_params / tp / self._linear_flops_per_s
        self._s_per_pair = self._attn_flops_per_pair / self._attn_flops_per_s
        self._s_per_kv_token = self._kv_bytes_per_token / self._bytes_per_s
        self._dense_weights_s = (self._attn_weight_bytes + self._expert_weight_bytes + self._head_bytes) / self._bytes_per_s
        if tp > 1:  # two ring all-reduces of the step's activations per layer
            self._comm_s_per_token = (2 * model.num_layers * 2.0 * (tp - 1) / tp * model.hidden_size * 2.0
                                      / gpu.interconnect_bw_bytes_per_s)
            self._comm_fixed_s = 2 * model.num_layers * params.allreduce_latency_s
        else:
            self._comm_s_per_token = self._comm_fixed_s = 0.0

    def _weights_s(self, T):
        m = self.model
        if not m.is_moe:
            return self._dense_weights_s
        # Expected distinct experts touched per layer when each token picks k of E uniformly.
        experts = m.num_experts * (1.0 - (1.0 - m.experts_per_token / m.num_experts) ** T)
        return (self._attn_weight_bytes + experts * self._expert_weight_bytes + self._head_bytes) / self._bytes_per_s

    def step_time_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> float:
        """The same formula as step_times_s on plain floats (the per-decision call; numpy is slow on scalars)."""
        p = self.params
        T = float(new_tokens)
        t = (p.step_overhead_s + p.per_seq_overhead_s * num_seqs
             + max(self._s_per_token * T + self._s_per_sample * sampled,
                   float(self._weights_s(T)) if self.model.is_moe else self._dense_weights_s)
             + max(self._s_per_pair * attn_pairs, self._s_per_kv_token * kv_read_tokens))
        if self.tp > 1:
            t += self._comm_fixed_s + self._comm_s_per_token * T
        return t

    def step_times_float(self, new_tokens: int, sampled: int, attn_pairs: int, kv_read_tokens: int,
                         num_seqs: int) -> float:
        """step_times_s of one step, its operations in its order on floats (the same bits; step_time_s
        adds the all-reduce terms in another order). A dense model only: an MoE's expert term is a power."""
        if self.model.is_moe:
            raise ValueError("step_times_float: a mixture of experts prices its experts with numpy's power")
        p = self.params
        T = float(new_tokens)
        t = (p.step_overhead_s + p.per_seq_overhead_s * num_seqs
             + max(self._s_per_token * T + self._s_per_sample * sampled, self._dense_weights_s)
             + max(self._s_per_pair * attn_pairs, self._s_per_kv_token * kv_read_tokens))
        if self.tp > 1:
            t = t + self._comm_fixed_s + self._comm_s_per_token * T
        return t

    def decode_step_times_s(self, num_seqs: np.ndarray, context_tokens: np.ndarray) -> np.ndarray:
        """step_times_s(B, B, ctx, ctx, B) with the terms gathered (the hot path of the engine)."""
        if self.model.is_moe:
            return self.step_times_s(num_seqs, num_seqs, context_tokens, context_tokens, num_seqs)
        p = self.params
        per_seq = p.per_seq_overhead_s + self._comm_s_per_token
        t = np.maximum((self._s_per_token + self._s_per_sample) * num_seqs, self._dense_weights_s)
        t += max(self._s_per_pair, self._s_per_kv_token) * context_tokens
        t += per_seq * num_seqs
        t += p.step_overhead_s + self._comm_fixed_s
        return t

    def decode_steps_scalar(self) -> Callable[[int, int, int], list[float]] | None:
        """decode_step_times_s's operations, in its order, on floats (numpy's float64 arithmetic is
        IEEE's, so every step has the same bits); None for a mixture of experts (step_times_s' form)."""
        if self.model.is_moe:
            return None
        p = self.params
        per_token = self._s_per_token + self._s_per_sample
        weights_s = self._dense_weights_s
        per_ctx = max(self._s_per_pair, self._s_per_kv_token)
        per_seq = p.per_seq_overhead_s + self._comm_s_per_token
        fixed = p.step_overhead_s + self._comm_fixed_s

        def steps_s(num_seqs: int, context_tokens: int, count: int) -> list[float]:
            linear = max(per_token * num_seqs, weights_s)  # the terms of the batch size, once per call
            seqs = per_seq * num_seqs
            return [linear + per_ctx * ctx + seqs + fixed
                    for ctx in range(context_tokens, context_tokens + num_seqs * count, num_seqs)]
        return steps_s

    def step_times_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> np.ndarray:
        p = self.params
        T = np.asarray(new_tokens, dtype=np.float64)
        t_linear = np.maximum(self._s_per_token * T + self._s_per_sample * np.asarray(sampled), self._weights_s(T))
        t_attn = np.maximum(self._s_per_pair * np.asarray(attn_pairs, dtype=np.float64),
                            self._s_per_kv_token * np.asarray(kv_read_tokens, dtype=np.float64))
        t = (p.step_overhead_s + p.per_seq_overhead_s * np.asarray(num_seqs) + t_linear + t_attn)
        if self.tp > 1:
            t = t + self._comm_fixed_s + self._comm_s_per_token * T
        return t


# Coefficient names of a fitted profile, in the order of ProfileCostModel's formula.
PROFILE_COEFFICIENTS = ("overhead_s", "per_seq_s", "weights_s", "per_token_s", "per_pair_s", "per_kv_token_s",
                        "per_sample_s")
# Optional, together, in a profile of a mixture of experts: the seconds to stream every expert's
# weights once (all MoE layers) and k / E, the share of the experts one token's routing picks.
EXPERT_COEFFICIENTS = ("experts_s", "expert_pick_fraction")


def expert_fraction(new_tokens, pick_fraction: float):
    """Expected share of a MoE layer's experts that `new_tokens` tokens touch when each token picks
    k of the E experts (pick_fraction = k / E), tokens independently and every expert alike:
    1 - (1 - k/E)^T. A touched expert's weights are read once whatever its token count, so this
    share of the expert bytes is what a step streams: k/E for one token, concave in T, never above 1."""
    return 1.0 - (1.0 - pick_fraction) ** np.asarray(new_tokens, dtype=np.float64)


class ProfileCostModel(_ScalarFromArrays):
    """A cost curve fitted on measured steps (calibration/fit.py), all coefficients >= 0, with a
    profile's serving terms folded in when given (ServingOverhead; with its `overlap`, the engine's
    time per step is max()-ed against the scaled formula below instead of added to it):

        t = overhead_s + per_seq_s * num_seqs
            + max(weights_s, per_token_s * new_tokens)      # weight streaming floor vs. GEMM compute
            + per_pair_s * attn_pairs + per_kv_token_s * kv_read_tokens + per_sample_s * sampled
            + experts_s * expert_fraction(new_tokens, expert_pick_fraction)   # a mixture of experts only
    """

    def __init__(self, coefficients: dict[str, float], serving: ServingOverhead | None = None):
        missing = [k for k in PROFILE_COEFFICIENTS if k not in coefficients]
        if missing:
            raise ValueError(f"profile coefficients missing {missing}; need {list(PROFILE_COEFFICIENTS)}")
        self.measured_coefficients = {k: float(coefficients[k]) for k in PROFILE_COEFFICIENTS}
        # k / E is a property of the model, not a time: kept apart so serving terms never scale it.
        self.expert_pick_fraction = float(coefficients.get("expert_pick_fraction", 0.0))
        if float(coefficients.get("experts_s", 0.0)) > 0.0:
            if not 0.0 < self.expert_pick_fraction <= 1.0:
                raise ValueError(f"experts_s needs expert_pick_fraction in (0, 1], got {self.expert_pick_fraction}")
            self.measured_coefficients["experts_s"] = float(coefficients["experts_s"])
        self.serving = serving
        # Overlapped serving (ServingOverhead.overlap): the coefficients are the scaled kernels alone and the
        # engine's time per step is kept apart, to be max()-ed against them.
        self._overlap = bool(serving and serving.overlap)
        if self._overlap:
            self.coefficients = serving.scaled(self.measured_coefficients)
            self._engine_step_s, self._engine_per_seq_s = serving.step_overhead_s, serving.per_seq_overhead_s
            self._exposed_step_s = serving.exposed_step_s
        else:
            self.coefficients = serving.apply(self.measured_coefficients) if serving else self.measured_coefficients
        self._experts_s = self.coefficients.get("experts_s", 0.0)
        self._expert_keep = 1.0 - self.expert_pick_fraction  # chance one token leaves a given expert untouched
        self.response_latency_s = serving.response_latency_s if serving else 0.0
        self.response_latency_per_prompt_token_s = serving.response_latency_per_prompt_token_s if serving else 0.0
        self.request_jitter_s = serving.request_jitter_s if serving else 0.0
        self._host_per_seq_s = serving.host_per_seq_s if serving else 0.0
        # decode_step_times_s's terms of the batch size alone, for the forms that can use them (the
        # expert term, the host floor and the overlapped max are not terms of the batch size alone).
        self._by_seqs = None if (self._experts_s or self._host_per_seq_s or self._overlap) else self._by_seqs_table(256)

    def _by_seqs_table(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per batch size B < size: overhead_s + per_seq_s * B + max(weights_s, per_token_s * B), and
        per_sample_s * B, computed as decode_step_times_s computes them (same operations, same bits)."""
        c = self.coefficients
        B = np.arange(size, dtype=np.float64)
        base = c["overhead_s"] + c["per_seq_s"] * B
        base += np.maximum(c["weights_s"], c["per_token_s"] * B)
        return base, c["per_sample_s"] * B

    def step_time_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> float:
        """step_times_s on plain floats, term by term in the same order (the per-decision call;
        numpy costs ~1 us per scalar operation, so the array path is ~10x slower here)."""
        c = self.coefficients
        S = float(num_seqs)
        t = (c["overhead_s"] + c["per_seq_s"] * S
             + max(c["weights_s"], c["per_token_s"] * float(new_tokens))
             + c["per_pair_s"] * float(attn_pairs)
             + c["per_kv_token_s"] * float(kv_read_tokens)
             + c["per_sample_s"] * float(sampled))
        if self._experts_s:
            t += self._experts_s * (1.0 - self._expert_keep ** float(new_tokens))
        if self._overlap:
            t = self._exposed_step_s + max(t, self._engine_step_s + self._engine_per_seq_s * S)
        if self._host_per_seq_s:
            t = max(t, self._host_per_seq_s * S)
        return t

    def decode_step_times_s(self, num_seqs: np.ndarray, context_tokens: np.ndarray) -> np.ndarray:
        """step_times_s(B, B, ctx, ctx, B) with each array converted once (the engine's fast-forward)."""
        c = self.coefficients
        if self._by_seqs is not None and isinstance(num_seqs, np.ndarray) \
                and num_seqs.dtype == np.int64:
            # The terms of B alone looked up per step (B is a small integer): fewer passes, same bits.
            base, sample = self._by_seqs
            try:
                t = base.take(num_seqs)
                by_sample = sample.take(num_seqs)
            except IndexError:  # a batch larger than the table: grow it
                self._by_seqs = self._by_seqs_table(2 * int(num_seqs.max()) + 1)
                return self.decode_step_times_s(num_seqs, context_tokens)
            t += c["per_pair_s"] * context_tokens
            t += c["per_kv_token_s"] * context_tokens
            t += by_sample
            return t
        B = np.asarray(num_seqs, dtype=np.float64)
        ctx = np.asarray(context_tokens, dtype=np.float64)
        t = c["overhead_s"] + c["per_seq_s"] * B
        t += np.maximum(c["weights_s"], c["per_token_s"] * B)
        t += c["per_pair_s"] * ctx
        t += c["per_kv_token_s"] * ctx
        t += c["per_sample_s"] * B
        if self._experts_s:
            t += self._experts_s * (1.0 - self._expert_keep ** B)
        if self._overlap:
            t = self._exposed_step_s + np.maximum(t, self._engine_step_s + self._engine_per_seq_s * B)
        if self._host_per_seq_s:
            t = np.maximum(t, self._host_per_seq_s * B)
        return t

    def decode_steps_scalar(self) -> Callable[[int, int, int], list[float]] | None:
        """decode_step_times_s on floats, term by term in its order (same bits): its table form for
        batches within the table, else its general form; None with an expert term (a power, which numpy
        and the C library need not round alike)."""
        c = self.coefficients
        per_pair, per_kv = c["per_pair_s"], c["per_kv_token_s"]
        if self._by_seqs is not None:
            base, by_sample = (a.tolist() for a in self._by_seqs)

            def steps_s(num_seqs: int, context_tokens: int, count: int) -> list[float]:
                b, sample = base[num_seqs], by_sample[num_seqs]
                return [b + per_pair * ctx + per_kv * ctx + sample
                        for ctx in range(context_tokens, context_tokens + num_seqs * count, num_seqs)]
            return steps_s
        if self._experts_s:
            return None
        overlap, host_per_seq_s = self._overlap, self._host_per_seq_s

        exposed = self._exposed_step_s if overlap else 0.0
        rising = per_pair >= 0.0 and per_kv >= 0.0  # each step at least its predecessor within a call
        by_seqs: dict[int, tuple[float, float, float]] = {}  # the terms of the batch size, once per size

        def steps_general_s(num_seqs: int, context_tokens: int, count: int) -> list[float]:
            B = float(num_seqs)
            terms = by_seqs.get(num_seqs)
            if terms is None:
                terms = by_seqs[num_seqs] = (
                    c["overhead_s"] + c["per_seq_s"] * B + max(c["weights_s"], c["per_token_s"] * B),
                    c["per_sample_s"] * B, self._engine_step_s + self._engine_per_seq_s * B if overlap else 0.0)
            linear, sample, engine = terms
            ctxs = range(context_tokens, context_tokens + num_seqs * count, num_seqs)
            if overlap and rising and linear + per_pair * context_tokens + per_kv * context_tokens + sample >= engine:
                # The step grows with the context (coefficients >= 0, IEEE's operations monotone), so the
                # engine's floor, under the first step, is under every one: max() keeps the step.
                times = [exposed + (linear + per_pair * ctx + per_kv * ctx + sample) for ctx in ctxs]
            elif overlap:  # one pass: the step, then the engine's floor and the exposed time
                times = [exposed + (t if (t := linear + per_pair * ctx + per_kv * ctx + sample) >= engine else engine)
                         for ctx in ctxs]
            else:
                times = [linear + per_pair * ctx + per_kv * ctx + sample for ctx in ctxs]
            if host_per_seq_s:
                floor = host_per_seq_s * B
                times = [t if t >= floor else floor for t in times]
            return times
        return steps_general_s

    def step_times_s(self, new_tokens, sampled, attn_pairs, kv_read_tokens, num_seqs) -> np.ndarray:
        c = self.coefficients
        T = np.asarray(new_tokens, dtype=np.float64)
        t = (c["overhead_s"] + c["per_seq_s"] * np.asarray(num_seqs, dtype=np.float64)
             + np.maximum(c["weights_s"], c["per_token_s"] * T)
             + c["per_pair_s"] * np.asarray(attn_pairs, dtype=np.float64)
             + c["per_kv_token_s"] * np.asarray(kv_read_tokens, dtype=np.float64)
             + c["per_sample_s"] * np.asarray(sampled, dtype=np.float64))
        if self._experts_s:
            t = t + self._experts_s * (1.0 - self._expert_keep ** T)
        if self._overlap:
            t = self._exposed_step_s + np.maximum(
                t, self._engine_step_s + self._engine_per_seq_s * np.asarray(num_seqs, dtype=np.float64))
        if self._host_per_seq_s:
            t = np.maximum(t, self._host_per_seq_s * np.asarray(num_seqs, dtype=np.float64))
        return t
