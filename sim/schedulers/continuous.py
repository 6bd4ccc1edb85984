"""Continuous (iteration-level) batching, as vLLM v1 schedules: and its priority variant.

Each step has a token budget (`max_num_batched_tokens`) and a sequence cap
(`max_num_seqs`). Running sequences are served first (decode: one token each; a
partly prefilled prompt: the next chunk), then waiting requests are admitted while
budget, slots and KV blocks last. When a running sequence cannot get KV blocks,
the victim is preempted by recompute: its blocks are freed and it waits again.

`by_priority=False`: waiting order is arrival order; the victim is the newest running.
`by_priority=True`: waiting order is (priority level, arrival); the victim is the
least urgent running sequence (highest level, newest), and a waiting request may
preempt a running one of a strictly less urgent level.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import StepPlan, WaitingQueue

if TYPE_CHECKING:
    from ..engine import Replica
    from ..scenario import SchedulerConfig


class ContinuousScheduler:
    def __init__(self, cfg: "SchedulerConfig", by_priority: bool):
        self.max_num_seqs = cfg.max_num_seqs
        self.max_tokens = cfg.max_num_batched_tokens
        self.chunked_prefill = cfg.chunked_prefill
        self.by_priority = by_priority
        self.waiting = WaitingQueue()

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def add(self, replica: "Replica", req: int) -> None:
        t = replica.table
        key = int(t.priority[req]) if self.by_priority else 0
        self.waiting.push(key, float(t.arrival_s[req]), req)

    def _victim(self, replica: "Replica") -> int:
        """Slot to preempt: the newest running sequence, or with priorities the least urgent."""
        b = replica.running
        if not self.by_priority:
            return b.n - 1
        levels = b.view("level")
        worst = levels.max()
        return int(np.flatnonzero(levels == worst)[-1])

    def _preempt(self, replica: "Replica", slot: int) -> None:
        self.add(replica, replica.preempt(slot))

    def should_interrupt(self, replica: "Replica", req: int) -> bool:
        b = replica.running
        if len(self.waiting) == 1 and b.n < self.max_num_seqs:
            return True  # it is first in line and there is a free slot: it joins the next step
        if self.by_priority and b.n:
            return int(replica.table.priority[req]) < int(b.view("level").max())
        return False

    def schedule(self, replica: "Replica") -> StepPlan | None:
        b, kv = replica.running, replica.kv
        if b.n == 0 and not self.waiting:
            return None
        lookahead = replica.decode_lookahead
        preempted = False

        # 1. Running sequences: decodes take one token each, partial prefills their next chunk.
        #    If KV blocks run short, preempt victims until the rest fit.
        while b.n:
            n = b.n
            computed = b.computed[:n]
            todo = b.num_tokens[:n] - computed
            decode = todo == 1
            chunk = b.chunk[:n]
            chunk[:] = decode
            n_decode = int(np.count_nonzero(decode))
            budget = self.max_tokens - n_decode
            if n_decode < n:
                for i in np.flatnonzero(~decode):  # partial prefills, oldest first
                    c = min(int(todo[i]), budget)
                    chunk[i] = c
                    budget -= c
            need = computed + chunk
            if lookahead:
                need = need + decode * lookahead
            if kv.allocate_many(b.req[:n], need):
                break
            self._preempt(replica, self._victim(replica))
            preempted = True
        if b.n == 0:
            budget, preempted = self.max_tokens, False  # everyone was preempted: start over from the queue

        # 2. Waiting requests, in queue order, while slots, budget and blocks last.
        #    (vLLM admits nobody in a step that had to preempt.)
        blocked_by_budget = False
        while self.waiting and not preempted:
            key, _, req = self.waiting.peek()
            if budget <= 0:
                blocked_by_budget = True
                break
            tokens = replica.tokens_known(req)
            c = tokens if tokens <= budget else (budget if self.chunked_prefill else 0)
            if c == 0:
                blocked_by_budget = b.n > 0
                break
            if b.n < self.max_num_seqs and kv.allocate(req, c):
                self.waiting.pop()
                replica.admit(req, c)
                budget -= c
                continue
            if self.by_priority and b.n and int(b.view("level").max()) > key:
                self._preempt(replica, self._victim(replica))  # less urgent running work makes room
                continue
            break

        if b.n == 0:
            return None  # nothing fits (cannot happen when one max-length sequence fits the cache)
        if bool((b.view("num_tokens") - b.view("computed") - b.view("chunk") > 0).any()) or blocked_by_budget:
            return StepPlan(follow="none", interruptible=False)  # a prefill continues next step
        if self.waiting:
            # Waiting requests are blocked by slots or KV blocks: nothing changes until a sequence finishes.
            return StepPlan(follow="until_completion", interruptible=self.by_priority)
        return StepPlan(follow="to_end", interruptible=True)
