"""Speed benchmark: the workload of issue 15's side-by-side with Vidur 0.0.26, as a whole process.

10,000 requests, Llama-2-70B at TP 2 on one A100-80GB replica, Poisson 0.5 req/s, lengths
shaped like a conversation trace (prompts mean 1,155 / median 1,020 / p99 4,142 tokens,
outputs mean 211 / median 129 / p99 601; prompt + output capped at 4,096), vLLM-like limits:
128 sequences and 4,096 tokens per step. Lognormal lengths matched to those statistics stand in
for the trace (Vidur's trace is not shipped here).

The figures Vidur gave on the same machine and workload (measured once, as whole processes, and
quoted in issue 15; Vidur cannot run offline here, so it is not re-run):
    Vidur 0.0.26:  31.1 s wall, 444 MiB  (chunked prefill at 512 tokens: 33.2 s)
Targets: >= 100x Vidur, i.e. <= 0.3 s of simulation loop and <= 0.3 s of start-up.

    python benchmarks/vidur_workload.py [--chunk 512] [--repeat 3]

Each repeat starts a fresh `python -c` process (start-up counted as Vidur's was) and reports
wall, CPU, start-up (imports), the simulation loop, and peak RSS; then the ratios to Vidur.
Compiled bytecode is cached across the processes (in benchmarks/startup.py's folder), as an installed
package has it, also where the environment sets PYTHONDONTWRITEBYTECODE (else every start would
compile servesim's modules: ~0.1 s of "start-up" that no installed run pays); a first, small run
writes the cache.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDUR = {"wall_s": 31.1, "rss_mib": 444.0, "wall_s_chunked_512": 33.2}

# Lognormal parameters matched to the statistics: median = exp(mu), mean = exp(mu + s^2/2).
# prompts: median 1,020, mean 1,155 -> sigma = sqrt(2 ln(1155/1020)) = 0.50; outputs: median 129,
# mean 211 -> sigma = 0.99. Clipped at the p99 region by max (prompt 4,096 - output, output 601 x ~1.5).
SCENARIO = {
    "name": "vidur-side-by-side",
    "seed": 1,
    "workload": {
        "arrival": {"kind": "poisson", "rate_per_s": 0.5},
        "num_requests": 10_000,
        "prompt_tokens": {"kind": "lognormal", "mean": 1155, "sigma": 0.50, "min": 16, "max": 3200},
        "output_tokens": {"kind": "lognormal", "mean": 211, "sigma": 0.99, "min": 1, "max": 896},
    },
    "model": "llama-2-70b",
    "hardware": {"gpu": "a100-80gb-sxm"},
    "serving": {"replicas": 1, "tensor_parallel": 2, "max_model_len": 4096,
                "scheduler": {"policy": "continuous", "max_num_seqs": 128, "max_num_batched_tokens": 4096,
                              "chunked_prefill": False}},
    "sim": {"record_timeseries": False},
}

CHILD = r"""
import json, resource, sys, time
t0, c0 = time.perf_counter(), time.process_time()
from sim.scenario import scenario_from_dict
from sim.simulation import run
t1, c1 = time.perf_counter(), time.process_time()
res = run(scenario_from_dict(json.loads(sys.argv[1])))
t2, c2 = time.perf_counter(), time.process_time()
t = res.table  # the run's arrays: reading them needs no DataFrame (and no pandas import)
print(json.dumps({"import_s": t1 - t0, "import_cpu_s": c1 - c0, "loop_s": t2 - t1, "loop_cpu_s": c2 - c1, "requests": len(t),
                  "finished": int((t.finish_s == t.finish_s).sum()), "status": res.status,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


PYCACHE = Path(tempfile.gettempdir()) / f"servesim-startup-pycache-{os.getuid()}"  # benchmarks/startup.py's


def _env() -> dict[str, str]:
    """This environment with compiled bytecode written to and read from PYCACHE."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    return env | {"PYTHONPYCACHEPREFIX": str(PYCACHE)}


def one_process(scenario: dict, tree: Path = ROOT) -> dict:
    """The scenario run by a fresh process on the `sim` package of `tree` (a checkout's root)."""
    t0 = time.perf_counter()
    c0 = _children_cpu_s()
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(scenario)], capture_output=True, text=True,
                          cwd=tree, env=_env(), check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = _children_cpu_s() - c0
    return out


def _children_cpu_s() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=None, help="chunked prefill with this token budget (Vidur: 512)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    scenario = json.loads(json.dumps(SCENARIO))
    vidur_wall = VIDUR["wall_s"]
    if a.chunk:
        scenario["serving"]["scheduler"].update(chunked_prefill=True, max_num_batched_tokens=a.chunk)
        vidur_wall = VIDUR["wall_s_chunked_512"] if a.chunk == 512 else float("nan")
    one_process({**scenario, "workload": {**scenario["workload"], "num_requests": 20}})  # writes the bytecode cache
    runs = [one_process(scenario) for _ in range(a.repeat)]
    med = {k: statistics.median(r[k] for r in runs) for k in ("wall_s", "cpu_s", "import_s", "import_cpu_s", "loop_s", "loop_cpu_s", "rss_mib")}
    r0 = runs[0]
    print(f"workload                 {r0['requests']:,} requests, {r0['finished']:,} finished ({r0['status']})"
          f"{', chunked prefill ' + str(a.chunk) if a.chunk else ''}")
    print(f"wall (median of {a.repeat})       {med['wall_s']:.2f} s   CPU {med['cpu_s']:.2f} s")
    print(f"start-up (imports)       {med['import_s']:.2f} s wall, {med['import_cpu_s']:.2f} s CPU   (target <= 0.3 s)")
    print(f"simulation loop          {med['loop_s']:.2f} s wall, {med['loop_cpu_s']:.2f} s CPU   (target <= 0.3 s; "
          f"on a shared machine compare CPU)")
    print(f"requests per wall second {r0['requests'] / med['wall_s']:,.0f}")
    print(f"peak RSS                 {med['rss_mib']:.0f} MiB  (Vidur {VIDUR['rss_mib']:.0f} MiB)")
    print(f"ratio Vidur / servesim   {vidur_wall / med['wall_s']:.1f}x whole process, "
          f"{vidur_wall / med['loop_s']:.1f}x loop only, {vidur_wall / med['loop_cpu_s']:.1f}x loop CPU  (target 100x)")


if __name__ == "__main__":
    main()
