"""SimPy timeouts on the hot path, without the Timeout class's machinery.

`env.timeout(delay)` builds a bound class, checks the delay and calls `env.schedule`; `sleep` puts the same
entry on SimPy's heap (now + delay, NORMAL, the next event id) for an event that is already triggered with
no value: the same time, the same order among events, ~half the Python calls. For delays known to be >= 0.
"""
from __future__ import annotations

from heapq import heappush

from simpy.events import NORMAL, URGENT, Event, Timeout

_new = object.__new__


def sleep(env, delay: float) -> Timeout:
    """env.timeout(delay), scheduled as SimPy schedules it (delay >= 0)."""
    event = _new(Timeout)
    event.env, event.callbacks, event._ok, event._value, event._delay = env, [], True, None, delay
    heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), event))
    return event


def call_soon(env, callback) -> None:
    """Call `callback(event)` now, after the event in hand, as SimPy runs an interrupt: an event triggered
    with no value and scheduled urgent at the current time (env.schedule(event, URGENT))."""
    event = _new(Event)
    event.env, event.callbacks, event._ok, event._value = env, [callback], True, None
    heappush(env._queue, (env._now, URGENT, next(env._eid), event))
