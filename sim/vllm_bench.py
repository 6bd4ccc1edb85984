"""A run's results as `vllm bench serve --save-result` writes them: the same keys, units and statistics.

vLLM (vllm/benchmarks/serve.py, `calculate_metrics` and `benchmark`) reports, in milliseconds:
mean / median / std (population, numpy's default) and the `--metric-percentiles` (numpy's linear
interpolation) of each metric named by `--percentile-metrics` (default "ttft,tpot,itl"), keyed
`mean_ttft_ms`, `median_ttft_ms`, `std_ttft_ms`, `p99_ttft_ms` (`p99.9_ttft_ms` for 99.9), and
the totals and rates `duration`, `completed`, `failed`, `total_input_tokens`,
`total_output_tokens`, `request_throughput`, `request_goodput`, `output_throughput`,
`total_token_throughput`, `max_output_tokens_per_s`, `max_concurrent_requests`. With
`--save-detailed` it keeps the per-request lists `input_lens`, `output_lens`, `ttfts`, `itls`,
`start_times`, `generated_texts`, `errors` (seconds, one entry per request in send order).

Two things servesim does not record by default, and how they are written (also under the
`servesim` key):
- ITL statistics come from the run's log-binned histogram of every token's gap (bins ~1.2 %
  wide: medians and percentiles are bin centres, not interpolated samples).
- A run keeps each request's first-token and finish times, not every token's. Run with
  `record_token_times=True` (the CLI does for `--save-detailed`) and `itls[i]` holds the real
  gaps between the steps that gave request i tokens, one per streamed chunk as vLLM's client
  records them; otherwise it spaces the tokens evenly between first token and finish
  ((E2E - TTFT) / (out - 1) each): TPOT exact, per-token jitter absent.
  `max_output_tokens_per_s` is counted over evenly spaced token times either way.
"""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Iterable

import numpy as np

from .configio import ConfigError, short_repr
from .histogram import EDGES_S, LogHistogram
from .simulation import Results

PERCENTILE_METRICS = ("ttft", "tpot", "itl", "e2el")
DEFAULT_PERCENTILE_METRICS = ("ttft", "tpot", "itl")  # vLLM's default for generative models
DEFAULT_PERCENTILES = (99.0,)  # vLLM's --metric-percentiles default
DETAILED_KEYS = ("input_lens", "output_lens", "start_times", "ttfts", "itls", "generated_texts", "errors")
_ITLS_EVEN = "itls: each request's tokens spaced evenly between its first token and its finish"
_ITLS_RECORDED = ("itls: the gaps between the engine steps that gave each request tokens, as a streaming "
                  "client receives them (a speculative step's tokens arrive together, as one gap)")
_TOKEN_CHUNK = 4_000_000  # token times materialised at once when counting the peak output rate


def parse_percentiles(text: str, flag: str = "--metric-percentiles") -> tuple[float, ...]:
    """"25,50,99.9" -> (25.0, 50.0, 99.9); each in 0..100, as numpy's percentile allows."""
    values = []
    for part in str(text).split(","):
        try:
            p = float(part)
        except ValueError:
            raise ConfigError(f"{flag}: got {short_repr(part.strip())}; expected comma-separated numbers "
                              f"in 0..100, e.g. 50,90,99") from None
        if not (math.isfinite(p) and 0 <= p <= 100):
            raise ConfigError(f"{flag}: got {short_repr(part.strip())}; each percentile must be in 0..100")
        values.append(p)
    return tuple(values)


def parse_percentile_metrics(text: str, flag: str = "--percentile-metrics") -> tuple[str, ...]:
    names = tuple(p.strip() for p in str(text).split(","))
    for n in names:
        if n not in PERCENTILE_METRICS:
            raise ConfigError(f"{flag}: got {short_repr(n)}; allowed: {', '.join(PERCENTILE_METRICS)} "
                              f"(comma-separated)")
    return names


GOODPUT_SLO_FIELDS = {"ttft": "slo.ttft_s", "tpot": "slo.tpot_s", "e2el": "slo.e2e_s"}


def goodput_overrides(pairs: Iterable[str], flag: str = "--goodput") -> list[str]:
    """vLLM's `--goodput ttft:500 tpot:50` (milliseconds) as `--set slo.ttft_s=0.5 ...` assignments."""
    out = []
    for pair in pairs:
        name, sep, value = str(pair).partition(":")
        if not sep or name not in GOODPUT_SLO_FIELDS:
            raise ConfigError(f"{flag}: got {short_repr(pair)}; expected KEY:VALUE in ms with KEY one of "
                              f"{', '.join(GOODPUT_SLO_FIELDS)} (e.g. ttft:500 tpot:50)")
        try:
            ms = float(value)
        except ValueError:
            ms = math.nan
        if not (math.isfinite(ms) and ms > 0):
            raise ConfigError(f"{flag}: got {short_repr(pair)}; the bound must be a positive number of ms")
        seconds = f"{ms / 1000.0:.12f}".rstrip("0")  # plain decimals: YAML reads 1e-06 as a string
        out.append(f"{GOODPUT_SLO_FIELDS[name]}={seconds}0" if seconds.endswith(".") else
                   f"{GOODPUT_SLO_FIELDS[name]}={seconds}")
    return out


