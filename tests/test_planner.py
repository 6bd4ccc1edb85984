"""Capacity planner: search, monotonicity, re-simulation, costing, backends, bad input, CLI.

Plans here use small points (hundreds of requests) so each runs in a few seconds; the
shipped scenario's full plan is exercised by `servesim plan` (see the planner report).
"""
from __future__ import annotations

import copy
import json
import math

import pytest

from sim.cli import main
from sim.configio import ConfigError
from sim.plan.config import CandidateConfig, candidate_scenario, read_plan
from sim.plan.search import Slo, Task, Verdict, judge, point_scenario, simulate, smallest_true
from sim.plan.planner import HOURS_PER_DAY, pareto_front, plan

WEIGHTS = [1.0] * 8 + [3.0] * 8 + [2.0] * 8  # night, day (peak), evening

SMALL = {
    "name": "plan-test",
    "seed": 3,
    "workload": {
        "arrival": {"kind": "daily", "queries_per_day": 2_500_000, "hourly_weights": WEIGHTS},
        "prompt_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.6, "min": 16, "max": 2048},
        "output_tokens": {"kind": "lognormal", "mean": 120, "sigma": 0.5, "min": 8, "max": 512},
    },
    "model": "llama-3.1-8b",
    "hardware": {"gpu": "a100-80gb-sxm"},
    "serving": {"max_model_len": 4096},
    "slo": {"ttft_s": 1.0, "tpot_s": 0.05},
    "plan": {
        "requests_per_point": 400,
        "min_duration_s": 0,
        "candidates": [
            {"name": "a100", "gpu": "a100-80gb-sxm"},
            {"name": "h100", "gpu": "h100-sxm"},
        ],
    },
}


def small(**patch) -> dict:
    """SMALL with dotted-path values replaced, e.g. small(**{"slo.ttft_s": 0.5})."""
    data = copy.deepcopy(SMALL)
    for dotted, value in patch.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


@pytest.fixture(scope="module")
def base_plan():
    return plan(small(), workers=1)


def _fleet(p, name):
    return next(c for c in p.candidates if c.name == name)


# --- the search, on a synthetic predicate ------------------------------------------------

def probe_search(search, ratio_at):
    """Drive a search that asks for one point at a time, answering each with a simulated verdict of the
    ratio `ratio_at(key)` (<= 1 meets); (its result, the keys it asked for in order)."""
    probes = []
    try:
        keys = next(search)
        while True:
            (key,) = keys
            probes.append(key)
            ratio = ratio_at(key)
            keys = search.send([Verdict(ratio <= 1.0, True, "ok", ratio, "tpot", {}, 1, 100)])
    except StopIteration as stop:
        return stop.value, probes


@pytest.mark.parametrize("answer", [1, 2, 5, 17, 40, None])
@pytest.mark.parametrize("start", [1, 3, 20, 64])
def test_smallest_true_finds_the_threshold_from_any_start(answer, start):
    search = smallest_true(1, 40, start, key_of=lambda x: x, pred=lambda v: v.meets)
    found, probes = probe_search(search, lambda x: 0.5 if answer is not None and x >= answer else 2.0)
    assert found.answer == answer
    assert len(probes) <= 14  # gallop + bisection, never a linear scan


def test_pareto_front_keeps_only_undominated_points():
    pts = [{"c": 1, "l": 5}, {"c": 2, "l": 3}, {"c": 3, "l": 3}, {"c": 4, "l": 1}, {"c": 2, "l": 6}]
    assert pareto_front(pts, ["c", "l"]) == [{"c": 1, "l": 5}, {"c": 2, "l": 3}, {"c": 4, "l": 1}]


# --- a plan ------------------------------------------------------------------------------

