"""The GPU and model catalogs: every entry loads, the numbers are self-consistent, lookups fail helpfully."""
from __future__ import annotations

import dataclasses

import pytest

from sim.catalog import GpuSpec, ModelSpec, gpu_catalog, model_catalog, resolve_gpu, resolve_model
from sim.configio import ConfigError

EXPECTED_GPUS = {
    "a100-40gb-sxm", "a100-80gb-sxm", "h100-sxm", "h100-pcie", "h200-sxm", "b200-sxm", "b300-sxm",
    "l4", "l40s", "a10g", "rtx-4090",
}
EXPECTED_MODELS = {
    "llama-3.1-8b", "llama-3.1-70b", "llama-2-7b", "llama-2-13b", "llama-2-70b", "mistral-7b",
    "mixtral-8x7b", "qwen2.5-7b", "qwen2.5-32b", "qwen3-32b", "llama-3.2-1b", "qwen2.5-0.5b",
    "gpt-oss-120b", "qwen3-235b-a22b", "minimax-m2.5",
}
MOE_MODELS = {"mixtral-8x7b", "gpt-oss-120b", "qwen3-235b-a22b", "minimax-m2.5"}
NO_FP8 = {"a100-40gb-sxm", "a100-80gb-sxm", "a10g"}


def test_all_gpus_load():
    catalog = gpu_catalog()
    assert set(catalog) == EXPECTED_GPUS
    for name, gpu in catalog.items():
        assert isinstance(gpu, GpuSpec)
        assert gpu.name == name
        assert isinstance(gpu.memory_bytes, int)


def test_all_models_load():
    catalog = model_catalog()
    assert set(catalog) == EXPECTED_MODELS
    for name, model in catalog.items():
        assert isinstance(model, ModelSpec)
        assert model.name == name


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_derived_param_count_matches_published(name):
    # Catches typos in the shape: the shape-derived count (no norms, biases or router) must be
    # within 3 % of the published total.
    model = model_catalog()[name]
    assert model.derived_num_params == pytest.approx(model.num_params, rel=0.03)


def test_moe_and_draft_models():
    models = model_catalog()
    mixtral = models["mixtral-8x7b"]
    assert (mixtral.num_experts, mixtral.experts_per_token) == (8, 2)
    assert mixtral.is_moe
    # 12.9B active parameters per token (model card), LM head and embedding included.
    active = mixtral.active_linear_params + mixtral.lm_head_params + mixtral.vocab_size * mixtral.hidden_size
    assert active == pytest.approx(12.9e9, rel=0.01)
    for draft in ("llama-3.2-1b", "qwen2.5-0.5b"):
        assert models[draft].tied_embeddings
        assert models[draft].num_params < 2e9
    assert models["llama-3.2-1b"].head_dim == 64
    for name, model in models.items():
        assert model.is_moe == (name in MOE_MODELS), name


@pytest.mark.parametrize("name, total, active, rel", [
    # Model cards: gpt-oss-120b 116.83B total / 5.13B active; Qwen3-235B-A22B 235B / 22B;
    # MiniMax-M2 family ~230B / 10B.
    ("gpt-oss-120b", 116.83e9, 5.13e9, 0.01),
    ("qwen3-235b-a22b", 235e9, 22e9, 0.03),
    ("minimax-m2.5", 230e9, 10e9, 0.05),
])
def test_moe_total_and_active_params(name, total, active, rel):
    m = model_catalog()[name]
    assert m.num_params == pytest.approx(total, rel=rel)
    assert m.active_params == pytest.approx(active, rel=rel)
    assert m.active_params < m.num_params / 10


def test_sliding_window_layers_hold_no_context_kv():
    from sim.memory import kv_bytes_per_token

    oss = model_catalog()["gpt-oss-120b"]
    assert (oss.num_sliding_layers, oss.sliding_window_tokens, oss.num_full_attention_layers) == (18, 128, 18)
    # 18 full-attention layers x 8 KV heads x 64 x K and V x 2 bytes.
    assert kv_bytes_per_token(oss, "bf16", 1) == 18 * 8 * 64 * 2 * 2


def test_fp4_weights_run_on_fp4_tensor_cores_only_where_they_exist():
    from sim.quantization import matmul_tflops, weight_bytes_per_param

    gpus = gpu_catalog()
    assert matmul_tflops(gpus["b200-sxm"], "fp4", "w") == gpus["b200-sxm"].fp4_tflops > gpus["b200-sxm"].fp8_tflops
    assert matmul_tflops(gpus["h100-sxm"], "mxfp4", "w") == gpus["h100-sxm"].bf16_tflops  # weight-only
    assert weight_bytes_per_param("mxfp4") < weight_bytes_per_param("fp4") < weight_bytes_per_param("fp8")


