"""engine.api_server_per_request_s: the API server hands a burst's first request to the engine alone and the rest
together once it has prepared them, as the real vLLM server's step log shows (docs/step_sequence_cpu.md).
Deterministic: which step each request joins."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.configio import ConfigError
from sim.scenario import load_scenario, scenario_from_dict
from sim.simulation import run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import step_sequence as ss  # noqa: E402

CPU_SCENARIO = ROOT / "scenarios" / "cpu_vllm_tiny_llama.yaml"
RUN = ROOT / "docs" / "cpu_runs" / "2026-11-27-steps"


def _prompts_per_prefill_step(res) -> list[int]:
    st = res.steps.sort_values("start_s", kind="stable")
    return [int(n - d) for n, d, p in zip(st["num_seqs"], st["decode_tokens"], st["prefill_tokens"]) if p]


def _closed_loop(api_server_s: float | None, concurrency: int = 4, requests: int = 8):
    engine = {"name": "vllm"}
    if api_server_s is not None:
        engine["api_server_per_request_s"] = api_server_s
    return scenario_from_dict({
        "name": "ingress", "seed": 1, "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm"},
        "workload": {"arrival": {"kind": "closed_loop", "concurrency": concurrency, "start_spread_s": 0.0},
                     "num_requests": requests, "prompt_tokens": {"kind": "constant", "value": 512},
                     "output_tokens": {"kind": "constant", "value": 32}},
        "serving": {"scheduler": {"policy": "continuous"}, "max_model_len": 4096},
        "cost_model": {"profile": "h100-sxm_llama-3.1-8b_tp1_bf16", "serving_overhead": False},
        "engine": engine})


def test_a_burst_reaches_the_engine_as_its_first_request_then_the_rest():
    # Four clients start together. Straight to the engine: one step prefills all four, each wave. Through the
    # API server (0.5 ms a request): the first alone (the engine is idle), the other three, prepared during that
    # step, in the next; the closed loop then repeats the split wave after wave.
    off = run(_closed_loop(None), record_steps=True)
    on = run(_closed_loop(0.5e-3), record_steps=True)
    assert _prompts_per_prefill_step(off) == [4, 4]
    assert _prompts_per_prefill_step(on) == [1, 3, 1, 3]
    ttft_off = (off.requests["first_token_s"] - off.requests["arrival_s"]).to_numpy()
    ttft_on = (on.requests["first_token_s"] - on.requests["arrival_s"]).to_numpy()
    assert ttft_on.min() >= 0.5e-3 and np.median(ttft_on) > np.median(ttft_off)


def test_zero_is_the_old_path_to_the_bit():
    a, b = run(_closed_loop(None)), run(_closed_loop(0.0))
    assert a.requests.equals(b.requests)


def test_requests_that_find_the_server_idle_are_handed_over_alone_after_its_time():
    # An open loop far apart: every request finds the server idle and reaches the engine d after it is sent,
    # so each TTFT grows by d exactly (the engine is idle too: nothing else changes).
    def scenario(d):
        return scenario_from_dict({
            "name": "ingress-open", "seed": 3, "model": "llama-3.1-8b", "hardware": {"gpu": "h100-sxm"},
            "workload": {"arrival": {"kind": "poisson", "rate_per_s": 0.2}, "num_requests": 20,
                         "prompt_tokens": {"kind": "constant", "value": 256},
                         "output_tokens": {"kind": "constant", "value": 8}},
            "serving": {"scheduler": {"policy": "continuous"}, "max_model_len": 4096},
            "cost_model": {"profile": "h100-sxm_llama-3.1-8b_tp1_bf16", "serving_overhead": False},
            "engine": {"name": "vllm", "api_server_per_request_s": d}})
    base, slow = run(scenario(0.0)).requests, run(scenario(2e-3)).requests
    assert np.allclose((slow["first_token_s"] - base["first_token_s"]).to_numpy(), 2e-3, atol=1e-9)
    assert np.allclose(slow["arrival_s"], base["arrival_s"])


def test_the_cpu_servers_waves_are_what_the_model_gives():
    # The real vLLM server here (docs/cpu_runs/2026-11-27-steps): c4 and c8 take each wave as 1 then the rest;
    # at c160 the first prompt goes alone and several decode-only steps pass before the rest arrive. The
    # serving fit's closed loop with the API server's 0.25 ms a request gives the same; without it, it does not.
    points = json.loads((RUN / "serving_run.json").read_text())["points"]
    real = ss.split_steps(ss.parse_steps((RUN / "iterations.log").read_text()), ss.segments_of(points))
    by_label = {ss.label(p): p for p in points}
    with_server = load_scenario(CPU_SCENARIO, ["engine.api_server_per_request_s=0.00025"])
    without = load_scenario(CPU_SCENARIO)
    for name in ("c4 p256 o64", "c8 p256 o64"):
        assert ss.waves(ss.simulated_steps(with_server, by_label[name])) == ss.waves(real[name])
        assert ss.waves(ss.simulated_steps(without, by_label[name])) != ss.waves(real[name])
    first = ss.waves(real["c160 p256 o64"]).split()[:2]
    modelled = ss.waves(ss.simulated_steps(with_server, by_label["c160 p256 o64"])).split()[:2]
    assert first[0] == modelled[0] == "1" and first[1].startswith("(") and modelled[1].startswith("(")


def test_a_negative_time_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="engine.api_server_per_request_s"):
        _closed_loop(-1e-3)
