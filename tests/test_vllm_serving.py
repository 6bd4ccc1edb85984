"""`servesim calibrate serve` end to end on the real vLLM server (tier `vllm`: about 1 min here).

A smoke sweep (3 closed-loop points) against the real OpenAI server, the fit by simulation, and the
profile written with its serving section: what a user runs after `calibrate run` on their machine.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibration import cli
from calibration.profile import load_profile
from calibration.serving import SERVING_MEASUREMENTS_FILE, SERVING_RUN_FILE, SMOKE_SWEEP

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None and importlib.util.find_spec("aiohttp") is not None
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not HAS_VLLM, reason="vllm (and aiohttp) not installed")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    out = tmp_path_factory.mktemp("served") / "tiny_served"
    rc = cli.main(["serve", str(ROOT / "scenarios" / "cpu_vllm_tiny_llama.yaml"), "--out", str(out),
                   "--sweep", "smoke"])
    assert rc == 0
    return out


def test_sweep_measured_every_point_on_the_server(served):
    rec = pd.read_csv(served / SERVING_MEASUREMENTS_FILE, keep_default_na=False, na_values=[""])
    assert list(rec["point"].unique()) == [p.label for p in SMOKE_SWEEP]
    assert rec["error"].isna().all()  # an empty error string: the request succeeded
    for p in SMOKE_SWEEP:
        r = rec[rec["point"] == p.label]
        assert len(r) == p.num_requests
        assert set(r["client"]) == set(range(p.concurrency))  # every client sent requests
        assert (r["output_tokens_served"] == p.output_tokens).all()  # ignore_eos + min_tokens: exact lengths
        assert (r["ttft_s"] > 0).all() and (r["tpot_s"] > 0).all() and (r["e2e_s"] > r["ttft_s"]).all()
    assert (served / SERVING_RUN_FILE).is_file()


def test_profile_has_a_serving_section_that_reproduces_its_sweep(served):
    prof = load_profile(served)
    assert prof.name == "tiny_served" and prof.model == "tiny-llama"
    sv = prof.serving
    assert sv["compute_scale"] == 1.0 and sv["provenance"]["source"].startswith("servesim calibrate serve")
    assert "--sweep smoke" in sv["provenance"]["command"]
    table = pd.DataFrame(sv["fit"]["points"])
    assert set(table["point"]) == {p.label for p in SMOKE_SWEEP}
    fit = table[table["metric"].isin(["ttft_s", "tpot_s"])]
    # A smoke sweep (3 points of 4-8 requests, 4 terms) checks the pipeline, not the terms: a single
    # point can be tens of % off. As a whole, the fit must land closer than the bare profile,
    # which misses the served engine's per-step IPC, streaming and response latency.
    assert np.isfinite(fit["fitted"]).all() and (fit["fitted"] > 0).all()
    err_fit = np.abs(np.log(fit["fitted"] / fit["measured"])).sum()
    err_bare = np.abs(np.log(fit["profile_only"] / fit["measured"])).sum()
    # All-zero terms are inside the fit's bounds, so a working fit cannot do worse than the bare
    # profile; how much better varies with the smoke sweep's noise (0.74x of the bare error on one
    # CI run, so a "< 0.7x" bound here was flaky).
    assert err_fit < err_bare
