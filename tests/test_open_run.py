"""Runs priced up to the next arrival with two or more replicas (sim/open_run.py) give exactly what the
general step gives.

Each scenario runs three times: as shipped (the small-batch step where it fits), with the general step
everywhere (which opens runs too), and with the general step pricing each run's whole horizon vectorised
and letting an arrival cut it (the reference). Every per-request output,
the time series, the inter-token-latency histogram and the busy time must be equal to the bit, and
each case must take the open-run branches it is there for."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import sim.engine as engine
import sim.open_run as open_run
import sim.router as router
from sim.scenario import scenario_from_dict
from sim.simulation import run

BASE = {
    "name": "open-runs",
    "seed": 5,
    "workload": {
        "arrival": {"kind": "poisson", "rate_per_s": 6.0},
        "num_requests": 400,
        "prompt_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.8, "min": 8, "max": 1200},
        "output_tokens": {"kind": "lognormal", "mean": 150, "sigma": 0.7, "min": 1, "max": 800},
    },
    "model": "llama-3.1-8b",
    "hardware": {"gpu": "a100-80gb-sxm"},
    "serving": {"replicas": 3, "max_model_len": 2048, "scheduler": {"policy": "continuous"}},
    "sim": {"record_timeseries": True},
}

# name -> (patch, open-run events the case must see)
CASES = {
    "three_replicas_profile": ({}, {"opened", "priced_on", "cut", "reached_horizon"}),
    "two_replicas_roofline_round_robin": ({"cost_model": {"kind": "roofline"},
                                           "serving": {"replicas": 2, "router": "round_robin"}},
                                          {"opened", "priced_on", "cut"}),
    "busy_chunked_preempting": ({"workload": {"arrival": {"kind": "poisson", "rate_per_s": 20.0}},
                                 "serving": {"replicas": 2, "num_kv_blocks": 220, "scheduler": {
                                     "policy": "continuous", "max_num_batched_tokens": 256, "chunked_prefill": True}}},
                                {"opened", "priced_on", "cut"}),
    "priority_small_batches": ({"cost_model": {"kind": "roofline"},
                                "serving": {"replicas": 2, "num_kv_blocks": 200,
                                            "scheduler": {"policy": "priority", "max_num_seqs": 6}},
                                "workload": {"priorities": [{"name": "a", "level": 0, "share": 0.5},
                                                            {"name": "b", "level": 1, "share": 0.5}]}},
                               {"opened", "priced_on", "cut"}),
    # Batches past the small-batch step's size: the general step opens the runs.
    "big_batches_general_step": ({"workload": {"arrival": {"kind": "poisson", "rate_per_s": 60.0},
                                               "num_requests": 1500}, "serving": {"replicas": 2}},
                                 {"opened", "priced_on", "cut", "opened_by_general_step"}),
    # One replica: the general step opens its runs too (the small step ends them at the known arrival).
    "one_replica_big_batches": ({"workload": {"arrival": {"kind": "poisson", "rate_per_s": 40.0},
                                              "num_requests": 1200}, "serving": {"replicas": 1}},
                                {"opened", "cut", "opened_by_general_step"}),
    # ... and with priorities and a full batch: an arrival that is not first in line leaves the run be
    # (Scheduler.should_interrupt), which is then priced on to the next arrival.
    "one_replica_priority_queue": ({"workload": {"arrival": {"kind": "poisson", "rate_per_s": 40.0},
                                                 "num_requests": 1200,
                                                 "priorities": [{"name": "a", "level": 0, "share": 0.5},
                                                                {"name": "b", "level": 1, "share": 0.5}]},
                                    "serving": {"replicas": 1, "scheduler": {"policy": "priority", "max_num_seqs": 32}}},
                                   {"opened", "priced_on", "cut", "opened_by_general_step"}),
    # Arrivals far apart and long outputs: runs that reach their horizon on floats, and ones priced on
    # floats up to OPEN_RUN_MAX_STEPS and the rest vectorised.
    "sparse_long_outputs": ({"workload": {"arrival": {"kind": "poisson", "rate_per_s": 0.5}, "num_requests": 120,
                                          "output_tokens": {"kind": "lognormal", "mean": 900, "sigma": 0.5,
                                                            "min": 16, "max": 1500}},
                             "serving": {"max_model_len": 4096}},
                            {"opened", "priced_on", "reached_horizon", "rest_vectorised"}),
}


def _scenario(patch: dict):
    d = {**BASE, **{k: v for k, v in patch.items() if k not in ("workload", "serving")}}
    d["workload"] = {**BASE["workload"], **patch.get("workload", {})}
    d["serving"] = {**BASE["serving"], **patch.get("serving", {})}
    return scenario_from_dict(d)


def _outputs(res) -> dict:
    t = res.table
    out = {n: np.array(getattr(t, n)) for n in ("arrival_s", "scheduled_s", "first_token_s", "finish_s",
                                                 "last_token_s", "generated", "preemptions", "replica")}
    out.update({f"ts_{k}": np.asarray(v) for k, v in res.timeseries_columns.items()})
    res.itl.flush()
    out["itl"] = res.itl.counts.copy()
    out["busy"] = np.array(res.replica_busy_s)
    out["end"] = np.array([res.end_s])
    return out


def _watch(monkeypatch) -> Counter:
    """Count what the open runs do: opened, priced on after an arrival went elsewhere, cut by an arrival,
    reached their horizon while open, priced the rest vectorised."""
    seen: Counter = Counter()
    cls = open_run.OpenRun
    real_open, real_extend, real_rest = cls.open, cls.extend, cls._price_rest_vectorised
    real_submit = engine.Replica.submit

    def opened(self, *args):
        seen["opened"] += 1
        return real_open(self, *args)

    def extend(self, arrival_s):
        before = len(self.times)
        real_extend(self, arrival_s)
        seen["priced_on"] += len(self.times) > before
        seen["reached_horizon"] += self.rep._open_run is None and self.wake.triggered and before < self.horizon

    def rest(self):
        seen["rest_vectorised"] += 1
        return real_rest(self)

    def submit(self, req):
        was_open = self._open_run is not None
        real_submit(self, req)
        seen["cut"] += was_open and self._open_run is None

    real_open_general = engine.open_general

    def open_general(*args):
        ff, run_ = real_open_general(*args)
        seen["opened_by_general_step"] += run_ is not None
        return ff, run_

    monkeypatch.setattr(engine, "open_general", open_general)
    monkeypatch.setattr(cls, "open", opened)
    monkeypatch.setattr(cls, "extend", extend)
    monkeypatch.setattr(cls, "_price_rest_vectorised", rest)
    monkeypatch.setattr(engine.Replica, "submit", submit)
    return seen


@pytest.mark.parametrize("case", sorted(CASES))
def test_open_runs_match_general_path(case, monkeypatch):
    patch, expected = CASES[case]
    seen = _watch(monkeypatch)
    fast = _outputs(run(_scenario(patch)))  # the small-batch step where it fits, else the general one
    assert expected <= {k for k, v in seen.items() if v}, f"open-run branches not taken: {dict(seen)}"
    monkeypatch.setattr(engine, "fits", lambda rep, plan: False)  # the general step everywhere
    seen.clear()
    general = _outputs(run(_scenario(patch)))
    assert {"opened", "priced_on"} & expected <= {k for k, v in seen.items() if v}, f"the general step: {dict(seen)}"
    monkeypatch.setattr(engine, "opens_general", lambda rep: False)  # and its whole horizon vectorised
    seen.clear()
    slow = _outputs(run(_scenario(patch)))
    assert not seen["opened"], "the reference opened a run"
    for name in slow:
        np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
        np.testing.assert_array_equal(general[name], slow[name], err_msg=f"{name} (general step)")
    if case == "busy_chunked_preempting":
        assert fast["preemptions"].sum() > 0  # preemptions happen between open runs


def test_one_replica_opens_runs_in_the_general_step_only_and_closed_loop_none(monkeypatch):
    """One replica's small step ends runs at its known arrival (sim/engine_small.py), only the general step
    opens them; a closed loop's arrivals are not known in advance: nobody opens a run."""
    seen = _watch(monkeypatch)
    run(_scenario({"serving": {"replicas": 1}}))
    assert seen["opened"] == seen["opened_by_general_step"]
    seen.clear()
    run(_scenario({"workload": {"arrival": {"kind": "closed_loop", "concurrency": 12, "think_time_s": 0.2}}}))
    assert not seen["opened"]


