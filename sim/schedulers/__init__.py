"""Scheduling policies by name. Each is small; they share `base.Scheduler`."""
from __future__ import annotations

from .base import Scheduler, StepPlan, Wait, WaitingQueue
from .continuous import ContinuousScheduler
from .static import StaticScheduler


def _fifo(cfg):
    # One request at a time, no batching: a static batch of one that never waits to fill.
    return StaticScheduler(batch_size=1, batch_timeout_s=0.0)


SCHEDULERS = {
    "fifo": _fifo,
    "static": lambda cfg: StaticScheduler(batch_size=cfg.batch_size, batch_timeout_s=cfg.batch_timeout_s),
    "continuous": lambda cfg: ContinuousScheduler(cfg, by_priority=False),
    "priority": lambda cfg: ContinuousScheduler(cfg, by_priority=True),
}

__all__ = ["SCHEDULERS", "Scheduler", "StepPlan", "Wait", "WaitingQueue", "ContinuousScheduler", "StaticScheduler"]