def test_plan_ranks_feasible_candidates_and_costs_them(base_plan):
    p = base_plan
    assert p.best is not None and p.headline().startswith(f"Cheapest: {p.best.name}")
    feasible = [c for c in p.candidates if c.feasible]
    assert len(feasible) == 2
    costs = [c.usd_per_month_autoscaled for c in feasible]
    assert costs == sorted(costs)
    for c in feasible:
        assert len(c.hourly_replicas) == HOURS_PER_DAY
        assert 1 <= min(c.hourly_replicas) and max(c.hourly_replicas) <= c.replicas_peak
        assert c.usd_per_day_fixed == pytest.approx(c.gpus_peak * c.price_usd_per_gpu_hour * 24)
        assert c.usd_per_day_autoscaled == pytest.approx(sum(c.hourly_replicas) * c.price_usd_per_gpu_hour)
        assert c.usd_per_day_autoscaled <= c.usd_per_day_fixed + 1e-9
        assert c.usd_per_1k_queries_autoscaled == pytest.approx(c.usd_per_day_autoscaled / p.queries_per_day * 1e3)
        assert c.ttft_s <= 1.0 and c.tpot_s <= 0.05 and "TTFT" in c.margin
    # The daily curve is followed: the night needs no more than the day.
    a100 = _fleet(p, "a100")
    assert a100.replicas_peak >= 2
    assert max(a100.hourly_replicas[:8]) <= min(a100.hourly_replicas[8:16])
    assert p.pareto and all(q["candidate"] in ("a100", "h100") for q in p.pareto)


def test_chosen_fleet_meets_the_slo_with_another_seed(base_plan):
    data = small()
    base, cfg, base_dir = read_plan(data)
    slo = Slo(99.0, {"ttft": 1.0, "tpot": 0.05})
    for c in base_plan.candidates:
        cand = next(x for x in cfg.candidates if x.name == c.name)
        sc = candidate_scenario(base, cand, base_dir)
        point, warmup_s = point_scenario(sc, c.replicas_peak, base_plan.peak_rate_per_s, 1500, cfg)
        v = judge([simulate(Task(point, seed=base_plan.seed + 1000, warmup_s=warmup_s))], slo)
        assert v.meets, (c.name, v)


def test_more_traffic_never_needs_fewer_gpus(base_plan):
    busier = plan(small(**{"workload.arrival.queries_per_day": 3_000_000}), workers=1)
    for c in base_plan.candidates:
        b = _fleet(busier, c.name)
        assert b.gpus_peak >= c.gpus_peak
        assert all(x >= y for x, y in zip(b.hourly_replicas, c.hourly_replicas))


def test_tighter_slo_never_needs_fewer_gpus(base_plan):
    tighter = plan(small(**{"slo.tpot_s": 0.03, "slo.ttft_s": 0.5}), workers=1)
    for c in base_plan.candidates:
        t = _fleet(tighter, c.name)
        if t.feasible:
            assert t.gpus_peak >= c.gpus_peak
            assert all(x >= y for x, y in zip(t.hourly_replicas, c.hourly_replicas))


def test_scale_up_margin_raises_the_autoscaled_fleet(base_plan):
    wide = plan(small(), ["plan.scale_up_margin=1.0"], workers=1)
    for c in base_plan.candidates:
        w = _fleet(wide, c.name)
        assert w.replicas_peak == c.replicas_peak
        assert w.usd_per_day_autoscaled >= c.usd_per_day_autoscaled
        assert w.usd_per_day_autoscaled <= w.usd_per_day_fixed


def test_price_override_and_discount_scale_the_cost(base_plan):
    cheap = plan(small(), ["hardware.price_usd_per_gpu_hour=2.0", "hardware.price_discount=0.5"], workers=1)
    for c in cheap.candidates:
        assert c.price_usd_per_gpu_hour == pytest.approx(1.0)
        ref = _fleet(base_plan, c.name)
        assert c.replicas_peak == ref.replicas_peak
        assert c.usd_per_day_fixed == pytest.approx(c.gpus_peak * 24.0)


def test_local_pool_gives_the_same_plan_as_inline(base_plan):
    pooled = plan(small(), workers=2)
    assert _numbers(pooled) == _numbers(base_plan)


def _numbers(p) -> dict:
    return p.to_dict(timing=False)


def test_ray_backend_gives_the_same_plan_as_local(base_plan):
    pytest.importorskip("ray")
    on_ray = plan(small(), ray=True)
    assert on_ray.backend.startswith("ray")
    assert _numbers(on_ray) == _numbers(base_plan)