@pytest.mark.parametrize("case", ["three_replicas_profile", "busy_chunked_preempting", "big_batches_general_step",
                                  "priority_small_batches"])
def test_the_routers_counts_are_the_finishes_up_to_now(case, monkeypatch):
    """At every arrival the router's board (sim/router.py) holds, for each replica, what `outstanding` says
    (a small step's finish list sorted once per run and bisected, the general step's array counted or
    bisected), and both equal a plain count of the requests routed there less the finish times up to now;
    across small and general steps and runs priced on after arrivals that went elsewhere."""
    real = engine.Replica.outstanding.fget
    real_least = router.LoadBoard.least
    seen = Counter()
    sims = []
    real_init = engine.Replica.__init__

    def init(self, index, sim, *args, **kwargs):
        if index == 0:
            sims.append(sim)
        real_init(self, index, sim, *args, **kwargs)

    def checked(board, now):
        got = real_least(board, now)
        for rep in sims[-1].replicas:
            f = rep._finishing_s
            want = rep._outstanding - sum(1 for x in (f.tolist() if hasattr(f, "tolist") else f) if x <= now)
            assert board.load[rep.index] == real(rep) == want, (board.load[rep.index], real(rep), want)
            seen[type(f).__name__] += 1
        assert got == board.load.index(min(board.load))
        return got

    monkeypatch.setattr(engine.Replica, "__init__", init)
    monkeypatch.setattr(router.LoadBoard, "least", checked)
    run(_scenario(CASES[case][0]))
    assert seen["list"] > 0  # the small step's lists were read (and the arrays where batches are big)
    if case == "big_batches_general_step":
        assert seen["ndarray"] > 0
