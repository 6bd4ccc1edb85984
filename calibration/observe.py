"""Fit the engine terms of a profile from a user's own `vllm bench serve --save-result` files.

    servesim calibrate observe my_scenario.yaml result_c8.json result_c32.json ... --out profiles/mine

A user with a GPU runs `vllm bench serve --save-result` at a few concurrencies or rates on their
deployment. Each result file is read as `servesim compare` reads it (sim/compare.py: the requests
it sent, per request with --save-detailed, else `completed` requests of the mean lengths, through
`max_concurrency` clients or at `request_rate`) with its measured mean TTFT and TPOT. Each is simulated with the scenario's profile (its GPU, model, TP,
dtypes and serving limits) and the terms are fitted as `python -m calibration.engine_fit` fits the
shipped ones: per-step and per-sequence time on TPOT (a linearised least squares of the
simulation), then the response latency on TTFT (the median gap; the request jitter stays the
shipped version's). A closed-loop result's mean TTFT is predicted as the benchmark measures it: its
first `max_concurrency` requests go out together to an idle server and are averaged with the rest
(docs/ttft_gpu.md), so the first wave is simulated apart (all clients sending at t = 0) and weighted by
its share of the file's requests, which the file records. The result is the profile with a `serving` section (terms, the files they
came from, per-file fit), which a scenario then uses instead of the shipped engine terms.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.cost_model import ProfileCostModel, ServingOverhead
from sim.metrics import latency_table
from sim.compare import load_bench_result, workload_from_result
from sim.scenario import Scenario
from sim.workload import Workload

from .engine_fit import linearised_fit
from .silicon import bench_mean_ttft_ms
from .profile import Profile

MAX_SIM_REQUESTS = 600  # per result file: enough for a steady state, fast enough to fit in seconds


@dataclass(frozen=True)
class Observation:
    source: str  # file name
    workload: Workload  # the requests the benchmark sent (sim.compare.workload_from_result)
    ttft_ms: float  # measured mean
    tpot_ms: float
    requests: int = 0  # requests the benchmark's means are over (the file's, before MAX_SIM_REQUESTS)

    @property
    def concurrency(self) -> int | None:
        return self.workload.concurrency

    @property
    def label(self) -> str:
        w = self.workload
        load = f"c{w.concurrency}" if w.concurrency else f"{len(w)} requests over {w.duration_s:.0f} s"
        return f"{self.source} ({load}, {np.mean(w.prompt_tokens):.0f}/{np.mean(w.output_tokens):.0f})"


def read_result(path: str | Path) -> Observation:
    """One `vllm bench serve --save-result` file, read as `servesim compare` reads it (sim/compare.py):
    its requests (closed loop through max_concurrency clients, or sent at request_rate), at most
    MAX_SIM_REQUESTS of them, and its measured mean TTFT and TPOT. Closed-loop clients start out of phase
    (the workload's default spread), as real ones run."""
    doc = load_bench_result(path)
    for key in ("mean_ttft_ms", "mean_tpot_ms"):
        v = doc.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{Path(path).name}: field {key!r} must be a number > 0, got {v!r}")
    wl, _ = workload_from_result(doc, seed=0)
    total = len(wl)
    n = min(total, MAX_SIM_REQUESTS)
    wl = replace(wl, arrival_s=wl.arrival_s[:n], prompt_tokens=wl.prompt_tokens[:n], output_tokens=wl.output_tokens[:n],
                 priority=wl.priority[:n], start_spread_s=None if wl.concurrency else 0.0,
                 duration_s=wl.duration_s if wl.concurrency else float(wl.arrival_s[n - 1]))
    return Observation(source=Path(path).name, workload=wl, ttft_ms=float(doc["mean_ttft_ms"]),
                       tpot_ms=float(doc["mean_tpot_ms"]), requests=total)


def observation_scenario(base: Scenario, obs: Observation) -> Scenario:
    """`base` (GPU, model, TP, dtypes, serving limits) on one replica, with room for the result's longest request."""
    w = obs.workload
    longest = int((w.prompt_tokens + w.output_tokens).max())
    serving = replace(base.serving, replicas=1, max_model_len=max(base.max_model_len, longest))
    return replace(base, serving=serving, sim=replace(base.sim, record_timeseries=False))


def _predict(sc: Scenario, cost: ProfileCostModel, obs: Observation) -> tuple[float, float]:
    from sim.simulation import run

    lat = latency_table(run(sc, workload=obs.workload, cost_model=cost).requests)
    c = obs.concurrency
    steady = lat[lat["request_id"] >= c] if c else lat
    steady = steady if len(steady) else lat
    ttft_ms, tpot_ms = 1e3 * float(steady["ttft_s"].mean()), 1e3 * float(steady["tpot_s"].mean())
    if c:
        ttft_ms = _bench_mean_ttft_ms(sc, cost, obs, ttft_ms)
    return ttft_ms, tpot_ms


def _bench_mean_ttft_ms(sc: Scenario, cost: ProfileCostModel, obs: Observation, steady_ms: float) -> float:
    """The closed loop's mean TTFT as `vllm bench serve` reports it: the first wave (its `c` clients'
    first requests, sent together to an idle server, with a second wave behind them so the engine stays
    as busy as in the run) and the other requests in steady state, weighted by their counts."""
    from sim.simulation import run

    c, w = obs.concurrency, obs.workload
    n = min(len(w), 2 * c)
    burst = replace(w, arrival_s=w.arrival_s[:n], prompt_tokens=w.prompt_tokens[:n], output_tokens=w.output_tokens[:n],
                    priority=w.priority[:n], start_spread_s=0.0)
    lat = latency_table(run(sc, workload=burst, cost_model=cost).requests)
    wave_ms = 1e3 * float(lat.loc[lat["request_id"] < c, "ttft_s"].mean())
    total = max(obs.requests, len(w))
    if total <= c:  # every request was in the first wave
        return wave_ms
    return bench_mean_ttft_ms(wave_ms, steady_ms, total / c)


def fit_observed(base: Scenario, profile: Profile, observations: list[Observation],
                 start: ServingOverhead) -> tuple[ServingOverhead, pd.DataFrame]:
    """Terms whose simulation of every result matches its measured TPOT (step, per-sequence) and TTFT
    (response latency); `start` gives the request jitter, the kernel-time factor (compute_scale, the
    shipped one for the profile's GPU) and the first guess. The per-file table of
    measured, shipped-terms and fitted predictions."""
    scs = [observation_scenario(base, o) for o in observations]
    tpot = np.array([o.tpot_ms for o in observations])
    ttft = np.array([o.ttft_ms for o in observations])

    def ov_of(x, latency=0.0):
        return replace(start, step_overhead_s=float(x[0]) * 1e-3,
                       per_seq_overhead_s=float(x[1]) * 1e-6, host_per_seq_s=0.0, response_latency_s=latency)

    def preds(ov):
        cost = ProfileCostModel(profile.coefficients, ov)
        return np.array([_predict(sc, cost, o) for sc, o in zip(scs, observations)])

    x0 = np.array([start.step_overhead_s * 1e3, start.per_seq_overhead_s * 1e6])
    h = np.array([0.5, 10.0])
    if len(observations) >= 2:
        x = linearised_fit(lambda x: preds(ov_of(x))[:, 1], tpot, x0=x0, h=h, lower=np.zeros(2),
                           upper=np.array([20.0, 500.0]))
    else:  # one point cannot separate the two: the per-step time alone
        x = linearised_fit(lambda z: preds(ov_of([z[0], x0[1]]))[:, 1], tpot, x0=x0[:1], h=h[:1],
                           lower=np.zeros(1), upper=np.array([20.0]))
        x = np.array([x[0], x0[1]])
    no_latency = preds(ov_of(x))
    latency_ms = max(0.0, float(np.median(ttft - no_latency[:, 0])))
    fitted = ov_of(x, latency_ms * 1e-3)
    shipped = preds(start)
    final = preds(fitted)
    rows = []
    for o, s, f in zip(observations, shipped, final):
        rows.append({"result": o.label, "ttft_ms": o.ttft_ms, "tpot_ms": o.tpot_ms,
                     "shipped_ttft_ms": s[0], "shipped_tpot_ms": s[1], "fitted_ttft_ms": f[0], "fitted_tpot_ms": f[1],
                     "ttft_err_pct": 100 * (f[0] / o.ttft_ms - 1), "tpot_err_pct": 100 * (f[1] / o.tpot_ms - 1)})
    return fitted, pd.DataFrame(rows)


def with_observed(profile: Profile, overhead: ServingOverhead, table: pd.DataFrame, paths: list[str],
                  command: str) -> Profile:
    err = table[["ttft_err_pct", "tpot_err_pct"]].abs()
    serving: dict[str, Any] = {
        **{k: float(v) for k, v in asdict(overhead).items()},
        "provenance": {"source": f"servesim calibrate observe: {len(paths)} `vllm bench serve --save-result` "
                                 f"file(s) ({time.strftime('%Y-%m-%d')})",
                       "files": [str(p) for p in paths], "command": command,
                       "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "method": "each result simulated with the profile (closed loop at max_concurrency or "
                                 "Poisson at request_rate, constant lengths at the measured means); step and "
                                 "per-sequence time fitted on mean TPOT (linearised least squares), response "
                                 "latency = median TTFT gap; request jitter kept from the shipped engine terms"},
        "fit": {"per_metric": {"ttft_s": {"mape_pct": round(float(err["ttft_err_pct"].mean()), 2),
                                          "max_abs_pct_error": round(float(err["ttft_err_pct"].max()), 2)},
                               "tpot_s": {"mape_pct": round(float(err["tpot_err_pct"].mean()), 2),
                                          "max_abs_pct_error": round(float(err["tpot_err_pct"].max()), 2)}},
                "points": table.round(4).to_dict(orient="records")}}
    return replace(profile, serving=serving)
