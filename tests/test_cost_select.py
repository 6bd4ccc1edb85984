"""Which cost model a scenario gets (sim/cost_select.py): auto, engine terms per version, no silent knobs."""
from __future__ import annotations

import numpy as np
import pytest

from sim.engine_terms import engine_terms, known_versions
from sim.configio import ConfigError
from sim.cost_model import ProfileCostModel, RooflineCostModel
from sim.cost_select import auto_profile_name, select_cost_model
from sim.metrics import latency_table
from sim.scenario import load_scenario
from sim.simulation import run

BASE = ["workload.num_requests=60", "cost_model.kind=auto"]


def scen(*overrides: str):
    return load_scenario("chat_llama3_8b_a100.yaml", [*BASE, *overrides])


def test_auto_picks_the_matching_shipped_profile_with_engine_terms():
    s = scen()
    assert auto_profile_name(s) == "a100-80gb-sxm_llama-3.1-8b_tp1_bf16"
    c = select_cost_model(s)
    assert c.kind == "profile" and isinstance(c.cost, ProfileCostModel)
    assert c.name.startswith("auto: profile a100-80gb-sxm_llama-3.1-8b_tp1_bf16")
    assert "vllm" in c.name and "engine terms" in c.name
    # The engine's own time is on top of the kernels: every step costs more than the bare profile's.
    bare = select_cost_model(scen("cost_model.serving_overhead=false")).cost
    f = (64, 64, 64 * 500, 64 * 500, 64)
    assert c.cost.step_time_s(*f) > bare.step_time_s(*f)
    assert "serving_overhead: false" in select_cost_model(scen("cost_model.serving_overhead=false")).name


def test_auto_falls_back_to_the_roofline_and_says_why():
    s = scen("model=llama-3.2-1b")
    c = select_cost_model(s)
    assert c.kind == "roofline" and isinstance(c.cost, RooflineCostModel)
    assert c.name.startswith("auto: roofline (no shipped profile a100-80gb-sxm_llama-3.2-1b_tp1_bf16)")
    assert run(s).cost_model_name == c.name  # what the report prints


def test_explicit_roofline_stays_the_roofline():
    c = select_cost_model(scen("cost_model.kind=roofline"))
    assert c.kind == "roofline" and c.name.startswith("roofline")


def test_default_kind_is_auto():
    from sim.scenario import CostModelConfig

    assert CostModelConfig().kind == "auto"


def test_roofline_knob_with_a_profile_is_an_error():
    with pytest.raises(ConfigError, match="compute_efficiency.*roofline only"):
        load_scenario("chat_llama3_8b_a100.yaml", ["cost_model.profile=a100-80gb-sxm_llama-3.1-8b_tp1_bf16",
                                                   "cost_model.compute_efficiency=0.5"])
    # auto resolving to a profile: the same error, at build time, naming the profile auto chose
    with pytest.raises(ConfigError, match="compute_efficiency.*auto: profile a100-80gb-sxm_llama-3.1-8b_tp1_bf16"):
        select_cost_model(scen("cost_model.compute_efficiency=0.5"))


def test_step_overhead_with_a_profile_does_what_it_says():
    f = (8, 8, 8 * 300, 8 * 300, 8)
    # A version whose engine time adds to the kernels: the step grows by exactly the difference.
    base = select_cost_model(scen("engine.version=0.12.0"))
    more = select_cost_model(scen("engine.version=0.12.0", "cost_model.step_overhead_s=0.05"))
    terms = engine_terms("vllm", "0.12.0")
    assert not terms.overhead.overlap
    delta = more.cost.step_time_s(*f) - base.cost.step_time_s(*f)
    assert delta == pytest.approx(0.05 - terms.overhead.step_overhead_s, rel=1e-6)
    assert "step_overhead_s = 0.05 (cost_model)" in more.name
    # A version whose engine time overlaps the kernels (async scheduling): 50 ms of engine time per step
    # outlasts an 8-sequence step's kernels, so the step is the engine's time, per-sequence part included.
    terms = engine_terms("vllm", "0.19.0")
    assert terms.overhead.overlap
    over = select_cost_model(scen("engine.version=0.19.0", "cost_model.step_overhead_s=0.05")).cost
    ov = terms.overhead
    assert over.step_time_s(*f) == pytest.approx(ov.exposed_step_s + 0.05 + ov.per_seq_overhead_s * 8, rel=1e-9)
    bare = select_cost_model(scen("engine.version=0.19.0")).cost
    assert bare.step_time_s(*f) < over.step_time_s(*f)
    with pytest.raises(ConfigError, match="needs serving_overhead: true"):
        load_scenario("chat_llama3_8b_a100.yaml", ["cost_model.profile=a100-80gb-sxm_llama-3.1-8b_tp1_bf16",
                                                   "cost_model.serving_overhead=false",
                                                   "cost_model.step_overhead_s=0.01"])


