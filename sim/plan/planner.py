"""Capacity planner: `plan(scenario) -> Plan`, the GPUs and dollars a daily volume needs.

For each candidate (model, GPU, TP, quantization, scheduler, speculative decoding):

1. the analytic bracket (estimate.py): a replica's throughput at its best batch size
   gives the starting replica count, and the zero-load latency floor rules out an SLO
   no replica count can meet;
2. the peak hour: the smallest replica count whose simulation at the peak hour's
   Poisson rate is stable and meets the SLO percentile of every bound (gallop from the
   estimate, then bisect; search.py);
3. the autoscaled day: replicas for each hour's rate x (1 + scale_up_margin), never
   more than the peak fleet (which already meets the SLO at the highest rate); for each
   replica count n below the peak fleet, the highest hourly rate n replicas meet;
4. the cost: $/day and $/month of the fixed (peak) fleet and of the autoscaled one,
   $ per 1k queries and per 1M tokens (prompt + output), at the scenario's price per
   GPU-hour (catalog on-demand price or override, less `price_discount`).

Candidates are ranked cheapest feasible first; the rest are listed with the reason.
The Pareto front is drawn from every simulated peak-hour point that meets the SLO
(candidate x replicas): dollars per month against the bounded latencies.
"""
from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tqdm import tqdm

from ..configio import ConfigError, build, to_dict
from ..cost_select import select_cost_model
from ..metrics import HOURS_PER_MONTH
from ..scenario import Scenario, SloConfig, apply_override
from ..workload import SECONDS_PER_HOUR, WorkloadConfig
from .backend import LocalBackend, RayBackend
from .config import CandidateConfig, PlanConfig, candidate_scenario, describe, read_plan
from .estimate import Estimate, estimate
from .search import (METRICS, Found, PointKey, Points, Slo, Verdict, fmt_s, drive, margin_text, smallest_true,
                     together)

HOURS_PER_DAY = 24
START_UTILISATION = 0.8  # the analytic start assumes replicas at 80 % of their best throughput


@dataclass(frozen=True)
class CandidatePlan:
    """One candidate's answer (a flat record). Latencies are at the SLO percentile, at the peak
    hour, with `replicas_peak`; costs use `price_usd_per_gpu_hour` (discount applied)."""

    name: str
    label: str  # model, GPU x TP, quantization, scheduler, speculative
    feasible: bool
    reason: str  # why not, when not feasible
    model: str = ""
    gpu: str = ""
    tensor_parallel: int | None = None
    cost_model: str = ""  # which cost model priced it (sim/cost_select.py's label)
    price_usd_per_gpu_hour: float = math.nan
    replicas_peak: int | None = None
    gpus_peak: int | None = None
    hourly_replicas: tuple[int, ...] = ()  # autoscaled replicas, hours 0..23
    ttft_s: float = math.nan
    tpot_s: float = math.nan
    e2e_s: float = math.nan
    attained_fraction: float = math.nan  # scored requests meeting every bound
    margin: str = ""  # the binding metric against its bound, e.g. "P99 TTFT 1.41 s vs 2.00 s"
    seeds: int = 0  # seeds pooled at the chosen point
    usd_per_day_fixed: float = math.nan
    usd_per_day_autoscaled: float = math.nan
    usd_per_month_fixed: float = math.nan
    usd_per_month_autoscaled: float = math.nan
    usd_per_1k_queries_fixed: float = math.nan
    usd_per_1k_queries_autoscaled: float = math.nan
    usd_per_1m_tokens_fixed: float = math.nan
    usd_per_1m_tokens_autoscaled: float = math.nan
    analytic_rate_per_replica_per_s: float = math.nan  # the bracket: best-batch throughput
    analytic_replicas: int | None = None  # the bracket's starting replica count at the peak
    points_simulated: int = 0  # simulations (point x seed) run for this candidate

    @property
    def gpus_range(self) -> tuple[int, int]:
        tp = self.tensor_parallel or 1
        return min(self.hourly_replicas) * tp, max(self.hourly_replicas) * tp


