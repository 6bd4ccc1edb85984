"""Capacity planner: `plan(scenario) -> Plan`, the GPUs and dollars a daily volume needs.

For each candidate (model, GPU, TP, quantization, scheduler, speculative decoding):

1. the analytic bracket (estimate.py): a replica's throughput at its best batch size
   gives the starting replica count, and the zero-load latency floor rules out an SLO
   no replica count can meet;
2. the peak hour: the smallest replica count whose simulation at the peak hour's
   Poisson rate is stable and meets the SLO percentile of every bound (gallop from the
   estimate, then bisect; fleet.py, on the simulated points of search.py);
3. the autoscaled day: replicas for each hour's rate x (1 + scale_up_margin), never
   more than the peak fleet (which already meets the SLO at the highest rate); for each
   replica count n below the peak fleet, the highest hourly rate n replicas meet;
4. the cost: $/day and $/month of the fixed (peak) fleet and of the autoscaled one,
   $ per 1k queries and per 1M tokens (prompt + output), at the scenario's price per
   GPU-hour (catalog on-demand price or override, less `price_discount`).

Candidates are ranked cheapest feasible first; the rest are listed with the reason (the records:
result.py).
The Pareto front is drawn from every simulated peak-hour point that meets the SLO
(candidate x replicas): dollars per month against the bounded latencies.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from ..configio import ConfigError, build, to_dict
from ..cost_select import select_cost_model
from ..metrics import HOURS_PER_MONTH
from ..scenario import Scenario, SloConfig, apply_override
from ..workload import SECONDS_PER_HOUR, WorkloadConfig
from .apart import drive_apart
from .backend import LocalBackend, RayBackend
from .config import CandidateConfig, PlanConfig, candidate_scenario, describe, read_plan
from .estimate import Estimate, estimate
from .fleet import START_UTILISATION, Outcome, candidate_search, floor_reason
from .result import CandidatePlan, Plan
from .search import METRICS, Points, Slo, margin_text

HOURS_PER_DAY = 24


# --- inputs ------------------------------------------------------------------------------

def hourly_rates(workload: WorkloadConfig) -> tuple[float, ...]:
    """Mean arrival rate (requests/s) in each hour 0..23 of the day."""
    a = workload.arrival
    if a.kind == "daily":
        return tuple((a.expected_queries_per_hour() / SECONDS_PER_HOUR).tolist())
    if a.kind in ("poisson", "gamma"):
        return (a.rate_per_s,) * HOURS_PER_DAY
    raise ConfigError(f"workload.arrival.kind: got {a.kind!r}; the planner needs 'daily' (a day's volume and its "
                      "hourly shape) or 'poisson'/'gamma' (one rate all day)")


def _base_inputs(base: dict, cfg: PlanConfig) -> tuple[WorkloadConfig, Slo, tuple[float, ...]]:
    arrival = (base.get("workload") or {}).get("arrival") or {}
    if arrival.get("kind") == "daily" and arrival.get("queries_per_day") == 0:
        raise ConfigError("workload.arrival.queries_per_day: got 0; a day with no queries needs no GPUs — "
                          "give the daily volume to plan for (e.g. 1000000)")
    workload = build(WorkloadConfig, base.get("workload"), "workload")
    slo_cfg = build(SloConfig, base.get("slo") or {}, "slo")
    bounds = {m: getattr(slo_cfg, f"{m}_s") for m in METRICS if getattr(slo_cfg, f"{m}_s") is not None}
    if not bounds:
        raise ConfigError("slo: no bound to plan for; set slo.ttft_s, slo.tpot_s and/or slo.e2e_s "
                          "(with slo.percentile, or plan.goodput_fraction)")
    rates = hourly_rates(workload)
    if max(rates) <= 0:
        raise ConfigError("workload.arrival.hourly_weights: every hour has weight 0; nothing to plan for")
    return workload, Slo(slo_cfg.percentile, bounds, cfg.goodput_fraction), rates


# --- costing -----------------------------------------------------------------------------

def _costed(name: str, sc: Scenario, est: Estimate, out: Outcome, slo: Slo, peak_rate_per_s: float,
            queries_per_day: float, tokens_per_query: float, sims: int) -> CandidatePlan:
    tp = sc.serving.tensor_parallel
    price = sc.price_usd_per_gpu_hour
    choice = select_cost_model(sc)
    common = dict(name=name, label=describe(sc), model=sc.model_spec.name, gpu=sc.gpu_spec.name,
                  tensor_parallel=tp, cost_model=choice.label, cost_model_accuracy=choice.accuracy,
                  price_usd_per_gpu_hour=price,
                  analytic_rate_per_replica_per_s=est.max_rate_per_s, points_simulated=sims,
                  analytic_replicas=est.replicas_for(peak_rate_per_s, START_UTILISATION))
    if out.replicas_peak is None:
        return CandidatePlan(feasible=False, reason=out.reason, **common)
    v = out.verdict
    day_fixed = out.replicas_peak * tp * price * HOURS_PER_DAY
    day_auto = sum(out.hourly) * tp * price  # one hour at each hour's replica count
    month = HOURS_PER_MONTH / HOURS_PER_DAY
    tokens_per_day = queries_per_day * tokens_per_query
    return CandidatePlan(
        feasible=True, reason="", replicas_peak=out.replicas_peak, gpus_peak=out.replicas_peak * tp,
        hourly_replicas=out.hourly, ttft_s=v.values.get("ttft", math.nan), tpot_s=v.values.get("tpot", math.nan),
        e2e_s=v.values.get("e2e", math.nan), attained_fraction=v.values.get("attained", math.nan),
        margin=margin_text(v, slo), seeds=v.seeds,
        usd_per_day_fixed=day_fixed, usd_per_day_autoscaled=day_auto,
        usd_per_month_fixed=day_fixed * month, usd_per_month_autoscaled=day_auto * month,
        usd_per_1k_queries_fixed=day_fixed / queries_per_day * 1e3,
        usd_per_1k_queries_autoscaled=day_auto / queries_per_day * 1e3,
        usd_per_1m_tokens_fixed=day_fixed / tokens_per_day * 1e6,
        usd_per_1m_tokens_autoscaled=day_auto / tokens_per_day * 1e6, **common)


def pareto_front(points: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """The points no other point beats or equals on every key (lower is better), sorted by the first key."""
    def dominates(a, b):
        return all(a[k] <= b[k] for k in keys) and any(a[k] < b[k] for k in keys)
    front = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: tuple(p[k] for k in keys))


def _label(base: dict, cand: CandidateConfig) -> str:
    """A label for a candidate whose scenario could not be built."""
    serving = base.get("serving") or {}
    model = cand.model or base.get("model", "?")
    gpu = cand.gpu or (base.get("hardware") or {}).get("gpu", "?")
    tp = cand.tensor_parallel or serving.get("tensor_parallel", 1)
    model = model if isinstance(model, str) else "inline model"
    gpu = gpu if isinstance(gpu, str) else "inline GPU"
    return f"{model}, {gpu} TP{tp}"



# --- the entry point -----------------------------------------------------------------------

def _backend(workers: int | None, ray: str | bool | None):
    if ray is not None and ray is not False:
        return RayBackend(None if ray is True else ray)
    return LocalBackend(workers)


def plan(source: str | Path | dict | Scenario, overrides: tuple[str, ...] | list[str] = (), *,
         config: PlanConfig | dict | None = None, seed: int | None = None, workers: int | None = None,
         ray: str | bool | None = None, progress: bool = False,
         on_progress: Callable[[int, int], None] | None = None, cache: bool | str | Path = False) -> Plan:
    """Plan the fleet for a planning scenario.

    `source`: a planning file (path or shipped name), its mapping, or a Scenario (planned as
    configured unless `config` lists candidates). `overrides`: ``--set`` assignments, also
    for ``plan.*``. `seed`: the first seed of every point (default: the scenario's).
    `workers`: local processes (default: CPU count; 1 runs inline). `ray`: True or an
    address to run the simulations on Ray instead. `progress`: a tqdm bar on stderr (when
    it is a terminal); `on_progress(done, total)` is called after each simulation (the total
    grows as the searches go). `cache`: True (the default folder, sim/plan/cache.py) or a folder
    keeps every simulated point on disk and answers repeats from it, so re-planning after a price
    or SLO change re-prices instead of re-simulating; False (the default here) simulates all.
    Bad input raises ConfigError; a candidate that cannot run or meet the SLO is listed with its
    reason, never raised.
    """
    wall0 = time.perf_counter()
    if isinstance(source, Scenario):
        base = to_dict(source)
        base_dir = base.pop("base_dir", None)
        base_dir = Path(base_dir) if base_dir else None
        for assignment in overrides:
            base = apply_override(base, assignment)
        cfg = PlanConfig()
    else:
        base, cfg, base_dir = read_plan(source, overrides)
    if config is not None:
        cfg = build(PlanConfig, config, "plan")
    workload, slo, rates = _base_inputs(base, cfg)
    seed = int(base.get("seed", 0)) if seed is None else int(seed)
    cands = cfg.candidates or (CandidateConfig(),)
    queries_per_day = sum(rates) * SECONDS_PER_HOUR
    tokens_per_query = workload.prompt_tokens.mean_tokens + workload.output_tokens.mean_tokens
    est_pct = slo.goodput_fraction * 100 if slo.goodput_fraction is not None else slo.percentile

    scenarios: list[Scenario | None] = []
    estimates: list[Estimate | None] = []
    names, reasons = [], []
    for k, cand in enumerate(cands):
        name = cand.name or (base.get("name", "scenario") if len(cands) == 1 else f"candidate-{k + 1}")
        sc = est = None
        reason = ""
        try:
            sc = candidate_scenario(base, cand, base_dir)
            est = estimate(sc, est_pct)
        except ConfigError as exc:
            reason = f"cannot run: {exc}"
        if est is not None:
            reason = floor_reason(est, slo, est_pct)
        names.append(name)
        reasons.append(reason)
        scenarios.append(sc)
        estimates.append(est)

    points = Points(scenarios, cfg, slo, seed)
    live = [k for k, r in enumerate(reasons) if not r]
    backend = _backend(workers, ray)
    bar = tqdm(total=0, unit="sim", desc="planning", disable=None if progress else True, leave=False)

    counts = {"done": 0, "total": 0}

    def one_done() -> None:
        counts["done"] += 1
        bar.update(1)
        if on_progress is not None:
            on_progress(counts["done"], counts["total"])

    store = key_of = None
    if cache is not False:
        from .cache import SampleCache, task_key
        store, key_of = SampleCache(None if cache is True else cache), task_key

    def planned(n: int) -> None:
        counts["total"] += n
        bar.total = counts["total"]
        bar.refresh()

    try:
        ahead: dict[str, int] = {}
        outcomes = drive_apart([candidate_search(k, estimates[k], rates, cfg, slo) for k in live], points, backend,
                               one_done, planned, store, key_of, getattr(backend, "slots", 1), ahead)
        backend_name = backend.describe()
        if ahead.get("used") or ahead.get("unused"):
            backend_name += f"; seeds run ahead: {ahead['used']} used, {ahead['unused']} not needed"
    finally:
        bar.close()
        backend.close()
    by_cand = dict(zip(live, outcomes))

    results = []
    for k in range(len(cands)):
        sims = (sum(len(s) for key, s in points.samples.items() if key.candidate == k)
                + sum(1 for key in points.screened if key.candidate == k))
        out = by_cand.get(k) or Outcome(reason=reasons[k])
        if scenarios[k] is None or estimates[k] is None:
            results.append(CandidatePlan(name=names[k], label=_label(base, cands[k]), feasible=False,
                                         reason=reasons[k]))
            continue
        results.append(_costed(names[k], scenarios[k], estimates[k], out, slo, max(rates), queries_per_day,
                               tokens_per_query, sims))
    cost_key = "usd_per_month_autoscaled" if cfg.rank_by == "autoscaled" else "usd_per_month_fixed"
    feasible = sorted((c for c in results if c.feasible), key=lambda c: (getattr(c, cost_key), c.gpus_peak, c.name))
    ranked = feasible + [c for c in results if not c.feasible]

    peak = max(rates)
    front_points = []
    for key, v in sorted(points.verdicts.items(), key=lambda kv: (kv[0].candidate, kv[0].replicas, kv[0].rate_per_s)):
        if key.rate_per_s != peak or not v.meets or not v.simulated:
            continue
        sc = scenarios[key.candidate]
        tp = sc.serving.tensor_parallel
        front_points.append({"candidate": names[key.candidate], "replicas": key.replicas, "gpus": key.replicas * tp,
                             "usd_per_month_fixed": key.replicas * tp * sc.price_usd_per_gpu_hour * HOURS_PER_MONTH,
                             **{f"{m}_s": v.values[m] for m in slo.bounds}})
    front = pareto_front(front_points, ["usd_per_month_fixed"] + [f"{m}_s" for m in slo.bounds])

    notes = []
    if store is not None:
        notes.append(f"{store.hits} of {store.hits + store.misses} simulations answered from the cache in "
                     f"{store.folder} (--no-cache re-simulates)")
    if workload.arrival.kind == "daily" and workload.arrival.hours is not None:
        notes.append("workload.arrival.hours is ignored: the plan covers all 24 hours of the day")
    return Plan(scenario=str(base.get("name", "scenario")), slo=slo, queries_per_day=queries_per_day,
                hourly_rate_per_s=rates, peak_hour=rates.index(peak), scale_up_margin=cfg.scale_up_margin,
                mean_prompt_tokens=workload.prompt_tokens.mean_tokens,
                mean_output_tokens=workload.output_tokens.mean_tokens, rank_by=cfg.rank_by,
                candidates=ranked, pareto=front, points_simulated=points.runs,
                sim_s=points.wall_s, wall_s=time.perf_counter() - wall0, backend=backend_name, seed=seed,
                notes=notes)
