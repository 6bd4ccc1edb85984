"""How one replica's GPU memory divides into weights, reserve and paged KV cache, as vLLM decides it.

vLLM (v1/worker/gpu_worker.py `determine_available_memory`, utils/mem_utils.py `memory_profiling`)
profiles one forward pass of max_num_batched_tokens tokens plus a sampler pass over max_num_seqs
sequences, then gives the KV cache what is left of its share of the GPU. Per GPU of a
tensor-parallel group of size t:

    requested   = ceil(memory_bytes * gpu_memory_utilization)
    non_kv      = weights / t                     (torch, measured at load)
                + non-torch memory                (workspaces, CUDA graphs: overhead_bytes;
                                                   NCCL / custom all-reduce buffers when t > 1)
                + activation peak of the profile  (transient torch peak above what stays allocated)
    kv_blocks   = (requested - non_kv) // (block_size_tokens * kv_bytes_per_token_per_gpu)

KV bytes per token = 2 (K and V) * full-attention layers * KV heads on this GPU * head_dim * dtype
bytes. With grouped-query attention KV heads are few, and when t exceeds them they are replicated
(each GPU keeps at least one). Sliding-window layers (gpt-oss) keep only their window per sequence:
vLLM's hybrid allocator sizes a block as the largest KV-cache group's layers (v1/core/kv_cache_utils.py
`_get_kv_cache_bytes_per_block`), so with equal full and sliding groups only the full-attention
layers count per token (the window's few blocks per running sequence are left out). A speculative
draft model adds its own weights and its own KV per token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .catalog import GIB, GpuSpec, ModelSpec
from .configio import ConfigError
from .quantization import kv_bytes_per_value, weight_bytes_per_param


def weight_bytes(model: ModelSpec, weight_dtype: str) -> int:
    """Whole-model weight bytes. Quantised checkpoints keep embedding and LM head in 16 bit, and
    the model's `unquantized_params` (e.g. gpt-oss's attention) too."""
    kept = model.embedding_params + model.unquantized_params
    linear = max(model.num_params - kept, 0)
    return int(linear * weight_bytes_per_param(weight_dtype) + kept * 2.0)


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str, tp: int) -> int:
    """KV-cache bytes one token occupies on one GPU of the TP group (full-attention layers)."""
    return (2 * model.num_full_attention_layers * kv_heads_per_gpu(model, tp) * model.head_dim
            * kv_bytes_per_value(kv_dtype))


# NCCL and vLLM's custom all-reduce buffers per GPU under tensor parallelism (non-torch memory that
# vLLM's profiling counts against the KV cache): aiconfigurator-core 0.12.0 systems/<gpu>.yaml
# `misc.nccl_mem`, the same on every GPU it describes (342 MB at TP 2, 392 MB at TP 4 and 8).
NCCL_BYTES_BY_TP = {1: 0, 2: 358612992, 4: 411041792, 8: 411041792}
# vLLM's fused-MoE kernels process at most this many tokens per call (VLLM_FUSED_MOE_CHUNK_SIZE),
# so their workspaces stop growing beyond it.
FUSED_MOE_CHUNK_TOKENS = 16 * 1024


def nccl_bytes(tp: int) -> int:
    """Communication buffers per GPU at TP `tp` (the nearest listed TP size at or below it)."""
    return NCCL_BYTES_BY_TP[max(k for k in NCCL_BYTES_BY_TP if k <= max(tp, 1))]


def activation_reserve_bytes(model: ModelSpec, tp: int, max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """Transient peak of vLLM's profiling run: one forward pass of max_num_batched_tokens tokens,
    then the sampler over max_num_seqs sequences (estimate; 16-bit activations, fp32 logits).

    Dense: the gated MLP's gate/up output (2 * ffn / t per token) beside the residual and attention
    buffers (~4 * hidden per token). MoE: the fused-MoE workspaces for every (token, chosen expert)
    pair (gate/up output, activation and down output, 2 * ffn / t + ffn / t + hidden, up to
    FUSED_MOE_CHUNK_TOKENS tokens per call) beside the same residual buffers. The sampler's logits
    cover the whole vocabulary on every rank (vLLM gathers them), so they do not shrink with t.
    """
    T = max_num_batched_tokens
    h = model.hidden_size
    if model.is_moe:
        pairs = min(T, FUSED_MOE_CHUNK_TOKENS) * model.experts_per_token
        mlp = pairs * (3 * model.ffn_size // tp + h) * 2
    else:
        mlp = T * (2 * model.ffn_size // tp) * 2
    residual = T * 4 * h * 2
    logits = max_num_seqs * model.vocab_size * 4
    return mlp + residual + logits


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU of one replica, and the KV-cache capacity that follows."""

    gpu_memory_bytes: int
    usable_bytes: int
    weights_bytes: int  # per GPU, target + draft
    reserve_bytes: int  # activation peak + non-torch memory (workspaces, graphs, NCCL)
    kv_budget_bytes: int
    kv_bytes_per_token: int  # per GPU, target + draft
    block_size_tokens: int
    num_kv_blocks: int

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_kv_blocks * self.block_size_tokens