@dataclass
class Plan:
    """The planner's answer. `candidates` are ranked: cheapest feasible first, then the rest."""

    scenario: str
    slo: Slo
    queries_per_day: float
    hourly_rate_per_s: tuple[float, ...]
    peak_hour: int
    scale_up_margin: float
    mean_prompt_tokens: float
    mean_output_tokens: float
    rank_by: str
    candidates: list[CandidatePlan]
    pareto: list[dict[str, Any]]  # candidate, replicas, gpus, usd_per_month_fixed, <metric>_s
    points_simulated: int
    sim_s: float  # simulation seconds summed over workers
    wall_s: float
    backend: str
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def peak_rate_per_s(self) -> float:
        return self.hourly_rate_per_s[self.peak_hour]

    @property
    def best(self) -> CandidatePlan | None:
        return self.candidates[0] if self.candidates and self.candidates[0].feasible else None

    def headline(self) -> str:
        """The answer as one sentence."""
        b = self.best
        if b is None:
            return (f"No candidate meets {self.slo.describe()} at {self.peak_rate_per_s:.2f} req/s "
                    f"(peak hour of {self.queries_per_day:,.0f} queries/day); see the reasons below.")
        lo, hi = min(b.hourly_replicas), max(b.hourly_replicas)
        auto = f"{lo} replica{'s' if lo > 1 else ''}" if lo == hi else f"{lo}–{hi} replicas"
        fleet = f"{b.gpus_peak} × {b.gpu}"
        if (b.tensor_parallel or 1) > 1:
            fleet += f" ({b.replicas_peak} replicas × TP{b.tensor_parallel})"
        cost = b.usd_per_month_autoscaled if self.rank_by == "autoscaled" else b.usd_per_month_fixed
        per_1k = b.usd_per_1k_queries_autoscaled if self.rank_by == "autoscaled" else b.usd_per_1k_queries_fixed
        return (f"Cheapest: {b.name} — {fleet} at peak, autoscaled {auto}, ${cost:,.0f}/month "
                f"({self.rank_by}; fixed fleet ${b.usd_per_month_fixed:,.0f}), ${per_1k:,.3f} per 1k queries "
                f"(${per_1k / 1000:.5f} per query) (meets {b.margin})")

    def to_frame(self) -> pd.DataFrame:
        """The ranked table, one row per candidate (hourly replicas as a comma-separated string)."""
        rows = []
        for rank, c in enumerate(self.candidates, 1):
            row = {"rank": rank if c.feasible else None, **to_dict(c)}
            row["hourly_replicas"] = ",".join(str(n) for n in c.hourly_replicas)
            rows.append(row)
        df = pd.DataFrame(rows)
        for col in ("rank", "tensor_parallel", "replicas_peak", "gpus_peak", "analytic_replicas"):
            df[col] = df[col].astype("Int64")  # integers with gaps for infeasible candidates
        return df

    def pareto_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.pareto)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain JSON-able data (NaN becomes None)."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v
        return clean({
            "headline": self.headline(), "scenario": self.scenario, "slo": self.slo.describe(),
            "percentile": self.slo.percentile, "bounds_s": self.slo.bounds,
            "goodput_fraction": self.slo.goodput_fraction, "queries_per_day": self.queries_per_day,
            "hourly_rate_per_s": list(self.hourly_rate_per_s), "peak_hour": self.peak_hour,
            "scale_up_margin": self.scale_up_margin, "mean_prompt_tokens": self.mean_prompt_tokens,
            "mean_output_tokens": self.mean_output_tokens, "rank_by": self.rank_by,
            "candidates": [{**to_dict(c), "hourly_replicas": list(c.hourly_replicas)} for c in self.candidates],
            "pareto": self.pareto, "points_simulated": self.points_simulated, "sim_s": self.sim_s,
            "wall_s": self.wall_s, "backend": self.backend, "seed": self.seed, "notes": self.notes,
        })


# --- inputs ------------------------------------------------------------------------------

def hourly_rates(workload: WorkloadConfig) -> tuple[float, ...]:
    """Mean arrival rate (requests/s) in each hour 0..23 of the day."""
    a = workload.arrival
    if a.kind == "daily":
        w = a.hourly_weights if a.hourly_weights is not None else (1.0,) * HOURS_PER_DAY
        total = sum(w)
        return tuple(a.queries_per_day * x / total / SECONDS_PER_HOUR for x in w)
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


# --- search ------------------------------------------------------------------------------

@dataclass
class _Outcome:
    replicas_peak: int | None = None
    verdict: Verdict | None = None
    hourly: tuple[int, ...] = ()
    reason: str = ""


def _stuck(slo: Slo):
    def check(x0: int, v0: Verdict, x1: int, v1: Verdict) -> str | None:
        # Queueing delay collapses once capacity suffices; 1.5x the replicas for < 20 % less
        # latency means the bound is near a floor (prefill time, static batches), not capacity.
        if not (v0.simulated and v1.simulated and v0.stable and v1.stable and math.isfinite(v0.ratio)):
            return None
        if x1 < 1.5 * x0 or v1.ratio < 0.8 * v0.ratio:
            return None
        return (f"more replicas barely help: {margin_text(v0, slo, True)} at {x0} replicas, "
                f"{margin_text(v1, slo, True)} at {x1}")
    return check


