"""Continuous (iteration-level) batching, as vLLM v1 schedules (checked step for step against
vLLM 0.32's own scheduler by calibration/parity): and its priority variant.

Each step has a token budget (`max_num_batched_tokens`) and a sequence cap (`max_num_seqs`).
Running sequences are served first, in admission order: each takes what it still needs (one
token for a decode, the rest of its prompt for a prefill) up to the budget left, so a long
prefill can leave later sequences without tokens for a step. When a running sequence cannot
get KV blocks, a victim is preempted by recompute (its blocks are freed and it waits again)
until it fits or is itself the victim. Then, if nobody was preempted, waiting requests are
admitted in queue order while budget, slots and KV blocks last; a request is admitted only if
its whole prompt fits in the free blocks (vLLM's `scheduler_reserve_full_isl`), though blocks
are taken only for the chunk it computes now. With prefix caching, the cached blocks at the
start of its prompt are reused and only the rest is computed. The first request that does not
fit stops admission (head-of-line, as in vLLM).

`by_priority=False`: waiting order is arrival order; the victim is the newest running.
`by_priority=True`: waiting order is (priority level, arrival); the victim is the least
urgent running sequence (highest level, then latest arrival). As in vLLM, a waiting request
never preempts a running one: priority only orders the queue and picks victims.
"""
from __future__ import annotations

from heapq import heappop, heappush
from typing import TYPE_CHECKING

import numpy as np

from ..kv_cache import SMALL
from .base import StepPlan, Wait, WaitingQueue

# The plans a continuous scheduler returns (frozen: shared instead of built every decision).
_AGAIN = StepPlan(follow="none", interruptible=False)
_UNTIL_COMPLETION = {False: StepPlan(follow="until_completion", interruptible=False),
                     True: StepPlan(follow="until_completion", interruptible=True)}
