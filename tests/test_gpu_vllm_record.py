"""The vLLM runs of the H200 lease (docs/gpu_runs/h200-2026-11-27-vllm) against servesim: the doc is what the
data gives, the KV pool servesim plans is the one vLLM allocated, and a scenario without
gpu_memory_utilization takes its engine version's default."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_vllm_record as rec  # noqa: E402
from sim.configio import ConfigError  # noqa: E402
from sim.engine_terms import gpu_memory_utilization_default  # noqa: E402
from sim.scenario import scenario_from_dict  # noqa: E402


def test_the_doc_is_what_the_runs_give():
    assert rec.main(["--check"]) == 0


def test_vllm_logs_read_as_recorded():
    f = rec.server_facts(rec.RUNS / "run1" / "serve_defaults" / "server.log")
    assert f["kv_tokens"] == 919_824 and float(f["gmu"][0]) == 0.92
    assert "cudagraph" not in f["args"].lower() and "enforce_eager" not in f["args"]  # served as deployed


def test_servesim_plans_the_kv_pool_vllm_allocated():
    """Deterministic: the block count follows from memory alone. Within 1 % at the engine's own default;
    the pre-0.20 default (0.9) would have planned ~3 % fewer tokens than this vLLM allocates."""
    _, rows = rec.section_kv()
    for r in rows:
        assert r["version_default_gmu"] == pytest.approx(0.92)
        assert abs(r["version_default_tokens"] / r["measured_tokens"] - 1) < 0.01, r
        assert r["old_default_tokens"] / r["measured_tokens"] - 1 < -0.02, r


@pytest.mark.parametrize("version, want", [("0.11.0", 0.9), ("0.19.1", 0.9), ("0.20.0", 0.92), ("0.26.0", 0.92),
                                           ("0.32.0", 0.92), (None, 0.9), ("nightly-5b8c30d62b754b57", 0.9)])
def test_gpu_memory_utilization_default_follows_the_vllm_release(version, want):
    assert gpu_memory_utilization_default("vllm", version) == want


def _scenario(**serving):
    return scenario_from_dict({"name": "t", "workload": {"arrival": {"kind": "poisson", "rate_per_s": 1},
                                                         "num_requests": 10,
                                                         "prompt_tokens": {"kind": "constant", "value": 256},
                                                         "output_tokens": {"kind": "constant", "value": 64}},
                               "model": "llama-3.1-8b", "hardware": {"gpu": "h200-sxm"},
                               "engine": {"name": "vllm", "version": "0.26.0"}, "serving": serving})


def test_a_scenario_without_gpu_memory_utilization_gets_the_engine_default_and_a_set_one_wins():
    assert _scenario().gpu_memory_utilization == 0.92
    assert _scenario(gpu_memory_utilization=0.8).gpu_memory_utilization == 0.8
    with pytest.raises(ConfigError, match=r"serving.gpu_memory_utilization.*0.05 .. 1.0"):
        _scenario(gpu_memory_utilization=1.5)


# Today's median |error| on the lease's held-out sweep (docs/gpu_vllm_h200.md, section 2), percent. A change that
# makes servesim's default prediction for this measured setup worse must say so here, with the doc.
HELD_OUT_TODAY = {"auto_ttft_pct": 9.0, "auto_tpot_pct": 28.2, "bare_tpot_pct": 9.5}


def test_predictions_on_the_held_out_gpu_run_do_not_get_worse():
    pred = rec.predictions()
    held = pred[pred["run"] == "run2_heldout"]
    assert len(held) == 6
    for col, today in HELD_OUT_TODAY.items():
        assert rec.med_abs(held[col]) <= today + 0.5, (col, rec.med_abs(held[col]), today)


def test_the_report_of_the_measured_setup_cites_the_lease():
    """A run priced like the lease's setup says how far such predictions were from the lease's runs; another setup
    does not borrow the figure."""
    import json

    from sim.accuracy import composed_profile_accuracy

    rec_ = json.loads(rec.ACCURACY.read_text())["by_setup"]["h200-sxm|llama-3.1-8b|bf16"]
    line = composed_profile_accuracy("h200-sxm", "llama-3.1-8b", "bf16")
    assert "own GPU lease" in line and f"TPOT {rec_['tpot_mdape']:.1f} %" in line and "docs/gpu_vllm_h200.md" in line
    assert "own GPU lease" not in composed_profile_accuracy("h100-sxm", "llama-3.1-8b", "bf16")
    assert "own GPU lease" not in composed_profile_accuracy("h200-sxm", "llama-3.1-8b", "fp8")
