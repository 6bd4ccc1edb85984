"""Speculative runs, faster and to the bit: acceptance drawn as rng.geometric draws it, and runs priced only
up to a known arrival's cut (sim/fast_forward.py's `cut_at`) give exactly what whole runs give."""
from __future__ import annotations

import copy

import numpy as np
import pytest

import sim.fast_forward as fast_forward
from sim.scenario import scenario_from_dict
from sim.simulation import run
from sim.speculative import Speculation, SpeculativeConfig, _geometric_by_exponential, drafter_for

from conftest import make_scenario

DRAFT = {"draft_model": "llama-3.2-1b", "num_speculative_tokens": 4}


def _speculation(seed: int, **acceptance) -> Speculation:
    cfg = SpeculativeConfig(**DRAFT, **acceptance)
    return Speculation(cfg, None, make_scenario().gpu_spec, 1, "bf16", 1000, np.random.default_rng(seed))


@pytest.mark.parametrize("alpha", [0.68, 0.7, 0.8, 0.95, 0.999])
def test_acceptance_draws_are_numpys_geometric_draws(alpha):
    spec = _speculation(5, acceptance_rate=alpha)
    assert spec._geometric_scale is not None  # p = 1 - alpha < 1/3: the exponential form applies
    ref = copy.deepcopy(spec.rng)
    for size in [(37, 11), 1, 5000, (3, 200)]:
        got = spec.sample_tokens(size)
        want = np.minimum(ref.geometric(1.0 - alpha, size=size) - 1, spec.k).astype(np.int64) + 1
        np.testing.assert_array_equal(got, want)
    assert spec.rng.bit_generator.state == ref.bit_generator.state


@pytest.mark.parametrize("acceptance", [{"acceptance_rate": 0.5}, {"acceptance_rate": 0.0},
                                        {"acceptance_rate": 0.8},
                                        {"per_position_acceptance_rates": (0.9, 0.5, 0.5, 0.2)}])
def test_skipping_leaves_the_stream_where_drawing_does(acceptance):
    a, b = _speculation(9, **acceptance), _speculation(9, **acceptance)
    a.sample_tokens((40, 7))
    b.skip_tokens(40 * 7)
    np.testing.assert_array_equal(a.sample_tokens(300), b.sample_tokens(300))


def test_the_exponential_form_is_refused_where_numpy_searches():
    rng = np.random.default_rng(1)
    assert _geometric_by_exponential(rng, 0.5) is None  # p >= 1/3: NumPy's sequential search, other draws
    assert _geometric_by_exponential(rng, 0.2) is not None


BASE = {
    "name": "spec-cut",
    "seed": 4,
    "workload": {
        "arrival": {"kind": "poisson", "rate_per_s": 6.0},
        "num_requests": 400,
        "prompt_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.8, "min": 8, "max": 1400},
        "output_tokens": {"kind": "lognormal", "mean": 150, "sigma": 0.6, "min": 2, "max": 600},
    },
    "model": "llama-3.1-8b",
    "hardware": {"gpu": "a100-80gb-sxm"},
    "cost_model": {"kind": "roofline"},  # no ingress jitter: the next arrival's time is known
    "serving": {"replicas": 1, "max_model_len": 2048, "scheduler": {"policy": "continuous"},
                "speculative": {**DRAFT, "acceptance_rate": 0.7}},
}

CASES = {
    "busy": {},
    "sparse": {"workload": {"arrival": {"kind": "poisson", "rate_per_s": 0.3}, "num_requests": 60}},
    "per_position": {"serving": {**BASE["serving"], "speculative": {
        **DRAFT, "per_position_acceptance_rates": [0.8, 0.6, 0.4, 0.2]}}},
    "preempting": {"serving": {**BASE["serving"], "num_kv_blocks": 300, "scheduler": {
        "policy": "continuous", "max_num_seqs": 24}}},
    "priority_until_completion": {
        "serving": {**BASE["serving"], "num_kv_blocks": 300, "scheduler": {"policy": "priority", "max_num_seqs": 6}},
        "workload": {"priorities": [{"name": "a", "level": 0, "share": 0.5}, {"name": "b", "level": 1, "share": 0.5}]}},
}


def _scenario(patch: dict):
    d = {**BASE, **{k: v for k, v in patch.items() if k != "workload"}}
    d["workload"] = {**BASE["workload"], **patch.get("workload", {})}
    return scenario_from_dict(d)


def _outputs(res) -> dict:
    t = res.table
    out = {n: np.array(getattr(t, n)) for n in ("scheduled_s", "first_token_s", "finish_s", "last_token_s",
                                                 "generated", "preemptions")}
    res.itl.flush()
    out["itl"] = res.itl.counts.copy()
    out["busy"] = np.array(res.replica_busy_s)
    out["end"] = np.array([res.end_s])
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_runs_priced_to_the_cut_match_whole_runs(case, monkeypatch):
    real = fast_forward._plan_speculative
    seen = []

    def priced(*args):
        ff = real(*args)
        if ff is not None:
            seen.append((args[-1] is not None, ff.steps is not None))
        return ff
    monkeypatch.setattr(fast_forward, "_plan_speculative", priced)
    cut = _outputs(run(_scenario(CASES[case])))
    assert (True, True) in seen, "no run was priced only up to an arrival: the case tests nothing"
    if case == "sparse":
        assert (True, False) in seen  # runs that end before the next arrival are priced whole
    monkeypatch.setattr(fast_forward, "_plan_speculative", lambda *args: real(*args[:-1], None))
    whole = _outputs(run(_scenario(CASES[case])))
    for name in cut:
        np.testing.assert_array_equal(cut[name], whole[name], err_msg=name)
    if case == "preempting":
        assert cut["preemptions"].sum() > 0


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("tp", [1, 4])
def test_a_steps_draft_and_rejection_seconds_on_floats_are_the_arrays_bits(k, tp):
    sc = make_scenario({"model": "llama-3.1-70b", "serving": {"tensor_parallel": tp}})
    cfg = SpeculativeConfig(draft_model="llama-3.2-1b", num_speculative_tokens=k)
    drafter = drafter_for(cfg, sc.model_spec, "serving.speculative")
    spec = Speculation(cfg, drafter, sc.gpu_spec, tp, "bf16", sc.model_spec.vocab_size, np.random.default_rng(0))
    rng = np.random.default_rng(k * 10 + tp)
    for _ in range(500):
        seqs = int(rng.integers(0, 300))
        new = seqs * (k + 1) + int(rng.integers(0, 3)) * int(rng.integers(0, 4000))
        ctx = int(rng.integers(0, 2_000_000))
        args = (new, int(rng.integers(0, 10**9)), ctx, seqs, int(rng.integers(0, seqs + 1)), ctx // 2,
                int(rng.integers(0, seqs + 1)))
        want = float(spec.steps_extra_s(*args))
        assert spec.step_extra_s(*args).hex() == want.hex()
