"""The planner's answer as flat records: one `CandidatePlan` per candidate, and the `Plan` that
ranks them, with its one-sentence headline, its tables and its JSON form."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..configio import to_dict
from .search import Slo

if TYPE_CHECKING:
    import pandas as pd


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
    cost_model_accuracy: str = ""  # how far runs priced like this were from measured ones (sim/accuracy.py)
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

    def to_frame(self) -> "pd.DataFrame":
        """The ranked table, one row per candidate (hourly replicas as a comma-separated string)."""
        import pandas as pd  # only for a caller that wants frames: planning itself does not load pandas

        rows = []
        for rank, c in enumerate(self.candidates, 1):
            row = {"rank": rank if c.feasible else None, **to_dict(c)}
            row["hourly_replicas"] = ",".join(str(n) for n in c.hourly_replicas)
            rows.append(row)
        df = pd.DataFrame(rows)
        for col in ("rank", "tensor_parallel", "replicas_peak", "gpus_peak", "analytic_replicas"):
            df[col] = df[col].astype("Int64")  # integers with gaps for infeasible candidates
        return df

    def pareto_frame(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame(self.pareto)

    def to_dict(self, timing: bool = True) -> dict[str, Any]:
        """Everything as plain JSON-able data (NaN becomes None); timing=False leaves out how long the plan
        took and where it ran (wall_s, sim_s, backend), so two plans of the same inputs compare equal."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            return v
        d = clean({
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
        if not timing:
            for key in ("wall_s", "sim_s", "backend"):
                d.pop(key)
        return d