def percentile_key(p: float, metric: str) -> str:
    """vLLM's key for a percentile: p99_ttft_ms, p99.9_ttft_ms."""
    word = str(int(p)) if int(p) == p else str(p)
    return f"p{word}_{metric}_ms"


def _stats_ms(values: np.ndarray, percentiles: Iterable[float]) -> dict[str, float]:
    """mean / median / std / percentiles in ms, as vLLM computes them (an empty list counts as [0])."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        v = np.zeros(1)
    out = {"mean": float(np.mean(v)) * 1000, "median": float(np.median(v)) * 1000, "std": float(np.std(v)) * 1000}
    for p in percentiles:
        out[p] = float(np.percentile(v, p)) * 1000
    return out


def _histogram_stats_ms(h: LogHistogram, percentiles: Iterable[float]) -> dict[str, float]:
    """The same statistics over the log-binned ITL histogram (values at geometric bin centres)."""
    h.flush()
    counts = h.counts.astype(np.float64)
    centres = np.concatenate(([EDGES_S[0]], np.sqrt(EDGES_S[:-1] * EDGES_S[1:]), [EDGES_S[-1]]))
    total = counts.sum()
    if total == 0:
        return _stats_ms(np.zeros(0), percentiles)
    mean = float((counts * centres).sum() / total)
    std = float(math.sqrt(max((counts * (centres - mean) ** 2).sum() / total, 0.0)))
    out = {"mean": mean * 1000, "median": h.percentile_s(50) * 1000, "std": std * 1000}
    for p in percentiles:
        out[p] = h.percentile_s(p) * 1000
    return out


def _peaks(start: np.ndarray, first: np.ndarray, finish: np.ndarray, out: np.ndarray) -> tuple[float, int]:
    """vLLM's max_output_tokens_per_s and max_concurrent_requests: per 1-s bucket from the first
    send, tokens emitted (evenly spaced from first token to finish) and requests in flight."""
    if len(start) == 0:
        return 0.0, 0
    t0 = float(start.min())
    n_buckets = int(np.ceil(float(finish.max()) - t0)) + 1
    tokens = np.zeros(n_buckets, dtype=np.int64)
    gap = np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), 0.0)
    bounds = np.concatenate(([0], np.cumsum(out)))
    i = 0
    while i < len(out):  # chunks of requests, so a long run never holds every token's time at once
        j = int(np.searchsorted(bounds, bounds[i] + _TOKEN_CHUNK, side="right")) - 1
        j = max(j, i + 1)
        counts = out[i:j]
        step = np.arange(int(counts.sum())) - np.repeat(bounds[i:j] - bounds[i], counts)
        times = np.repeat(first[i:j], counts) + step * np.repeat(gap[i:j], counts)
        b = (times - t0).astype(np.int64)
        b = b[(b >= 0) & (b < n_buckets)]
        tokens += np.bincount(b, minlength=n_buckets)
        i = j
    live = np.zeros(n_buckets + 1, dtype=np.int64)
    s0 = (start - t0).astype(np.int64)
    s1 = (finish - t0).astype(np.int64)
    np.add.at(live, s0, 1)
    np.add.at(live, np.minimum(s1 + 1, n_buckets), -1)
    return float(tokens.max()), int(np.cumsum(live)[:n_buckets].max())


def _traffic(results: Results) -> tuple[Any, float, int | None]:
    """(request_rate, burstiness, max_concurrency) as vLLM's arguments would have read."""
    a = results.scenario.workload.arrival
    if a.kind == "closed_loop":
        return "inf", 1.0, a.concurrency
    if a.kind in ("poisson", "gamma"):
        # vLLM draws gamma gaps with shape = burstiness: cv = 1 / sqrt(burstiness).
        return a.rate_per_s, 1.0 if a.kind == "poisson" else 1.0 / a.cv**2, None
    rate = results.offered_rate_per_s
    return (rate if math.isfinite(rate) else "inf"), 1.0, None


