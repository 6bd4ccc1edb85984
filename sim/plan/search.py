"""Confirm capacity by simulation: points, verdicts, a dominance-aware cache, searches.

A *point* is (candidate, replicas, Poisson rate); simulating it with one seed gives a
`Sample` (the scored requests' latencies). A point's `Verdict` pools its seeds and
compares the SLO percentile of each bounded metric with its bound. A point is first
screened with a short run; only a verdict that is not clearly in or out is run in full
(>= min_duration_s of traffic), and a full verdict close to its bound gets more seeds
(`Points.settle`): the simulation effort goes to the decisions at the edge. Searches are
generators that yield lists of points and receive their verdicts; `rounds` turns one
into rounds, answering from the cache where it can and simulating the rest in one batch
per round; `sim/plan/apart.py` runs each candidate's rounds apart, sharing the workers. Rounds make the sequence of simulated points, and
so the plan, independent of the backend and the number of workers.

The planner assumes capacity is monotone: more replicas or less traffic never make
a point worse. The cache uses that to answer without simulating (`Points.known`).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Generator, Iterable

import numpy as np

from ..configio import build
from ..scenario import Scenario
from ..simulation import run
from ..workload import ArrivalConfig
from .config import PlanConfig

METRICS = ("ttft", "tpot", "e2e")


@dataclass(frozen=True)
class PointKey:
    candidate: int  # index into the plan's candidates
    replicas: int
    rate_per_s: float


@dataclass(frozen=True)
class Task:
    """One simulation a worker runs: self-contained and deterministic (explicit seed)."""

    scenario: Scenario  # the candidate with `replicas` and Poisson arrivals at the point's rate
    seed: int
    warmup_s: float  # requests arriving before this are simulated but not scored
    screening: bool = False  # a short first look (requests_per_point requests)


@dataclass(frozen=True)
class Sample:
    """One seed of one point: latencies (s) of the scored requests; unfinished ones are +inf."""

    seed: int
    stable: bool
    status: str
    ttft_s: np.ndarray
    tpot_s: np.ndarray  # NaN for requests with one output token
    e2e_s: np.ndarray
    wall_s: float


@dataclass(frozen=True)
class Slo:
    """What a point must meet: the percentile of each bounded metric (s), or a goodput fraction."""

    percentile: float
    bounds: dict[str, float]  # metric ("ttft", "tpot", "e2e") -> bound in seconds
    goodput_fraction: float | None = None

    def describe(self) -> str:
        parts = [f"{m.upper()} <= {fmt_s(b)}" for m, b in self.bounds.items()]
        if self.goodput_fraction is not None:
            return f"{self.goodput_fraction:.1%} of requests with " + " and ".join(parts)
        return " and ".join(f"P{self.percentile:g} {p}" for p in parts)


@dataclass(frozen=True)
class Verdict:
    """Whether a point meets the SLO, and by how much.

    `ratio` is the binding metric's value / bound (goodput mode: the violating fraction /
    the allowed fraction): <= 1 meets. `values` holds each metric at the SLO percentile (s)
    and the fraction of scored requests meeting every bound. `simulated` is False for a
    verdict inferred from a dominating point (then the numbers are NaN).
    """

    meets: bool
    stable: bool
    status: str
    ratio: float
    binding: str
    values: dict[str, float]
    seeds: int
    requests: int
    simulated: bool = True


def fmt_s(seconds: float) -> str:
    """2.00 s, 270 ms, 25.6 ms."""
    if not math.isfinite(seconds):
        return "—" if math.isnan(seconds) else "inf"
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.0f} ms" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def margin_text(v: Verdict, slo: Slo, binding_only: bool = False) -> str:
    """'P99 TTFT 1.41 s vs 2.00 s, P99 TPOT 41.0 ms vs 100 ms': each bounded metric against its
    bound (or only the binding one)."""
    if not v.simulated:
        return "inferred from a neighbouring point"
    shown = [v.binding] if binding_only and v.binding in slo.bounds else list(slo.bounds)
    parts = [f"P{slo.percentile:g} {m.upper()} {fmt_s(v.values[m])} vs {fmt_s(slo.bounds[m])}" for m in shown]
    if slo.goodput_fraction is not None:
        return f"{v.values['attained']:.2%} of requests meet every bound vs {slo.goodput_fraction:.1%} (" + \
            ", ".join(parts) + ")"
    return ", ".join(parts)


def full_requests(rate_per_s: float, cfg: PlanConfig) -> int:
    """Requests of a full point: requests_per_point, or min_duration_s of traffic if more, capped."""
    n = math.ceil(max(cfg.requests_per_point, rate_per_s * cfg.min_duration_s))
    return min(n, cfg.max_requests_per_point)


def point_scenario(scenario: Scenario, replicas: int, rate_per_s: float, n: int,
                   cfg: PlanConfig) -> tuple[Scenario, float]:
    """The candidate at `replicas` under `n` steady arrivals at `rate_per_s`, and its warm-up (s)."""
    wl = scenario.workload
    arrival = {"kind": "poisson", "rate_per_s": rate_per_s}
    if wl.arrival.kind == "gamma":  # keep the burstiness of a gamma process
        arrival = {"kind": "gamma", "rate_per_s": rate_per_s, "cv": wl.arrival.cv}
    workload = dataclasses.replace(wl, arrival=build(ArrivalConfig, arrival, "workload.arrival"),
                                   num_requests=n, duration_s=None)
    sc = dataclasses.replace(scenario, workload=workload,
                             serving=dataclasses.replace(scenario.serving, replicas=replicas),
                             sim=dataclasses.replace(scenario.sim, record_timeseries=False))
    return sc, cfg.warmup_fraction * n / rate_per_s


def _keeps_up(res, n: int) -> tuple[bool, str]:
    """The planner's overload test: the run was not aborted, and when arrivals stopped few requests
    were still waiting for their first step. (The run's own `stable` flag also counts requests
    merely in service, which flags short windows of long requests as unstable.)"""
    t = res.table  # the run's arrays (its `requests` frame holds the same, and costs a DataFrame per run)
    if not np.isfinite(t.finish_s).all():  # runs end early only when aborted
        return False, res.status
    window = res.arrival_window_s
    waiting = int(((t.arrival_s <= window) & ~(t.scheduled_s <= window)).sum())
    if waiting > max(50, 0.1 * n):
        return False, (f"overloaded: {waiting} of {n} requests still waiting for their first step when "
                       f"arrivals stopped (offered {res.offered_rate_per_s:.2f} req/s)")
    return True, "ok"


def simulate(task: Task) -> Sample:
    """Run one point with one seed (the function workers execute)."""
    t0 = time.perf_counter()
    res = run(task.scenario, seed=task.seed)
    t = res.table
    stable, status = _keeps_up(res, len(t))
    scored = t.arrival_s >= task.warmup_s
    arrival = t.arrival_s[scored]
    first = t.first_token_s[scored]
    finish = t.finish_s[scored]
    out = t.output_tokens[scored]
    ttft = np.where(np.isfinite(first), first - arrival, np.inf)
    e2e = np.where(np.isfinite(finish), finish - arrival, np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
    tpot = np.where(np.isfinite(finish) | (out <= 1), tpot, np.inf)
    return Sample(seed=task.seed, stable=stable, status=status, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e,
                  wall_s=time.perf_counter() - t0)


def _percentile(values: np.ndarray, pct: float) -> float:
    v = values[~np.isnan(values)]
    if not len(v):
        return math.nan
    with np.errstate(invalid="ignore"):
        p = float(np.percentile(v, pct))
    return math.inf if math.isnan(p) else p  # interpolating between two +inf gives NaN


def judge(samples: list[Sample], slo: Slo) -> Verdict:
    """Pool the seeds of one point and compare with the SLO."""
    pooled = {m: np.concatenate([getattr(s, f"{m}_s") for s in samples]) for m in METRICS}
    stable = all(s.stable for s in samples)
    status = next((s.status for s in samples if not s.stable), "ok")
    n = len(pooled["ttft"])
    values = {m: _percentile(pooled[m], slo.percentile) for m in METRICS}
    good = np.ones(n, dtype=bool)
    for m, bound in slo.bounds.items():
        good &= np.nan_to_num(pooled[m], nan=0.0) <= bound
    values["attained"] = float(good.mean()) if n else 0.0
    if slo.goodput_fraction is not None:
        ratios = {"goodput": (1.0 - values["attained"]) / (1.0 - slo.goodput_fraction)}
    else:
        ratios = {m: values[m] / b for m, b in slo.bounds.items()}
    binding = max(ratios, key=lambda m: ratios[m])
    ratio = ratios[binding] if stable and n else math.inf
    return Verdict(meets=bool(stable and ratio <= 1.0), stable=stable, status=status, ratio=ratio, binding=binding,
                   values=values, seeds=len(samples), requests=n)


class Points:
    """Simulated points of one plan: samples per point, final verdicts, and inference by dominance."""

    def __init__(self, scenarios: list[Scenario | None], cfg: PlanConfig, slo: Slo, seed: int):
        self.scenarios, self.cfg, self.slo, self.seed = scenarios, cfg, slo, seed
        self.samples: dict[PointKey, list[Sample]] = {}  # full runs, one per seed
        self.screened: dict[PointKey, Sample] = {}  # screening runs
        self.verdicts: dict[PointKey, Verdict] = {}
        self.runs = 0  # simulations run
        self.wall_s = 0.0  # simulation seconds summed over workers

    def known(self, key: PointKey) -> Verdict | None:
        """The point's verdict if final, else one implied by a dominating final point, else None."""
        if key in self.verdicts:
            return self.verdicts[key]
        for k, v in self.verdicts.items():
            if k.candidate != key.candidate or not v.simulated:
                continue
            if v.meets and k.replicas <= key.replicas and k.rate_per_s >= key.rate_per_s:
                return dataclasses.replace(v, simulated=False, ratio=math.nan, values={}, status="inferred")
            if not v.meets and k.replicas >= key.replicas and k.rate_per_s <= key.rate_per_s:
                return dataclasses.replace(v, simulated=False, ratio=math.nan, values={}, status="inferred")
        return None

    def tasks(self, keys: Iterable[PointKey]) -> list[Task]:
        """The simulations still missing for `keys`: a screening run, the full seeds, or one more
        seed on a close call. Same-seed runs of one point share their first requests, so a full
        run replaces the screening run rather than pooling with it."""
        out = []
        cfg = self.cfg
        for key in keys:
            sc = self.scenarios[key.candidate]
            full = full_requests(key.rate_per_s, cfg)
            have = len(self.samples.get(key, []))
            if have == 0 and key not in self.screened and full > cfg.requests_per_point:
                point, warmup_s = point_scenario(sc, key.replicas, key.rate_per_s, cfg.requests_per_point, cfg)
                out.append((key, Task(point, self.seed, warmup_s, screening=True)))
                continue
            point, warmup_s = point_scenario(sc, key.replicas, key.rate_per_s, full, cfg)
            want = cfg.seeds if have == 0 else have + 1
            out.extend((key, Task(point, self.seed + j, warmup_s)) for j in range(have, want))
        return out

    def add(self, key: PointKey, task: Task, sample: Sample) -> None:
        if task.screening:
            self.screened[key] = sample
        else:
            self.samples.setdefault(key, []).append(sample)
        self.runs += 1
        self.wall_s += sample.wall_s

    def settle(self, key: PointKey) -> None:
        """Make the point's verdict final when it is clear: a screening run far from the bound
        (a factor screen_factor), or full seeds not within close_call of it (or max_seeds run)."""
        cfg = self.cfg
        if key not in self.samples:
            v = judge([self.screened[key]], self.slo)
            if not v.stable or not (1.0 / cfg.screen_factor < v.ratio < cfg.screen_factor):
                self.verdicts[key] = v
            return
        v = judge(self.samples[key], self.slo)
        close = v.stable and abs(v.ratio - 1.0) < cfg.close_call
        if not close or v.seeds >= cfg.max_seeds:
            self.verdicts[key] = v


