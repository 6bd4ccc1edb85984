"""What every scheduler shares: the plan it returns, the waiting queue, the protocol.

A scheduler decides *who* runs in the next step and how many tokens each computes;
it never computes time. It returns one of:

* `StepPlan` -- run one step now (tokens per running slot in `RunningBatch.chunk`),
  and say how far the engine may fast-forward plain decode steps afterwards without
  asking again (`follow`);
* `Wait(until_s)` -- nothing to run yet, ask again at `until_s` or at the next arrival;
* `None` -- idle until the next arrival.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ..engine import Replica

# After the planned step, decode-only steps may continue:
#   "none"             -- ask the scheduler again after this step
#   "until_completion" -- until the first running sequence finishes (then memory/slots free up)
#   "to_end"           -- until every running sequence finishes (bounded by KV capacity and a horizon)
Follow = Literal["none", "until_completion", "to_end"]


@dataclass(frozen=True)
class StepPlan:
    follow: Follow
    interruptible: bool  # may an arrival cut the fast-forward short (to join the batch)?
    padded: bool = False  # static batching: finished sequences keep costing as padding


@dataclass(frozen=True)
class Wait:
    until_s: float


class WaitingQueue:
    """Requests waiting to be scheduled, served in ascending (key, arrival, id) order."""

    def __init__(self):
        self._heap: list[tuple[int, float, int]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, key: int, arrival_s: float, req: int) -> None:
        heapq.heappush(self._heap, (key, arrival_s, req))

    def peek(self) -> tuple[int, float, int]:
        return self._heap[0]

    def pop(self) -> int:
        return heapq.heappop(self._heap)[2]


class Scheduler(Protocol):
    def add(self, replica: "Replica", req: int) -> None:
        """A request was routed here (or preempted) and waits."""

    def schedule(self, replica: "Replica") -> StepPlan | Wait | None:
        """Decide the next step: admit/preempt through `replica`'s mechanisms, fill `chunk`."""

    def should_interrupt(self, replica: "Replica", req: int) -> bool:
        """During a fast-forward, would `req` (just queued) change the next step? Always True for a
        request that found the queue empty during an interruptible run: the engine relies on it to end
        a run at an arrival it knows of in advance (sim/engine_small.py)."""

    @property
    def num_waiting(self) -> int: ...
