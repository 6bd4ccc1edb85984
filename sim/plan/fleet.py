"""How many replicas a candidate needs: the smallest fleet that meets the SLO at the peak hour
(galloping from the analytic estimate, then bisecting), then the autoscaled count for every other
hour (guided by the margins measured so far, guided.py); and why no count can, when the zero-load floor
already misses a bound. The searches are
generators of simulated points (search.py runs them)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import PlanConfig
from .estimate import Estimate
from .guided import Seen, crossing_load, first_failing
from .search import Found, PointKey, Slo, Verdict, fmt_s, margin_text, smallest_true, together

START_UTILISATION = 0.8  # the analytic start assumes replicas at 80 % of their best throughput


@dataclass
class Outcome:
    """One candidate's search: the peak fleet, its verdict and the replicas per hour; or, with
    `replicas_peak` None, the reason no fleet up to plan.max_replicas meets the SLO."""

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


def candidate_search(i: int, est: Estimate, rates: tuple[float, ...], cfg: PlanConfig, slo: Slo):
    """Search generator for candidate i: the peak fleet, then the autoscaled hours."""
    peak = max(rates)
    meets = lambda v: v.meets  # noqa: E731
    start = max(cfg.min_replicas, est.replicas_for(peak, START_UTILISATION))
    found: Found = yield from smallest_true(cfg.min_replicas, cfg.max_replicas, start,
                                            lambda n: PointKey(i, n, peak), meets, _stuck(slo))
    if found.answer is None:
        if found.reason:
            return Outcome(reason=found.reason)
        top = max(found.tried)
        v = found.tried[top]
        why = margin_text(v, slo, True) if v.stable else v.status
        return Outcome(reason=f"needs more than plan.max_replicas = {cfg.max_replicas} replicas "
                               f"(at {top}: {why})")
    n_peak = found.answer
    hourly = yield from hourly_replicas(i, rates, n_peak, found, cfg)
    return Outcome(replicas_peak=n_peak, verdict=found.tried[n_peak], hourly=hourly)


def hourly_replicas(i: int, rates: tuple[float, ...], n_peak: int, found: Found, cfg: PlanConfig):
    """Search generator: the autoscaled replicas of each hour, given the peak fleet and the peak
    search's points. For each count n below the peak fleet, the first (lowest) hourly target rate that
    n replicas fail (guided.first_failing); an hour takes the smallest n that meets its target."""
    peak = max(rates)
    targets = [r * (1.0 + cfg.scale_up_margin) for r in rates]
    below = sorted({t for t in targets if 0 < t < peak})
    needed: dict[float, int] = {}
    if below and n_peak > cfg.min_replicas:
        seen: Seen = [(n, peak, v) for n, v in found.tried.items()]
        load = crossing_load(seen, n_peak) or peak / n_peak
        n_low = cfg.min_replicas
        # The fewest replicas the quietest hour needs: searched first, unless min_replicas are guessed to
        # meet a higher hourly rate too, which the search for min_replicas then probes (and that point
        # meeting implies the quietest hour's).
        if len(below) < 2 or below[1] > load * n_low:
            low: Found = yield from smallest_true(n_low, n_peak - 1, max(n_low, math.ceil(below[0] / load)),
                                                  lambda n: PointKey(i, n, below[0]), lambda v: v.meets)
            seen += [(n, below[0], v) for n, v in low.tried.items()]
            n_low = low.answer if low.answer is not None else n_peak
        counts = list(range(n_low, n_peak))
        firsts = yield from together([first_failing(below, n, lambda j, n=n: PointKey(i, n, below[j]), seen)
                                      for n in counts])
        fail_at = dict(zip(counts, firsts))
        for j, t in enumerate(below):
            needed[t] = min((n for n in counts if j < fail_at[n]), default=n_peak)
    return tuple(cfg.min_replicas if t <= 0 else needed.get(t, n_peak) for t in targets)


def floor_reason(est: Estimate, slo: Slo, pct: float) -> str:
    """Why no replica count can meet the SLO, from the zero-load floor ("" when it can)."""
    ttft, tpot = slo.bounds.get("ttft"), slo.bounds.get("tpot")
    if ttft is not None and est.ttft_floor_s > ttft:
        return (f"P{pct:g} TTFT cannot go below {fmt_s(est.ttft_floor_s)} on this hardware (a P{pct:g} prompt "
                f"prefilled alone on an idle replica) vs the {fmt_s(ttft)} bound; no replica count helps")
    if tpot is not None and est.tpot_floor_s > tpot:
        return (f"TPOT cannot go below {fmt_s(est.tpot_floor_s)} (one sequence decoding alone) vs the "
                f"{fmt_s(tpot)} bound; no replica count helps")
    return ""
