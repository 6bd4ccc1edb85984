"""Metrics: pure functions over a run's records, defined as `vllm bench serve` defines them.

    TTFT  = first token - arrival
    TPOT  = (E2E - TTFT) / (output tokens - 1), per request with > 1 output token
    ITL   = time between consecutive tokens of a request (all tokens, all requests)
    E2E   = finish - arrival
    duration = last finish - first arrival; throughputs are totals / duration
    goodput  = requests meeting every SLO bound / duration
Cost: the fleet's $/hour (GPUs x price) spread over what it served in `duration`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .simulation import Results

if TYPE_CHECKING:
    import pandas as pd

# `summarize` works on the run's arrays (results.table), so a `servesim run` never imports pandas;
# the DataFrame functions below (for the UI and the planner) give the same numbers.

PERCENTILES = (50, 90, 95, 99)
HOURS_PER_MONTH = 730.0  # 8760 h / 12


def latency_table(requests: "pd.DataFrame") -> "pd.DataFrame":
    """Per finished request: ttft_s, tpot_s, e2e_s, queue_s (arrival -> first scheduled)."""
    import pandas as pd

    done = requests[np.isfinite(requests["finish_s"])]
    ttft = done["first_token_s"] - done["arrival_s"]
    e2e = done["finish_s"] - done["arrival_s"]
    out = done["output_tokens"]
    tpot = ((e2e - ttft) / (out - 1)).where(out > 1)
    return pd.DataFrame({"request_id": done["request_id"], "priority_class": done["priority_class"],
                         "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e,
                         "queue_s": done["scheduled_s"] - done["arrival_s"],
                         "output_tokens": out, "prompt_tokens": done["prompt_tokens"]})


def distribution(values: "pd.Series | np.ndarray", prefix: str) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    out = {f"{prefix}_mean": float(v.mean()) if len(v) else math.nan}
    for p in PERCENTILES:
        out[f"{prefix}_p{p}"] = float(np.percentile(v, p)) if len(v) else math.nan
    return out


def meets_slo(lat: "pd.DataFrame", ttft_s: float | None, tpot_s: float | None, e2e_s: float | None) -> "pd.Series":
    import pandas as pd

    ok = pd.Series(True, index=lat.index)
    if ttft_s is not None:
        ok &= lat["ttft_s"] <= ttft_s
    if tpot_s is not None:
        ok &= lat["tpot_s"].fillna(0.0) <= tpot_s
    if e2e_s is not None:
        ok &= lat["e2e_s"] <= e2e_s
    return ok


def kv_utilisation(results: Results) -> tuple[float, float]:
    """Time-weighted mean and peak fraction of KV blocks in use, over replicas."""
    ts = results.timeseries_columns
    blocks = results.memory.num_kv_blocks
    if not len(ts["time_s"]):
        return math.nan, math.nan
    means = []
    replica, used = ts["replica"], ts["kv_blocks_used"]
    for r in np.unique(replica):  # rows are grouped by replica, in order
        rows = replica == r
        dt = np.diff(np.append(ts["time_s"][rows], results.end_s))
        means.append(float((used[rows] * dt).sum() / max(dt.sum(), 1e-12)) / blocks)
    return float(np.mean(means)), float(used.max() / blocks)


def _hit_rate(started: np.ndarray, prompt_tokens: np.ndarray, hit_tokens: np.ndarray) -> float:
    prompt = float(prompt_tokens[started].sum())
    return float(hit_tokens[started].sum()) / prompt if prompt else math.nan


def prefix_cache_hit_rate(requests) -> float:
    """Share of the prompt tokens of scheduled requests found in the prefix cache at their first
    admission (0 without prefix caching; NaN when nothing was scheduled)."""
    return _hit_rate(requests["scheduled_s"].notna().to_numpy(), requests["prompt_tokens"].to_numpy(),
                     requests["prefix_hit_tokens"].to_numpy())


def _latencies(t) -> dict[str, np.ndarray]:
    """latency_table's columns as arrays, from a RequestTable (finished requests, in id order)."""
    done = np.isfinite(t.finish_s)
    arrival = t.arrival_s[done]
    ttft = t.first_token_s[done] - arrival
    e2e = t.finish_s[done] - arrival
    out = t.output_tokens[done]
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
    return {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "queue_s": t.scheduled_s[done] - arrival,
            "output_tokens": out, "prompt_tokens": t.prompt_tokens[done]}


