"""Workloads: who arrives when, with how many prompt and output tokens, at what priority.

`generate_workload` turns a `WorkloadConfig` (the typed scenario section, sim/workload_config.py,
re-exported here) into a `Workload`, a struct of numpy arrays sorted by arrival time. Generation
is vectorised (a million requests in well under a second) and draws from one named random stream
per source ("arrivals", "prompt_tokens", "output_tokens", "priority"), so changing, say, the
output-length distribution never moves an arrival time or a prompt length.
"""
from __future__ import annotations

import math
import pathlib
from dataclasses import dataclass, field

import numpy as np

from .conversation import expand_turns, turn_prompts
from .rng import stream
from .traces import AZURE_TRACE_COLUMNS, TRACE_COLUMNS, load_trace, read_trace  # noqa: F401 (re-exported)
from .workload_config import (  # noqa: F401 (re-exported: callers import the section from here)
    MAX_REQUESTS, MAX_TOKENS, ArrivalConfig, LengthDist, PriorityClass, WorkloadConfig)

SECONDS_PER_HOUR = 3600.0


@dataclass
class Workload:
    """Requests as a struct of arrays, sorted by arrival time (row i is request i).

    `duration_s` is the arrival window in seconds: the configured duration when arrivals were
    cut by it, the last arrival time when cut by num_requests (or, for trace, the span of the
    file), and listed-hours * 3600 for daily. closed_loop: arrival_s is all NaN (the simulator
    issues requests) and duration_s is the configured limit, inf when none.
    `notes` lists adjustments made while loading (e.g. clamped trace rows).
    """

    arrival_s: np.ndarray  # float64 seconds from t=0
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    priority: np.ndarray  # int64 level, 0 most urgent
    priority_names: dict[int, str]
    duration_s: float
    concurrency: int | None = None
    think_time_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    hash_ids: list[list[int]] | None = None  # trace replays that carry them (Mooncake): per request, its
    hash_block_tokens: int | None = None  # prompt's block hashes (equal ids = shared prefix), tokens per id
    start_spread_s: float | None = 0.0  # closed loop: first sends uniform over [0, this); None: one request's duration
    # Shared prefixes: request i's first prefix_tokens[i] tokens are the first tokens of stream
    # prefix_group[i] (a class's system prompt, or a conversation: then all of its tokens, outputs
    # included). None: no request shares any token.
    prefix_group: np.ndarray | None = None
    prefix_tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def offered_rate_per_s(self) -> float:
        """Arrivals per second over the window; NaN for closed loop (the rate is an outcome)."""
        if self.concurrency is not None or self.duration_s <= 0:
            return math.nan
        return len(self) / self.duration_s


def _renewal_arrivals(rng: np.random.Generator, rate_per_s: float, cv: float,
                      n_max: int | None, t_max: float | None) -> np.ndarray:
    """Arrival times of a renewal process with gamma gaps (cv=1: exponential), cut at n_max / t_max."""
    shape = 1.0 / cv**2
    scale = cv**2 / rate_per_s  # shape * scale = 1 / rate
    chunks, count, t0 = [], 0, 0.0
    while True:
        if t_max is None:
            size = n_max - count
        else:
            expected = rate_per_s * (t_max - t0)
            size = int(expected + 6.0 * cv * math.sqrt(expected) + 16)  # almost always one chunk
            if n_max is not None:
                size = min(size, n_max - count)
        gaps = rng.exponential(1.0 / rate_per_s, size) if cv == 1.0 else rng.gamma(shape, scale, size)
        times = t0 + np.cumsum(gaps)
        chunks.append(times)
        count, t0 = count + size, float(times[-1])
        if (n_max is not None and count >= n_max) or (t_max is not None and t0 >= t_max):
            break
    arrivals = np.concatenate(chunks)
    return arrivals if t_max is None else arrivals[arrivals < t_max]


def _daily_arrivals(rng: np.random.Generator, cfg: ArrivalConfig) -> tuple[np.ndarray, float]:
    hours = np.asarray(cfg.hours if cfg.hours is not None else range(24), dtype=np.int64)
    expected = cfg.expected_queries_per_hour()[hours]
    counts = rng.poisson(expected)
    starts = np.repeat(np.arange(len(hours)) * SECONDS_PER_HOUR, counts)
    arrivals = np.sort(starts + rng.uniform(0.0, SECONDS_PER_HOUR, size=int(counts.sum())))
    return arrivals, len(hours) * SECONDS_PER_HOUR