def bench_result(results: Results, percentiles: Iterable[float] = DEFAULT_PERCENTILES,
                 metrics: Iterable[str] = DEFAULT_PERCENTILE_METRICS, detailed: bool = False,
                 version: str = "unknown", traffic: tuple[Any, float, int | None] | None = None) -> dict[str, Any]:
    """The `vllm bench serve --save-result` document for a run (see the module docstring).

    `traffic` = (request_rate, burstiness, max_concurrency) when the run's workload did not come
    from its scenario (a replay); by default they are read from the scenario's arrivals."""
    percentiles = tuple(percentiles)
    metrics = tuple(metrics)
    sc = results.scenario
    req = results.requests.sort_values(["arrival_s", "request_id"], kind="stable")
    failed_col = req["failed"].to_numpy(dtype=bool) if "failed" in req else np.zeros(len(req), dtype=bool)
    ok = np.isfinite(req["finish_s"].to_numpy()) & ~failed_col
    arrival = req["arrival_s"].to_numpy(dtype=np.float64)
    first = req["first_token_s"].to_numpy(dtype=np.float64)
    finish = req["finish_s"].to_numpy(dtype=np.float64)
    out_len = np.where(ok, req["output_tokens"].to_numpy(dtype=np.int64), 0)
    in_len = req["prompt_tokens"].to_numpy(dtype=np.int64)
    ttft = np.where(ok, first - arrival, 0.0)
    e2el = np.where(ok, finish - arrival, 0.0)
    tpot = ((e2el - ttft) / np.maximum(out_len - 1, 1))[ok & (out_len > 1)]
    completed = int(ok.sum())
    if completed:
        duration = float(finish[ok].max() - np.nanmin(arrival))
    else:
        duration = math.nan
    total_in, total_out = int(in_len[ok].sum()), int(out_len.sum())
    per_s = (lambda x: x / duration) if duration and math.isfinite(duration) else (lambda x: math.nan)
    slo = sc.slo
    goodput = None
    if any(v is not None for v in (slo.ttft_s, slo.tpot_s, slo.e2e_s)):
        # vLLM: a request with <= 1 output token has TPOT 0 for goodput; a bound is met when value <= bound.
        tpot_all = np.where(out_len > 1, (e2el - ttft) / np.maximum(out_len - 1, 1), 0.0)
        good = ok.copy()
        for value, bound in ((ttft, slo.ttft_s), (tpot_all, slo.tpot_s), (e2el, slo.e2e_s)):
            if bound is not None:
                good &= value <= bound
        goodput = per_s(int(good.sum()))
    rate, burstiness, concurrency = traffic if traffic is not None else _traffic(results)
    peak_tokens, peak_live = _peaks(arrival[ok], first[ok], finish[ok], out_len[ok])
    doc: dict[str, Any] = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": "servesim", "backend": "servesim", "label": "servesim",
        "model_id": sc.model_spec.name, "tokenizer_id": sc.model_spec.name,
        "num_prompts": int(len(req)),
        "request_rate": rate, "burstiness": burstiness, "max_concurrency": concurrency,
        "duration": duration, "completed": completed, "failed": int(failed_col.sum()),
        "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput": per_s(completed), "request_goodput": goodput,
        "output_throughput": per_s(total_out), "total_token_throughput": per_s(total_in + total_out),
        "latencies": e2el.tolist(), "queue_times": [0.0] * len(req),
        "max_output_tokens_per_s": peak_tokens, "max_concurrent_requests": peak_live, "rtfx": 0.0,
    }
    if detailed:
        gap = np.where(out_len > 1, (e2el - ttft) / np.maximum(out_len - 1, 1), 0.0)
        doc["input_lens"] = in_len.tolist()
        doc["output_lens"] = out_len.tolist()
        doc["ttfts"] = ttft.tolist()
        if results.token_times is not None:  # recorded: the gaps between the chunks a client received
            ids = req["request_id"].to_numpy(dtype=np.int64)
            doc["itls"] = [results.token_times.itls(int(i)).tolist() if good_i else []
                           for i, good_i in zip(ids, ok)]
        else:
            doc["itls"] = [[float(g)] * max(int(n) - 1, 0) for g, n in zip(gap, out_len)]
        doc["start_times"] = np.where(np.isfinite(arrival), arrival, 0.0).tolist()
        doc["generated_texts"] = [""] * len(req)
        doc["errors"] = ["" if good_i else ("failed" if f else "unfinished: the run stopped early")
                         for good_i, f in zip(ok, failed_col)]
    values = {"ttft": lambda: _stats_ms(ttft[ok], percentiles), "tpot": lambda: _stats_ms(tpot, percentiles),
              "itl": lambda: _histogram_stats_ms(results.itl, percentiles),
              "e2el": lambda: _stats_ms(e2el[ok], percentiles)}
    for name in metrics:
        s = values[name]()
        doc[f"mean_{name}_ms"], doc[f"median_{name}_ms"], doc[f"std_{name}_ms"] = s["mean"], s["median"], s["std"]
        for p in percentiles:
            doc[percentile_key(p, name)] = s[p]
    doc["servesim"] = {
        "version": version, "scenario": sc.name, "seed": results.seed, "status": results.status,
        "unfinished": int((~np.isfinite(finish) & ~failed_col).sum()),
        "notes": list(results.notes) + [
            "itl statistics: from a log-binned histogram of every token gap (bins ~1.2 % wide)",
            "start_times: seconds from the start of the simulation",
        ] + ([_ITLS_RECORDED if results.token_times is not None else _ITLS_EVEN] if detailed else []),
    }
    return {k: _clean(v) for k, v in doc.items()}


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf become null (vLLM's files never hold NaN), numpy scalars become Python's."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v
