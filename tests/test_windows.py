"""Windowed runs (sim/windows.py): the same requests as one whole run, close numbers, any backend."""
import numpy as np
import pandas as pd
import pytest

from sim.configio import ConfigError
from sim.scenario import scenario_from_dict
from sim.simulation import run
from sim.windows import run_windowed, window_tasks


def scenario(rate=3.0, duration=900.0):
    return scenario_from_dict({"seed": 5, "workload": {
        "arrival": {"kind": "poisson", "rate_per_s": rate}, "duration_s": duration,
        "prompt_tokens": {"kind": "lognormal", "mean": 400, "sigma": 0.8, "max": 3000},
        "output_tokens": {"kind": "lognormal", "mean": 150, "sigma": 0.8, "max": 1000}},
        "serving": {"max_model_len": 4096}})


def latencies(req: pd.DataFrame) -> dict:
    req = req.sort_values("request_id")
    ttft = req["first_token_s"] - req["arrival_s"]
    e2e = req["finish_s"] - req["arrival_s"]
    return {"ttft_p50": ttft.quantile(0.5), "ttft_p99": ttft.quantile(0.99), "e2e_p50": e2e.quantile(0.5),
            "e2e_p99": e2e.quantile(0.99)}


def test_windows_score_every_request_once_and_match_one_whole_run():
    sc = scenario()
    whole = run(sc)
    win = run_windowed(sc, window_s=120.0, warmup_s=60.0, workers=1)
    assert len(win.windows) == 8 and win.stable
    assert sorted(win.requests["request_id"]) == list(range(len(whole.requests)))
    assert np.allclose(np.sort(win.requests["arrival_s"]), np.sort(whole.requests["arrival_s"]))
    a, b = latencies(whole.requests), latencies(win.requests)
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=0.05), k
    # Without a warm-up replay the windows start empty: the first requests of each see no queue.
    cold = latencies(run_windowed(sc, window_s=120.0, warmup_s=0.0, workers=1).requests)
    assert cold["ttft_p50"] <= b["ttft_p50"] * 1.0001


def test_windows_are_the_same_on_one_process_two_processes_and_ray():
    sc = scenario(duration=300.0)
    one = run_windowed(sc, window_s=60.0, warmup_s=30.0, workers=1).requests
    two = run_windowed(sc, window_s=60.0, warmup_s=30.0, workers=2).requests
    pd.testing.assert_frame_equal(one, two)
    pytest.importorskip("ray")
    on_ray = run_windowed(sc, window_s=60.0, warmup_s=30.0, ray=True)
    assert on_ray.backend.startswith("ray")
    pd.testing.assert_frame_equal(one, on_ray.requests)


def test_window_settings_are_checked():
    with pytest.raises(ConfigError, match="window_s"):
        window_tasks(scenario(), float("inf"), 10.0)
    closed = scenario_from_dict({"workload": {"arrival": {"kind": "closed_loop", "concurrency": 2},
                                              "num_requests": 10, "prompt_tokens": {"kind": "constant", "value": 10},
                                              "output_tokens": {"kind": "constant", "value": 5}}})
    with pytest.raises(ConfigError, match="closed_loop"):
        window_tasks(closed, 60.0, 10.0)
