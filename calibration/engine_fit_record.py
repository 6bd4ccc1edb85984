"""The engine_terms.json document (sim/engine_terms.py reads it): the engine-terms fit (calibration/engine_fit.py)
on every training row, with the provenance of every term. `python -m calibration.engine_fit` writes it.
"""
from __future__ import annotations

import time

import numpy as np

from sim.engine_terms import TERM_NAMES, newest_release

from .engine_fit import (JITTER_GRID_MS, OVERLAP, ROOFLINE_ROWS, STAGE1_ITERATIONS, STRUCTURE, fit_rows)
from .engine_rows import (DATA_EXCLUSIONS, EXCLUDE_DATA, FIT_MAX, FIT_MIN, FIT_WAVES, ROWS_PER_SETUP, SEED,
                          TRAIN_MODELS, data_screen, select_training, split)
from .plausibility import MAX_COMPUTE_SHARE, MAX_MEMORY_SHARE, REASON as IMPLAUSIBLE
from .silicon import CSV_NAME, PACKAGE, package_version, read_rows


def fit_all(log=print, stage1: list[float] | None = None) -> dict:
    """engine_terms.json's content: fit_rows on the plausible, thinned training rows (select_training), then
    every version's terms with their provenance. `stage1`: as fit_rows' (stage 1 reused, not fitted)."""
    rows, _ = read_rows()
    train, held = split(rows)
    fitted, implausible = select_training(rows)
    data_out = [f"{r.setup} ({r.gpu}): {why}" for r, why in data_screen(train)[1]]
    if not fitted:
        raise RuntimeError("no plausible training rows with a recorded vLLM version")
    log(f"{len(train)} training rows ({', '.join(TRAIN_MODELS)}), {len(data_out)} left out for data quality, "
        f"{len(implausible)} left out as {IMPLAUSIBLE}, "
        f"{len(fitted)} after thinning to {ROWS_PER_SETUP} per setup")
    t0 = time.perf_counter()
    fit = fit_rows(fitted, log, None if stage1 is None else np.asarray(stage1))
    wall = round(time.perf_counter() - t0, 1)
    out: dict = {"engines": {"vllm": {"versions": {}}}}
    held_models = ", ".join(sorted({r.model for r in held})) or "none"
    for v, ov in fit.overhead.items():
        out["engines"]["vllm"]["versions"][v] = {
            **{k: round(getattr(ov, k), 9) for k in TERM_NAMES}, "overlap": ov.overlap,
            "roofline": {k: round(val, 9) for k, val in fit.roofline.items()},
            "provenance": {
                "source": f"{PACKAGE} {package_version()} systems/{CSV_NAME}: measured vLLM serving runs, "
                          f"fitted by simulation (python -m calibration.engine_fit)",
                "date": time.strftime("%Y-%m-%d"),
                "split": f"by model: fitted on {', '.join(TRAIN_MODELS)}; held out: {held_models} "
                         "(benchmarks/validate_silicon.py reports the error there)",
                "rows_used": len(fit.rows[v]), "row_ids": fit.rows[v],
                "models": fit.models[v], "gpus": fit.gpus[v],
                "shared": "step time, per-sequence time, compute scale, response latency, request jitter and the roofline entry "
                          f"are fitted on every version's training rows together ({sum(map(len, fit.rows.values()))} "
                          "rows); this version's rows are listed for the record",
                "structure": f"{STRUCTURE} (chosen by leave-one-training-model-out cross-validation: python -m "
                             "calibration.engine_cv, calibration/profiles/engine_cv.json)",
                "method": "stage 1: one step for every version (overlapped with the kernels, a max not a sum, on the "
                          f"versions where the rule '{OVERLAP}' says so: `overlap` above), "
                          "per-seq and one kernel-time factor per training model and "
                          "GPU (a nuisance; a pair whose factor lands at a bound is dropped and stage 1 solved again "
                          "without it; kept: per GPU the median over its models, compute_scale_by_gpu, and the "
                          "overall median as compute_scale) on log TPOT ratios (soft-L1 least squares "
                          f"on a linearisation of the simulation, {STAGE1_ITERATIONS}x); stage 2: request jitter on the grid "
                          f"{list(JITTER_GRID_MS)} ms and the response latency (with a prefill-shortfall nuisance "
                          "per model) minimising soft-L1 log TTFT ratios; stage 3: the roofline's fixed step/per-seq "
                          f"cost on {ROOFLINE_ROWS} training rows; at most {ROWS_PER_SETUP} rows per setup; "
                          f"{FIT_WAVES} x concurrency requests per row (>= {FIT_MIN}, <= {FIT_MAX}, >= 2 x concurrency), seed {SEED}",
                "training_model_kernel_factor": {m: round(s, 3) for m, s in fit.model_scale.items()},
                "training_model_prefill_shortfall": {m: round(s, 3) for m, s in fit.prefill_shortfall.items()},
                "rows_excluded": data_out + implausible + fit.excluded,
                "rows_left_out_data_quality": {
                    "count": len(data_out), "screen": "on" if EXCLUDE_DATA else "off",
                    "exclusions": {" / ".join(k): why for k, why in DATA_EXCLUSIONS.items()},
                    "rule": "(model, GPU, engine) named in calibration/engine_rows.DATA_EXCLUSIONS, left out first when "
                            "EXCLUDE_DATA is on (docs/llama8b_h200.md: the cross-validation that decided it)"},
                "rows_left_out_implausible": {
                    "count": len(implausible), "reason": IMPLAUSIBLE,
                    "rule": f"left out before thinning: measured TTFT/TPOT imply (Little's law) compute above "
                            f"{MAX_COMPUTE_SHARE} of the GPU's dense peak or memory traffic above {MAX_MEMORY_SHARE} "
                            "of its HBM bandwidth (calibration/plausibility.py)"},
                "fit_in_sample": {"tpot_median_abs_err_pct": round(fit.tpot_mdape_pct, 2),
                                  "ttft_median_abs_err_pct": round(fit.ttft_mdape_pct, 2),
                                  "roofline_tpot_median_abs_err_pct": round(fit.roofline_tpot_mdape_pct, 2)},
                "wall_s": wall,
                **({"stage1_reused": "stage 1's result taken from an earlier run of this code on the same rows "
                                    f"(--stage1 {' '.join(f'{v:g}' for v in stage1)})"} if stage1 is not None else {}),
            }}
    counts = {v: len(ids) for v, ids in fit.rows.items()}
    out["engines"]["vllm"]["default_version"] = newest_release(counts)
    out["engines"]["vllm"]["compute_scale_by_gpu"] = {g: round(f, 4) for g, f in fit.gpu_scale.items()}
    out["engines"]["vllm"]["overlap_rule"] = OVERLAP  # a version without data: overlapped by this rule (engine_terms)
    out["note"] = ("Written by `python -m calibration.engine_fit` (do not edit by hand). Terms added to composed "
                   "GPU profiles (sim/engine_terms.py); the roofline entry is its fixed step cost.")
    return out
