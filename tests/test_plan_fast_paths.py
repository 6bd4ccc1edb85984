"""The plan's answer does not depend on the engine's speed paths: a small plan with a speculative candidate
and a one-replica candidate with large batches gives the same record, to the bit, with the paths of issue
15's seventh pass switched off (acceptance drawn by rng.geometric, speculative runs priced whole, the
general step's runs on one replica priced whole and cut by the arrival, a step's draft seconds in numpy)."""
from __future__ import annotations

from collections import Counter

import numpy as np

import sim.engine as engine
import sim.fast_forward as fast_forward
import sim.speculative as speculative
from sim.plan.planner import plan
from sim.plan.search import Points

PLAN = {
    "name": "plan-fast-paths",
    "seed": 5,
    "workload": {
        "arrival": {"kind": "daily", "queries_per_day": 5_000_000, "hourly_weights": [0.2] * 12 + [2.0] * 12},
        "prompt_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.6, "min": 16, "max": 2048},
        "output_tokens": {"kind": "lognormal", "mean": 150, "sigma": 0.5, "min": 8, "max": 512},
    },
    "model": "llama-3.1-8b",
    "hardware": {"gpu": "a100-80gb-sxm"},
    "cost_model": {"kind": "roofline"},  # no ingress jitter: arrival times are known in advance
    "serving": {"max_model_len": 4096},
    "slo": {"ttft_s": 0.5, "tpot_s": 0.03},
    "plan": {
        "requests_per_point": 400,
        "min_duration_s": 0,
        "candidates": [
            {"name": "plain", "gpu": "h100-sxm"},
            {"name": "spec", "speculative": {"draft_model": "llama-3.2-1b", "num_speculative_tokens": 4,
                                             "acceptance_rate": 0.75}},
        ],
    },
}


def _record(p) -> dict:
    return p.to_dict(timing=False)


def test_the_plan_is_the_same_without_the_speed_paths(monkeypatch):
    seen: Counter = Counter()
    samples: list = []  # every simulated point's latencies, in order, each run of the plan
    real_add = Points.add

    def add(self, key, task, sample):
        samples.append((key, task.seed, task.screening,
                        b"".join(a.tobytes() for a in (sample.ttft_s, sample.tpot_s, sample.e2e_s))))
        return real_add(self, key, task, sample)
    monkeypatch.setattr(Points, "add", add)
    real_spec, real_open = fast_forward._plan_speculative, engine.open_general

    def spec_run(*args):
        ff = real_spec(*args)
        seen["spec_cut"] += ff is not None and ff.steps is not None
        return ff

    def open_general(rep, *args):
        ff, run = real_open(rep, *args)
        seen["one_replica_open"] += run is not None and len(rep.sim.replicas) == 1
        return ff, run
    monkeypatch.setattr(fast_forward, "_plan_speculative", spec_run)
    monkeypatch.setattr(engine, "open_general", open_general)
    fast = plan(PLAN, workers=1)
    assert seen["spec_cut"] and seen["one_replica_open"], f"the speed paths were not taken: {dict(seen)}"
    assert all(c.feasible and c.replicas_peak >= 2 for c in fast.candidates), "a search with no bisection"
    fast_samples, samples[:] = list(samples), []

    monkeypatch.setattr(fast_forward, "_plan_speculative", lambda *args: real_spec(*args[:-1], None))
    real_opens = engine.opens_general
    monkeypatch.setattr(engine, "opens_general", lambda rep: len(rep.sim.replicas) > 1 and real_opens(rep))
    monkeypatch.setattr(speculative, "_geometric_by_exponential", lambda rng, p: None)
    monkeypatch.setattr(speculative.Speculation, "step_extra_s",
                        lambda self, *args: float(self.steps_extra_s(*args)))
    slow = plan(PLAN, workers=1)
    assert fast_samples == samples  # every point, not only those the plan prints
    assert _record(fast) == _record(slow)
    for a, b in zip(fast.candidates, slow.candidates):
        assert a.hourly_replicas == b.hourly_replicas
        assert np.float64(a.ttft_s).tobytes() == np.float64(b.ttft_s).tobytes()
