"""The memory-bound ops around attention that a composed step prices (calibration/aic_compose.py).

Every layer runs them for every token of a step, prompt and decode alike; the op tables do not time
them (the attention tables time the attention kernel alone), so the composition prices each call with
aiconfigurator's analytic memory model (a fixed latency + bytes / effective bandwidth):

    rope            vLLM's rotary kernel rewrites the rotated channels of q and k in place and reads
                    one cos/sin row per token (rotary_dim channels; all of head_dim by default)
    kv_cache_write  reshape_and_cache reads the new k and v and stores them in the KV dtype
    qk_norm         per_head (Qwen3): q_norm and k_norm, each reading and writing its tensor;
                    across_heads (MiniMax-M2): a sum-of-squares pass over q and k, then the scaling
                    pass; under TP the per-token sums are all-reduced (StepComposer.attention_aux_s)
"""
from __future__ import annotations

from sim.catalog import ModelSpec

KV_BYTES = {"bf16": 2, "fp8": 1}  # bytes per KV-cache element
ACTIVATION_BYTES = 2  # q, k, v and the residual stream are bf16 activations


def aux_bytes_per_token(model: ModelSpec, heads: int, kv_heads: int, kv_dtype: str) -> dict[str, list[int]]:
    """Bytes per token that each op moves on one GPU holding `heads` query and `kv_heads` KV heads,
    one entry per kernel call: op name -> [bytes of each call]."""
    a, hd = ACTIVATION_BYTES, model.head_dim
    rot = model.rotary_dim or hd
    q, kv = heads * hd, kv_heads * hd
    ops = {"rope": [2 * (heads + kv_heads) * rot * a + rot * a],
           "kv_cache_write": [2 * kv * (a + KV_BYTES[kv_dtype])]}
    if model.qk_norm == "per_head":
        ops["qk_norm"] = [2 * q * a, 2 * kv * a]
    elif model.qk_norm == "across_heads":
        ops["qk_norm"] = [(q + kv) * a, 2 * (q + kv) * a]
    return ops
