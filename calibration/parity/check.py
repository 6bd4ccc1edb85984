"""Run parity cases on both sides and tally the outcome."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .sim_driver import sim_trace
from .trace import Divergence, ParityCase, StepRecord, first_divergence
from .vllm_driver import vllm_trace


def check(case: ParityCase) -> Divergence | None:
    """The first step where servesim's trace differs from vLLM's; None when identical."""
    return first_divergence(vllm_trace(case), sim_trace(case))


@dataclass
class Tally:
    """Outcome of many cases, and how much of the scheduler they exercised (from vLLM's traces)."""

    identical: int = 0
    diverging: list[tuple[ParityCase, Divergence]] = field(default_factory=list)
    steps: int = 0
    with_preemption: int = 0  # cases where vLLM preempted at least once
    with_split_prompt: int = 0  # cases where some prompt took several steps
    with_prefix_hit: int = 0  # cases where some request found cached blocks

    @property
    def total(self) -> int:
        return self.identical + len(self.diverging)

    def by_fields(self) -> Counter:
        """How many divergences differ in each combination of record fields."""
        return Counter(tuple(sorted(d.fields)) for _, d in self.diverging)

    def add(self, case: ParityCase, vllm: list[StepRecord], servesim: list[StepRecord]) -> Divergence | None:
        d = first_divergence(vllm, servesim)
        if d is None:
            self.identical += 1
        else:
            self.diverging.append((case, d))
        self.steps += len(vllm)
        self.with_preemption += any(r.preempted for r in vllm)
        prompts = {i: r.prompt_tokens for i, r in enumerate(case.requests)}
        self.with_split_prompt += any(0 < n < prompts[i] and n > 1 for r in vllm for i, n in r.scheduled)
        self.with_prefix_hit += any(r.cached for r in vllm)
        return d


def check_all(cases) -> Tally:
    tally = Tally()
    for case in cases:
        tally.add(case, vllm_trace(case), sim_trace(case))
    return tally
