"""The workload section of a scenario: arrivals, token lengths, priority classes, and their checks.

Frozen dataclasses validated at load (every problem names its field); a `LengthDist` also
knows its mean and how to draw from a generator. sim/workload.py turns a `WorkloadConfig`
into requests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .configio import require, require_range
from .conversation import ConversationConfig

# Bounds on workload numbers (see sim/scenario_config.py for the serving ones): generous for any real
# traffic, tight enough that numpy never overflows or allocates without limit.
MAX_TOKENS = 10_000_000  # one prompt or output; no model has a longer context
MAX_SIGMA = 5.0  # lognormal sigma: exp(5) is a 150x spread around the median already
MAX_RATE_PER_S = 1_000_000.0
MAX_QUERIES_PER_DAY = 1e10
MAX_REQUESTS = 100_000_000
MAX_CONCURRENCY = 1_000_000
MAX_DURATION_S = 366 * 86_400.0
MAX_PRIORITY_LEVEL = 1_000_000

# Which optional fields each kind reads; a field set for a kind that ignores it is an error
# (it is almost always a typo or a leftover from switching kinds).
_LENGTH_FIELDS = {
    "constant": {"value"},
    "uniform": {"min", "max"},
    "lognormal": {"min", "max", "mean", "sigma"},
    "empirical": {"values"},
}
_ARRIVAL_FIELDS = {
    "poisson": {"rate_per_s"},
    "gamma": {"rate_per_s", "cv"},
    "daily": {"queries_per_day", "hourly_weights", "hours"},
    "trace": {"path", "time_scale"},
    "closed_loop": {"concurrency", "think_time_s", "start_spread_s"},
}
# Fields with a non-None default: "set" means "differs from the default".
_ARRIVAL_DEFAULTS = {"time_scale": 1.0, "think_time_s": 0.0}


def _require_only(obj: object, kind: str, used: set[str], candidates: dict[str, set[str]], path: str,
                  defaults: dict[str, object] | None = None) -> None:
    defaults = defaults or {}
    for name in sorted(set().union(*candidates.values()) - used):
        value = getattr(obj, name)
        if value != defaults.get(name):
            users = sorted(k for k, fields in candidates.items() if name in fields)
            require(False, f"{path}.{name}", value, f"not used by kind {kind!r} (only by {users}); remove it")


def _require_set(value: object, path: str, kind: str) -> None:
    require(value is not None, path, value, f"required for kind {kind!r}")


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution; every draw is an integer in [1, upper_bound].

    constant: always `value`. uniform: integers in [min, max], both inclusive.
    lognormal: round(X) clipped to [min (default 1), max] with log X ~ Normal(mu, sigma) and
    mu = ln(mean) - sigma^2/2, so `mean` is the arithmetic mean in tokens before clipping.
    empirical: draws from `values` with replacement, each entry equally likely.
    """

    kind: Literal["constant", "uniform", "lognormal", "empirical"]
    value: int | None = None
    min: int | None = None
    max: int | None = None
    mean: float | None = None
    sigma: float | None = None
    values: tuple[int, ...] | None = None

    def validate(self, path: str) -> None:
        _require_only(self, self.kind, _LENGTH_FIELDS[self.kind], _LENGTH_FIELDS, path)
        if self.kind == "constant":
            _require_set(self.value, f"{path}.value", self.kind)
            require_range(self.value, f"{path}.value", 1, MAX_TOKENS, "tokens")
        elif self.kind == "uniform":
            _require_set(self.min, f"{path}.min", self.kind)
            _require_set(self.max, f"{path}.max", self.kind)
            require_range(self.min, f"{path}.min", 1, MAX_TOKENS, "tokens")
            require(self.max >= self.min, f"{path}.max", self.max, f"must be >= min ({self.min})")
            require_range(self.max, f"{path}.max", 1, MAX_TOKENS, "tokens")
        elif self.kind == "lognormal":
            _require_set(self.mean, f"{path}.mean", self.kind)
            _require_set(self.sigma, f"{path}.sigma", self.kind)
            _require_set(self.max, f"{path}.max", self.kind)
            require_range(self.mean, f"{path}.mean", 0.0, float(MAX_TOKENS), "tokens", lo_open=True)
            require_range(self.sigma, f"{path}.sigma", 0.0, MAX_SIGMA)
            lo = 1 if self.min is None else self.min
            require_range(self.min, f"{path}.min", 1, MAX_TOKENS, "tokens")
            require(self.max >= lo, f"{path}.max", self.max, f"must be >= min ({lo})")
            require_range(self.max, f"{path}.max", 1, MAX_TOKENS, "tokens")
            require(lo <= self.mean <= self.max, f"{path}.mean", self.mean,
                    f"must lie within [min, max] = [{lo}, {self.max}] tokens")
        else:
            _require_set(self.values, f"{path}.values", self.kind)
            require(len(self.values) > 0, f"{path}.values", self.values, "must list at least one length")
            bad = [v for v in self.values if not 1 <= v <= MAX_TOKENS]
            require(not bad, f"{path}.values", bad, f"every length must be in 1..{MAX_TOKENS:,} tokens")
            require(len(self.values) <= MAX_REQUESTS, f"{path}.values", len(self.values),
                    f"at most {MAX_REQUESTS:,} entries")

    @property
    def upper_bound(self) -> int:
        """The largest length this distribution can produce, in tokens."""
        if self.kind == "constant":
            return self.value
        if self.kind == "empirical":
            return max(self.values)
        return self.max

    @property
    def mean_tokens(self) -> float:
        """Expected length in tokens.

        For lognormal this is the exact mean of the continuous lognormal clipped to
        [min, max]; the rounding to whole tokens is ignored (its bias is far below a token).
        """
        if self.kind == "constant":
            return float(self.value)
        if self.kind == "uniform":
            return (self.min + self.max) / 2.0
        if self.kind == "empirical":
            return float(np.mean(self.values))
        lo, hi, s = float(1 if self.min is None else self.min), float(self.max), self.sigma
        if s == 0:
            return min(max(self.mean, lo), hi)
        mu = math.log(self.mean) - s * s / 2.0
        z_lo, z_hi = (math.log(lo) - mu) / s, (math.log(hi) - mu) / s
        # E[X; lo <= X <= hi] for a lognormal = mean * (Phi(z_hi - s) - Phi(z_lo - s)).
        inside = self.mean * (_normal_cdf(z_hi - s) - _normal_cdf(z_lo - s))
        return lo * _normal_cdf(z_lo) + inside + hi * (1.0 - _normal_cdf(z_hi))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` int64 lengths drawn from `rng`."""
        if self.kind == "constant":
            return np.full(n, self.value, dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(self.min, self.max, endpoint=True, size=n, dtype=np.int64)
        if self.kind == "empirical":
            return rng.choice(np.asarray(self.values, dtype=np.int64), size=n)
        mu = math.log(self.mean) - self.sigma**2 / 2.0
        lo = 1 if self.min is None else self.min
        return np.clip(np.rint(rng.lognormal(mu, self.sigma, size=n)), lo, self.max).astype(np.int64)


@dataclass(frozen=True)
class ArrivalConfig:
    """When requests arrive.

    poisson: exponential gaps at `rate_per_s`. gamma: gamma gaps with mean 1/rate_per_s and
    coefficient of variation `cv` (1 is Poisson, > 1 bursty, < 1 regular).
    daily: an hourly Poisson process with `queries_per_day * w_h / sum(w)` expected arrivals in
    hour h (sum over all 24 weights, so simulating a subset of `hours` gives that subset's share
    of the day). The listed `hours` (sorted, any subset) are laid back to back in simulated
    time: the k-th listed hour covers [k*3600, (k+1)*3600) s, whatever its clock hour.
    trace: replay a trace file (CSV, Parquet, Mooncake or OpenAI-log JSONL, vLLM bench detailed JSON;
    see sim/traces.py); `time_scale` multiplies the gaps (0.5 = twice as fast).
    closed_loop: `concurrency` clients, each with one request in flight, waiting `think_time_s`
    between a response and its next request; the simulator issues the arrivals. Client k sends its
    first request at a time drawn uniformly from [0, `start_spread_s`) (seeded): real clients are not
    in phase, and a simulation has no noise to spread them, so equal clients started together would
    stay in lockstep (their prompts reach the engine in the same instant, wave after wave). null (the
    default): one request's expected duration, so the clients are spread over a cycle as in a
    steady state; 0: all start at t = 0 (lockstep).
    """

    kind: Literal["poisson", "gamma", "daily", "trace", "closed_loop"]
    rate_per_s: float | None = None
    cv: float | None = None
    queries_per_day: float | None = None
    hourly_weights: tuple[float, ...] | None = None
    hours: tuple[int, ...] | None = None
    path: str | None = None
    time_scale: float = 1.0
    concurrency: int | None = None
    think_time_s: float = 0.0
    start_spread_s: float | None = None

    def expected_queries_per_hour(self) -> np.ndarray:
        """daily: the expected arrivals in each clock hour 0..23, `queries_per_day * w_h / sum(w)`
        (flat when no weights are given). The one place this is computed: the arrivals draw their
        counts from it, the planner its hourly rates, validation the expected request count."""
        weights = np.asarray(self.hourly_weights if self.hourly_weights is not None else [1.0] * 24, dtype=float)
        return self.queries_per_day * weights / weights.sum()

    def validate(self, path: str) -> None:
        _require_only(self, self.kind, _ARRIVAL_FIELDS[self.kind], _ARRIVAL_FIELDS, path, _ARRIVAL_DEFAULTS)
        if self.kind in ("poisson", "gamma"):
            _require_set(self.rate_per_s, f"{path}.rate_per_s", self.kind)
            require_range(self.rate_per_s, f"{path}.rate_per_s", 0.0, MAX_RATE_PER_S, "requests/s", lo_open=True)
        if self.kind == "gamma":
            _require_set(self.cv, f"{path}.cv", self.kind)
            require_range(self.cv, f"{path}.cv", 0.0, 100.0, "(1 is Poisson)", lo_open=True)
        if self.kind == "daily":
            _require_set(self.queries_per_day, f"{path}.queries_per_day", self.kind)
            require_range(self.queries_per_day, f"{path}.queries_per_day", 0.0, MAX_QUERIES_PER_DAY, "queries",
                          lo_open=True)
            if self.hourly_weights is not None:
                w = self.hourly_weights
                require(len(w) == 24, f"{path}.hourly_weights", w, f"must have 24 entries (hours 0..23), not {len(w)}")
                require(all(x >= 0 for x in w) and sum(w) > 0, f"{path}.hourly_weights", w,
                        "weights must be >= 0 with a positive sum")
            if self.hours is not None:
                h = self.hours
                require(len(h) > 0, f"{path}.hours", h, "must list at least one hour")
                require(all(0 <= x <= 23 for x in h), f"{path}.hours", h, "hours must be in 0..23")
                require(all(a < b for a, b in zip(h, h[1:])), f"{path}.hours", h,
                        "must be strictly increasing (sorted, no repeats)")
        if self.kind == "trace":
            _require_set(self.path, f"{path}.path", self.kind)
            require(self.path.strip() != "", f"{path}.path", self.path,
                    "must name a trace file (.csv, .parquet, .jsonl, .json)")
            require_range(self.time_scale, f"{path}.time_scale", 0.0, 1e6, lo_open=True)
        if self.kind == "closed_loop":
            _require_set(self.concurrency, f"{path}.concurrency", self.kind)
            require_range(self.concurrency, f"{path}.concurrency", 1, MAX_CONCURRENCY, "clients")
            require_range(self.think_time_s, f"{path}.think_time_s", 0.0, 86_400.0, "s")
            require_range(self.start_spread_s, f"{path}.start_spread_s", 0.0, 86_400.0,
                          "s (null: one expected request duration)")


@dataclass(frozen=True)
class PriorityClass:
    """A share of the requests with one priority level (0 is the most urgent)."""

    name: str
    share: float
    level: int
    shared_prefix_tokens: int | None = None  # this class's system prompt (default: the workload's)

    def validate(self, path: str) -> None:
        require(self.name.strip() != "", f"{path}.name", self.name, "must be a non-empty name")
        require(0 <= self.share <= 1, f"{path}.share", self.share, "must be a fraction in [0, 1]")
        require_range(self.level, f"{path}.level", 0, MAX_PRIORITY_LEVEL, "(0 is most urgent)")
        if self.shared_prefix_tokens is not None:
            require_range(self.shared_prefix_tokens, f"{path}.shared_prefix_tokens", 0, MAX_TOKENS, "tokens")


@dataclass(frozen=True)
class WorkloadConfig:
    """The workload section of a scenario.

    Arrivals stop at `num_requests` or at `duration_s` of simulated time, whichever comes
    first. poisson/gamma need at least one of them; closed_loop needs `num_requests`;
    daily defaults to the listed hours and trace to the whole file. Traces carry their own
    lengths, so `prompt_tokens`/`output_tokens` are required for every other kind and
    must be omitted for trace.
    """

    arrival: ArrivalConfig
    prompt_tokens: LengthDist | None = None
    output_tokens: LengthDist | None = None
    num_requests: int | None = None
    duration_s: float | None = None
    priorities: tuple[PriorityClass, ...] = ()
    # The first tokens of every prompt are a system prompt shared by its priority class (one per
    # class; a prompt shorter than it is all system prompt). Reused across requests only with
    # serving.enable_prefix_caching.
    shared_prefix_tokens: int = 0
    # Multi-turn conversations (sim/conversation.py): the arrivals start conversations, each turn's
    # prompt extends the previous turn's prompt and output, and prompt_tokens is each new message.
    conversation: ConversationConfig | None = None

    def validate(self, path: str) -> None:
        kind = self.arrival.kind
        require_range(self.shared_prefix_tokens, f"{path}.shared_prefix_tokens", 0, MAX_TOKENS, "tokens")
        if self.conversation is not None:
            self.conversation.validate(f"{path}.conversation")
            require(kind in ("poisson", "gamma", "daily"), f"{path}.arrival.kind", kind,
                    "conversation needs poisson, gamma or daily arrivals (they start conversations)")
            require(self.shared_prefix_tokens == 0, f"{path}.shared_prefix_tokens", self.shared_prefix_tokens,
                    "must be 0 with conversation (a request shares one prefix stream: its conversation)")
            for i, p in enumerate(self.priorities):
                require(not p.shared_prefix_tokens, f"{path}.priorities[{i}].shared_prefix_tokens",
                        p.shared_prefix_tokens, "must be unset or 0 with conversation (a request shares one "
                        "prefix stream: its conversation)")
        for name in ("prompt_tokens", "output_tokens"):
            value = getattr(self, name)
            if kind == "trace":
                require(value is None, f"{path}.{name}", value, "must be omitted for trace arrivals (the trace carries lengths)")
            else:
                require(value is not None, f"{path}.{name}", value, f"required for {kind!r} arrivals")
        if self.num_requests is not None:
            require_range(self.num_requests, f"{path}.num_requests", 1, MAX_REQUESTS, "requests")
        require_range(self.duration_s, f"{path}.duration_s", 0.0, MAX_DURATION_S, "s", lo_open=True)
        if kind in ("poisson", "gamma"):
            require(self.num_requests is not None or self.duration_s is not None, f"{path}.num_requests",
                    None, f"{kind!r} arrivals need num_requests or duration_s (or both)")
        if kind == "closed_loop":
            require(self.num_requests is not None, f"{path}.num_requests", None, "required for closed_loop arrivals")
        expected = self.expected_requests
        require(expected <= MAX_REQUESTS, f"{path}.num_requests", self.num_requests,
                f"the arrivals would make about {expected:.3g} requests; at most {MAX_REQUESTS:,} per run "
                f"(set num_requests or a shorter duration_s)")
        if self.priorities:
            shares = [p.share for p in self.priorities]
            require(abs(sum(shares) - 1.0) <= 1e-6, f"{path}.priorities", shares,
                    f"shares must sum to 1 (they sum to {sum(shares):.9g})")
            names = [p.name for p in self.priorities]
            require(len(set(names)) == len(names), f"{path}.priorities", names, "names must be unique")
            levels = [p.level for p in self.priorities]
            require(len(set(levels)) == len(levels), f"{path}.priorities", levels, "levels must be unique")


    @property
    def expected_requests(self) -> float:
        """About how many requests the arrivals generate (traces: 0, they are read, not drawn)."""
        a = self.arrival
        n = math.inf if self.num_requests is None else float(self.num_requests)
        per_arrival = self.conversation.turns if self.conversation is not None else 1  # an arrival starts a conversation
        if a.kind in ("poisson", "gamma"):
            return min(n, per_arrival * a.rate_per_s * (math.inf if self.duration_s is None else self.duration_s))
        if a.kind == "daily":
            per_hour = a.expected_queries_per_hour()
            per_window = float(per_hour[list(a.hours)].sum() if a.hours is not None else per_hour.sum())
            return min(n, per_arrival * per_window)
        return 0.0 if a.kind == "trace" else n
