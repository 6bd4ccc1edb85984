"""The autoscaled hours' search guided by measured margins (sim/plan/guided.py) reaches the same plan as
the gallop it replaced, with fewer simulations: the gallop is kept here as the reference."""
from __future__ import annotations

import bisect
import copy
import math

import pytest

import sim.plan.fleet as fleet
from sim.plan.guided import crossing_load, first_failing
from sim.plan.planner import plan
from sim.plan.search import PointKey, Verdict, smallest_true, together
from tests.test_planner import SMALL, probe_search

# The shipped customer-support day: twelve distinct hourly targets below the peak, so the hours' searches matter.
DAY = [0.25, 0.18, 0.15, 0.15, 0.18, 0.3, 0.55, 0.95, 1.4, 1.7, 1.8, 1.8,
       1.75, 1.8, 1.8, 1.7, 1.5, 1.25, 1.0, 0.85, 0.7, 0.55, 0.4, 0.3]


def _day(queries_per_day: int, **slo) -> dict:
    data = copy.deepcopy(SMALL)
    data["workload"]["arrival"].update(hourly_weights=DAY, queries_per_day=queries_per_day)
    data["slo"].update(slo)
    return data


def gallop_hours(i, rates, n_peak, found, cfg):
    """The search before guided.py: the quietest hour's fleet from the peak's per-replica rate, then for
    each count a gallop from the first hourly target above count x that rate."""
    peak = max(rates)
    targets = [r * (1.0 + cfg.scale_up_margin) for r in rates]
    below = sorted({t for t in targets if 0 < t < peak})
    needed = {}
    if below and n_peak > cfg.min_replicas:
        per_replica = peak / n_peak
        low = yield from smallest_true(cfg.min_replicas, n_peak - 1, math.ceil(below[0] / per_replica),
                                       lambda n: PointKey(i, n, below[0]), lambda v: v.meets)
        n_low = low.answer if low.answer is not None else n_peak
        counts = list(range(n_low, n_peak))
        firsts = yield from together([
            smallest_true(0, len(below) - 1, bisect.bisect_right(below, n * per_replica),
                          lambda j, n=n: PointKey(i, n, below[j]), lambda v: not v.meets)
            for n in counts])
        fail_at = {n: (f.answer if f.answer is not None else len(below)) for n, f in zip(counts, firsts)}
        for j, t in enumerate(below):
            needed[t] = min((n for n in counts if j < fail_at[n]), default=n_peak)
    return tuple(cfg.min_replicas if t <= 0 else needed.get(t, n_peak) for t in targets)


def _record(p) -> tuple[dict, dict]:
    d = p.to_dict(timing=False)
    sims = {c["name"]: c.pop("points_simulated") for c in d["candidates"]}
    d.pop("points_simulated")
    return d, sims


@pytest.mark.parametrize("data", [_day(4_000_000), _day(10_000_000, tpot_s=0.035)], ids=["4M", "10M-tight-tpot"])
def test_guided_hours_give_the_gallops_plan_with_fewer_simulations(data, monkeypatch):
    guided = plan(data, workers=1)
    monkeypatch.setattr(fleet, "hourly_replicas", gallop_hours)
    gallop = plan(data, workers=1)
    (g, g_sims), (old, old_sims) = _record(guided), _record(gallop)
    assert g == old  # every candidate's fleet, hours, costs and latencies; the Pareto front
    assert any(len(set(c.hourly_replicas)) > 2 for c in guided.candidates), "no hourly search to compare"
    assert all(g_sims[name] <= n for name, n in old_sims.items()), (g_sims, old_sims)
    assert guided.points_simulated < gallop.points_simulated


def _verdict(ratio: float) -> Verdict:
    return Verdict(ratio <= 1.0, True, "ok", ratio, "tpot", {}, 1, 100)


RATES = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]


@pytest.mark.parametrize("capacity", [0.5, 1.0, 3.5, 6.2, 11.5, 40.0])
@pytest.mark.parametrize("guess", [None, 0.3, 2.0, 6.0, 30.0])
def test_first_failing_finds_the_edge_from_any_guess(capacity, guess):
    """The ratio is rate / capacity for one replica; the seed point says where the guess starts."""
    seen = [] if guess is None else [(1, guess * 0.8, _verdict(0.5)), (1, guess * 1.25, _verdict(2.0))]
    answer, probes = probe_search(first_failing(RATES, 1, lambda j: j, seen), lambda j: RATES[j] / capacity)
    assert answer == bisect.bisect_right(RATES, capacity)
    assert len(probes) <= 8 and len(set(probes)) == len(probes)


def test_a_good_guess_settles_a_count_in_two_probes():
    # Measured: 4 replicas meet at 5 req/s each (ratio 0.8), 3 fail at 6.67 (ratio 1.25): the bound is crossed
    # near 5.9 req/s per replica, so 2 replicas are probed at 11 (meets) and 12 (fails), nothing else.
    seen = [(4, 20.0, _verdict(0.8)), (3, 20.0, _verdict(1.25))]
    assert 5.8 < crossing_load(seen, 2) < 6.0
    answer, probes = probe_search(first_failing(RATES, 2, lambda j: j, seen), lambda j: RATES[j] / 2 / 5.9)
    assert (answer, probes) == (11, [10, 11])