def summarize(results: Results) -> dict[str, Any]:
    """Headline numbers of one run, each named with its unit."""
    sc = results.scenario
    t = results.table
    lat = _latencies(t)
    finished = len(lat["e2e_s"])
    if finished:
        start = float(np.nanmin(t.arrival_s))
        duration = float(np.nanmax(t.finish_s)) - start
    else:
        duration = math.nan
    out_tokens = float(lat["output_tokens"].sum())
    in_tokens = float(lat["prompt_tokens"].sum())
    s: dict[str, Any] = {
        "scenario": sc.name, "seed": results.seed, "status": results.status, "stable": results.stable,
        "requests_total": len(t), "requests_finished": finished,
        "requests_failed": int(t.failed.sum()),
        "offered_rate_per_s": results.offered_rate_per_s, "sustained_rate_per_s": results.sustained_rate_per_s,
        "duration_s": duration,
        "request_throughput_per_s": finished / duration if duration else math.nan,
        "output_token_throughput_per_s": out_tokens / duration if duration else math.nan,
        "total_token_throughput_per_s": (out_tokens + in_tokens) / duration if duration else math.nan,
        "preemptions": int(t.preemptions.sum()),
        "prefix_cache_hit_rate": _hit_rate(~np.isnan(t.scheduled_s), t.prompt_tokens, t.prefix_hit_tokens),
    }
    s.update(distribution(lat["ttft_s"], "ttft_s"))
    s.update(distribution(lat["tpot_s"], "tpot_s"))
    s.update(distribution(lat["e2e_s"], "e2e_s"))
    s.update(distribution(lat["queue_s"], "queue_s"))
    s["itl_s_mean"] = results.itl.mean_s()
    for p in PERCENTILES:
        s[f"itl_s_p{p}"] = results.itl.percentile_s(p)
    slo = sc.slo
    if any(v is not None for v in (slo.ttft_s, slo.tpot_s, slo.e2e_s)):
        ok = np.ones(finished, dtype=bool)  # meets_slo on the arrays
        if slo.ttft_s is not None:
            ok &= lat["ttft_s"] <= slo.ttft_s
        if slo.tpot_s is not None:
            tpot = lat["tpot_s"]
            ok &= np.where(np.isnan(tpot), 0.0, tpot) <= slo.tpot_s
        if slo.e2e_s is not None:
            ok &= lat["e2e_s"] <= slo.e2e_s
        good = int(ok.sum())
        s["slo_attained_fraction"] = good / len(t) if len(t) else math.nan
        s["goodput_per_s"] = good / duration if duration else math.nan
    busy = results.replica_busy_s / duration if duration else np.full(len(results.replica_busy_s), math.nan)
    s["gpu_busy_fraction_mean"] = float(np.mean(busy))
    s["gpu_busy_fraction_by_replica"] = [round(float(b), 4) for b in busy]
    s["kv_utilisation_mean"], s["kv_utilisation_peak"] = kv_utilisation(results)
    s["kv_blocks_per_replica"] = results.memory.num_kv_blocks
    s["kv_capacity_tokens_per_replica"] = results.memory.kv_capacity_tokens
    price = sc.price_usd_per_gpu_hour
    usd_per_hour = sc.num_gpus * price
    served_hours = duration / 3600.0 if duration else math.nan
    s["num_gpus"] = sc.num_gpus
    s["price_usd_per_gpu_hour"] = price
    s["cost_usd_per_hour"] = usd_per_hour
    s["cost_usd_per_month"] = usd_per_hour * HOURS_PER_MONTH
    s["cost_usd_per_1m_output_tokens"] = usd_per_hour * served_hours / (out_tokens / 1e6) if out_tokens else math.nan
    s["cost_usd_per_1k_requests"] = usd_per_hour * served_hours / (finished / 1e3) if finished else math.nan
    s["cost_model"] = results.cost_model_name
    s["cost_model_accuracy"] = results.cost_model_accuracy
    s["wall_s"] = results.wall_s
    return s


def by_class(results: Results) -> "pd.DataFrame":
    """TTFT/TPOT/E2E percentiles per priority class."""
    import pandas as pd

    lat = latency_table(results.requests)
    rows = []
    for name, g in lat.groupby("priority_class"):
        row = {"priority_class": name, "requests": len(g)}
        row.update(distribution(g["ttft_s"], "ttft_s"))
        row.update(distribution(g["tpot_s"], "tpot_s"))
        row.update(distribution(g["e2e_s"], "e2e_s"))
        rows.append(row)
    return pd.DataFrame(rows)
