"""Speed benchmark: how a simulation's cost grows with the daily volume and with the replicas.

Issue 15 asks how the cost grows with requests (100k, 1M, 10M queries in a day) and with replicas.
Each point simulates `--requests` arrivals of benchmarks/day_1m.py's workload (Llama-3.1-8B on
A100-80GB, continuous batching, lognormal ~500/200 tokens) at the rate of the day's busiest hour
(hour 11 of its diurnal curve), in a fresh process, and prints CPU seconds, CPU us per request,
requests per CPU second and peak RSS. A whole day costs about (us per request) x (queries per day)
at this load; the line says so where that is an extrapolation and not a measured day.

Two series:
- volume: replicas grow with the volume (3 per 1M queries/day, day_1m.py's sizing), so each replica
  carries the same load and what changes is the number of replicas the router and the clock juggle;
- replicas: 1M queries/day on 3 to 24 replicas, so each replica carries less (smaller batches: more
  engine steps per request, each cheaper).

    python benchmarks/scaling.py [--requests 40000] [--series volume,replicas]

Compare CPU seconds, not wall, on a shared machine. A 10M-query day in one process is about the
us-per-request figure x 10M; `python benchmarks/week_windows.py` runs such days in windows on a pool.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_HOUR = 11  # day_1m.DIURNAL's busiest hour (1.55 of the mean weight, tied with 12 and 13)

# Each point: (queries per day, replicas).
SERIES = {
    "volume": [(100_000, 1), (1_000_000, 3), (3_000_000, 9), (10_000_000, 30)],
    "replicas": [(1_000_000, 3), (1_000_000, 6), (1_000_000, 12), (1_000_000, 24)],
}

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from day_1m import scenario_dict
from sim.metrics import summarize
from sim.scenario import patch_scenario, scenario_from_dict
from sim.simulation import run
a = json.loads(sys.argv[1])
sc = scenario_from_dict(patch_scenario(scenario_dict(a["qpd"], a["replicas"]),
                    {"workload": {"num_requests": a["requests"], "arrival": {"hours": [a["hour"]]}},
                     "sim": {"record_timeseries": False}}))
c0 = time.process_time()
res = run(sc)
cpu = time.process_time() - c0
s = summarize(res)
print(json.dumps({"cpu_s": cpu, "requests": s["requests_total"], "status": s["status"],
                  "busy": s["gpu_busy_fraction_mean"], "sim_h": res.end_s / 3600,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def point(qpd: int, replicas: int, requests: int) -> dict:
    arg = json.dumps({"qpd": qpd, "replicas": replicas, "requests": requests, "hour": PEAK_HOUR})
    proc = subprocess.run([sys.executable, "-c", CHILD, arg, str(ROOT / "benchmarks")], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return out | {"qpd": qpd, "replicas": replicas}


def row(p: dict) -> str:
    us = p["cpu_s"] / max(p["requests"], 1) * 1e6
    day_cpu_s = us * p["qpd"] / 1e6
    return (f"| {p['qpd']:,} | {p['replicas']} | {p['requests']:,} | {p['sim_h'] * 60:.1f} | {p['busy']:.2f} | "
            f"{p['cpu_s']:.2f} | {us:,.0f} | {p['requests'] / p['cpu_s']:,.0f} | {p['rss_mib']:.0f} | "
            f"{day_cpu_s:,.0f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40_000, help="arrivals simulated per point (default 40,000)")
    ap.add_argument("--series", default=",".join(SERIES), help=f"comma-separated: {', '.join(SERIES)}")
    a = ap.parse_args(argv)
    names = [s for s in a.series.split(",") if s]
    bad = [s for s in names if s not in SERIES]
    if bad or a.requests < 1:
        ap.error(f"--series must name {', '.join(SERIES)} (got {bad}); --requests must be >= 1")
    print(f"{a.requests:,} arrivals per point at hour {PEAK_HOUR}'s rate (the day's peak); fresh process each")
    for name in names:
        print(f"\nseries: {name}\n")
        print("| queries/day | replicas | requests | simulated min | GPU busy | CPU s | CPU us / request | "
              "requests / CPU s | peak RSS MiB | a day at this load, CPU s (extrapolated) |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for qpd, replicas in SERIES[name]:
            print(row(point(qpd, replicas, a.requests)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
