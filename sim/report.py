"""Plain-text summary of a run, for the terminal. Formatting only: numbers come from metrics.summarize."""
from __future__ import annotations

import math
from typing import Any

from .catalog import GIB
from .simulation import Results

ENGINE_DEFAULT = ", the engine version's default"  # serving.gpu_memory_utilization unset


def _load(results: Results, s: dict[str, Any]) -> str:
    """What drove the arrivals: an offered rate, or (closed loop, where the rate is an outcome) the clients."""
    if math.isfinite(s["offered_rate_per_s"]):
        return f"(offered {s['offered_rate_per_s']:.2f} req/s)"
    clients = results.scenario.workload.arrival.concurrency
    return f"(closed loop, {clients} clients)" if clients else "(offered rate n/a)"


def _ms(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1e3:,.1f} ms"


def _s(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.3f} s"


def format_summary(results: Results, s: dict[str, Any]) -> str:
    sc = results.scenario
    m = results.memory
    serving = sc.serving
    spec = serving.speculative
    lines = [
        f"servesim — {sc.name} (seed {results.seed})",
        f"  model {sc.model_spec.name} on {serving.replicas} x {sc.gpu_spec.name} (TP {serving.tensor_parallel}), "
        f"scheduler {serving.scheduler.policy}, router {serving.router}, weights {serving.quantization.weights}, "
        f"KV {serving.quantization.kv_cache}" + (f", {spec.describe()}" if spec else ""),
        f"  cost model: {s['cost_model']}",
        *([f"  accuracy: {s['cost_model_accuracy']}"] if s.get("cost_model_accuracy") else []),
        f"  memory per GPU: {sc.gpu_memory_utilization:g} of {m.gpu_memory_bytes / GIB:.1f} GiB "
        f"(gpu_memory_utilization{'' if serving.gpu_memory_utilization is not None else ENGINE_DEFAULT}), "
        f"weights {m.weights_bytes / GIB:.1f} GiB, reserve {m.reserve_bytes / GIB:.1f} GiB, "
        f"KV {m.num_kv_blocks:,} blocks = {m.kv_capacity_tokens:,} tokens",
        "",
    ]
    if not results.stable:
        lines += [f"  !! {results.status}", "  !! latency percentiles below describe a queue that kept growing; "
                                             "add replicas or lower the rate", ""]
    lines += [
        f"  requests     {s['requests_finished']:,} / {s['requests_total']:,} finished over {s['duration_s']:,.1f} s "
        + _load(results, s) + (f", {s['requests_failed']:,} failed" if s.get("requests_failed") else ""),
        f"  throughput   {s['request_throughput_per_s']:.2f} req/s, {s['output_token_throughput_per_s']:,.0f} output tok/s, "
        f"{s['total_token_throughput_per_s']:,.0f} total tok/s",
        "",
        "  latency        mean        p50        p90        p99",
    ]
    for key, label, fmt in (("ttft_s", "TTFT", _s), ("tpot_s", "TPOT", _ms), ("itl_s", "ITL", _ms), ("e2e_s", "E2E", _s)):
        lines.append(f"  {label:<6} {fmt(s[key + '_mean']):>11} {fmt(s[key + '_p50']):>10} {fmt(s[key + '_p90']):>10} "
                     f"{fmt(s[key + '_p99']):>10}")
    lines.append("")
    if sc.workload.priorities:
        from .metrics import by_class

        lines.append("  by class       TTFT p50   TTFT p99   TPOT p99    E2E p99   requests")
        for _, row in by_class(results).iterrows():
            lines.append(f"  {str(row['priority_class']):<12} {_s(row['ttft_s_p50']):>10} {_s(row['ttft_s_p99']):>10} "
                         f"{_ms(row['tpot_s_p99']):>10} {_s(row['e2e_s_p99']):>10} {int(row['requests']):>10,}")
        lines.append("")
    if "goodput_per_s" in s:
        slo = sc.slo
        bounds = ", ".join(f"{n} <= {v}" for n, v in (("TTFT", slo.ttft_s), ("TPOT", slo.tpot_s), ("E2E", slo.e2e_s))
                           if v is not None)
        lines.append(f"  SLO ({bounds} s): {s['slo_attained_fraction'] * 100:.1f} % of requests, "
                     f"goodput {s['goodput_per_s']:.2f} req/s")
    lines += [
        f"  replicas stepping {s['gpu_busy_fraction_mean'] * 100:.0f} % of the time (not compute utilisation), "
        f"KV cache used {s['kv_utilisation_mean'] * 100:.1f} % mean / "
        f"{s['kv_utilisation_peak'] * 100:.1f} % peak, preemptions {s['preemptions']}"
        + (f", prefix-cache hits {s['prefix_cache_hit_rate'] * 100:.1f} % of prompt tokens"
           if sc.serving.enable_prefix_caching else ""),
        f"  cost: {s['num_gpus']} GPUs x ${s['price_usd_per_gpu_hour']:.2f}/h = ${s['cost_usd_per_hour']:.2f}/h, "
        f"${s['cost_usd_per_month']:,.0f}/month; ${s['cost_usd_per_1m_output_tokens']:.3f} per 1M output tokens, "
        f"${s['cost_usd_per_1k_requests']:.3f} per 1k requests",
        f"  price source: {sc.gpu_spec.price_source}" if sc.hardware.price_usd_per_gpu_hour is None
        else "  price: scenario override",
        f"  (simulated in {s['wall_s']:.2f} s wall)",
    ]
    for note in results.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
