"""Long horizons in windows (sim/windows.py): accuracy against one whole run, and a week at scale.

    python benchmarks/week_windows.py                       # accuracy: a day at 200k queries/day, whole vs windows
    python benchmarks/week_windows.py --days 7 --queries-per-day 10000000 --ray   # a week at 10M/day on Ray

The accuracy part runs the same day once whole and once in windows (the same requests: the
workload is drawn once) and prints P50/P99 TTFT and E2E and mean TPOT for both, with the error
of the windowed run. The scale part prints wall seconds, requests per wall second and the
windows' own wall time (their sum is what one process would need).
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from sim.scenario import scenario_from_dict
from sim.simulation import run
from sim.windows import run_windowed

DIURNAL = [0.35, 0.25, 0.2, 0.2, 0.25, 0.35, 0.55, 0.8, 1.1, 1.35, 1.5, 1.55,
           1.55, 1.55, 1.5, 1.45, 1.4, 1.3, 1.2, 1.1, 1.0, 0.85, 0.65, 0.45]


def scenario(queries_per_day: float, days: int, replicas: int):
    hours = list(range(24))
    return scenario_from_dict({
        "name": "week-windows", "seed": 1,
        "workload": {"arrival": {"kind": "daily", "queries_per_day": queries_per_day * days,
                                 "hourly_weights": DIURNAL, "hours": hours} if days == 1 else
                     {"kind": "poisson", "rate_per_s": queries_per_day / 86_400.0},
                     **({} if days == 1 else {"duration_s": days * 86_400.0}),
                     "prompt_tokens": {"kind": "lognormal", "mean": 500, "sigma": 0.7, "min": 8, "max": 4096},
                     "output_tokens": {"kind": "lognormal", "mean": 200, "sigma": 0.6, "min": 4, "max": 2048}},
        "model": "llama-3.1-8b", "hardware": {"gpu": "a100-80gb-sxm"},
        "serving": {"replicas": replicas, "max_model_len": 8192},
        "sim": {"record_timeseries": False}})


def stats(req) -> dict:
    ttft = (req["first_token_s"] - req["arrival_s"]).to_numpy()
    e2e = (req["finish_s"] - req["arrival_s"]).to_numpy()
    out = req["output_tokens"].to_numpy()
    tpot = np.where(out > 1, (e2e - ttft) / np.maximum(out - 1, 1), np.nan)
    return {"ttft_p50_s": np.percentile(ttft, 50), "ttft_p99_s": np.percentile(ttft, 99),
            "e2e_p50_s": np.percentile(e2e, 50), "e2e_p99_s": np.percentile(e2e, 99),
            "tpot_mean_s": np.nanmean(tpot)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--queries-per-day", type=float, default=200_000)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--window-s", type=float, default=3600.0)
    ap.add_argument("--warmup-s", type=float, default=600.0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--ray", action="store_true")
    a = ap.parse_args()
    replicas = a.replicas if a.replicas else max(1, round(a.queries_per_day / 400_000))
    sc = scenario(a.queries_per_day, a.days, replicas)
    t0 = time.perf_counter()
    win = run_windowed(sc, a.window_s, a.warmup_s, workers=a.workers, ray=True if a.ray else None)
    wall_win = time.perf_counter() - t0
    n = len(win.requests)
    print(f"windowed: {n:,} requests in {len(win.windows)} windows on {win.backend}: {wall_win:.1f} s wall, "
          f"{n / wall_win:,.0f} req/s; windows' own time {win.windows['wall_s'].sum():.1f} s; "
          f"stable {win.stable}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GiB")
    if a.days > 1:
        return
    t0 = time.perf_counter()
    whole = run(sc)
    wall_whole = time.perf_counter() - t0
    print(f"whole:    {len(whole.requests):,} requests in one run: {wall_whole:.1f} s wall")
    s_whole, s_win = stats(whole.requests), stats(win.requests.sort_values("request_id"))
    print(f"{'metric':<14}{'whole':>12}{'windowed':>12}{'error %':>10}")
    for k in s_whole:
        err = 100 * (s_win[k] - s_whole[k]) / s_whole[k]
        print(f"{k:<14}{s_whole[k] * 1e3:>10.2f}ms{s_win[k] * 1e3:>10.2f}ms{err:>+10.2f}")


if __name__ == "__main__":
    main()
