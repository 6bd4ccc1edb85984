"""What serving adds to the engine step: measured on the real server, fitted by simulation.

A profile's coefficients time `EngineCore.step` in-process (calibration/vllm_harness.py). A served
engine does more per step: the engine-core process hands the batch to the model worker over
shared memory and waits for it, serialises outputs to the API server, which streams every token
over HTTP; on a small host all of that shares cores with the model. `servesim calibrate serve`
measures it:

1. start the real OpenAI server (calibration/vllm_server.py) with the profile's engine settings;
2. run a closed-loop sweep (SWEEP: fixed concurrency, fixed prompt and output lengths; light to
   heavy), recording per-request TTFT and TPOT as `vllm bench serve` does;
3. simulate every sweep point with servesim and fit four ServingOverhead terms (compute_scale stays 1)
   (sim/cost_model.py) so that simulated median TTFT and mean TPOT match the measured ones
   (least squares on log ratios);
4. write them, with the sweep's provenance and the fit's per-point errors, into the profile's
   `serving` section (and the sweep's requests to serving_measurements.csv).

The sweep is closed loop with constant lengths: a different workload from the validation
replays (Poisson/gamma arrivals, lognormal lengths), which are never used to fit anything.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from sim.cost_model import ProfileCostModel, ServingOverhead
from sim.scenario import Scenario
from sim.workload import Workload

from .profile import Profile, save_profile

SERVING_MEASUREMENTS_FILE = "serving_measurements.csv"
SERVING_RUN_FILE = "serving_run.json"  # the sweep's facts (server flags, points, timings)


@dataclass(frozen=True)
class SweepPoint:
    concurrency: int
    prompt_tokens: int
    output_tokens: int
    num_requests: int

    @property
    def label(self) -> str:
        return f"c{self.concurrency} p{self.prompt_tokens} o{self.output_tokens}"


# Light to heavy; two prompt lengths at concurrency 1 separate the per-token scale from the
# per-step constant, the concurrency ladder the per-sequence terms (past where the host saturates).
SWEEP = (SweepPoint(1, 64, 32, 8), SweepPoint(1, 1024, 16, 8), SweepPoint(4, 256, 64, 16),
         SweepPoint(8, 256, 64, 24), SweepPoint(16, 256, 64, 48), SweepPoint(32, 256, 64, 96),
         SweepPoint(48, 256, 64, 144), SweepPoint(96, 256, 64, 192), SweepPoint(160, 256, 64, 320))
SMOKE_SWEEP = (SweepPoint(1, 64, 16, 4), SweepPoint(4, 128, 32, 8), SweepPoint(8, 128, 32, 8))
# Other lengths and loads than SWEEP's, to report terms fitted on SWEEP against (never fitted on):
# longer prompts and outputs, prefill-heavy and decode-heavy points, concurrency 1-128.
HELDOUT_SWEEP = (SweepPoint(1, 2048, 128, 6), SweepPoint(4, 1024, 256, 12), SweepPoint(16, 1024, 256, 32),
                 SweepPoint(32, 512, 128, 64), SweepPoint(64, 2048, 64, 96), SweepPoint(128, 512, 256, 192))
# full+heldout: both on one server start (a GPU lease's server takes minutes to compile and capture graphs).
SWEEPS = {"full": SWEEP, "smoke": SMOKE_SWEEP, "heldout": HELDOUT_SWEEP, "full+heldout": SWEEP + HELDOUT_SWEEP}


# --------------------------------------------------------------------------- measuring

def measure_sweep(scenario: Scenario, profile: Profile, points=SWEEP, *, log: Callable[[str], Any] = print,
                  work_dir: Path | None = None, seed: int = 0,
                  engine_defaults: bool = False, log_steps: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-request records of every sweep point on the real server, and the run's facts
    (`engine_defaults`: served with vLLM's own settings, see vllm_server.server_args)."""
    from .model_dir import resolve_model_dir
    from .vllm_server import Server, closed_loop, random_prompts, server_args, warm_up, _session

    work_dir = Path(work_dir or ".cache/serving")
    model_dir, _ = resolve_model_dir(profile.model, Path(".cache"))
    vocab = int(json.loads((model_dir / "config.json").read_text())["vocab_size"])
    s = scenario.serving
    args = server_args(model_dir, profile, max_model_len=scenario.max_model_len,
                       max_num_seqs=s.scheduler.max_num_seqs,
                       max_num_batched_tokens=s.scheduler.max_num_batched_tokens,
                       block_size_tokens=s.block_size_tokens, num_kv_blocks=s.num_kv_blocks,
                       engine_defaults=engine_defaults, log_steps=log_steps)
    for p in points:
        if p.prompt_tokens + p.output_tokens > scenario.max_model_len:
            raise ValueError(f"sweep point {p.label}: prompt + output exceeds max_model_len {scenario.max_model_len}")
    rows = []
    t_start = time.time()
    with Server(args, work_dir / "server.log") as srv:
        log(f"server up in {srv.startup_s:.1f} s; {len(points)} sweep points")

        async def warm():
            async with _session() as session:
                await warm_up(session, srv.url, random_prompts([p.prompt_tokens for p in points] * 2, vocab, seed + 1))

        asyncio.run(warm())
        for k, p in enumerate(points):
            prompts = random_prompts([p.prompt_tokens] * p.num_requests, vocab, seed + 100 + k)
            recs = asyncio.run(closed_loop(srv.url, p.concurrency, prompts, p.output_tokens))
            df = pd.DataFrame(recs).assign(point=p.label, concurrency=p.concurrency, prompt_tokens=p.prompt_tokens,
                                           output_tokens=p.output_tokens)
            bad = df[df["error"] != ""]
            if len(bad):
                raise RuntimeError(f"sweep point {p.label}: {len(bad)} request(s) failed: {bad['error'].iloc[0]}")
            log(f"  {p.label}: median TTFT {df['ttft_s'].median() * 1e3:.1f} ms, mean TPOT {df['tpot_s'].mean() * 1e3:.2f} ms")
            rows.append(df)
        startup = srv.startup_s
    facts = {"server_args": args, "engine_defaults": engine_defaults, "startup_s": round(startup, 1), "sweep_s": round(time.time() - t_start - startup, 1),
             "points": [asdict(p) for p in points], "load_average_after": os.getloadavg()[0]}
    return pd.concat(rows, ignore_index=True), facts


