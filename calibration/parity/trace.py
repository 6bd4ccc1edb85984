"""A parity case (requests arriving at engine steps, the engine limits) and the step trace
both simulators produce for it, compared record by record.

Steps are engine iterations, not seconds: request i is added before the scheduler runs at
step `arrival_step[i]`. A step in which nothing is scheduled, admitted, preempted or finished
is not recorded, so an idle gap is the same on both sides however it is spent.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    arrival_step: int
    prompt_tokens: int
    output_tokens: int  # tokens sampled before the request finishes (EOS ignored)
    priority: int = 0  # 0 most urgent (used by the priority policy only)
    prefix_group: int = 0  # the first `prefix_tokens` tokens are those of shared stream `prefix_group`
    prefix_tokens: int = 0  # (a system prompt); the rest of the request's tokens are its own


@dataclass(frozen=True)
class ParityCase:
    """Requests (ids are their index) and the engine limits both sides run with.

    `num_blocks` is the number of KV blocks requests can use (vLLM's pool has one more: its
    null block). `policy` is vLLM's `--scheduling-policy`: "fcfs" (servesim's `continuous`)
    or "priority" (servesim's `priority`)."""

    requests: tuple[Request, ...]
    max_num_seqs: int
    max_num_batched_tokens: int
    chunked_prefill: bool
    block_size: int
    num_blocks: int
    max_model_len: int
    policy: str = "fcfs"
    enable_prefix_caching: bool = False
    name: str = ""


@dataclass(frozen=True)
class StepRecord:
    """What one engine step decided. Request ids are ints; tuples are sorted by id.

    scheduled: (id, tokens computed this step) for every request that computes tokens.
    admitted:  ids moved from waiting to running in this step (new or resumed after preemption).
    preempted: ids preempted (KV blocks freed, back to waiting) while scheduling this step.
    finished:  ids whose last output token was sampled at the end of this step.
    kv_blocks: KV blocks held by requests once this step is scheduled (before finishes free any).
    cached:    (id, tokens found in the prefix cache) for admitted requests that found any.
    """

    step: int
    scheduled: tuple[tuple[int, int], ...]
    admitted: tuple[int, ...] = ()
    preempted: tuple[int, ...] = ()
    finished: tuple[int, ...] = ()
    kv_blocks: int = 0
    cached: tuple[tuple[int, int], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.scheduled or self.admitted or self.preempted or self.finished)


@dataclass
class Divergence:
    """The first step where two traces differ, and how."""

    step: int
    fields: dict[str, tuple] = field(default_factory=dict)  # name -> (vllm value, servesim value)

    def __str__(self) -> str:
        parts = [f"{name}: vllm={a} servesim={b}" for name, (a, b) in self.fields.items()]
        return f"step {self.step}: " + "; ".join(parts)


_FIELDS = ("scheduled", "admitted", "preempted", "finished", "kv_blocks", "cached")


def first_divergence(vllm: list[StepRecord], servesim: list[StepRecord]) -> Divergence | None:
    """Compare two traces step by step; None when they are identical."""
    a = {r.step: r for r in vllm if not r.empty}
    b = {r.step: r for r in servesim if not r.empty}
    for step in sorted(a.keys() | b.keys()):
        ra, rb = a.get(step), b.get(step)
        if ra is None or rb is None:
            empty = StepRecord(step, ())
            ra, rb = ra or empty, rb or empty
        diff = {name: (getattr(ra, name), getattr(rb, name)) for name in _FIELDS
                if getattr(ra, name) != getattr(rb, name)}
        if diff:
            return Divergence(step, diff)
    return None
