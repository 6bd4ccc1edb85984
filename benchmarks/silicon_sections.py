"""The sections of docs/validation_gpu.md that do not depend on the rows simulated, or only on the misses.

The engine terms as fitted (sim/engine_terms.py's file: per version, the kernel factors, the structure's
cross-validation), what the terms are and how each row is simulated, and the held-out misses with
their causes. benchmarks/silicon_report.py puts them together.
"""
from __future__ import annotations

import pandas as pd

from calibration.engine_fit import DROP_AT_BOUND
from calibration.silicon import BENCH_PROMPTS_PER_CLIENT, MAX_REQUESTS, MIN_REQUESTS, WAVES
from sim.engine_terms import engine_terms, known_versions, terms_path
from silicon_tables import MISS_TPOT_PCT, MISS_TTFT_PCT, _f, cause


def terms_table() -> list[str]:
    lines = ["| vLLM | engine time | step ms | per-seq us | compute scale | response latency ms | request jitter mean ms | "
             "roofline step ms | roofline per-seq us | rows fitted | models fitted | in-sample TPOT / TTFT median abs err % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for v in known_versions():
        t = engine_terms("vllm", v)
        o, p = t.overhead, t.provenance
        fit = p.get("fit_in_sample", {})
        lines.append(f"| {v} | {'overlapped (max)' if o.overlap else 'added'} | {o.step_overhead_s * 1e3:.3f} | {o.per_seq_overhead_s * 1e6:.1f} | {o.compute_scale:.3f} | "
                     f"{o.response_latency_s * 1e3:.1f} | {o.request_jitter_s * 1e3:.1f} | "
                     f"{(t.roofline_step_overhead_s or 0) * 1e3:.3f} | {(t.roofline_per_seq_overhead_s or 0) * 1e6:.1f} | "
                     f"{p.get('rows_used')} | {', '.join(p.get('models', []))} | "
                     f"{fit.get('tpot_median_abs_err_pct')} / {fit.get('ttft_median_abs_err_pct')} |")
    return lines


def factors_section() -> list[str]:
    t = engine_terms("vllm")
    if t is None:
        return []
    p = t.provenance
    fac = p.get("training_model_kernel_factor")
    if not isinstance(fac, dict):
        return []
    from sim.engine_terms import _read

    by_gpu = _read(str(terms_path()))["engines"]["vllm"].get("compute_scale_by_gpu", {})
    lines = ["", "Kernel-time factors (stage 1): per training model and GPU (nuisance, not kept) and kept per GPU "
                 f"(other GPUs: {t.overhead.compute_scale:.3f}, the median):", "",
             "| training model on GPU | factor | prefill shortfall (TTFT nuisance) |", "|---|---:|---:|"]
    short = p.get("training_model_prefill_shortfall") or {}
    lines += [f"| {k} | {v:.3f} | " + (f"{short[k]:.2f} |" if k in short else "dropped: factor at its bound, not fitted |")
              for k, v in fac.items()]
    lines += ["", "| GPU | kept factor |", "|---|---:|"] + [f"| {g} | {f:.3f} |" for g, f in by_gpu.items()]
    return lines


def cv_section() -> list[str]:
    """The structure's cross-validation on the training models (calibration/engine_cv.py's table)."""
    from calibration.engine_cv import CV_PATH

    if not CV_PATH.is_file():
        return []
    import json

    cv = json.loads(CV_PATH.read_text())
    models = cv["training_models"]
    lines = ["", (f"- **The fit's structure, chosen by cross-validation on the training models only** "
                  f"(`python -m calibration.engine_cv`, `{CV_PATH.relative_to(CV_PATH.parents[2])}`): each fold fits "
                  f"on two of {', '.join(models)} and scores the third ({cv['rows']} training rows, at most "
                  f"{cv['rows_per_setup']} per setup, on a linear surrogate of the simulation built from "
                  f"{len(cv.get('basis_points', [])) or 'a few'} simulations per row). Rule: {cv['rule']}. "
                  f"Chosen: **{cv['chosen']}**. The held-out models play no part in the choice."), "",
             "| structure | CV rows | TPOT median abs err % | TPOT median err % | TTFT median abs err % | TTFT median err % | "
             + " | ".join(f"{m} TPOT / TTFT abs err %" for m in models) + " |",
             "|---|---:|---:|---:|---:|---:|" + "---|" * len(models)]
    for r in cv["table"]:
        mark = "**" if r["structure"] == cv["chosen"] else ""
        lines.append(f"| {mark}{r['structure']}{mark} | {r['rows']} | {r['tpot_mdape']:.1f} | {r['tpot_signed']:+.1f} | "
                     f"{r['ttft_mdape']:.1f} | {r['ttft_signed']:+.1f} | "
                     + " | ".join(f"{r['folds'][m]['tpot_mdape']:.1f} / {r['folds'][m]['ttft_mdape']:.1f}"
                                  if m in r["folds"] else "-" for m in models) + " |")
    best = min(r["tpot_mdape"] for r in cv["table"])
    close = [r["structure"].split(":")[0] for r in cv["table"] if r["tpot_mdape"] <= best + 1.0]
    lines += ["", (f"Within 1 point of the best CV TPOT: {', '.join(close)}. The folds hold three models, and one of "
                   "them (the model whose factor sits at its bound) is missed by its profile far beyond any engine "
                   "term: differences this small are not a strong preference, and the held-out rows (headline) "
                   "are the test of the choice, not its basis.")]
    sims = [(r["structure"], r["simulated"]) for r in cv["table"] if "simulated" in r]
    if sims:
        lines += ["", "The surrogate checked: each fold's terms with its scored rows simulated (not linearised): "
                  + "; ".join(f"{n}: TPOT {c['tpot_mdape']:.1f} % (signed {c['tpot_signed']:+.1f} %), TTFT "
                              f"{c['ttft_mdape']:.1f} % (signed {c['ttft_signed']:+.1f} %)" for n, c in sims) + "."]
    return lines


def terms_notes() -> list[str]:
    """What the engine terms are, why clients start out of phase, and the roofline's fixed cost."""
    return [
        "",
        ("- **What the terms are.** A served step = compute scale x the profile's kernel time + step time + "
         "per-sequence time x sequences (`sim.cost_model.ServingOverhead`). All training rows are fitted in one "
         "least squares: one step time (the same for every vLLM version: the structure cross-validation chose, "
         "above), one per-sequence time, and a kernel-time factor per training model and GPU"
         + ("; a model and GPU whose factor lands at its bound is dropped from the fit (listed among the rows "
            "left out)" if DROP_AT_BOUND else "; a factor at its bound is left out of the medians kept below")
         + ". That factor is a nuisance (a model's own kernel error, e.g. Qwen3's q/k norms "
         "missing from the composed profile, must not become engine time carried to other models); what is kept "
         "is per GPU, the median of the training models' factors on that GPU (the kernel tables of one system "
         "share its measurement conditions), and the overall median for GPUs without training rows. A response "
         "reaches the client after the response latency (fitted on the training rows' TTFT as a constant beside "
         "a term per training model and GPU proportional to the profile's prefill, its own prefill shortfall, not "
         "kept); a request "
         "reaches the engine after a random delay (exponential, the mean above, its own seeded stream). The profiles are composed from per-operator kernel tables and carry no engine "
         "time (`lower_bound: true`), so `cost_model: auto` and `cost_model: {profile: ...}` add these terms to "
         "them; a profile measured against a real server (the CPU profile) keeps its own."),
        ("- **Clients out of phase.** Closed-loop clients with equal lengths that start together stay in "
         "lockstep in a simulation: a wave's prompts reach the engine in the same instant, are prefilled in the "
         "same steps, finish in the same step and come back together, wave after wave (the engine's step "
         "boundary re-gathers whatever arrives during a long prefill step, so small timing noise does not break "
         "a wave up: a request jitter of 5-50 ms, or a serial API server of 2-10 ms per request, left the waves "
         "intact in trials). Real clients are out of phase. Measured on the real vLLM OpenAI server here "
         "(`calibration/profiles/cpu-vllm_tiny-llama_tp1_bf16/serving_measurements.csv`, closed loops at "
         "constant lengths): a client sends its next request 0.03-0.6 ms after reading the last token (10th-90th "
         "percentile), yet the first wave's sends already spread over 1.5-28 ms and TTFTs within one point spread "
         "2-5x. So a closed loop now starts its clients at times drawn uniformly over one expected request "
         "duration (`workload.arrival.start_spread_s`, default null = that estimate; 0 = the old lockstep; its own "
         "seeded stream): the phases of a steady state, not a wave. Requests also reach the engine after a random "
         "delay (`request_jitter_s`, exponential, fitted on the grid in the provenance; it moves TTFT). "
         "Since contradicted, and not yet acted on here: vLLM's own step log on the real server (2026-11-27, "
         "docs/step_sequence_cpu.md) shows the waves of a closed loop at equal lengths persisting, every wave "
         "reaching the engine as its first request alone and the rest later (the API server's hand-over, "
         "`engine.api_server_per_request_s`, off by default); the H200 lease saw the same (docs/gpu_vllm_h200.md). "
         "The spread of TTFTs within a point comes from that split and from prompts prefilled 8-9 per "
         "budget-limited step, not from clients out of phase. Replacing the start spread by lockstep clients "
         "behind that API server is a candidate for the engine fit's cross-validation, post hoc (its bar)."),
        ("- **The roofline's fixed cost** (`cost_model: {kind: roofline}`) is re-derived on the same training rows: "
         "its per-step and per-sequence constants fitted on TPOT with its default efficiencies (columns "
         "`roofline` above). `RooflineParams` keeps 3 ms + 20 us/sequence as the fallback when no terms exist."),
    ]


def method_section() -> list[str]:
    """How each row is simulated."""
    return [
        "", "## How each row is simulated", "",
        ("One replica at the row's TP, priced by the shipped profile `<gpu>_<model>_tp<TP>_<dtype>` plus the "
         "engine terms of the row's vLLM version; a `closed_loop` workload with `concurrency` clients and "
         "`think_time_s: 0`, `constant` prompt = ISL and output = OSL tokens. vLLM's API-server defaults "
         "(>= 70 GiB and not an A100: `max_num_batched_tokens` 8192, `max_num_seqs` 1024; A100: 2048/256), "
         "chunked prefill, block size 16, `gpu_memory_utilization` 0.9, `max_model_len` = the model's context. "
         f"Requests per row: clamp({WAVES} x concurrency, {MIN_REQUESTS}, {MAX_REQUESTS}); the first wave is "
         "warm-up and left out of the steady-state means (TPOT). The predicted TTFT is the benchmark's mean as "
         "measured: `vllm bench serve` sends its first `concurrency` requests together to an idle server and "
         f"averages over all of them, so the first wave (simulated apart, all sent at t = 0) counts as one in "
         f"{BENCH_PROMPTS_PER_CLIENT} requests per client (assumed; not recorded: docs/ttft_gpu.md). "
         "Seed 0 draws the request jitter (seed 1 under Sensitivity)."), "",
    ]


def misses_section(misses: pd.DataFrame, main: pd.DataFrame, kernels_only: bool) -> list[str]:
    """The held-out rows beyond MISS_TPOT_PCT or MISS_TTFT_PCT by setup and cause, then each; with the
    kernels-only run (`kernels_only`), the measured TPOT's gap over the kernels alone by model."""
    lines = ["## Misses (held-out rows beyond "
             f"{MISS_TPOT_PCT:.0f} % TPOT or {MISS_TTFT_PCT:.0f} % TTFT) and their causes", ""]
    if len(misses):
        m = misses.assign(cause=[cause(r) for r in misses.itertuples(index=False)])
        lines += ["By setup and cause (rows; median signed errors):", "",
                  "| GPU | model | dtype | cause | rows | TTFT err % | TPOT err % |", "|---|---|---|---|---:|---:|---:|"]
        for (gpu, model, dtype, why), g in m.groupby(["gpu", "model", "dtype", "cause"], sort=True):
            lines.append(f"| {gpu} | {model} | {dtype} | {why} | {len(g)} | {g['ttft_err_pct'].median():+.1f} | "
                         f"{g['tpot_err_pct'].median():+.1f} |")
        lines += ["", "Every miss:", "",
                  "| setup | GPU | vLLM | TTFT err % | TPOT err % | TPOT kernels-only err % | cause |",
                  "|---|---|---|---:|---:|---:|---|"]
        for r in m.itertuples(index=False):
            kern = 100 * (r.kernels_tpot_ms - r.tpot_ms) / r.tpot_ms
            lines.append(f"| {r.setup} | {r.gpu} | {r.backend_version} | {r.ttft_err_pct:+.1f} | {r.tpot_err_pct:+.1f} | "
                         f"{_f(kern, sign=True)} | {r.cause} |")
    else:
        lines.append("None.")
    if kernels_only:
        gap_by_model = main.assign(kgap=main["tpot_ms"] - main["kernels_tpot_ms"]).groupby("model")["kgap"]
        lines += ["", ("Measured TPOT - kernels-only TPOT by model (what the engine terms and the kernel factor must "
                       "supply), median (10th-90th percentile): " + "; ".join(
                           f"{m} {g.median():.2f} ms ({g.quantile(0.1):.2f} to {g.quantile(0.9):.2f})"
                           for m, g in gap_by_model) + ".")]
    return lines
