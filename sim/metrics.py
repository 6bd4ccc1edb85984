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
from typing import Any

import numpy as np
import pandas as pd

from .simulation import Results

PERCENTILES = (50, 90, 95, 99)
HOURS_PER_MONTH = 730.0  # 8760 h / 12


def latency_table(requests: pd.DataFrame) -> pd.DataFrame:
    """Per finished request: ttft_s, tpot_s, e2e_s, queue_s (arrival -> first scheduled)."""
    done = requests[np.isfinite(requests["finish_s"])]
    ttft = done["first_token_s"] - done["arrival_s"]
    e2e = done["finish_s"] - done["arrival_s"]
    out = done["output_tokens"]
    tpot = ((e2e - ttft) / (out - 1)).where(out > 1)
    return pd.DataFrame({"request_id": done["request_id"], "priority_class": done["priority_class"],
                         "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e,
                         "queue_s": done["scheduled_s"] - done["arrival_s"],
                         "output_tokens": out, "prompt_tokens": done["prompt_tokens"]})


def distribution(values: pd.Series | np.ndarray, prefix: str) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    out = {f"{prefix}_mean": float(v.mean()) if len(v) else math.nan}
    for p in PERCENTILES:
        out[f"{prefix}_p{p}"] = float(np.percentile(v, p)) if len(v) else math.nan
    return out


def meets_slo(lat: pd.DataFrame, ttft_s: float | None, tpot_s: float | None, e2e_s: float | None) -> pd.Series:
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
    ts = results.timeseries
    blocks = results.memory.num_kv_blocks
    if ts.empty:
        return math.nan, math.nan
    means = []
    for _, g in ts.groupby("replica"):
        t = np.append(g["time_s"].to_numpy(), results.end_s)
        dt = np.diff(t)
        means.append(float((g["kv_blocks_used"].to_numpy() * dt).sum() / max(dt.sum(), 1e-12)) / blocks)
    return float(np.mean(means)), float(ts["kv_blocks_used"].max() / blocks)


def prefix_cache_hit_rate(requests) -> float:
    """Share of the prompt tokens of scheduled requests found in the prefix cache at their first
    admission (0 without prefix caching; NaN when nothing was scheduled)."""
    started = requests["scheduled_s"].notna()
    prompt = float(requests.loc[started, "prompt_tokens"].sum())
    return float(requests.loc[started, "prefix_hit_tokens"].sum()) / prompt if prompt else math.nan


def summarize(results: Results) -> dict[str, Any]:
    """Headline numbers of one run, each named with its unit."""
    sc = results.scenario
    req = results.requests
    lat = latency_table(req)
    finished = len(lat)
    if finished:
        start = float(req["arrival_s"].min())
        duration = float(req["finish_s"].max()) - start
    else:
        duration = math.nan
    out_tokens = float(lat["output_tokens"].sum())
    in_tokens = float(lat["prompt_tokens"].sum())
    s: dict[str, Any] = {
        "scenario": sc.name, "seed": results.seed, "status": results.status, "stable": results.stable,
        "requests_total": int(len(req)), "requests_finished": finished,
        "requests_failed": int(req["failed"].sum()) if "failed" in req else 0,
        "offered_rate_per_s": results.offered_rate_per_s, "sustained_rate_per_s": results.sustained_rate_per_s,
        "duration_s": duration,
        "request_throughput_per_s": finished / duration if duration else math.nan,
        "output_token_throughput_per_s": out_tokens / duration if duration else math.nan,
        "total_token_throughput_per_s": (out_tokens + in_tokens) / duration if duration else math.nan,
        "preemptions": int(req["preemptions"].sum()),
        "prefix_cache_hit_rate": prefix_cache_hit_rate(req),
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
        good = int(meets_slo(lat, slo.ttft_s, slo.tpot_s, slo.e2e_s).sum())
        s["slo_attained_fraction"] = good / len(req) if len(req) else math.nan
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
    s["wall_s"] = results.wall_s
    return s


def by_class(results: Results) -> pd.DataFrame:
    """TTFT/TPOT/E2E percentiles per priority class."""
    lat = latency_table(results.requests)
    rows = []
    for name, g in lat.groupby("priority_class"):
        row = {"priority_class": name, "requests": len(g)}
        row.update(distribution(g["ttft_s"], "ttft_s"))
        row.update(distribution(g["tpot_s"], "tpot_s"))
        row.update(distribution(g["e2e_s"], "e2e_s"))
        rows.append(row)
    return pd.DataFrame(rows)