def test_profile_weight_dtype_must_match_and_kv_dtype_mismatch_warns():
    with pytest.raises(ConfigError, match="bf16 weights.*fp8|bf16 weights, the scenario quantizes them to int8"):
        select_cost_model(load_scenario("chat_llama3_8b_a100.yaml", [
            *BASE, "cost_model.profile=a100-80gb-sxm_llama-3.1-8b_tp1_bf16", "serving.quantization.weights=int8"]))
    c = select_cost_model(load_scenario("chat_llama3_8b_a100.yaml", [
        *BASE, "cost_model.profile=a100-80gb-sxm_llama-3.1-8b_tp1_bf16", "serving.quantization.kv_cache=fp8"]))
    assert any(n.startswith("WARNING") and "KV cache" in n for n in c.notes)
    res = run(load_scenario("chat_llama3_8b_a100.yaml", [
        *BASE, "cost_model.profile=a100-80gb-sxm_llama-3.1-8b_tp1_bf16", "serving.quantization.kv_cache=fp8"]))
    assert any("WARNING" in n for n in res.notes)


@pytest.mark.skipif(not known_versions(), reason="no engine terms shipped")
def test_engine_version_without_data_says_what_is_used_instead():
    v = known_versions()[0]
    assert engine_terms("vllm", v).note == ""
    t = engine_terms("vllm", "0.3.1")
    assert t.version in known_versions() and "0.3.1 has no measured engine terms" in t.note and t.version in t.note
    res = run(scen("engine.version=0.3.1"))
    assert any("0.3.1 has no measured engine terms" in n for n in res.notes)


def test_engine_name_and_version_are_validated():
    with pytest.raises(ConfigError, match="engine.name"):
        scen("engine.name=tgi")
    with pytest.raises(ConfigError, match="engine.version"):
        scen("engine.version=''")


CLOSED = ["workload.arrival={kind: closed_loop, concurrency: 8}", "workload.num_requests=64",
          "workload.prompt_tokens={kind: constant, value: 512}", "workload.output_tokens={kind: constant, value: 64}"]


def test_closed_loop_clients_start_out_of_phase_seeded_and_lockstep_on_request():
    a, b = run(scen(*CLOSED)), run(scen(*CLOSED))
    first = a.requests["arrival_s"].to_numpy()[:8]
    assert np.array_equal(first, b.requests["arrival_s"].to_numpy()[:8])  # same seed, same starts
    assert np.unique(first).size == 8 and first.max() > 0  # out of phase
    assert not np.array_equal(first, run(scen(*CLOSED), seed=3).requests["arrival_s"].to_numpy()[:8])
    lock = run(scen(*CLOSED, "workload.arrival.start_spread_s=0", "cost_model.serving_overhead=false"))
    assert (lock.requests["arrival_s"].to_numpy()[:8] == 0).all()
    # Lockstep: equal clients started together share every prefill, wave after wave: one TTFT per wave.
    assert latency_table(lock.requests)["ttft_s"].round(9).nunique() <= 8


def test_request_jitter_spreads_a_wave_and_is_seeded():
    # The shipped terms may fit no jitter (they do today: the benchmark's first wave explained the TTFT it
    # stood in for), so the terms here are explicit: a profile's kernels plus a 20 ms mean jitter.
    from sim.cost_model import ServingOverhead

    over = [*CLOSED, "workload.arrival.start_spread_s=0", "cost_model.serving_overhead=false"]
    sc = scen(*over)
    kernels = select_cost_model(sc).cost.measured_coefficients
    jittered = ProfileCostModel(kernels, ServingOverhead(request_jitter_s=0.02))
    a, b = run(sc, cost_model=jittered), run(sc, cost_model=jittered)
    ta, tb = latency_table(a.requests)["ttft_s"].to_numpy(), latency_table(b.requests)["ttft_s"].to_numpy()
    assert np.array_equal(ta, tb)
    # The first wave, sent together, reaches the engine spread out: its prompts no longer share one step.
    bare = latency_table(run(sc).requests)["ttft_s"].to_numpy()
    assert np.unique(np.round(bare[:8], 9)).size == 1
    assert np.unique(np.round(ta[:8], 9)).size > 1


