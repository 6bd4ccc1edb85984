"""Response latency per prompt token (ServingOverhead.response_latency_per_prompt_token_s): the API server
tokenises a prompt before the engine sees it, so a long prompt's response comes later; TPOT is not moved."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sim.cost_model import ProfileCostModel, ServingOverhead
from sim.scenario import load_scenario
from sim.simulation import run
from sim.workload import Workload
from tests.test_serving_overhead import SCENARIO

PER_TOKEN_S = 4e-6  # a fast tokenizer's cost per token on this CPU (docs/ttft_gpu.md: 2-5 us)


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(SCENARIO)


def _open_loop(n: int, rate: float, seed: int = 5) -> Workload:
    rng = np.random.default_rng(seed)
    prompt = rng.integers(16, 600, n)
    prompt[::7] = 1500  # some long prompts (the model allows 2048)
    return Workload(arrival_s=np.cumsum(rng.exponential(1 / rate, n)), prompt_tokens=prompt,
                    output_tokens=rng.integers(8, 60, n), priority=np.zeros(n, dtype=np.int64),
                    priority_names={0: "default"}, duration_s=float(n / rate))


def _pair(scenario, wl, record_token_times=False):
    from calibration.profile import load_profile

    coeffs = load_profile(scenario.cost_model.profile).coefficients
    base = ServingOverhead(compute_scale=1.2, step_overhead_s=5e-4, response_latency_s=0.02)
    a = run(scenario, workload=wl, cost_model=ProfileCostModel(coeffs, base), record_token_times=record_token_times)
    b = run(scenario, workload=wl, record_token_times=record_token_times,
            cost_model=ProfileCostModel(coeffs, replace(base, response_latency_per_prompt_token_s=PER_TOKEN_S)))
    return a, b


@pytest.mark.parametrize("rate, token_times", [(2.0, False), (60.0, False), (60.0, True)],
                         ids=["small batches", "large batches", "token log"])
def test_per_token_latency_adds_to_ttft_in_proportion_to_the_prompt_not_to_tpot(scenario, rate, token_times):
    wl = _open_loop(80, rate)
    a, b = _pair(scenario, wl, token_times)
    ra, rb = a.requests, b.requests
    prompt = ra["prompt_tokens"].to_numpy()
    extra = PER_TOKEN_S * prompt
    # Open loop: the engine's schedule does not depend on when clients read; each response moves by its own
    # prompt's tokenisation time: a 1500-token prompt's TTFT by 6 ms, a 100-token one's by 0.4 ms.
    np.testing.assert_allclose(rb["first_token_s"] - ra["first_token_s"], extra, atol=1e-12)
    np.testing.assert_allclose(rb["finish_s"] - ra["finish_s"], extra, atol=1e-12)
    long = prompt == 1500
    assert long.sum() >= 10
    ttft_a = (ra["first_token_s"] - ra["arrival_s"])[long]
    ttft_b = (rb["first_token_s"] - rb["arrival_s"])[long]
    np.testing.assert_allclose(ttft_b - ttft_a, 0.006, atol=1e-9)
    # TPOT = (E2E - TTFT) / (output - 1): first token and last move together, so it does not move.
    out = ra["generated_tokens"].to_numpy()
    tpot_a = (ra["finish_s"] - ra["first_token_s"]) / (out - 1)
    tpot_b = (rb["finish_s"] - rb["first_token_s"]) / (out - 1)
    np.testing.assert_allclose(tpot_b, tpot_a, atol=1e-12)
    if token_times:  # every chunk the client reads of a request moves by that request's extra time
        for i in (0, 7, 13):
            np.testing.assert_allclose(b.token_times.of(i) - a.token_times.of(i), extra[i], atol=1e-12)


def test_zero_is_the_constant_alone_and_bad_values_name_the_field(scenario):
    wl = _open_loop(40, 20.0)
    from calibration.profile import load_profile

    coeffs = load_profile(scenario.cost_model.profile).coefficients
    base = ServingOverhead(response_latency_s=0.01)
    a = run(scenario, workload=wl, cost_model=ProfileCostModel(coeffs, base)).requests
    b = run(scenario, workload=wl, cost_model=ProfileCostModel(
        coeffs, replace(base, response_latency_per_prompt_token_s=0.0))).requests
    assert a["first_token_s"].tolist() == b["first_token_s"].tolist()
    for bad in (-1e-6, "2us", True, float("nan")):
        with pytest.raises(ValueError, match="response_latency_per_prompt_token_s"):
            ServingOverhead(response_latency_per_prompt_token_s=bad)