def plan_memory(*, model: ModelSpec, gpu: GpuSpec, tp: int, weight_dtype: str, kv_dtype: str,
                gpu_memory_utilization: float, block_size_tokens: int, max_num_batched_tokens: int,
                max_num_seqs: int, max_model_len: int, overhead_bytes: int,
                draft: ModelSpec | None = None, num_kv_blocks_override: int | None = None,
                draft_weight_bytes: int | None = None) -> MemoryPlan:
    """Divide one replica's memory; raise ConfigError (needed vs available GiB) if it does not fit.
    `draft_weight_bytes`: the draft's own weights (default: all of `draft` in bf16; a speculative
    head shares the target's embedding and LM head)."""
    weights = weight_bytes(model, weight_dtype) // tp
    per_token = kv_bytes_per_token(model, kv_dtype, tp)
    if draft is not None:
        weights += (weight_bytes(draft, "bf16") if draft_weight_bytes is None else draft_weight_bytes) // tp
        per_token += kv_bytes_per_token(draft, kv_dtype, tp)
    reserve = (overhead_bytes + nccl_bytes(tp)
               + activation_reserve_bytes(model, tp, max_num_batched_tokens, max_num_seqs))
    usable = math.ceil(gpu.memory_bytes * gpu_memory_utilization)  # vLLM's requested_memory
    kv_budget = usable - weights - reserve
    block_bytes = block_size_tokens * per_token
    blocks = max(kv_budget, 0) // block_bytes
    needed_for_one_seq = -(-max_model_len // block_size_tokens)
    if num_kv_blocks_override is not None:
        blocks = num_kv_blocks_override  # measured by the engine (calibration): trust it over the estimate
        if blocks < needed_for_one_seq:
            raise ConfigError(f"serving.num_kv_blocks: got {blocks}; {blocks} blocks x {block_size_tokens} tokens "
                              f"cannot hold one max_model_len sequence ({max_model_len} tokens): needs >= "
                              f"{needed_for_one_seq}, or lower serving.max_model_len")
    if blocks < needed_for_one_seq:
        need = weights + reserve + needed_for_one_seq * block_bytes
        hints = []
        if model.num_attention_heads % (tp * 2) == 0:
            hints.append(f"serving.tensor_parallel: {tp * 2}")
        if weight_dtype in ("bf16", "fp16"):
            hints.append("serving.quantization.weights: fp8/int8/int4")
        hints.append("a smaller serving.max_model_len")
        hints.append("a GPU with more memory")
        raise ConfigError(
            f"model: {model.name} does not fit on {gpu.name} x{tp}: needs {need / GIB:.1f} GiB per GPU "
            f"(weights {weights / GIB:.1f} + reserve {reserve / GIB:.1f} + KV for one "
            f"{max_model_len}-token sequence {needed_for_one_seq * block_bytes / GIB:.2f}) but "
            f"{usable / GIB:.1f} GiB are usable ({gpu.memory_bytes / GIB:.1f} GiB x gpu_memory_utilization "
            f"{gpu_memory_utilization}); try {', or '.join(hints)}")
    return MemoryPlan(gpu_memory_bytes=gpu.memory_bytes, usable_bytes=usable, weights_bytes=weights,
                      reserve_bytes=reserve, kv_budget_bytes=kv_budget, kv_bytes_per_token=per_token,
                      block_size_tokens=block_size_tokens, num_kv_blocks=int(blocks))