@pytest.mark.parametrize("name", sorted(EXPECTED_GPUS))
def test_gpu_sources_and_fp8(name):
    gpu = gpu_catalog()[name]
    assert gpu.price_source.strip()
    assert gpu.spec_source.strip()
    assert gpu.interconnect.strip()
    assert "not re-verified" in gpu.price_source
    if name in NO_FP8:
        assert gpu.fp8_tflops is None
    else:
        assert gpu.fp8_tflops is not None and gpu.fp8_tflops > gpu.bf16_tflops
    assert gpu.int8_tops is not None
    if name != "b300-sxm":  # Blackwell Ultra cut INT8 to 153.5 TOPS, below its bf16 rate
        assert gpu.int8_tops > gpu.bf16_tflops


def test_gpu_numbers_are_plausible():
    # Guards against unit slips (GB vs GiB, TB/s vs GB/s, bidirectional vs one-way).
    for name, gpu in gpu_catalog().items():
        assert 16 * 2**30 <= gpu.memory_bytes <= 288 * 2**30, name
        assert 1e11 <= gpu.hbm_bandwidth_bytes_per_s <= 1e13, name
        assert 50 <= gpu.bf16_tflops <= 2500, name  # B200: 2250 dense
        assert 1e10 <= gpu.interconnect_bw_bytes_per_s <= 1e12, name  # B200 NVLink 5: 900 GB/s one way
        assert 0 < gpu.price_usd_per_gpu_hour < 20, name
    gpus = gpu_catalog()
    assert gpus["a100-80gb-sxm"].memory_bytes == 81920 * 2**20
    assert gpus["h100-sxm"].interconnect_bw_bytes_per_s == 450e9  # half of 900 GB/s bidirectional
    assert gpus["h200-sxm"].bf16_tflops == gpus["h100-sxm"].bf16_tflops
    assert gpus["h200-sxm"].memory_bytes > gpus["h100-sxm"].memory_bytes
    assert gpus["b200-sxm"].interconnect_bw_bytes_per_s == 2 * gpus["h100-sxm"].interconnect_bw_bytes_per_s


def test_unknown_gpu_names_path_and_catalog():
    with pytest.raises(ConfigError) as exc:
        resolve_gpu("b300-imaginary", "hardware.gpu")
    msg = str(exc.value)
    assert msg.startswith("hardware.gpu")
    assert "b300-imaginary" in msg
    for name in EXPECTED_GPUS:
        assert name in msg


def test_unknown_model_names_path_and_catalog():
    with pytest.raises(ConfigError) as exc:
        resolve_model("llama-9-900b", "model")
    msg = str(exc.value)
    assert msg.startswith("model:")
    assert "llama-9-900b" in msg
    for name in EXPECTED_MODELS:
        assert name in msg


def test_names_are_case_insensitive():
    assert resolve_gpu("H100-SXM", "gpu") is gpu_catalog()["h100-sxm"]
    assert resolve_gpu("A10G", "gpu") is gpu_catalog()["a10g"]
    assert resolve_model("Llama-3.1-8B", "model") is model_catalog()["llama-3.1-8b"]
    assert resolve_model("QWEN2.5-0.5B", "model") is model_catalog()["qwen2.5-0.5b"]


def _inline(spec) -> dict:
    data = dataclasses.asdict(spec)
    del data["name"]
    return data


def test_inline_gpu():
    data = _inline(gpu_catalog()["l4"])
    data["price_usd_per_gpu_hour"] = 0.5
    gpu = resolve_gpu(data, "hardware.gpu")
    assert gpu.name == "inline"
    assert gpu.price_usd_per_gpu_hour == 0.5
    assert gpu.bf16_tflops == gpu_catalog()["l4"].bf16_tflops


def test_inline_model():
    data = _inline(model_catalog()["llama-3.1-8b"])
    data["num_layers"] = 16
    model = resolve_model(data, "model")
    assert model.name == "inline"
    assert model.num_layers == 16
    assert model.derived_num_params < model_catalog()["llama-3.1-8b"].derived_num_params


def test_inline_model_bad_kv_heads():
    data = _inline(model_catalog()["llama-3.1-8b"])
    data["num_kv_heads"] = 5  # 32 % 5 != 0
    with pytest.raises(ConfigError, match=r"model\.num_kv_heads") as exc:
        resolve_model(data, "model")
    assert "num_attention_heads" in str(exc.value)


def test_inline_gpu_unknown_key_and_bad_type():
    data = _inline(gpu_catalog()["l4"])
    data["tflops"] = 1.0
    with pytest.raises(ConfigError, match=r"hardware\.gpu\.tflops"):
        resolve_gpu(data, "hardware.gpu")
    data = _inline(gpu_catalog()["l4"])
    data["hbm_bandwidth_bytes_per_s"] = "3.0e11"  # what PyYAML gives for an unsigned exponent
    with pytest.raises(ConfigError, match=r"hardware\.gpu\.hbm_bandwidth_bytes_per_s"):
        resolve_gpu(data, "hardware.gpu")
