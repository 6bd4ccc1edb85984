"""How one replica's GPU memory divides into weights, reserve and paged KV cache.

Per GPU of a tensor-parallel group of size t (vLLM's accounting):

    usable      = memory_bytes * gpu_memory_utilization
    kv_budget   = usable - weights / t - reserve
    kv_blocks   = kv_budget // (block_size_tokens * kv_bytes_per_token_per_gpu)

KV bytes per token = 2 (K and V) * layers * KV heads on this GPU * head_dim * dtype
bytes; with grouped-query attention KV heads are few, and when t exceeds them they
are replicated (each GPU keeps at least one). A speculative draft model adds its own
weights and its own KV per token.
"""
from __future__ import annotations

from dataclasses import dataclass

from .catalog import GIB, GpuSpec, ModelSpec
from .configio import ConfigError
from .quantization import kv_bytes_per_value, weight_bytes_per_param


def weight_bytes(model: ModelSpec, weight_dtype: str) -> int:
    """Whole-model weight bytes. Quantised checkpoints keep embedding and LM head in 16 bit."""
    embed = model.embedding_params
    linear = max(model.num_params - embed, 0)
    return int(linear * weight_bytes_per_param(weight_dtype) + embed * 2.0)


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str, tp: int) -> int:
    """KV-cache bytes one token occupies on one GPU of the TP group."""
    return 2 * model.num_layers * kv_heads_per_gpu(model, tp) * model.head_dim * kv_bytes_per_value(kv_dtype)


def activation_reserve_bytes(model: ModelSpec, tp: int, max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """Peak activation memory of the largest step, as vLLM's profiling run measures it (estimate).

    The widest intermediate is the gated MLP (gate and up, 2 * ffn per token, 16 bit),
    plus the residual/attention buffers (~4 * hidden per token) and fp32 logits for the
    sequences sampled in a step.
    """
    per_token = (2 * model.ffn_size // tp + 4 * model.hidden_size) * 2
    logits = max_num_seqs * model.vocab_size * 4 // tp
    return max_num_batched_tokens * per_token + logits


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes per GPU of one replica, and the KV-cache capacity that follows."""

    gpu_memory_bytes: int
    usable_bytes: int
    weights_bytes: int  # per GPU, target + draft
    reserve_bytes: int  # activations + non-torch overhead (CUDA context, graphs, NCCL)
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
                draft: ModelSpec | None = None, num_kv_blocks_override: int | None = None) -> MemoryPlan:
    """Divide one replica's memory; raise ConfigError (needed vs available GiB) if it does not fit."""
    weights = weight_bytes(model, weight_dtype) // tp
    per_token = kv_bytes_per_token(model, kv_dtype, tp)
    if draft is not None:
        weights += weight_bytes(draft, "bf16") // tp
        per_token += kv_bytes_per_token(draft, kv_dtype, tp)
    reserve = overhead_bytes + activation_reserve_bytes(model, tp, max_num_batched_tokens, max_num_seqs)
    usable = int(gpu.memory_bytes * gpu_memory_utilization)
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