Search = Generator[list[PointKey], list[Verdict], object]


def rounds(search: Search, points: Points) -> Generator[list[tuple[PointKey, Task]], list[Sample], object]:
    """`search` as rounds of simulations: yields the (point, task) pairs the cache cannot answer, receives
    their samples in that order, and returns the search's result. What a search asks depends only on the
    verdicts of its own candidate's points, so its rounds are the same however other searches' rounds run."""
    try:
        keys = next(search)
    except StopIteration as stop:
        return stop.value
    while True:
        while True:
            answers = [points.known(k) for k in keys]
            missing = list(dict.fromkeys(k for k, a in zip(keys, answers) if a is None))
            if not missing:
                break
            todo = points.tasks(missing)
            samples = yield todo
            for (key, task), sample in zip(todo, samples):
                points.add(key, task, sample)
            for key in missing:
                points.settle(key)
        try:
            keys = search.send(answers)
        except StopIteration as stop:
            return stop.value


def together(searches: list[Search]) -> Search:
    """Run searches side by side: each round asks for the points of every unfinished one."""
    results: list[object] = [None] * len(searches)
    pending: dict[int, list[PointKey]] = {}
    for i, s in enumerate(searches):
        try:
            pending[i] = next(s)
        except StopIteration as stop:
            results[i] = stop.value
    while pending:
        order = list(pending.items())
        answers = yield [k for _, ks in order for k in ks]
        pending, pos = {}, 0
        for i, ks in order:
            part, pos = answers[pos:pos + len(ks)], pos + len(ks)
            try:
                pending[i] = searches[i].send(part)
            except StopIteration as stop:
                results[i] = stop.value
    return results