# --------------------------------------------------------------------------- simulating and fitting

def point_workload(p: SweepPoint) -> Workload:
    n = p.num_requests
    return Workload(arrival_s=np.full(n, np.nan), prompt_tokens=np.full(n, p.prompt_tokens, dtype=np.int64),
                    output_tokens=np.full(n, p.output_tokens, dtype=np.int64), priority=np.zeros(n, dtype=np.int64),
                    priority_names={0: "default"}, duration_s=math.inf, concurrency=p.concurrency, think_time_s=0.0)


def simulate_point(scenario: Scenario, profile: Profile, p: SweepPoint, overhead: ServingOverhead | None) -> dict:
    """Median TTFT, mean TPOT and mean E2E of a sweep point simulated as an ideal closed loop with
    `overhead` on top of the profile (the median for TTFT: a few requests of a point can meet a
    server stall of hundreds of ms)."""
    from sim.simulation import run

    cost = ProfileCostModel(profile.coefficients, overhead)
    res = run(scenario, workload=point_workload(p), cost_model=cost)
    r = res.requests
    ttft = r["first_token_s"] - r["arrival_s"]
    e2e = r["finish_s"] - r["arrival_s"]
    tpot = (e2e - ttft) / (r["output_tokens"] - 1)
    return {"ttft_s": float(ttft.median()), "tpot_s": float(tpot.mean()), "e2e_s": float(e2e.mean())}


def measured_point_stats(records: pd.DataFrame) -> pd.DataFrame:
    g = records.groupby("point", sort=False)
    return g.agg(concurrency=("concurrency", "first"), prompt_tokens=("prompt_tokens", "first"),
                 output_tokens=("output_tokens", "first"), num_requests=("request_id", "size"),
                 ttft_s=("ttft_s", "median"), tpot_s=("tpot_s", "mean"), e2e_s=("e2e_s", "mean"))


# Parameter vector of the fit, in convenient units, with bounds: step ms, per-seq ms, host per-seq ms,
# latency ms. compute_scale stays 1: the in-process sweep already runs the worker as served (same
# binding, same sampling), and a fitted scale let high-concurrency TTFT noise inflate every prefill
# (x1.24-1.37 here, long prompts then predicted 2-3x slow).
_X_UNITS = np.array([1e-3, 1e-3, 1e-3, 1e-3])
_LOWER = np.array([0.0, 0.0, 0.0, 0.0])
_UPPER = np.array([50.0, 5.0, 5.0, 100.0])


def _overhead(x: np.ndarray) -> ServingOverhead:
    step, per_seq, host, latency = (float(v) for v in np.asarray(x) * _X_UNITS)
    return ServingOverhead(compute_scale=1.0, step_overhead_s=step, per_seq_overhead_s=per_seq,
                           host_per_seq_s=host, response_latency_s=latency)


