"""Speed benchmark: a full simulated day at 1M queries/day (issue 15's target: <= 30 s on one core, < 2 GiB).

Continuous batching, Llama-3.1-8B on A100-80GB, lognormal lengths around 500 prompt /
200 output tokens, a 24-hour diurnal profile, enough replicas to be stable at the peak.
Prints wall and CPU seconds (and CPU us per request), simulated requests per wall second and
peak memory (RSS).

    python benchmarks/day_1m.py [--replicas N] [--queries-per-day Q]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's sim/, not an installed one

from sim.metrics import summarize  # noqa: E402
from sim.scenario import scenario_from_dict  # noqa: E402
from sim.simulation import run  # noqa: E402

# Relative hourly volume (00..23 h): a typical business-day shape, peak / mean ~ 1.6.
DIURNAL = [0.35, 0.25, 0.2, 0.2, 0.25, 0.35, 0.55, 0.8, 1.1, 1.35, 1.5, 1.55,
           1.55, 1.55, 1.5, 1.45, 1.4, 1.3, 1.2, 1.1, 1.0, 0.85, 0.65, 0.45]


def scenario_dict(queries_per_day: float, replicas: int) -> dict:
    """The day as a scenario mapping (benchmarks/scaling.py patches it)."""
    return {
        "name": "bench-day-1m",
        "seed": 1,
        "workload": {
            "arrival": {"kind": "daily", "queries_per_day": queries_per_day, "hourly_weights": DIURNAL},
            "prompt_tokens": {"kind": "lognormal", "mean": 500, "sigma": 0.7, "min": 8, "max": 4096},
            "output_tokens": {"kind": "lognormal", "mean": 200, "sigma": 0.6, "min": 4, "max": 2048},
        },
        "model": "llama-3.1-8b",
        "hardware": {"gpu": "a100-80gb-sxm"},
        "serving": {"replicas": replicas, "scheduler": {"policy": "continuous"}, "max_model_len": 8192},
        "sim": {"record_timeseries": True},
    }


def scenario(queries_per_day: float, replicas: int):
    return scenario_from_dict(scenario_dict(queries_per_day, replicas))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--queries-per-day", type=float, default=1_000_000)
    a = ap.parse_args()
    t0, cpu0 = time.perf_counter(), time.process_time()
    res = run(scenario(a.queries_per_day, a.replicas))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    s = summarize(res)
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(f"requests simulated        {s['requests_total']:,} ({s['status']})")
    print(f"simulated time            {res.end_s / 3600:.2f} h")
    print(f"wall time                 {wall:.1f} s   (target <= 30 s on one core)")
    print(f"CPU time                  {cpu:.1f} s   ({cpu / max(s['requests_total'], 1) * 1e6:,.0f} us per request; "
          f"compare CPU, not wall, on a shared machine)")
    print(f"requests per wall second  {s['requests_total'] / wall:,.0f}")
    print(f"peak memory (RSS)         {peak_rss_gib:.2f} GiB   (target < 2 GiB)")
    print(f"P99 TTFT / TPOT           {s['ttft_s_p99']:.3f} s / {s['tpot_s_p99'] * 1e3:.1f} ms")
    print(f"GPU busy (mean)           {s['gpu_busy_fraction_mean']:.2f}")
    print(f"ratio CPU / 30 s target   {cpu / 30:.2f}")


if __name__ == "__main__":
    main()
