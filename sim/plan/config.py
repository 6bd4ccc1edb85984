"""The `plan:` section of a planning scenario, and one Scenario per candidate.

A planning file is a normal scenario file (workload with daily or Poisson arrivals,
model, hardware, serving, slo) plus a `plan:` section that lists candidates as
patches of that base scenario. `read_plan` returns the base mapping, the frozen
`PlanConfig` and the folder relative paths resolve against; `candidate_scenario`
builds one candidate's Scenario (or raises the ConfigError that says why it cannot).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..configio import ConfigError, build, require, set_path
from ..quantization import KvDtype, WeightDtype
from ..scenario import Scenario, SchedulerName, apply_override, read_scenario_file, scenario_from_dict


@dataclass(frozen=True)
class CandidateConfig:
    """One serving choice, as a patch of the base scenario (None keeps the base's value).

    `speculative`: false turns speculative decoding off, a mapping (draft_model, ...)
    turns it on, true keeps the base scenario's (which must have one). `set` holds
    further `--set`-style assignments (``serving.scheduler.max_num_seqs=128``),
    applied last.
    """

    name: str | None = None
    model: str | dict[str, Any] | None = None
    gpu: str | dict[str, Any] | None = None
    tensor_parallel: int | None = None
    weights: WeightDtype | None = None
    kv_cache: KvDtype | None = None
    scheduler: SchedulerName | None = None
    speculative: bool | dict[str, Any] | None = None
    price_usd_per_gpu_hour: float | None = None
    price_discount: float | None = None
    set: tuple[str, ...] = ()
    # Why this entry of the planning file could not be read (set by read_plan, never by the file):
    # such a candidate is listed as not feasible with this reason; the others still run.
    invalid: str | None = field(default=None, metadata={"internal": True})

    def validate(self, path: str) -> None:
        require(self.name is None or self.name.strip() != "", f"{path}.name", self.name, "must be non-empty")


@dataclass(frozen=True)
class PlanConfig:
    """How the planner searches and costs. Execution (workers, Ray) is not part of it:
    the same PlanConfig and seed give the same plan on any backend."""

    candidates: tuple[CandidateConfig, ...] = ()  # empty: the base scenario as configured
    scale_up_margin: float = 0.2  # autoscaled replicas at hour h serve rate_h * (1 + margin)
    min_replicas: int = 1  # the autoscaler never goes below this many replicas
    max_replicas: int = 64  # search limit per candidate
    # A point is first screened with requests_per_point requests; unless that is clearly in
    # or out (the binding metric off its bound by screen_factor, or unstable) it is run in
    # full: max(requests_per_point, rate * min_duration_s) requests, capped, with `seeds` seeds;
    # a full verdict within close_call of its bound pools more seeds, up to max_seeds.
    requests_per_point: int = 3000
    min_duration_s: float = 600.0
    max_requests_per_point: int = 30000  # a cap on wall time per point
    screen_factor: float = 2.0  # .inf: no screening, every point in full
    warmup_fraction: float = 0.1  # requests arriving in this first fraction of the window are not scored
    seeds: int = 1
    max_seeds: int = 3
    close_call: float = 0.1
    goodput_fraction: float | None = None  # set: meet the SLO when this fraction meets every bound
    rank_by: Literal["autoscaled", "fixed"] = "autoscaled"  # which $/month ranks the candidates

    def validate(self, path: str) -> None:
        p = f"{path}." if path else ""
        require(self.scale_up_margin >= 0, f"{p}scale_up_margin", self.scale_up_margin, "must be >= 0")
        require(self.min_replicas >= 1, f"{p}min_replicas", self.min_replicas, "must be >= 1")
        require(self.max_replicas >= self.min_replicas, f"{p}max_replicas", self.max_replicas,
                f"must be >= min_replicas ({self.min_replicas})")
        require(self.requests_per_point >= 100, f"{p}requests_per_point", self.requests_per_point,
                "must be >= 100 (a P99 needs a tail)")
        require(self.max_requests_per_point >= self.requests_per_point, f"{p}max_requests_per_point",
                self.max_requests_per_point, f"must be >= requests_per_point ({self.requests_per_point})")
        require(self.min_duration_s >= 0, f"{p}min_duration_s", self.min_duration_s, "must be >= 0 s")
        require(0 <= self.warmup_fraction < 0.5, f"{p}warmup_fraction", self.warmup_fraction, "allowed 0 <= f < 0.5")
        require(self.screen_factor > 1, f"{p}screen_factor", self.screen_factor, "must be > 1 (.inf: no screening)")
        require(self.seeds >= 1, f"{p}seeds", self.seeds, "must be >= 1")
        require(self.max_seeds >= self.seeds, f"{p}max_seeds", self.max_seeds, f"must be >= seeds ({self.seeds})")
        require(self.close_call >= 0, f"{p}close_call", self.close_call, "must be >= 0")
        require(self.goodput_fraction is None or 0 < self.goodput_fraction < 1, f"{p}goodput_fraction",
                self.goodput_fraction, "allowed 0 < f < 1, or null for percentile bounds")
        names = [c.name for c in self.candidates if c.name is not None]
        require(len(set(names)) == len(names), f"{p}candidates", names, "names must be unique")


def read_plan(source: str | Path | dict,
              overrides: tuple[str, ...] | list[str] = ()) -> tuple[dict, PlanConfig, Path | None]:
    """(base scenario mapping without `plan:`, PlanConfig, base folder) of a planning file or mapping.

    `overrides` are `--set` assignments applied before the split, so ``plan.scale_up_margin=0.3``
    and ``slo.ttft_s=1`` both work.
    """
    if isinstance(source, dict):
        data, base_dir = dict(source), None
    else:
        data = read_scenario_file(source)
        p = Path(source)
        if p.is_file():
            base_dir = p.parent.resolve()
        else:  # a shipped scenario name
            base_dir = Path(str(resources.files("scenarios"))).resolve()
    for assignment in overrides:
        data = apply_override(data, assignment)
    plan_data = data.pop("plan", None)
    if plan_data is None:  # no section, or an empty `plan:`: the defaults
        plan_data = {}
    require(isinstance(plan_data, dict), "plan", plan_data, "expected a mapping (candidates:, scale_up_margin:, ...)")
    raw = plan_data.get("candidates")
    if isinstance(raw, list):
        plan_data = {**plan_data, "candidates": [_candidate(entry, f"plan.candidates[{i}]")
                                                 for i, entry in enumerate(raw)]}
    config = build(PlanConfig, plan_data, "plan")
    return data, config, base_dir


def _candidate(entry: Any, path: str) -> CandidateConfig:
    """One candidate; a malformed entry becomes an `invalid` candidate that the plan reports, not a crash."""
    try:
        return build(CandidateConfig, entry, path)
    except ConfigError as exc:
        name = entry.get("name") if isinstance(entry, dict) else None
        return CandidateConfig(name=name if isinstance(name, str) and name.strip() else None, invalid=str(exc))


def candidate_dict(base: dict, cand: CandidateConfig) -> dict:
    """The base scenario mapping with the candidate's patch applied."""
    if cand.invalid is not None:
        raise ConfigError(cand.invalid)
    data = dict(base)
    simple = {"model": "model", "gpu": "hardware.gpu", "tensor_parallel": "serving.tensor_parallel",
              "weights": "serving.quantization.weights", "kv_cache": "serving.quantization.kv_cache",
              "scheduler": "serving.scheduler.policy", "price_usd_per_gpu_hour": "hardware.price_usd_per_gpu_hour",
              "price_discount": "hardware.price_discount"}
    for field_name, dotted in simple.items():
        value = getattr(cand, field_name)
        if value is not None:
            data = set_path(data, dotted, value)
    if cand.speculative is False:
        data = set_path(data, "serving.speculative", None)
    elif cand.speculative is True:
        if not (data.get("serving") or {}).get("speculative"):
            raise ConfigError("speculative: true keeps the base scenario's serving.speculative, which is not set; "
                              "give a mapping {draft_model: ..., num_speculative_tokens: ..., acceptance_rate: ...}")
    elif isinstance(cand.speculative, dict):
        data = set_path(data, "serving.speculative", cand.speculative)
    for assignment in cand.set:
        data = apply_override(data, assignment)
    if cand.name is not None:
        data = set_path(data, "name", cand.name)
    return data


def candidate_scenario(base: dict, cand: CandidateConfig, base_dir: Path | None) -> Scenario:
    """Build one candidate's Scenario; ConfigError (naming the field) if the patch is invalid."""
    return scenario_from_dict(candidate_dict(base, cand), base_dir=base_dir)


def describe(scenario: Scenario) -> str:
    """A short label: model, GPU x TP, quantization, scheduler, speculative."""
    s = scenario.serving
    q = s.quantization
    parts = [scenario.model_spec.name, f"{scenario.gpu_spec.name} TP{s.tensor_parallel}",
             f"w {q.weights}/kv {q.kv_cache}", s.scheduler.policy]
    if s.speculative is not None:
        method = "" if s.speculative.method == "draft_model" else f"{s.speculative.method} "
        parts.append(f"spec {method}k={s.speculative.num_speculative_tokens}")
    return ", ".join(parts)