# --- bad input ---------------------------------------------------------------------------

def test_unmeetable_slo_lists_every_candidate_with_its_reason():
    p = plan(small(**{"slo.ttft_s": 0.001}), workers=1)
    assert p.best is None
    assert p.headline().startswith("No candidate meets")
    assert [c.name for c in p.candidates] == ["a100", "h100"]
    assert all(not c.feasible and "cannot go below" in c.reason for c in p.candidates)
    assert p.points_simulated == 0  # the zero-load floor rules them out without simulating


def test_zero_daily_volume_is_a_clear_error():
    with pytest.raises(ConfigError, match="queries_per_day: got 0"):
        plan(small(**{"workload.arrival.queries_per_day": 0}), workers=1)


def test_no_slo_bound_is_a_clear_error():
    with pytest.raises(ConfigError, match="slo: no bound"):
        plan(small(slo={}), workers=1)


def test_trace_arrivals_are_refused_with_the_allowed_kinds():
    data = small()
    data["workload"] = {"arrival": {"kind": "closed_loop", "concurrency": 4}, "num_requests": 10,
                        "prompt_tokens": {"kind": "constant", "value": 10},
                        "output_tokens": {"kind": "constant", "value": 10}}
    with pytest.raises(ConfigError, match="'daily'"):
        plan(data, workers=1)


def test_candidates_that_cannot_run_are_listed_with_the_reason():
    data = small()
    data["plan"]["candidates"] = [
        {"name": "ok", "gpu": "h100-sxm"},
        {"name": "too-big", "model": "llama-3.1-70b", "gpu": "a100-80gb-sxm", "tensor_parallel": 1},
        {"name": "bad-tp", "tensor_parallel": 3},
        {"name": "wrong-profile", "set": ["cost_model.profile=a100-80gb-sxm_qwen3-32b_tp1_bf16"]},
    ]
    p = plan(data, workers=1)
    assert [c.name for c in p.candidates] == ["ok", "too-big", "bad-tp", "wrong-profile"]
    reasons = {c.name: c.reason for c in p.candidates}
    assert p.candidates[0].feasible
    assert "does not fit" in reasons["too-big"]
    assert "serving.tensor_parallel" in reasons["bad-tp"]
    assert "profile" in reasons["wrong-profile"] and "qwen3-32b" in reasons["wrong-profile"]


def test_plan_section_is_validated_with_field_names():
    with pytest.raises(ConfigError, match="plan.scale_up_margin"):
        plan(small(), ["plan.scale_up_margin=-1"], workers=1)
    # A malformed candidate is listed as not feasible, with the field, rather than failing the plan.
    p = plan(small(), ["plan.candidates=[{weights: fp3}]"], workers=1)  # fp4 is a weight dtype now
    assert not p.candidates[0].feasible and "plan.candidates[0].weights" in p.candidates[0].reason


def test_speculative_true_needs_a_base_configuration():
    base, _, _ = read_plan(small())
    with pytest.raises(ConfigError, match="speculative"):
        candidate_scenario(base, CandidateConfig(speculative=True), None)
    sc = candidate_scenario(base, CandidateConfig(speculative={"draft_model": "llama-3.2-1b"}), None)
    assert sc.serving.speculative.draft_model == "llama-3.2-1b"
    off = candidate_scenario({**base, "serving": {**base["serving"], "speculative": {"draft_model": "llama-3.2-1b"}}},
                             CandidateConfig(speculative=False), None)
    assert off.serving.speculative is None


# --- the shipped scenario and the CLI ----------------------------------------------------

def test_shipped_scenario_builds_every_candidate():
    base, cfg, base_dir = read_plan("customer_support_1m_per_day.yaml")
    assert base["workload"]["arrival"]["queries_per_day"] == 1_000_000
    models = set()
    gpus = set()
    for cand in cfg.candidates:
        sc = candidate_scenario(base, cand, base_dir)
        models.add(sc.model_spec.name)
        gpus.add(sc.gpu_spec.name)
    assert models == {"llama-3.1-8b", "llama-3.1-70b"} and gpus == {"a100-80gb-sxm", "h100-sxm"}