def _candidate_search(i: int, est: Estimate, rates: tuple[float, ...], cfg: PlanConfig, slo: Slo):
    """Search generator for candidate i: the peak fleet, then the autoscaled hours."""
    peak = max(rates)
    meets = lambda v: v.meets  # noqa: E731
    start = max(cfg.min_replicas, est.replicas_for(peak, START_UTILISATION))
    found: Found = yield from smallest_true(cfg.min_replicas, cfg.max_replicas, start,
                                            lambda n: PointKey(i, n, peak), meets, _stuck(slo))
    if found.answer is None:
        if found.reason:
            return _Outcome(reason=found.reason)
        top = max(found.tried)
        v = found.tried[top]
        why = margin_text(v, slo, True) if v.stable else v.status
        return _Outcome(reason=f"needs more than plan.max_replicas = {cfg.max_replicas} replicas "
                               f"(at {top}: {why})")
    n_peak = found.answer
    targets = [r * (1.0 + cfg.scale_up_margin) for r in rates]
    below = sorted({t for t in targets if 0 < t < peak})
    needed: dict[float, int] = {}
    if below and n_peak > cfg.min_replicas:
        per_replica = peak / n_peak  # known to meet the SLO at the peak: the guess for other hours
        low: Found = yield from smallest_true(cfg.min_replicas, n_peak - 1, math.ceil(below[0] / per_replica),
                                              lambda n: PointKey(i, n, below[0]), meets)
        n_low = low.answer if low.answer is not None else n_peak
        # For each n below the peak fleet: the first (lowest) hourly rate n replicas fail.
        counts = list(range(n_low, n_peak))
        firsts = yield from together([
            smallest_true(0, len(below) - 1, bisect.bisect_right(below, n * per_replica),
                          lambda j, n=n: PointKey(i, n, below[j]), lambda v: not v.meets)
            for n in counts])
        fail_at = {n: (f.answer if f.answer is not None else len(below)) for n, f in zip(counts, firsts)}
        for j, t in enumerate(below):
            needed[t] = min((n for n in counts if j < fail_at[n]), default=n_peak)
    hourly = tuple(cfg.min_replicas if t <= 0 else needed.get(t, n_peak) for t in targets)
    return _Outcome(replicas_peak=n_peak, verdict=found.tried[n_peak], hourly=hourly)


# --- costing -----------------------------------------------------------------------------

def _costed(name: str, sc: Scenario, est: Estimate, out: _Outcome, slo: Slo, peak_rate_per_s: float,
            queries_per_day: float, tokens_per_query: float, sims: int) -> CandidatePlan:
    tp = sc.serving.tensor_parallel
    price = sc.price_usd_per_gpu_hour
    common = dict(name=name, label=describe(sc), model=sc.model_spec.name, gpu=sc.gpu_spec.name,
                  tensor_parallel=tp, cost_model=select_cost_model(sc).label, price_usd_per_gpu_hour=price,
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


def _floor_reason(est: Estimate, slo: Slo, pct: float) -> str:
    """Why no replica count can meet the SLO, from the zero-load floor ("" when it can)."""
    ttft, tpot = slo.bounds.get("ttft"), slo.bounds.get("tpot")
    if ttft is not None and est.ttft_floor_s > ttft:
        return (f"P{pct:g} TTFT cannot go below {fmt_s(est.ttft_floor_s)} on this hardware (a P{pct:g} prompt "
                f"prefilled alone on an idle replica) vs the {fmt_s(ttft)} bound; no replica count helps")
    if tpot is not None and est.tpot_floor_s > tpot:
        return (f"TPOT cannot go below {fmt_s(est.tpot_floor_s)} (one sequence decoding alone) vs the "
                f"{fmt_s(tpot)} bound; no replica count helps")
    return ""


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
            reason = _floor_reason(est, slo, est_pct)
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

    store = None
    if cache is not False:
        from .cache import SampleCache, task_key
        store = SampleCache(None if cache is True else cache)

    def run_tasks(tasks):
        counts["total"] += len(tasks)
        bar.total = counts["total"]
        bar.refresh()
        if store is None:
            return backend.map(tasks, one_done)
        keys = [task_key(t) for t in tasks]
        found = [store.get(k) for k in keys]
        for s in found:
            if s is not None:
                one_done()
        missing = [t for t, s in zip(tasks, found) if s is None]
        fresh = iter(backend.map(missing, one_done) if missing else [])
        out = []
        for k, s in zip(keys, found):
            if s is None:
                s = next(fresh)
                store.put(k, s)
            out.append(s)
        return out

    try:
        outcomes = drive(together([_candidate_search(k, estimates[k], rates, cfg, slo) for k in live]),
                         points, run_tasks) if live else []
        backend_name = backend.describe()
    finally:
        bar.close()
        backend.close()
    by_cand = dict(zip(live, outcomes))

    results = []
    for k in range(len(cands)):
        sims = (sum(len(s) for key, s in points.samples.items() if key.candidate == k)
                + sum(1 for key in points.screened if key.candidate == k))
        out = by_cand.get(k) or _Outcome(reason=reasons[k])
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
    for key, v in points.verdicts.items():
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