def generate_workload(cfg: WorkloadConfig, seed: int, base_dir: pathlib.Path | None = None) -> Workload:
    """Draw the requests of `cfg` for run `seed`. Relative trace paths resolve against `base_dir`
    (the scenario file's folder; the working directory when None)."""
    arrival = cfg.arrival
    rng = stream(seed, "arrivals")
    notes: list[str] = []
    prompt = output = None
    hash_ids, hash_block_tokens = None, None
    if arrival.kind == "closed_loop":
        arrival_s, window_s = np.full(cfg.num_requests, np.nan), math.inf  # the simulator issues them
    elif arrival.kind == "trace":
        file = pathlib.Path(arrival.path)
        if not file.is_absolute() and base_dir is not None:
            file = pathlib.Path(base_dir) / file
        trace = load_trace(file)
        arrival_s, prompt, output, notes = trace.arrival_s, trace.prompt_tokens, trace.output_tokens, trace.notes
        hash_ids, hash_block_tokens = trace.hash_ids, trace.hash_block_tokens
        arrival_s = arrival_s * arrival.time_scale
        window_s = float(arrival_s[-1])
    elif arrival.kind == "daily":
        arrival_s, window_s = _daily_arrivals(rng, arrival)
    else:
        cv = arrival.cv if arrival.kind == "gamma" else 1.0
        n_max = cfg.num_requests if cfg.conversation is None else cfg.conversation.conversations_for(cfg.num_requests)
        arrival_s = _renewal_arrivals(rng, arrival.rate_per_s, cv, n_max, cfg.duration_s)
        window_s = math.nan  # set by the cuts below
    turns = None
    if cfg.conversation is not None:  # the arrivals above start conversations; these are their turns
        turns = expand_turns(cfg.conversation, arrival_s, stream(seed, "turn_gaps"))
        arrival_s = turns.arrival_s

    if arrival.kind == "closed_loop":
        window_s = math.inf if cfg.duration_s is None else cfg.duration_s
    else:
        if cfg.duration_s is not None and not cfg.duration_s >= window_s:  # also when window_s is NaN
            arrival_s, window_s = arrival_s[arrival_s < cfg.duration_s], cfg.duration_s
        if cfg.num_requests is not None and len(arrival_s) >= cfg.num_requests:
            arrival_s = arrival_s[: cfg.num_requests]
            window_s = float(arrival_s[-1])

    n = len(arrival_s)
    if prompt is None:
        prompt = cfg.prompt_tokens.sample(stream(seed, "prompt_tokens"), n)
        output = cfg.output_tokens.sample(stream(seed, "output_tokens"), n)
        if turns is not None:  # the draws are each turn's new message; its prompt is the conversation so far
            conversation, turn = turns.conversation[:n], turns.turn[:n]
            prompt = turn_prompts(conversation, turn, prompt, output)
    else:
        prompt, output = prompt[:n], output[:n]
        hash_ids = hash_ids[:n] if hash_ids is not None else None

    if cfg.priorities:
        levels = np.asarray([p.level for p in cfg.priorities], dtype=np.int64)
        shares = np.asarray([p.share for p in cfg.priorities], dtype=float)
        if turns is None:
            priority = stream(seed, "priority").choice(levels, size=n, p=shares / shares.sum())
        else:  # one class per conversation
            per_conv = stream(seed, "priority").choice(levels, size=int(conversation.max(initial=-1)) + 1,
                                                       p=shares / shares.sum())
            priority = per_conv[conversation]
        names = {p.level: p.name for p in cfg.priorities}
    else:
        priority, names = np.zeros(n, dtype=np.int64), {0: "default"}

    system = {p.level: p.shared_prefix_tokens for p in cfg.priorities if p.shared_prefix_tokens is not None}
    prefix_group = prefix_tokens = None
    if cfg.shared_prefix_tokens or any(system.values()):
        per_level = np.array([system.get(lvl, cfg.shared_prefix_tokens) for lvl in range(int(priority.max(initial=0)) + 1)],
                             dtype=np.int64)
        prefix_group = priority.astype(np.int64)
        prefix_tokens = np.minimum(per_level[priority], prompt)
    if turns is not None:  # a conversation is one stream: every token of its turns is the stream's
        prefix_group, prefix_tokens = conversation.copy(), prompt + output

    return Workload(arrival_s=arrival_s, prompt_tokens=prompt, output_tokens=output, priority=priority,
                    priority_names=names, duration_s=window_s,
                    concurrency=arrival.concurrency if arrival.kind == "closed_loop" else None,
                    think_time_s=arrival.think_time_s, notes=notes, hash_ids=hash_ids,
                    hash_block_tokens=hash_block_tokens,
                    start_spread_s=arrival.start_spread_s if arrival.kind == "closed_loop" else 0.0,
                    prefix_group=prefix_group, prefix_tokens=prefix_tokens)