def test_cli_plan_prints_the_answer_first_and_exports(tmp_path, capsys):
    scenario = tmp_path / "plan.yaml"
    import yaml

    one = small()
    one["plan"]["candidates"] = one["plan"]["candidates"][:1]
    scenario.write_text(yaml.safe_dump(one))
    out_csv = tmp_path / "plan.csv"
    assert main(["plan", str(scenario), "--workers", "1", "--out", str(out_csv)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Cheapest: a100 — ") and "per 1k queries" in text and "meets P99 TTFT" in text
    assert "Pareto front" in text
    import pandas as pd

    table = pd.read_csv(out_csv)
    assert list(table["name"]) == ["a100"] and table["rank"][0] == 1

    assert main(["plan", str(scenario), "--workers", "1", "--json", "--seed", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["seed"] == 5 and doc["candidates"][0]["feasible"] and len(doc["hourly_rate_per_s"]) == 24

    pq = tmp_path / "plan.parquet"
    assert main(["plan", str(scenario), "--workers", "1", "--out", str(pq)]) == 0
    assert pd.read_parquet(pq)["gpus_peak"][0] >= 1


def test_cli_plan_exit_code_and_message_when_nothing_meets(tmp_path, capsys):
    import yaml

    scenario = tmp_path / "plan.yaml"
    scenario.write_text(yaml.safe_dump(small(**{"slo.tpot_s": 0.0001})))
    assert main(["plan", str(scenario), "--workers", "1"]) == 3
    text = capsys.readouterr().out
    assert text.startswith("No candidate meets") and "a100" in text and "h100" in text
    assert main(["plan", str(scenario), "--out", "plan.txt"]) == 2
    assert "--out" in capsys.readouterr().err


def test_goodput_fraction_slo():
    p = plan(small(), ["plan.goodput_fraction=0.95"], workers=1)
    assert p.best is not None
    assert "of requests meet every bound" in p.best.margin
    assert p.best.attained_fraction >= 0.95
    assert not math.isnan(p.best.usd_per_1m_tokens_autoscaled)


def test_a_scenario_object_is_planned_as_configured():
    from sim.scenario import scenario_from_dict

    data = small()
    data.pop("plan")
    data["hardware"] = {"gpu": "h100-sxm", "price_usd_per_gpu_hour": 3.0}
    p = plan(scenario_from_dict(data), config={"requests_per_point": 400, "min_duration_s": 0}, workers=1)
    (only,) = p.candidates
    assert only.feasible and only.name == "plan-test" and only.gpu == "h100-sxm"
    assert only.usd_per_day_fixed == pytest.approx(only.gpus_peak * 3.0 * 24)


def test_on_progress_counts_every_simulation():
    calls = []
    p = plan(small(), workers=1, on_progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (p.points_simulated, p.points_simulated)
    assert [d for d, _ in calls] == list(range(1, p.points_simulated + 1))


# --- the on-disk cache of simulated points -----------------------------------------------

def test_replanning_the_same_inputs_reprices_from_the_cache(tmp_path, monkeypatch):
    import sim.plan.cache as plan_cache

    first = plan(small(), workers=1, cache=tmp_path)
    assert first.points_simulated > 0 and "0 of" in first.notes[0]
    again = plan(small(**{"hardware.price_discount": 0.5}), workers=1, cache=tmp_path)
    n = first.points_simulated
    assert f"{n} of {n} simulations answered from the cache" in again.notes[0]
    a, b = first.best, again.best
    assert (a.replicas_peak, a.hourly_replicas, a.ttft_s) == (b.replicas_peak, b.hourly_replicas, b.ttft_s)
    assert b.usd_per_month_fixed == pytest.approx(0.5 * a.usd_per_month_fixed)
    # What a simulation reads is in the key: another arrival shape, or other code, misses.
    other = plan(small(**{"workload.output_tokens.mean": 90}), workers=1, cache=tmp_path)
    assert other.notes[0].startswith("0 of")
    monkeypatch.setattr(plan_cache, "code_fingerprint", lambda: "another version")
    assert plan(small(), workers=1, cache=tmp_path).notes[0].startswith("0 of")