_TO_END = StepPlan(follow="to_end", interruptible=True)

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
        self._heap = self.waiting._heap  # its heap, read directly on the per-decision path (no method calls)
        # engine.async_admission_lag: when each request first reached the engine; one is admitted only by a
        # decision made after the step in flight at that moment (Replica.last_step_start_s).
        self.lag = False
        self._seen_s: dict[int, float] = {}

    @property
    def num_waiting(self) -> int:
        return len(self._heap)

    def add(self, replica: "Replica", req: int) -> None:
        t = replica.table
        heappush(self._heap, (t.priority.item(req) if self.by_priority else 0, t.arrival_s.item(req), req))
        if self.lag:
            self._seen_s.setdefault(req, replica.env.now)  # a preempted request keeps its first time

    def _victim(self, replica: "Replica") -> int:
        """Slot to preempt: the newest running sequence, or with priorities the least urgent
        (highest level, then latest arrival; the first such slot on a tie, as vLLM's `max`)."""
        b = replica.running
        if not self.by_priority:
            return b.n - 1
        levels = b.view("level")
        arrivals = replica.table.arrival_s[b.view("req")]
        worst = np.flatnonzero(levels == levels.max())
        return int(worst[np.argmax(arrivals[worst])])  # argmax: first of equal arrivals

    def should_interrupt(self, replica: "Replica", req: int) -> bool:
        # A request that is now first in line changes the next step: it joins the batch, or,
        # if slots or blocks are short, the fast-forward must stop at the first completion.
        waiting = self._heap
        return bool(waiting) and waiting[0][2] == req

    def schedule(self, replica: "Replica") -> StepPlan | Wait | None:
        b, waiting = replica.running, self._heap  # the queue's heap: (key, arrival, request), first in line first
        if b.n == 0 and not waiting:
            return None
        budget, preempted, all_served = self._schedule_running(replica)

        # Waiting requests, in queue order, while slots, budget and blocks last.
        # (vLLM admits nobody in a step that had to preempt.)
        kv, t = replica.kv, replica.table
        blocked_by_budget = held = False
        # With the lag, a request that reached the engine after the last step started was not there when
        # this decision was (in vLLM) taken; with nothing running there was no step in flight to wait for.
        cutoff = replica.last_step_start_s if self.lag and b.n else None
        while waiting and not preempted:
            if budget <= 0:
                blocked_by_budget = True
                break
            if b.n >= self.max_num_seqs:
                break
            req = waiting[0][2]
            if cutoff is not None and self._seen_s[req] > cutoff:
                held = True  # admitted by the next decision (priority: the first in line holds the rest)
                break
            tokens = t.prompt_tokens.item(req) + t.generated.item(req)  # replica.tokens_known(req)
            cached = kv.cache_hit_tokens(req, tokens)  # prefix-cache hit: these need no compute
            if tokens - cached > budget and not self.chunked_prefill:
                blocked_by_budget = True
                break
            c = min(tokens - cached, budget)
            if not kv.can_admit(req, tokens, cached) or not kv.admit(req, cached, cached + c):
                break  # the whole prompt must fit now, though only this chunk's blocks are taken
            all_served = all_served and c == tokens - cached  # else its prefill continues next step
            heappop(waiting)
            replica.admit(req, c, cached)
            budget -= c

        if b.n == 0:
            # Everyone was preempted: admit from the queue in the next step, as vLLM does (it cannot
            # happen while one max-length sequence fits the cache). Otherwise nothing fits at all.
            return Wait(replica.now) if preempted else None
        if preempted or blocked_by_budget or not all_served or held:
            # A prefill continues, someone got no tokens, or a preemption freed blocks that the
            # waiting queue may take next step: decide again after this one.
            return _AGAIN
        if waiting:
            head = waiting[0][2]
            if b.n < self.max_num_seqs and kv.hit_may_grow(head, replica.tokens_known(head), b.view("req")):
                # Blocked by KV blocks, but a running request is decoding into blocks the first in
                # line shares (prefix caching): each block it fills is one fewer to find. vLLM
                # tries the admission again every step, and so must we.
                return _AGAIN
            # Waiting requests are blocked by slots or KV blocks: nothing changes until a sequence
            # finishes, unless a new arrival becomes first in line (priority).
            return _UNTIL_COMPLETION[self.by_priority]
        return _TO_END

    def _schedule_running(self, replica: "Replica") -> tuple[int, bool, bool]:
        """Give running sequences their tokens (`chunk`) and blocks, preempting where blocks
        run short. Returns the token budget left, whether anyone was preempted, and whether every
        running sequence got all the tokens it still needs."""
        b, kv = replica.running, replica.kv
        n = b.n
        if n == 0:
            return self.max_tokens, False, True
        lookahead = replica.decode_lookahead
        if n <= SMALL and not lookahead and not kv.tracks_block_order:
            # A few slots, no drafts, a counting KV pool: the fast path below on plain lists.
            if b.blocks_for_known:  # the small step took this decision's blocks (everyone decodes: one token each)
                b.blocks_for_known = False
                b.set_chunk([1] * n)
                return self.max_tokens - n, False, True
            reqs, _p, _o, done, known, _l, _c = b.rows()
            todo_list = [k - d for k, d in zip(known, done)]
            charged = sum(todo_list)
            if charged <= self.max_tokens and kv.allocate_lists(reqs, known):
                b.set_chunk(todo_list)
                return self.max_tokens - charged, False, True
        req_a, _, _, computed_a, num_tokens_a, _, chunk_a = b.forget_rows()  # the arrays, written directly below
        # Fast path: in admission order, each takes min(what it needs, budget left). A decoding
        # sequence's k draft tokens (speculative decoding; k = lookahead, 0 without) are scheduled
        # with it and count against the budget, as in vLLM (num_tokens_with_spec); the budget's last
        # few may cut its drafts. (ndarray methods, not np.* wrappers: this runs once per decision
        # on a handful of slots.)
        computed = computed_a[:n]
        todo = num_tokens_a[:n] - computed
        drafts = (todo == 1) * lookahead if lookahead else 0
        charge = todo + drafts if lookahead else todo
        charged = sum(charge.tolist())  # plain sum: numpy's reduction costs more on a few slots
        if charged <= self.max_tokens:
            # Everyone gets all it needs (the common case): chunk = todo, no mask to apply.
            if kv.allocate_many(req_a[:n], computed + charge):
                chunk_a[:n] = todo
                return self.max_tokens - charged, False, True
        else:
            left = self.max_tokens - (charge.cumsum() - charge)  # budget left when each one's turn comes
            chunk = np.maximum(np.minimum(todo, left), 0)
            scheduled = chunk > 0
            if kv.allocate_many(req_a[:n][scheduled], (computed + chunk + drafts)[scheduled]):
                chunk_a[:n] = chunk
                used = sum(np.minimum(charge, np.maximum(left, 0)).tolist())
                return self.max_tokens - used, False, sum(chunk.tolist()) == sum(todo.tolist())
        # Blocks run short: go one by one as vLLM does, preempting victims as needed.
        chunk_a[:n] = 0
        budget, preempted, i = self.max_tokens, False, 0
        while i < b.n and budget > 0:
            todo_i = int(num_tokens_a[i] - computed_a[i])
            c = min(todo_i, budget)
            req = int(req_a[i])
            extra = lookahead if todo_i == 1 else 0
            while not kv.allocate(req, int(computed_a[i]) + c + extra):
                victim = self._victim(replica)
                # A victim scheduled earlier in this step gives its tokens (and drafts) back.
                given = int(chunk_a[victim])
                if given and num_tokens_a[victim] - computed_a[victim] == 1:
                    given += lookahead
                budget = min(budget + given, self.max_tokens)
                self.add(replica, replica.preempt(victim))
                preempted = True
                if victim == i:
                    break
                if victim < i:
                    i -= 1
            else:
                chunk_a[i] = c
                budget -= min(c + extra, budget)
                i += 1
                continue
            break  # this sequence was itself the victim: nobody after it runs this step
        n = b.n
        return budget, preempted, not bool((num_tokens_a[:n] - computed_a[:n] - chunk_a[:n] > 0).any())
