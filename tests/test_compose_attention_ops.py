"""The memory-bound ops around attention in a composed step (calibration/aic_compose.py): RoPE, the
KV-cache write and the model's q/k RMSNorm run in every layer for every token, sized from the model's
shape, and a q/k norm across heads (MiniMax-M2) adds one all-reduce per layer under tensor parallelism.

Tests that read the tables skip when aiconfigurator-core (import name aiconfigurator_core) is absent.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from calibration.aic_attention_ops import ACTIVATION_BYTES
from calibration.aic_tables import LookupLog
from sim.catalog import ModelSpec, model_catalog
from sim.configio import ConfigError, build


@pytest.fixture(scope="module")
def tables():
    pytest.importorskip("aiconfigurator_core")
    from calibration.aic_tables import load_tables
    return {s: load_tables(s) for s in ("h100_sxm", "h200_sxm")}


def composer(tables, model, system="h200_sxm", **kwargs):
    from calibration.aic_compose import StepComposer
    model = model_catalog()[model] if isinstance(model, str) else model
    return StepComposer(tables[system], model, **kwargs)


def decode(c, batch=16, context=2047):
    log = LookupLog()
    parts = c.step([1] * batch, [context] * batch, [1] * batch, log)
    assert not log.clamped, log.examples
    return parts


def test_catalog_says_which_models_normalise_q_and_k():
    cat = model_catalog()
    assert cat["qwen3-32b"].qk_norm == cat["qwen3-235b-a22b"].qk_norm == "per_head"
    assert cat["minimax-m2.5"].qk_norm == "across_heads" and cat["minimax-m2.5"].rotary_dim == 64
    for name in ("llama-3.1-8b", "llama-3.1-70b", "gpt-oss-120b", "mixtral-8x7b"):
        assert cat[name].qk_norm == "none" and cat[name].rotary_dim == 0


@pytest.mark.parametrize("field, value, allowed", [("qk_norm", "per_layer", "per_head"), ("rotary_dim", 256, "head_dim")])
def test_bad_qk_norm_or_rotary_dim_is_one_clear_error(field, value, allowed):
    entry = {k: getattr(model_catalog()["qwen3-32b"], k) for k in ModelSpec.__dataclass_fields__}
    with pytest.raises(ConfigError, match=rf"{field}.*{allowed}"):
        build(ModelSpec, {**entry, field: value}, "models.yaml:x")


def test_aux_bytes_are_sized_from_heads_head_dim_and_dtypes(tables):
    a = ACTIVATION_BYTES
    q32 = model_catalog()["qwen3-32b"]
    for tp in (1, 2, 8):
        c = composer(tables, q32, "h100_sxm", tp=tp, dtype="bf16")
        q, kv = q32.num_attention_heads // tp * 128, max(q32.num_kv_heads // tp, 1) * 128
        assert c.aux_bytes_per_token["qk_norm"] == [2 * q * a, 2 * kv * a]  # q_norm and k_norm: read + write
        assert c.aux_bytes_per_token["kv_cache_write"] == [2 * kv * (a + 2)]
        assert c.aux_bytes_per_token["rope"] == [2 * (q + kv) * a + 128 * a]
    # Half the head_dim: half the bytes of every op; a fp8 KV cache stores one byte per element.
    half = replace(q32, head_dim=64)
    c128, c64 = (composer(tables, m, "h100_sxm", tp=2, dtype="bf16") for m in (q32, half))
    for op in ("qk_norm", "kv_cache_write"):
        assert [2 * b for b in c64.aux_bytes_per_token[op]] == c128.aux_bytes_per_token[op]
    fp8_kv = composer(tables, q32, "h100_sxm", tp=2, dtype="bf16", kv_dtype="fp8")
    assert fp8_kv.aux_bytes_per_token["kv_cache_write"][0] == 2 * 4 * 128 * (a + 1)
    # MiniMax-M2 rotates 64 of its 128 channels per head.
    mm = composer(tables, "minimax-m2.5", tp=4, dtype="fp8", kv_dtype="bf16")
    assert mm.aux_bytes_per_token["rope"] == [2 * (12 + 2) * 64 * a + 64 * a]


@pytest.mark.parametrize("model, system, tp, dtype", [("llama-3.1-8b", "h200_sxm", 1, "fp8"),
                                                      ("qwen3-32b", "h100_sxm", 2, "bf16"),
                                                      ("gpt-oss-120b", "h200_sxm", 2, "mxfp4"),
                                                      ("minimax-m2.5", "h200_sxm", 4, "fp8")])
def test_every_layer_pays_rope_kv_write_and_qk_norm(tables, model, system, tp, dtype):
    """The step is dearer than one without the ops by exactly num_layers x their per-layer time, which
    is at least one memory-op launch per call (aiconfigurator's analytic memory model)."""
    c = composer(tables, model, system, tp=tp, dtype=dtype)
    bare = composer(tables, model, system, tp=tp, dtype=dtype)
    bare.aux_bytes_per_token = {}
    bare.model = replace(bare.model, qk_norm="none")
    spec = model_catalog()[model]
    for batch in (1, 16, 64):
        log = LookupLog()
        aux = c.attention_aux_s(batch, log)
        calls = 2 + {"none": 0, "per_head": 2, "across_heads": 2}[spec.qk_norm]
        assert sum(len(v) for v in c.aux_bytes_per_token.values()) == calls
        extra = sum(decode(c, batch).values()) - sum(decode(bare, batch).values())
        assert extra == pytest.approx(spec.num_layers * sum(aux.values()), rel=1e-9)
        assert extra >= spec.num_layers * calls * c.tables.mem_latency_s
    # A prefill pays the same ops for all its tokens: more bytes, more time.
    assert sum(c.attention_aux_s(4096, LookupLog()).values()) > sum(c.attention_aux_s(1, LookupLog()).values())


def test_qk_norm_across_heads_adds_one_all_reduce_per_layer_under_tp(tables):
    mm = model_catalog()["minimax-m2.5"]
    for tp in (1, 4, 8):
        c = composer(tables, mm, tp=tp, dtype="fp8", kv_dtype="bf16")
        per_head = composer(tables, replace(mm, qk_norm="per_head"), tp=tp, dtype="fp8", kv_dtype="bf16")
        log = LookupLog()
        aux = c.attention_aux_s(16, log)
        assert ("qk_norm_allreduce" in aux) == (tp > 1)
        assert "qk_norm_allreduce" not in per_head.attention_aux_s(16, log)
        comm = decode(c)["comm_s"] - decode(per_head)["comm_s"]
        if tp == 1:
            assert comm == 0.0
        else:  # a 64-byte message: the smallest measured all-reduce, not a clamp
            assert comm == pytest.approx(mm.num_layers * aux["qk_norm_allreduce"], rel=1e-9)
            assert 0 < aux["qk_norm_allreduce"] < c._allreduce_s(16, log)
        assert not log.clamped


def test_composition_matches_aiconfigurators_own_estimator_op_group_by_op_group(tables):
    """benchmarks/compose_audit.py on Qwen3-32B bf16 TP2 (H100), a 16-sequence decode: aiconfigurator-core's
    op list for the model, priced by its compiled engine from the same tables, agrees with ours group by
    group; our attention group is its attention kernel plus the ops around attention it leaves out of a
    decode (RoPE, KV-cache write, q/k norm: 64 layers x 4 memory ops)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from compose_audit import SETUPS, Reference, ours

    s = next(x for x in SETUPS if x.model == "qwen3-32b")
    c = composer(tables, s.model, s.system, tp=s.tp, dtype=s.dtype, kv_dtype=s.kv_dtype)
    o, aux = ours(c, [1] * 16, [2000] * 16)
    r = Reference(s, tables[s.system].version).groups("decode", 16, 2001)
    for group in ("gemm", "comm", "elem", "lm_head"):
        assert o[group] == pytest.approx(r[group], rel=0.15), group
    assert o["attn"] - aux == pytest.approx(r["attn"], rel=0.02)
    assert aux >= 64 * 4 * c.tables.mem_latency_s
