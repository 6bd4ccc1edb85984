"""`servesim calibrate observe`: engine terms from `vllm bench serve --save-result` files (calibration/observe.py).

Measured serving runs from aiconfigurator-core's silicon_sample.csv stand in for a user's results:
Llama-3.1-70B fp8 on H100 at TP8, the model the shipped engine terms were NOT fitted on.
"""
from __future__ import annotations

import importlib.util
import json

import pytest

from calibration.observe import read_result
from calibration.profile import load_profile

HAS_AIC = importlib.util.find_spec("aiconfigurator_core") is not None

SCENARIO = """name: llama70-h100-tp8
workload: {arrival: {kind: poisson, rate_per_s: 1}, num_requests: 10,
           prompt_tokens: {kind: constant, value: 1024}, output_tokens: {kind: constant, value: 1024}}
model: llama-3.1-70b
hardware: {gpu: h100-sxm}
serving: {replicas: 1, tensor_parallel: 8, quantization: {weights: fp8, kv_cache: bf16},
          scheduler: {max_num_seqs: 1024, max_num_batched_tokens: 8192}, max_model_len: 8192}
"""


def _result(path, concurrency, isl, osl, ttft_ms, tpot_ms, n):
    path.write_text(json.dumps({"max_concurrency": concurrency, "request_rate": "inf", "completed": n,
                                "num_prompts": n, "total_input_tokens": n * isl, "total_output_tokens": n * osl,
                                "mean_ttft_ms": ttft_ms, "mean_tpot_ms": tpot_ms}))
    return path


def test_read_result_rebuilds_the_benchmarks_requests_and_names_bad_input(tmp_path):
    good = read_result(_result(tmp_path / "a.json", 8, 1000, 200, 120.0, 11.0, 80))
    w = good.workload
    assert (good.concurrency, len(w), int(w.prompt_tokens[0]), int(w.output_tokens[0])) == (8, 80, 1000, 200)
    assert w.start_spread_s is None  # closed-loop clients start out of phase
    assert (good.ttft_ms, good.tpot_ms) == (120.0, 11.0)
    (tmp_path / "b.json").write_text(json.dumps({"completed": 3, "max_concurrency": 2, "mean_ttft_ms": 5.0,
                                                 "mean_tpot_ms": 1.0}))
    with pytest.raises(ValueError, match="total_input_tokens"):
        read_result(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON result"):
        read_result(tmp_path / "c.json")
    (tmp_path / "d.json").write_text(json.dumps({"completed": 3, "max_concurrency": 2, "total_input_tokens": 30,
                                                 "total_output_tokens": 30}))
    with pytest.raises(ValueError, match="d.json: field 'mean_ttft_ms'"):
        read_result(tmp_path / "d.json")


@pytest.mark.skipif(not HAS_AIC, reason="aiconfigurator-core not installed")
def test_observe_fits_terms_that_beat_the_shipped_ones_on_the_users_runs(tmp_path, capsys):
    from calibration.cli import main
    from calibration.silicon import read_rows

    rows = [r for r in read_rows()[0] if (r.model, r.gpu, r.tp, r.isl, r.osl) == ("llama-3.1-70b", "h100-sxm", 8, 1024, 1024)
            and r.concurrency in (4, 16)]
    assert len(rows) == 2
    files = [str(_result(tmp_path / f"c{r.concurrency}.json", r.concurrency, r.isl, r.osl, r.ttft_ms, r.tpot_ms,
                         4 * r.concurrency)) for r in rows]
    (tmp_path / "s.yaml").write_text(SCENARIO)
    out = tmp_path / "mine"
    assert main(["calibrate", "observe", str(tmp_path / "s.yaml"), *files, "--out", str(out)]) == 0
    assert "engine terms:" in capsys.readouterr().out
    prof = load_profile(out)
    sv = prof.serving
    assert "vllm bench serve" in sv["provenance"]["source"] and len(sv["provenance"]["files"]) == 2
    pts = sv["fit"]["points"]
    fitted = sum(abs(p["fitted_tpot_ms"] / p["tpot_ms"] - 1) for p in pts)
    shipped = sum(abs(p["shipped_tpot_ms"] / p["tpot_ms"] - 1) for p in pts)
    assert fitted < shipped  # the user's own runs, fitted: closer than terms fitted on another model
    # A scenario pointing at the written profile uses its terms (a serving section of its own).
    from sim.cost_select import select_cost_model
    from sim.scenario import load_scenario

    sc = load_scenario(tmp_path / "s.yaml", [f"cost_model.profile={out}"])
    choice = select_cost_model(sc)
    assert "serving overhead (servesim calibrate observe" in choice.name
    assert choice.cost.request_jitter_s == pytest.approx(sv["request_jitter_s"])


def test_a_closed_loop_results_ttft_counts_the_benchmarks_first_wave(tmp_path):
    """vllm bench serve sends its first max_concurrency requests together to an idle server and
    averages their TTFT with the rest (docs/ttft_gpu.md): the prediction weights that burst by its
    share of the file's requests, so a file of few requests per client predicts a higher mean."""
    from calibration.observe import _predict, observation_scenario
    from sim.cost_model import ProfileCostModel
    from sim.scenario import load_scenario

    (tmp_path / "s.yaml").write_text(SCENARIO)
    base = load_scenario(tmp_path / "s.yaml")
    cost = ProfileCostModel(load_profile("h100-sxm_llama-3.1-70b_tp8_fp8").coefficients)
    c = 32
    preds = {}
    for per_client in (1, 2, 20):
        obs = read_result(_result(tmp_path / f"r{per_client}.json", c, 1024, 128, 100.0, 10.0, per_client * c))
        assert obs.requests == per_client * c
        preds[per_client] = _predict(observation_scenario(base, obs), cost, obs)
    # All in the first wave > half of them > one in twenty; TPOT is the steady state's throughout.
    assert preds[1][0] > preds[2][0] > preds[20][0]
    wave, steady = preds[1][0], None
    # With 2 requests per client the mean is half wave, half steady: the steady TTFT it implies is below the wave.
    steady = 2 * preds[2][0] - wave
    assert 0 < steady < wave
    assert preds[20][0] == pytest.approx((wave + 19 * steady) / 20, rel=0.05)
