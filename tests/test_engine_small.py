"""The small-batch engine step (sim/engine_small.py) gives exactly what the general step gives.

Each scenario runs twice, once as shipped and once with the small-batch path switched off, and
every per-request output, the inter-token-latency histogram and the busy time must be equal to
the bit: the fast path is a speed change only."""
from __future__ import annotations

import numpy as np
import pytest

import sim.engine as engine
import sim.engine_small as engine_small
from sim.kv_cache import KVCache
from sim.schedulers import ContinuousScheduler
from sim.scenario import scenario_from_dict
from sim.simulation import run

BASE = {
    "name": "small-path",
    "seed": 3,
    "workload": {
        "arrival": {"kind": "poisson", "rate_per_s": 3.0},
        "num_requests": 300,
        "prompt_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.8, "min": 8, "max": 1200},
        "output_tokens": {"kind": "lognormal", "mean": 120, "sigma": 0.7, "min": 1, "max": 800},
    },
    "model": "llama-3.1-8b",
    "hardware": {"gpu": "a100-80gb-sxm"},
    "serving": {"replicas": 1, "max_model_len": 2048, "scheduler": {"policy": "continuous"}},
}

CASES = {
    "light": {},
    "preempting_chunked": {"serving": {"replicas": 1, "max_model_len": 2048, "num_kv_blocks": 140, "scheduler": {
        "policy": "continuous", "max_num_batched_tokens": 256, "chunked_prefill": True}}},
    "priority_two_replicas": {"serving": {"replicas": 2, "max_model_len": 2048, "num_kv_blocks": 200,
                                          "scheduler": {"policy": "priority", "max_num_seqs": 6}},
                              "workload": {"priorities": [{"name": "a", "level": 0, "share": 0.5},
                                                          {"name": "b", "level": 1, "share": 0.5}]}},
    "closed_loop": {"workload": {"arrival": {"kind": "closed_loop", "concurrency": 8, "think_time_s": 0.3}}},
    # One replica, open loop, no ingress jitter: the next arrival's time is known, and the small path ends
    # each run at the step in flight then, pricing steps a few at a time (the general path lets the
    # arrival cut the run short). The shipped profile's serving terms include a jitter, hence the forms.
    "known_arrivals_roofline": {"cost_model": {"kind": "roofline"}},
    "known_arrivals_profile_kernels": {"cost_model": {"serving_overhead": False}},
    "known_arrivals_priority": {"cost_model": {"kind": "roofline"},
                                "serving": {"replicas": 1, "max_model_len": 2048, "num_kv_blocks": 200,
                                            "scheduler": {"policy": "priority", "max_num_seqs": 6}},
                                "workload": {"priorities": [{"name": "a", "level": 0, "share": 0.5},
                                                            {"name": "b", "level": 1, "share": 0.5}]}},
    # Arrivals far apart: runs that end before the next arrival, and ones too long to price step by step.
    "known_arrivals_sparse": {"cost_model": {"kind": "roofline"},
                              "workload": {"arrival": {"kind": "poisson", "rate_per_s": 0.1}, "num_requests": 100}},
}


def _scenario(patch: dict):
    d = {**BASE, **{k: v for k, v in patch.items() if k != "workload"}}
    d["workload"] = {**BASE["workload"], **patch.get("workload", {})}
    return scenario_from_dict(d)


def _outputs(res) -> dict:
    t = res.table
    out = {n: np.array(getattr(t, n)) for n in ("scheduled_s", "first_token_s", "finish_s", "last_token_s",
                                                 "generated", "preemptions", "replica")}
    res.itl.flush()
    out["itl"] = res.itl.counts.copy()
    out["busy"] = np.array(res.replica_busy_s)
    out["end"] = np.array([res.end_s])
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_small_path_matches_general_path(case, monkeypatch):
    priced = set()  # how runs were priced (in blocks on floats, or vectorised) and whether they end at an arrival
    real_price = engine_small._price

    def price(*args):
        run = real_price(*args)
        if run is not None:
            priced.add(("blocks" if type(run[0]) is list else "vectorised", "whole" if run[5] is None else "bounded"))
        return run
    monkeypatch.setattr(engine_small, "_price", price)
    took_blocks = []  # decisions whose KV blocks the small step had taken (RunningBatch.blocks_for_known)
    real_schedule_running = ContinuousScheduler._schedule_running

    def schedule_running(self, replica):
        took_blocks.append(replica.running.blocks_for_known)
        return real_schedule_running(self, replica)
    monkeypatch.setattr(ContinuousScheduler, "_schedule_running", schedule_running)
    fast = _outputs(run(_scenario(CASES[case])))
    assert any(took_blocks), "the small step never took the next decision's blocks: the case tests nothing"
    if case.startswith("known_arrivals"):
        assert ("blocks", "bounded") in priced, "no run ended at a known arrival: the case tests nothing"
    if case == "known_arrivals_sparse":  # runs that end before the arrival, and arrivals too far to price in blocks
        assert {("blocks", "whole"), ("vectorised", "bounded")} <= priced, priced
    used = []
    real_fits = engine.fits
    monkeypatch.setattr(engine, "fits", lambda rep, plan: used.append(real_fits(rep, plan)) or False)
    slow = _outputs(run(_scenario(CASES[case])))
    assert any(used), "the scenario never takes the small-batch path: it tests nothing"
    for name in fast:
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
    if case == "preempting_chunked":
        assert fast["preemptions"].sum() > 0  # the resumed-after-preemption branch ran


def test_list_kv_methods_match_array_methods():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = KVCache(60, 16, 40), KVCache(60, 16, 40)
        for kv in (a, b):
            kv.allocate(3, 100)
            kv.allocate(7, 33)
        reqs = sorted(rng.choice(40, size=int(rng.integers(1, 15)), replace=False).tolist())
        tokens = rng.integers(1, 300, size=len(reqs)).tolist()
        left = rng.integers(1, 200, size=len(reqs)).tolist()
        horizon = int(rng.integers(1, 300))
        assert a.steps_that_fit_lists(reqs, tokens, left, horizon) == b.steps_that_fit(
            np.array(reqs), np.array(tokens), np.array(left), 1, horizon)
        assert a.allocate_lists(reqs, tokens) == b.allocate_many(np.array(reqs), np.array(tokens))
        assert a.num_free_blocks == b.num_free_blocks
        assert a._held.tolist() == b._held.tolist()
