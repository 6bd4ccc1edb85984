"""Profiles composed from aiconfigurator-core's per-op tables: the composition behaves like a GPU
(more batch / context / length costs more, TP helps a big prefill), the fit is close, lookups never
extrapolate silently, and every shipped profile loads with its provenance.

Tests that read the tables skip when aiconfigurator-core (import name aiconfigurator_core) is absent.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from calibration.aiconfigurator_import import SYSTEMS, LogGrid, LookupLog
from calibration.profile import list_shipped_profiles, load_profile, shipped_profiles_dir
from sim.catalog import gpu_catalog, model_catalog

# Held-out MAPE bounds for the composed-and-fitted profiles. bf16 steps are smooth in the token
# count; the fp8 GEMM tables jump up to ~2x just past tile boundaries (m = 256 j + 1), which the
# smooth cost formula can only average.
MAPE_BOUND_PCT = {"bf16": 10.0, "fp8": 13.0, "fp4": 13.0}  # B200 8B TP8: 9.1 % (bf16), 8.9 % (fp8); H200 70B TP1 fp8 12.7 %
# Mixtures of experts: the fused-MoE time is concave in the step's tokens (each new token touches fewer
# experts not yet loaded); the profile's expert term follows it under uniform routing, the tables' rows
# route with a power-law skew (fewer experts touched at 16-64 tokens). The bound records today's worst
# (B200 gpt-oss-120b TP1: 11.4 %; 29 % before the expert term, when the linear terms had to average it).
MOE_MAPE_BOUND_PCT = 13.0
NAME = re.compile(r"^(?P<gpu>[a-z0-9-]+)_(?P<model>[a-z0-9.-]+)_tp(?P<tp>\d+)(_ep(?P<ep>\d+))?"
                  r"_(?P<dtype>bf16|fp8|fp4|mxfp4)(_kv(?P<kv>bf16|fp8))?$")


# -- no aiconfigurator needed ---------------------------------------------------------------------

def imported_profiles() -> list[str]:
    """Shipped profiles made by this importer (others, e.g. measured with vLLM, sit beside them)."""
    return [n for n in list_shipped_profiles()
            if load_profile(n).provenance["source"].startswith("aiconfigurator-core")]


def test_shipped_profiles_exist_and_load():
    assert len(imported_profiles()) >= 20
    for name in list_shipped_profiles():
        p = load_profile(name)
        assert p.name == name
        assert p.provenance["source"]
        assert p.cost_model().step_time_s(1, 1, 128, 128, 1) > 0


@pytest.mark.parametrize("name", imported_profiles())
def test_shipped_profile_is_consistent(name):
    p = load_profile(name)
    m = NAME.match(name)
    assert m, name
    assert (m["gpu"], m["model"], int(m["tp"]), m["dtype"]) == (p.gpu, p.model, p.tensor_parallel, p.weight_dtype)
    assert p.gpu in gpu_catalog() and p.model in model_catalog()
    model = model_catalog()[p.model]
    if m["kv"]:
        assert p.kv_dtype == m["kv"]
    if m["ep"]:
        assert int(m["ep"]) == p.tensor_parallel and p.provenance["moe"]["parallel"] == "ep"
    assert p.num_kv_blocks is None
    prov = p.provenance
    for key in ("package_version", "system", "framework", "framework_version", "tables", "date", "command", "note"):
        assert prov[key], key
    assert SYSTEMS[prov["system"]] == p.gpu
    assert f"--model {p.model} " in prov["command"] and f"--tp {p.tensor_parallel} " in prov["command"]
    assert prov["step_overhead_s"] == 0 and prov["lower_bound"] and "LOWER BOUND" in prov["note"]
    assert not prov["lookups"]["clamped"]  # composed steps never lean on clamped lookups
    bound = MOE_MAPE_BOUND_PCT if model.is_moe else MAPE_BOUND_PCT[p.weight_dtype]
    assert p.fit["overall"]["mape_pct"] < bound
    assert set(p.fit["phases"]) == {"prefill", "decode", "mixed"}
    kv = prov.get("kv_cache_at_vllm_defaults")
    if kv:  # the block count vLLM's memory profiling would give, or why vLLM would refuse to start
        assert kv["num_kv_blocks"] > 0 if "error" not in kv else "does not fit" in kv["error"]
    # Small composed-steps file beside the first profiles, in the measurements schema; newer ones
    # ship profile.json only (the composition is reproduced by the provenance's command).
    csv = shipped_profiles_dir() / name / "measurements.csv"
    if not csv.is_file():
        assert (shipped_profiles_dir() / name / "profile.json").stat().st_size < 12_000
        return
    assert csv.stat().st_size < 200_000
    df = pd.read_csv(csv)
    assert {"phase", "new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs", "step_time_s",
            "source"} <= set(df.columns)
    assert (df["source"] == prov["source"]).all()


def test_shipped_profiles_are_json_with_sorted_keys():
    for name in imported_profiles():
        text = (shipped_profiles_dir() / name / "profile.json").read_text()
        assert json.loads(text)["name"] == name


def test_log_grid_is_exact_on_power_laws_and_records_clamps():
    m = np.array([1.0, 16.0, 256.0])
    k = np.array([64.0, 4096.0])
    mm, kk = np.meshgrid(m, k, indexing="ij")
    df = pd.DataFrame({"m": mm.ravel(), "k": kk.ravel(), "latency": (2e-3 * mm * np.sqrt(kk)).ravel()})
    grid = LogGrid.from_frame("toy", df, ("m", "k"))
    log = LookupLog()
    assert grid.lookup((40.0, 1000.0), log) == pytest.approx(2e-3 * 40 * math.sqrt(1000))
    assert not log.clamped
    edge = grid.lookup((1024.0, 1000.0), log)  # beyond the largest m: clamped, never extrapolated
    assert edge == pytest.approx(2e-3 * 256 * math.sqrt(1000))
    assert log.clamped["toy"] == 1 and "clamped" in log.examples["toy"]


def test_log_grid_records_lookups_next_to_unmeasured_cells():
    df = pd.DataFrame({"b": [1, 1, 2], "s": [1, 2, 1], "latency": [1.0, 2.0, 2.0]})  # (2, 2) never measured
    grid = LogGrid.from_frame("holes", df, ("b", "s"))
    log = LookupLog()
    assert grid.lookup((1.0, 1.5), log) == pytest.approx(1.5, rel=0.1)
    assert not log.clamped
    grid.lookup((1.5, 1.5), log)
    grid.lookup((2.0, 2.0), log)
    assert log.clamped["holes"] == 2


# -- reading the tables ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def h100():
    pytest.importorskip("aiconfigurator_core")
    from calibration.aiconfigurator_import import load_tables
    return load_tables("h100_sxm")


@pytest.fixture(scope="module")
def composer_8b(h100):
    from calibration.aiconfigurator_import import StepComposer
    return lambda tp=1, dtype="bf16": StepComposer(h100, model_catalog()["llama-3.1-8b"], tp=tp, dtype=dtype)


def _step_s(composer, chunk, context, samples):
    log = LookupLog()
    t = sum(composer.step(chunk, context, samples, log).values())
    assert not log.clamped, log.examples
    return t


def decode_s(composer, batch, context):
    return _step_s(composer, [1] * batch, [context] * batch, [1] * batch)


def prefill_s(composer, batch, length):
    return _step_s(composer, [length] * batch, [0] * batch, [1] * batch)


def test_tables_come_from_vllm(h100):
    assert h100.framework == "vllm" and h100.version
    assert "H100" in h100.device
    assert any("gemm_perf" in f for f in h100.files)


def test_decode_step_grows_with_batch_and_context(composer_8b):
    c = composer_8b()
    batches = [decode_s(c, b, 2047) for b in (1, 4, 16, 64)]
    contexts = [decode_s(c, 8, ctx) for ctx in (127, 1023, 4095, 16383)]
    assert batches == sorted(batches) and batches[-1] > 1.2 * batches[0]
    assert contexts == sorted(contexts) and contexts[-1] > 1.2 * contexts[0]
    # Batch 1 decode of an 8B bf16 model streams ~16 GB of weights: 5-8 ms on an H100.
    assert 0.005 < decode_s(c, 1, 127) < 0.008


def test_prefill_grows_superlinearly_with_length(composer_8b):
    c = composer_8b()
    t = {L: prefill_s(c, 1, L) for L in (1024, 2048, 4096, 8192)}
    assert t[8192] > 2.0 * t[4096] > 4.0 * t[2048] * 0.98
    # Marginal cost per prompt token rises with length (attention is quadratic).
    assert (t[8192] - t[4096]) / 4096 > (t[2048] - t[1024]) / 1024
    log = LookupLog()
    attention = [c.step([L], [0], [1], log)["attention_s"] for L in (1024, 8192)]
    assert attention[1] > 20 * attention[0]


def test_tensor_parallel_speeds_up_a_big_prefill(composer_8b):
    tp1, tp2 = prefill_s(composer_8b(1), 1, 8192), prefill_s(composer_8b(2), 1, 8192)
    assert tp2 < 0.75 * tp1
    log = LookupLog()
    assert composer_8b(2).step([8192], [0], [1], log)["comm_s"] > 0


def test_fp8_gemms_are_faster_than_bf16_for_a_big_prefill(composer_8b):
    assert prefill_s(composer_8b(1, "fp8"), 1, 8192) < prefill_s(composer_8b(1, "bf16"), 1, 8192)


def test_lookups_outside_the_tables_are_clamped_and_recorded(composer_8b):
    log = LookupLog()
    composer_8b().step([1] * 4, [500_000] * 4, [1] * 4, log)
    assert log.clamped["generation_attention"] >= 1


def test_fitted_profile_meets_its_bound(h100):
    from calibration.aiconfigurator_import import build_profile
    profile, comp, result = build_profile("llama-3.1-8b", "h100_sxm", 1, tables=h100)
    assert profile.name == "h100-sxm_llama-3.1-8b_tp1_bf16"
    assert result.report["overall"]["mape_pct"] < MAPE_BOUND_PCT["bf16"]
    assert set(comp.measurements["phase"]) == {"prefill", "decode", "mixed"}
    assert profile.provenance["source"] == f"aiconfigurator-core {profile.provenance['package_version']} " \
                                           f"h100_sxm vllm {h100.version}"
    # The profile prices steps close to the composition it was fitted on.
    df = comp.measurements
    pred = profile.cost_model().step_times_s(df.new_tokens, df.sampled, df.attn_pairs, df.kv_read_tokens,
                                             df.num_seqs)
    assert np.median(np.abs(pred / df.step_time_s - 1)) < 0.06


def test_shipped_profile_is_reproduced_by_its_command(h100):
    from calibration.aiconfigurator_import import import_profile, package_version
    shipped = load_profile("h100-sxm_llama-3.1-8b_tp2_bf16")
    if shipped.provenance["package_version"] != package_version():
        pytest.skip(f"shipped from {shipped.provenance['package_version']}, installed {package_version()}")
    again = import_profile("llama-3.1-8b", "h100_sxm", 2, "bf16", tables=h100)
    for key, value in shipped.coefficients.items():
        assert again.coefficients[key] == pytest.approx(value, rel=1e-6, abs=1e-15), key


def test_step_overhead_is_a_named_parameter_that_shifts_every_step(h100):
    from calibration.aiconfigurator_import import compose_measurements
    base = compose_measurements("llama-3.1-8b", "h100_sxm", 1, tables=h100).measurements
    more = compose_measurements("llama-3.1-8b", "h100_sxm", 1, tables=h100, step_overhead_s=0.002).measurements
    np.testing.assert_allclose(more.step_time_s - base.step_time_s, 0.002, rtol=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "qwen3-235b-a22b", "tp": 2}, "does not fit"),
    ({"model": "llama-3.1-70b", "tp": 1}, "does not fit"),
    ({"model": "llama-3.1-8b", "tp": 3}, "evenly"),
])
def test_unsupported_requests_fail_clearly(h100, kwargs, message):
    from calibration.aiconfigurator_import import ImportFailed, compose_measurements
    with pytest.raises(ImportFailed, match=message):
        compose_measurements(kwargs["model"], "h100_sxm", kwargs["tp"], tables=h100)


def test_a100_has_no_fp8_tables():
    pytest.importorskip("aiconfigurator_core")
    from calibration.aiconfigurator_import import ImportFailed, compose_measurements
    with pytest.raises(ImportFailed, match="fp8"):
        compose_measurements("llama-3.1-8b", "a100_sxm", 1, "fp8")


def test_cli_writes_a_loadable_profile(tmp_path, h100, capsys):
    from calibration.aiconfigurator_import import main
    out = tmp_path / "p"
    assert main(["--model", "llama-3.1-8b", "--system", "h100_sxm", "--tp", "4", "--dtype", "bf16",
                 "--step-overhead-ms", "1.5", "--out", str(out)]) == 0
    p = load_profile(out)
    assert p.tensor_parallel == 4 and p.provenance["step_overhead_s"] == pytest.approx(0.0015)
    assert not p.provenance["lower_bound"] and "--step-overhead-ms 1.5" in p.provenance["command"]
    assert (out / "measurements.csv").is_file()
    assert "overall" in capsys.readouterr().out
    assert main(["--model", "llama-3.1-8b", "--system", "h100_sxm", "--tp", "3", "--out", str(out)]) == 2
    assert "evenly" in capsys.readouterr().err


# -- more GPUs and mixtures of experts -------------------------------------------------------------

def test_every_gpu_with_vllm_tables_has_profiles():
    gpus = {load_profile(n).gpu for n in imported_profiles()}
    assert {"h100-sxm", "a100-80gb-sxm", "h200-sxm", "b200-sxm", "l40s"} <= gpus
    moe = {load_profile(n).model for n in imported_profiles() if model_catalog()[load_profile(n).model].is_moe}
    assert {"gpt-oss-120b", "qwen3-235b-a22b", "minimax-m2.5"} <= moe


@pytest.fixture(scope="module")
def h200():
    pytest.importorskip("aiconfigurator_core")
    from calibration.aiconfigurator_import import load_tables
    return load_tables("h200_sxm")


def test_b200_fp4_is_faster_than_fp8_for_a_big_prefill():
    pytest.importorskip("aiconfigurator_core")
    from calibration.aiconfigurator_import import StepComposer, load_tables
    b200 = load_tables("b200_sxm")
    assert "B200" in b200.device
    m = model_catalog()["llama-3.1-70b"]
    fp4, fp8 = (StepComposer(b200, m, tp=2, dtype=d, kv_dtype="fp8") for d in ("fp4", "fp8"))
    assert prefill_s(fp4, 1, 8192) < prefill_s(fp8, 1, 8192)
    assert fp4.kernels["gemm"] != fp8.kernels["gemm"]


def test_moe_decode_costs_the_experts_its_tokens_touch(h200):
    """A MoE decode step streams only the experts its tokens pick: one sequence is far cheaper than a dense
    model of the same total size, and the expert time grows with the batch, then flattens once most
    experts are touched (power-law routing), well below proportional."""
    from calibration.aiconfigurator_import import StepComposer
    qwen = StepComposer(h200, model_catalog()["qwen3-235b-a22b"], tp=4, dtype="fp8", kv_dtype="bf16")
    assert qwen.moe_dtype == "fp8_block" and qwen.gemm_dtype == "fp8"  # see CHECKPOINT_FORMATS
    log = LookupLog()
    moe = {b: qwen.step([1] * b, [1023] * b, [1] * b, log)["moe_s"] for b in (1, 8, 64, 256)}
    assert not log.clamped
    assert moe[1] < moe[8] < moe[64] < moe[256]
    assert moe[256] < 0.25 * 256 * moe[1]  # far from linear in the batch
    # 22B active of 235B total, fp8 over 4 H200s: a lone decode reads a fraction of the ~59 GB per GPU.
    assert decode_s(qwen, 1, 1023) < 0.5 * 59e9 / 4.8e12 * model_catalog()["qwen3-235b-a22b"].num_layers / 94 * 10


def test_expert_parallel_and_tensor_parallel_price_the_same_work_similarly(h200):
    from calibration.aiconfigurator_import import StepComposer
    m = model_catalog()["qwen3-235b-a22b"]
    tp, ep = (StepComposer(h200, m, tp=4, dtype="fp8", kv_dtype="bf16", moe_parallel=p) for p in ("tp", "ep"))
    assert tp.kernels["moe"] != ep.kernels["moe"] or tp.moe is not ep.moe
    for b in (1, 64):
        assert decode_s(ep, b, 2047) == pytest.approx(decode_s(tp, b, 2047), rel=0.6)


def test_gpt_oss_sliding_window_layers_read_a_bounded_context(h200):
    from calibration.aiconfigurator_import import StepComposer
    oss = StepComposer(h200, model_catalog()["gpt-oss-120b"], tp=1, dtype="mxfp4", kv_dtype="bf16")
    assert oss.gemm_dtype == "bfloat16" and oss.moe_dtype == "w4a16_mxfp4"
    assert [w for w, _ in oss.attention_layers] == [0, 128]
    log = LookupLog()
    short, long = (oss.step([1] * 8, [c] * 8, [1] * 8, log)["attention_s"] for c in (1023, 16383))
    full = StepComposer(h200, model_catalog()["gpt-oss-120b"], tp=1, dtype="mxfp4", kv_dtype="bf16")
    full.attention_layers = [(0, 36)]  # as if every layer attended the whole context
    long_full = full.step([1] * 8, [16383] * 8, [1] * 8, log)["attention_s"]
    assert short < long < long_full


def test_moe_profile_records_its_split_and_kv_capacity(h200):
    from calibration.aiconfigurator_import import build_profile
    p, comp, _ = build_profile("minimax-m2.5", "h200_sxm", 8, "fp8", tables=h200)
    assert p.name == "h200-sxm_minimax-m2.5_tp8_fp8_kvbf16"  # the FP8 checkpoint declares no FP8 KV
    assert "moe_substitute" in comp.kernels  # no moe_tp 8 rows for 128-wide fp8 blocks: EP 8 stands in
    assert p.provenance["moe"]["parallel"] == "tp" and "/moe/" in " ".join(p.provenance["tables"])
    kv = p.provenance["kv_cache_at_vllm_defaults"]
    assert kv["kv_dtype"] == "bf16" and kv["num_kv_blocks"] * 16 == kv["kv_capacity_tokens"]


def test_a_moe_scenario_runs_on_its_profile_and_on_the_roofline():
    """MoE sanity end to end: gpt-oss-120b (mxfp4 experts, sliding windows) on one H200, the shipped
    composed profile and the catalog roofline agree on TPOT within a factor of two, and the KV cache
    holds over a million tokens (18 full-attention layers, 60 GiB of weights on 141 GB)."""
    from sim.metrics import summarize
    from sim.scenario import scenario_from_dict
    from sim.simulation import run

    tpot = {}
    for name, cm in (("roofline", {"kind": "roofline"}), ("profile", {"profile": "h200-sxm_gpt-oss-120b_tp1_mxfp4"})):
        sc = scenario_from_dict({
            "name": name, "seed": 1, "model": "gpt-oss-120b", "hardware": {"gpu": "h200-sxm"},
            "workload": {"arrival": {"kind": "closed_loop", "concurrency": 16, "think_time_s": 0}, "num_requests": 100,
                         "prompt_tokens": {"kind": "constant", "value": 1024},
                         "output_tokens": {"kind": "constant", "value": 128}},
            "serving": {"replicas": 1, "tensor_parallel": 1, "quantization": {"weights": "mxfp4", "kv_cache": "bf16"},
                        "max_model_len": 131072,
                        "scheduler": {"policy": "continuous", "max_num_seqs": 1024, "max_num_batched_tokens": 8192}},
            "cost_model": cm})
        res = run(sc, seed=1)
        assert res.memory.kv_capacity_tokens > 1_000_000
        tpot[name] = summarize(res)["tpot_s_mean"]
    assert 0.5 < tpot["profile"] / tpot["roofline"] < 2.0, tpot
