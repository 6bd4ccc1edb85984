"""Static batching (and FIFO, its batch-of-one case).

When the replica is free, take up to `batch_size` waiting requests in arrival order
(waiting up to `batch_timeout_s` after the oldest arrived for the batch to fill),
prefill them together, and decode until the longest finishes. Nobody joins mid-batch;
sequences that finish early stay in the batch as padding. KV is reserved up front for
the padded rectangle: every sequence gets room for the longest prompt plus the
longest output in the batch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import StepPlan, Wait, WaitingQueue

if TYPE_CHECKING:
    from ..engine import Replica


class StaticScheduler:
    def __init__(self, batch_size: int, batch_timeout_s: float):
        self.batch_size = batch_size
        self.batch_timeout_s = batch_timeout_s
        self.waiting = WaitingQueue()

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def add(self, replica: "Replica", req: int) -> None:
        self.waiting.push(0, float(replica.table.arrival_s[req]), req)

    def should_interrupt(self, replica: "Replica", req: int) -> bool:
        return False  # a running batch never takes new members

    def schedule(self, replica: "Replica") -> StepPlan | Wait | None:
        if replica.running.n:
            raise RuntimeError("static batch still running at a scheduling point")  # engine runs batches to the end
        if not self.waiting:
            return None
        _, oldest_arrival_s, _ = self.waiting.peek()
        fill_deadline_s = oldest_arrival_s + self.batch_timeout_s
        if len(self.waiting) < self.batch_size and replica.now < fill_deadline_s:
            return Wait(fill_deadline_s)
        t, kv = replica.table, replica.kv
        batch = [self.waiting.pop() for _ in range(min(self.batch_size, len(self.waiting)))]
        rect = max(replica.tokens_known(r) for r in batch) + max(int(t.output_tokens[r]) for r in batch)
        admitted = 0
        for req in batch:
            if admitted and not kv.allocate(req, rect):
                self.add(replica, req)  # no room in this batch's rectangle: next batch
                continue
            if not admitted and not kv.allocate(req, rect):
                kv.allocate(req, replica.tokens_known(req) + int(t.output_tokens[req]))  # alone, unpadded
            replica.admit(req, replica.tokens_known(req))
            admitted += 1
        return StepPlan(follow="to_end", interruptible=False, padded=True)