@dataclass
class Found:
    """Result of `smallest_true`: the answer (None: none in range), what was probed, and why not."""

    answer: int | None
    tried: dict[int, Verdict]
    reason: str = ""


def smallest_true(lo: int, hi: int, start: int, key_of: Callable[[int], PointKey], pred: Callable[[Verdict], bool],
                  stuck: Callable[[int, Verdict, int, Verdict], str | None] | None = None) -> Search:
    """Smallest x in [lo, hi] with pred(verdict(x)), pred monotone in x.

    Gallops from `start` (the analytic guess) in steps of a quarter of x, doubling, until the
    answer is bracketed, then bisects. During the upward gallop `stuck(x0, v0, x, v)` sees the
    first and the latest failure and may end the search with a reason (more replicas stopped
    helping).
    """
    tried: dict[int, Verdict] = {}

    def probe(x: int):
        (v,) = yield [key_of(x)]
        tried[x] = v
        return pred(v)

    no, yes = lo - 1, None  # largest known False, smallest known True
    x = min(max(start, lo), hi)
    if (yield from probe(x)):
        yes = x
    else:
        no = x
    first_no = no
    step = max(1, no // 4)
    while yes is None:  # gallop up
        if no >= hi:
            return Found(None, tried)
        x = min(no + step, hi)
        step *= 2
        if (yield from probe(x)):
            yes = x
        else:
            no = x
            reason = stuck(first_no, tried[first_no], x, tried[x]) if stuck is not None else None
            if reason:
                return Found(None, tried, reason)
    step = max(1, yes // 4)
    while no == lo - 1 and yes > lo:  # gallop down
        x = max(yes - step, lo)
        step *= 2
        if (yield from probe(x)):
            yes = x
        else:
            no = x
    while yes - no > 1:  # bisect
        x = (yes + no) // 2
        if (yield from probe(x)):
            yes = x
        else:
            no = x
    return Found(yes, tried)