def fit_serving(scenario: Scenario, profile: Profile, records: pd.DataFrame) -> tuple[ServingOverhead, pd.DataFrame]:
    """ServingOverhead whose simulation of each sweep point matches the measured median TTFT and mean TPOT
    (least squares on log(predicted / measured)); the per-point table of measured vs fitted.
    Simulated clients with equal lengths start each wave in one step, where the real server takes a wave's
    first request alone and the rest later (the API server's hand-over: docs/step_sequence_cpu.md; the waves
    themselves persist in both); that difference is part of what the fit error shows. Replaying the recorded
    send times instead was tried: it feeds the real system's response times back into the
    simulation, and the fit on the same sweep came out worse."""
    from scipy.optimize import least_squares

    real = measured_point_stats(records)
    points = [SweepPoint(int(r.concurrency), int(r.prompt_tokens), int(r.output_tokens), int(r.num_requests))
              for r in real.itertuples()]

    def residuals(x):
        ov = _overhead(x)
        out = []
        for p, r in zip(points, real.itertuples()):
            s = simulate_point(scenario, profile, p, ov)
            out += [math.log(s["ttft_s"] / r.ttft_s), math.log(s["tpot_s"] / r.tpot_s)]
        return np.array(out)

    # The host floor is a max(): while it does not bind its gradient is zero, so one start could
    # never find it. Start from a ladder of floors and keep the lowest cost. soft_l1 beyond ~30 %:
    # a sweep point caught in a server stall must not drag every term (with a tighter scale, 0.1,
    # the fit could give up on a point altogether: a smoke sweep's third point came out 900x off).
    best = None
    for host_ms in (0.0, 0.2, 0.4, 0.6, 0.8, 1.2):
        x0 = np.array([0.5, 0.01, host_ms, 5.0])
        sol = least_squares(residuals, x0, bounds=(_LOWER, _UPPER), diff_step=0.05, loss="soft_l1", f_scale=0.3,
                            x_scale=np.array([1, 0.05, 0.1, 5]), max_nfev=200)
        if best is None or sol.cost < best.cost:
            best = sol
    ov = _overhead(best.x)
    rows = []
    for p, r in zip(points, real.itertuples()):
        bare = simulate_point(scenario, profile, p, None)
        s = simulate_point(scenario, profile, p, ov)
        for m in ("ttft_s", "tpot_s", "e2e_s"):
            rows.append({"point": p.label, "metric": m, "measured": getattr(r, m), "profile_only": bare[m],
                         "fitted": s[m], "error_pct": (s[m] - getattr(r, m)) / getattr(r, m) * 100})
    return ov, pd.DataFrame(rows)


def with_serving(profile: Profile, overhead: ServingOverhead, table: pd.DataFrame, facts: dict[str, Any],
                 command: str) -> Profile:
    """The profile with a `serving` section: the terms, where they come from, how well they fit."""
    err = table.assign(abs_err=table["error_pct"].abs())
    fit = {m: {"mape_pct": round(float(g["abs_err"].mean()), 2), "max_abs_pct_error": round(float(g["abs_err"].max()), 2)}
           for m, g in err.groupby("metric")}
    serving = {**{k: float(v) for k, v in asdict(overhead).items()},
               "provenance": {"source": f"servesim calibrate serve: closed-loop sweep of the vLLM OpenAI server "
                                        f"({time.strftime('%Y-%m-%d')})",
                              "command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "method": "simulated median TTFT and mean TPOT of every sweep point fitted to the measured "
                                        "ones (least squares on log ratios); the validation replays are not used",
                              **facts},
               "fit": {"per_metric": fit, "points": table.round(6).to_dict(orient="records")}}
    return replace(profile, serving=serving)


def calibrate_serving(scenario: Scenario, profile: Profile, out_dir: Path, points=SWEEP, command: str = "",
                      log: Callable[[str], Any] = print, *, engine_defaults: bool = False,
                      fit: bool = True, log_steps: bool = False) -> Profile | None:
    """Measure, fit, and write the profile (with its serving section) to out_dir. `fit=False`
    writes the measurements and the run's facts only (on a leased GPU, whose minutes are better
    spent measuring: `--refit` fits them later anywhere) and returns None."""
    out_dir = Path(out_dir)
    records, facts = measure_sweep(scenario, profile, points, log=log, work_dir=Path(".cache") / "serving" / out_dir.name,
                                   engine_defaults=engine_defaults, log_steps=log_steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    records.to_csv(out_dir / SERVING_MEASUREMENTS_FILE, index=False)
    facts["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (out_dir / SERVING_RUN_FILE).write_text(json.dumps(facts, indent=2) + "\n")
    if not fit:
        return None
    log("fitting the serving terms by simulation ...")
    overhead, table = fit_serving(scenario, profile, records)
    prof = with_serving(profile, overhead, table, facts, command)
    save_profile(prof, out_dir)
    return prof


def refit_serving(scenario: Scenario, profile: Profile, out_dir: Path, command: str = "") -> Profile:
    """Fit the terms again from the sweep already in out_dir (no server): after the profile's
    coefficients changed, or to try another fit. The sweep's facts come from serving_run.json."""
    out_dir = Path(out_dir)
    path = out_dir / SERVING_MEASUREMENTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (written by `servesim calibrate serve` without --refit)")
    records = pd.read_csv(path, keep_default_na=False, na_values=[""])
    run_file = out_dir / SERVING_RUN_FILE
    facts = json.loads(run_file.read_text()) if run_file.is_file() else {}
    facts["sweep_date"] = facts.pop("date", None)
    overhead, table = fit_serving(scenario, profile, records)
    prof = with_serving(profile, overhead, table, facts, command)
    save_profile(prof, out_dir)
    return prof