def test_auto_finds_profiles_named_with_kv_and_expert_suffixes():
    # Shipped names carry `_kv<dtype>` where a setup has more than one KV dtype and `_ep<TP>` for whole
    # experts per GPU: auto must find them from the scenario's settings, never a bare-name miss.
    base = ["workload.num_requests=20", "cost_model.kind=auto", "serving.max_model_len=8192"]
    mm = ["model=minimax-m2.5", "hardware.gpu=b200-sxm", "serving.tensor_parallel=4",
          "serving.quantization.weights=fp8"]
    s = load_scenario("chat_llama3_8b_a100.yaml", [*base, *mm, "serving.quantization.kv_cache=bf16"])
    assert auto_profile_name(s) == "b200-sxm_minimax-m2.5_tp4_fp8_kvbf16"
    assert select_cost_model(s).kind == "profile"
    ep = load_scenario("chat_llama3_8b_a100.yaml", [*base, *mm, "serving.quantization.kv_cache=bf16",
                                                    "serving.expert_parallel=true"])
    assert auto_profile_name(ep) == "b200-sxm_minimax-m2.5_tp4_ep4_fp8_kvbf16"
    # fp4 Llama-70B ships with an fp8 KV cache only: found, and the KV mismatch is a warning.
    fp4 = ["model=llama-3.1-70b", "hardware.gpu=b200-sxm", "serving.tensor_parallel=2",
           "serving.quantization.weights=fp4"]
    s = load_scenario("chat_llama3_8b_a100.yaml", [*base, *fp4, "serving.quantization.kv_cache=fp8"])
    assert auto_profile_name(s) == "b200-sxm_llama-3.1-70b_tp2_fp4_kvfp8"
    s = load_scenario("chat_llama3_8b_a100.yaml", [*base, *fp4, "serving.quantization.kv_cache=bf16"])
    assert auto_profile_name(s) == "b200-sxm_llama-3.1-70b_tp2_fp4_kvfp8"
    assert any("KV cache" in n for n in select_cost_model(s).notes)
    # An expert split with no profile of its own falls back to the roofline, naming what it looked for.
    s = load_scenario("chat_llama3_8b_a100.yaml", [*base, *mm[:1], "hardware.gpu=b300-sxm",
                                                   "serving.tensor_parallel=4", "serving.quantization.weights=fp8",
                                                   "serving.expert_parallel=true"])
    c = select_cost_model(s)
    assert c.kind == "roofline" and "b300-sxm_minimax-m2.5_tp4_ep4_fp8" in c.name


def test_expert_split_is_checked():
    with pytest.raises(ConfigError, match="serving.expert_parallel.*dense"):
        load_scenario("chat_llama3_8b_a100.yaml", ["serving.expert_parallel=true"])
    # A profile pricing whole experts per GPU on a scenario that slices them by TP: an error, not ignored.
    with pytest.raises(ConfigError, match="experts split by 'ep'.*serving.expert_parallel: true"):
        select_cost_model(load_scenario("chat_llama3_8b_a100.yaml", [
            "workload.num_requests=20", "model=minimax-m2.5", "hardware.gpu=b200-sxm", "serving.tensor_parallel=4",
            "serving.max_model_len=8192", "serving.quantization.weights=fp8",
            "cost_model.profile=b200-sxm_minimax-m2.5_tp4_ep4_fp8_kvbf16"]))


def test_a_profile_measured_with_eager_pytorch_says_it_is_not_vllm():
    """The H200 lease's `calibrate run --engine torch` profile (docs/gpu_runs/) prices eager PyTorch: a run on it
    carries a warning; a vLLM-measured or composed profile does not."""
    from pathlib import Path

    torch_prof = Path(__file__).resolve().parents[1] / "docs/gpu_runs/h200-2026-11-26/h200-sxm_llama-3.1-8b_tp1_bf16_torch-eager"
    s = load_scenario("chat_llama3_8b_a100.yaml", ["workload.num_requests=60", "hardware.gpu=h200-sxm",
                                                   f"cost_model.profile={torch_prof}"])
    c = select_cost_model(s)
    assert any("eager PyTorch" in n and "not vLLM" in n for n in c.notes)
    composed = select_cost_model(load_scenario("chat_llama3_8b_a100.yaml", ["workload.num_requests=60",
                                                                            "hardware.gpu=h200-sxm",
                                                                            "cost_model.kind=auto"]))
    assert composed.kind == "profile" and not any("eager PyTorch" in n for n in composed.notes)
    # and the warning reaches the report a user reads
    res = run(s)
    assert any("eager PyTorch" in n for n in res.notes)


def test_the_roofline_carries_the_api_servers_delays():
    # The engine -> client latency and the client -> engine jitter are the API server's, however a step is
    # priced: a roofline run gets the scenario's engine version's, as a profile-priced run does.
    from dataclasses import replace

    from sim.cost_select import roofline_defaults

    s = scen("cost_model.kind=roofline", "workload.num_requests=80")
    c = select_cost_model(s)
    terms = engine_terms("vllm", s.engine.version)
    assert c.cost.response_latency_s == terms.overhead.response_latency_s > 0
    assert c.cost.request_jitter_s == terms.overhead.request_jitter_s
    assert f"response latency {terms.overhead.response_latency_s * 1e3:.1f} ms" in c.name
    params = roofline_defaults(s)
    bare = RooflineCostModel(s.model_spec, s.gpu_spec, tp=1, weight_dtype="bf16", kv_dtype="bf16",
                             params=replace(params, response_latency_s=0.0))
    with_latency = latency_table(run(s).requests)
    without = latency_table(run(s, cost_model=bare).requests)
    # Same schedule (same seed, same jitter): every TTFT and E2E later by the latency, TPOT unchanged.
    np.testing.assert_allclose(with_latency["ttft_s"] - without["ttft_s"], params.response_latency_s, atol=1e-9)
    np.testing.assert_allclose(with_latency["e2e_s"] - without["e2e_s"], params.response_latency_s, atol=1e-9)
    np.testing.assert_allclose(with_latency["tpot_s"], without["tpot_s"], rtol=1e-9)
