"""engine.async_admission_lag: vLLM's async scheduling admits a request that reaches the engine during step N
in step N+2 (the batch for N+1 was scheduled when N started). Deterministic: which step a request joins."""
from __future__ import annotations

import numpy as np
import pytest

from sim.configio import ConfigError
from sim.scenario import scenario_from_dict
from sim.simulation import run
from sim.workload import Workload


def _scenario(lag: bool, policy: str = "continuous"):
    sched = {"policy": policy} if policy != "static" else {"policy": "static", "batch_size": 4}
    return scenario_from_dict({
        "name": "lag", "seed": 1, "model": "llama-3.1-8b", "hardware": {"gpu": "h200-sxm"},
        "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1}, "num_requests": 2,
                     "prompt_tokens": {"kind": "constant", "value": 256},
                     "output_tokens": {"kind": "constant", "value": 64}},
        "serving": {"scheduler": sched, "max_model_len": 4096},
        "cost_model": {"profile": "h200-sxm_llama-3.1-8b_tp1_bf16", "serving_overhead": False},
        "engine": {"name": "vllm", "version": "0.26.0", "async_admission_lag": lag}})


def _two_requests(second_at_s: float) -> Workload:
    return Workload(arrival_s=np.array([0.0, second_at_s]), prompt_tokens=np.array([256, 256], dtype=np.int64),
                    output_tokens=np.array([64, 8], dtype=np.int64), priority=np.zeros(2, dtype=np.int64),
                    priority_names={0: "default"}, duration_s=1.0)


def _step_ends(res) -> np.ndarray:
    st = res.steps
    return np.sort((st["start_s"] + st["duration_s"]).to_numpy())


@pytest.mark.parametrize("offset", [0.3, 0.7])
def test_a_request_arriving_mid_step_joins_the_step_after_next(offset):
    """Request 0 decodes alone; request 1 arrives inside one of its steps. Without the lag it is admitted
    when that step ends; with it, one step later. Fails if the lag is ignored or applied twice."""
    probe = run(_scenario(False), workload=_two_requests(1.0), record_steps=True)
    ends = _step_ends(probe)
    k = 10  # a decode step of request 0 alone, well inside its run
    at = float(ends[k] + offset * (ends[k + 1] - ends[k]))  # during step k + 1, which ends at ends[k + 1]
    base = run(_scenario(False), workload=_two_requests(at), record_steps=True)
    lagged = run(_scenario(True), workload=_two_requests(at), record_steps=True)
    assert base.requests["scheduled_s"].iloc[1] == pytest.approx(ends[k + 1], abs=1e-12)
    assert lagged.requests["scheduled_s"].iloc[1] == pytest.approx(_step_ends(lagged)[k + 2], abs=1e-12)
    assert lagged.requests["scheduled_s"].iloc[1] > base.requests["scheduled_s"].iloc[1]
    # Only when it enters moves: request 0's tokens are priced the same until then.
    assert lagged.requests["first_token_s"].iloc[0] == base.requests["first_token_s"].iloc[0]


def test_an_idle_engine_admits_at_once_with_the_lag():
    """Nothing in flight, nothing to wait for: the second request, arriving after the first finished, starts
    on arrival either way."""
    for lag in (False, True):
        res = run(_scenario(lag), workload=_two_requests(5.0))
        assert res.requests["scheduled_s"].iloc[1] == pytest.approx(5.0, abs=1e-12)


def test_the_lag_moves_ttft_of_a_burst_on_a_busy_engine():
    """A closed loop at concurrency 8 of unequal outputs: each follow-up is sent as its predecessor finishes,
    while the engine is busy with the others, so with the lag it waits one step more. (A wave that finishes
    together leaves nothing running, and its successors are admitted at once, lag or not: vLLM would run one
    wasted step first, not modelled.)"""
    w = Workload(arrival_s=np.full(64, np.nan), prompt_tokens=np.full(64, 256, dtype=np.int64),
                 output_tokens=16 + 5 * (np.arange(64, dtype=np.int64) % 7), priority=np.zeros(64, dtype=np.int64),
                 priority_names={0: "default"}, duration_s=float("inf"), concurrency=8, think_time_s=0.0)
    ttft = {lag: (lambda t: (t["first_token_s"] - t["arrival_s"]).median())(run(_scenario(lag), workload=w).requests)
            for lag in (False, True)}
    assert ttft[True] > ttft[False]


def test_the_lag_needs_continuous_batching():
    with pytest.raises(ConfigError, match="engine.async_admission_lag.*continuous or priority"):
        _scenario(True, policy="static")
