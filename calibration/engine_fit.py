"""Fit the engine's own time per vLLM version on measured serving runs, by simulating them.

    python -m calibration.engine_fit            # fit, print, write calibration/profiles/engine_terms.json

The runs are aiconfigurator-core's silicon_sample.csv rows that a shipped profile covers
(calibration/silicon.py). They are SPLIT BY MODEL: the terms are fitted on the rows of
TRAIN_MODELS only, and every other model's rows are held out for the validation
(benchmarks/validate_silicon.py), which reports the error of exactly these terms on them.
No row is both fitted and reported.

All training rows are fitted together (one least squares over every model and version), each
simulated as servesim does in the validation (closed loop, constant lengths), in three stages:

1. TPOT: the engine's per-step time and per-sequence time on top of the composed profile's kernels
   (ServingOverhead: t = s * t_profile + step + per_seq * seqs), ONE step for every vLLM version;
   on the versions where vLLM's async scheduling is on by default (0.14 on: OVERLAP) the engine's
   time runs beside the kernels, t = max(s * t_profile, step + per_seq * seqs) (ServingOverhead.overlap;
   solved on the additive simulation's linearisation with the max taken per row, engine_overlap.solve_stage1),
   least squares on log(predicted / measured TPOT) with a soft-L1 loss. `s`, one factor per training
   model on each GPU, is a nuisance: the kernel time a model's composed profile misses or adds
   (a kernel the tables time unlike the engine runs it, an MoE kernel unlike its table) is that model's, and without it the engine
   terms absorb it and carry it to every other model. (Disclosed: terms fitted on Qwen3-32B alone
   with no such factor put the held-out models' TPOT +13 % high in median.) What is kept is per GPU:
   the median of the training models' factors on that GPU (the kernel tables of one system are
   measured under the same conditions, so their bias is the GPU's), and their overall median for
   GPUs without training rows (`compute_scale_by_gpu` and each version's `compute_scale`); a factor
   at its bound (SCALE_BOUNDS) is not an estimate and is left out of those medians (with DROP_AT_BOUND,
   a structure cross-validation may choose, that pair's rows are also dropped and stage 1 solved again).
2. TTFT: the client -> engine delay (its mean; exponential per request, seeded) on a fixed
   grid, and for each a response latency (a constant per request: the engine's, shared) with a
   nuisance per training model proportional to its profile's prefill time (its own prefill
   shortfall, not kept); the jitter with the lowest cost and its latency;
3. the roofline's fixed per-step and per-sequence cost, refitted on training rows with the
   roofline's default efficiencies (RooflineParams), so the analytic model's constant is measured too
   (on every screened row, a pair dropped in stage 1 included: the roofline does not use its profile).

The structure (one step for all versions, overlapped from vLLM 0.14 on: STRUCTURE, OVERLAP) was chosen by
leave-one-training-model-out cross-validation (calibration/engine_cv.py): a step per version, as fitted
before, let a version recorded by one training model alone carry that model's own gap; the additive
form on every version scored TPOT 11.0 % there, the overlapped one 8.4 %. The terms stay stored
per version, so that a version's own step can return when its data says so. The (model, GPU, engine)
named in engine_rows.DATA_EXCLUSIONS (Llama-3.1-8B FP8 on H200 under vLLM: docs/llama8b_h200.md) are
left out first where EXCLUDE_DATA says so (the cross-validation rule recorded there decides). Rows whose measured
TTFT and TPOT imply more work than the GPU can do (calibration/plausibility.py: implausible without
prefix-cache hits) are left out first (`select_training`); then rows whose measured TTFT shows
queueing for KV blocks (> QUEUEING_TTFT_S) or that the simulation predicts KV-bound: KV capacity is
another model's job. At most ROWS_PER_SETUP rows per setup are fitted (spread over concurrency,
among the plausible rows), so that no setup with many rows dominates and the fit runs in minutes.

This module holds the structure and the three stages (fit_rows). The split, the screens and the simulation
of one row are calibration/engine_rows.py; the document written, with its provenance, is
calibration/engine_fit_record.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.cost_model import ServingOverhead
from sim.engine_terms import TERM_NAMES, async_scheduling_default, terms_path

from .engine_latency import fit_latency
from .engine_overlap import kernel_step_ms, overlapped_rows, solve_stage1
from .engine_rows import (FIT_MAX, FIT_MIN, FIT_WAVES, QUEUEING_TTFT_S, ROWS_PER_SETUP,  # noqa: F401 (re-exported)
                          SEED, TRAIN_MODELS, _profile_cost, _roofline_cost, _sim, fit_requests, screen_fit_rows,
                          select_training, split, thin)
from .linearised import linearise, linearised_fit, solve_linearised  # noqa: F401 (linearised_fit: re-exported)
from .silicon import Row, lone_prefill_ms

JITTER_GRID_MS = (0.0, 5.0, 10.0, 20.0)  # client -> engine delay means tried (stage 2)
ROOFLINE_ROWS = 40  # training rows the roofline's fixed cost is refitted on (stage 3), every k-th
SCALE_BOUNDS = (0.5, 2.5)  # a training model's kernel-time factor (stage 1's nuisance)
# The structure of stage 1, chosen by leave-one-training-model-out cross-validation (calibration/engine_cv.py,
# calibration/profiles/engine_cv.json): ONE step time for every vLLM version. (On the profiles before the MoE
# expert term the rule chose c4, the same with the training pairs whose factor lands at a bound dropped; on
# today's profiles c1 and c4 are 11.0 % and 12.2 % TPOT in cross-validation: the choice is not a sharp one.
# k0, no engine time at all beside the composed kernels, is 20.4 % (signed -18.8 %): on the training models
# the kernels run short, so the rule keeps engine time; on the held-out models they do not, see the report.)
STRUCTURE = "o2: one step, overlapped where vLLM schedules async by default (>= 0.14)"
DROP_AT_BOUND = False
# Which versions' engine time runs beside the kernels (ServingOverhead.overlap: a step is the longer of the
# two, not their sum): 'async_default', the versions where vLLM's async scheduling is on by default (0.14
# on, sim.engine_terms.async_scheduling_default), as the cross-validation chose (o2: TPOT 8.4 % against
# c1's 11.0 %, the same structure without overlap); 'none' is the additive form of every earlier fit.
OVERLAP = "async_default"
STAGE1_ITERATIONS = 1  # TPOT is linear in every stage-1 parameter but for batching effects: one linearisation


def version_overlaps(version: str) -> bool:
    """Whether the terms of `version` are overlapped with the kernels (OVERLAP)."""
    return OVERLAP == "all" or (OVERLAP == "async_default" and bool(async_scheduling_default("vllm", version)))


@dataclass(frozen=True)
class Fit:
    overhead: dict[str, ServingOverhead]  # per vLLM version
    roofline: dict[str, float]
    rows: dict[str, list[str]]  # per version: ids of the rows fitted
    models: dict[str, list[str]]  # per version: the training models of its rows
    gpus: dict[str, list[str]]
    excluded: list[str]  # training rows left out (queueing / KV-bound), with why
    model_scale: dict[str, float]  # stage 1's nuisance per training model and GPU
    gpu_scale: dict[str, float]  # kept: per GPU, the median of its training models' factors
    prefill_shortfall: dict[str, float]  # stage 2's nuisance per training model
    tpot_mdape_pct: float  # on the training rows, with the nuisances (in-sample)
    ttft_mdape_pct: float
    roofline_tpot_mdape_pct: float


def at_bound(factors: np.ndarray) -> np.ndarray:
    """Which kernel-time factors sit at a bound (SCALE_BOUNDS): not estimates but a profile off by more
    than the bounds allow."""
    f = np.asarray(factors)
    return (f <= SCALE_BOUNDS[0] + 1e-6) | (f >= SCALE_BOUNDS[1] - 1e-6)


def stage1_solve(f0: np.ndarray, J: np.ndarray, x0: np.ndarray, measured: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray, h: np.ndarray, pair: np.ndarray) -> np.ndarray:
    """Stage 1 on its linearisation: x = (step, per-seq, factor per (model, GPU) pair); `pair`: each row's
    pair. Pairs whose factor lands at a bound (DROP_AT_BOUND) are left out and the rest solved again;
    their factors stay at the bound in x, for the record (all at a bound: nothing is dropped)."""
    x = solve_linearised(f0, J, x0, measured, lower, upper, h)
    bound = at_bound(x[2:])
    if DROP_AT_BOUND and bound.any() and not bound.all():
        rows_in, cols = ~bound[pair], np.r_[True, True, ~bound]
        x = x.copy()
        x[cols] = solve_linearised(f0[rows_in], J[np.ix_(rows_in, cols)], x0[cols], measured[rows_in], lower[cols],
                                   upper[cols], h[cols])
    return x


def kept_factors(factors: dict[tuple[str, str], float], min_models: int = 1) -> tuple[dict[str, float], float]:
    """(per GPU, elsewhere) kernel-time factors to keep from the training models' (model, GPU) factors:
    medians, leaving out factors at their bounds (SCALE_BOUNDS), which are not estimates but a profile
    off by more than the bounds allow. All at bounds: the plain medians. `min_models` (a structure's
    Structure.min_models_per_gpu; the fit's is 1): a GPU keeps its own factor only where at least this many
    training models have a free factor on it, the others get the value for elsewhere."""
    free = {k: f for k, f in factors.items() if SCALE_BOUNDS[0] + 1e-6 < f < SCALE_BOUNDS[1] - 1e-6} or factors
    gpus = sorted({g for _, g in factors})
    by_gpu = {g: float(np.median([f for (_, gg), f in free.items() if gg == g])) for g in gpus
              if sum(gg == g for _, gg in free) >= min_models}
    return by_gpu, float(np.median(list(free.values())))


def fit_rows(rows: list[Row], log=print, stage1: np.ndarray | None = None) -> Fit:
    """The three stages (module docstring) on the training rows `rows` (every version at once).
    `stage1`: stage 1's x from an earlier run of the same rows (step, per-seq, factors
    per (model, GPU), in fit order) instead of fitting it again."""
    keep, excluded = screen_fit_rows(rows)
    models = sorted({(r.model, r.gpu) for r in keep})  # one kernel factor per training model on each GPU
    log(f"  {len(keep)} rows, {len(excluded)} left out; models {models}")
    nm = len(models)
    mi = np.array([models.index((r.model, r.gpu)) for r in keep])
    tpot = np.array([r.tpot_ms for r in keep])

    # Stage 1: x = (step ms, per-seq us, factor per (model, GPU)...). The jitter is a first guess here
    # (it barely moves TPOT) and refined in stage 2.
    jitter0 = 2e-3

    def ov_for(x, i, jitter=jitter0, latency=0.0, scale=None, overlap=None):
        """Row i's served terms; overlapped where OVERLAP says for its version (unless `overlap` is given)."""
        return ServingOverhead(compute_scale=float(x[2 + mi[i]]) if scale is None else scale,
                               step_overhead_s=float(x[0]) * 1e-3, per_seq_overhead_s=float(x[1]) * 1e-6,
                               host_per_seq_s=0.0, response_latency_s=latency, request_jitter_s=jitter,
                               overlap=bool(overlapped_rows([keep[i]], OVERLAP)[0]) if overlap is None else overlap)

    def tpot_of(x):  # additive: what stage 1 linearises (with OVERLAP, engine_overlap.solve_stage1 takes the max)
        return np.array([_sim(r, _profile_cost(r, ov_for(x, i, overlap=False)), False)["pred_tpot_ms"]
                         for i, r in enumerate(keep)])

    depends = np.zeros((len(keep), 2 + nm))
    depends[:, :2] = 1
    depends[np.arange(len(keep)), 2 + mi] = 1
    x0, h = np.r_[1.0, 20.0, np.full(nm, 1.0)], np.r_[0.5, 10.0, np.full(nm, 0.05)]
    lower = np.r_[0.0, 0.0, np.full(nm, SCALE_BOUNDS[0])]
    upper = np.r_[20.0, 500.0, np.full(nm, SCALE_BOUNDS[1])]
    t0 = time.perf_counter()
    if stage1 is not None:
        x = np.asarray(stage1, dtype=float)
    else:  # one linearisation (STAGE1_ITERATIONS); a refit without the pairs at a bound reuses it
        f0, J = linearise(tpot_of, x0, h, groups=[[0], [1], list(range(2, 2 + nm))], depends=depends)
        if OVERLAP == "none":
            x = stage1_solve(f0, J, x0, tpot, lower, upper, h, mi)
        else:
            if DROP_AT_BOUND:
                raise ValueError("engine_fit: DROP_AT_BOUND with OVERLAP is not implemented")
            d = np.c_[np.zeros(len(keep)), J[:, 0], J[:, 1]]
            x = solve_stage1(f0, J, x0, tpot, lower, upper, h, mi, overlapped_rows(keep, OVERLAP),
                             kernel_step_ms(keep, d))
    scale = {f"{m} on {g}": float(x[2 + j]) for j, (m, g) in enumerate(models)}
    bound = at_bound(x[2:]) if DROP_AT_BOUND and not at_bound(x[2:]).all() else np.zeros(nm, bool)
    for j in np.flatnonzero(bound):  # DROP_AT_BOUND: such a pair's profile is off beyond what a factor may say
        n = int((mi == j).sum())
        excluded.append(f"{models[j][0]} on {models[j][1]} ({n} rows): kernel-time factor at its bound "
                        f"{x[2 + j]:.2f} (the composed profile is off by more than {SCALE_BOUNDS}; not fitted)")
    screened = keep  # stage 3 (the roofline, which does not use the profiles) keeps every screened row
    keep = [r for r in keep if not bound[models.index((r.model, r.gpu))]]
    x = np.r_[x[:2], x[2:][~bound]]
    models = [m for j, m in enumerate(models) if not bound[j]]
    nm = len(models)
    mi = np.array([models.index((r.model, r.gpu)) for r in keep])
    tpot, ttft = np.array([r.tpot_ms for r in keep]), np.array([r.ttft_ms for r in keep])
    versions = sorted({r.backend_version for r in keep})
    gpu_scale, kept_scale = kept_factors({mg: float(x[2 + j]) for j, mg in enumerate(models)})
    log(f"  stage 1 (TPOT): step {x[0]:.3f} ms (every version), per-seq {x[1]:.1f} us, kernel factors "
        f"{({m: round(s, 3) for m, s in scale.items()})} (dropped at a bound: {int(bound.sum())} pairs; kept: per GPU "
        f"{gpu_scale}, else median {kept_scale:.3f}); {len(keep)} rows fitted; {time.perf_counter() - t0:.0f} s")

    # Stage 2: TTFT. measured = predicted(jitter, no latency) + latency + k_model * lone prefill: the
    # latency is the engine's (a constant per request); k_model * lone prefill is a training model's own
    # prefill shortfall, fitted as a nuisance and not kept. For each jitter on the grid: simulate once,
    # fit (latency, k per model) by soft-L1 least squares on log ratios; keep the jitter with the lowest cost.
    lone = np.array([lone_prefill_ms(r) for r in keep])
    pair_names = [f"{m} on {g}" for m, g in models]
    onehot = np.eye(nm)[mi]
    isl = np.array([r.isl for r in keep])
    best = None
    for j_ms in JITTER_GRID_MS:
        pred = np.array([_sim(r, _profile_cost(r, ov_for(x, i, jitter=j_ms * 1e-3)))["pred_ttft_ms"]
                         for i, r in enumerate(keep)])
        sol = fit_latency(pred, ttft, lone, isl, mi, nm, per_token=False)  # the CV's stage 2 (engine_latency.py)
        log(f"  stage 2: jitter {j_ms:g} ms -> latency {sol.latency_ms:.1f} ms, prefill shortfall "
            f"{dict(zip(pair_names, np.round(sol.shortfall, 2)))}, cost {sol.cost:.3f}")
        if best is None or sol.cost < best[0]:
            best = (sol.cost, j_ms, sol.latency_ms, sol.shortfall)
    _, j_ms, lat_ms, shortfall = best

    # In-sample errors with the nuisances (for the provenance; the held-out error is the validation's).
    final = [_sim(r, _profile_cost(r, ov_for(x, i, jitter=j_ms * 1e-3, latency=lat_ms * 1e-3)))
             for i, r in enumerate(keep)]
    tpot_err = np.abs(np.array([f["pred_tpot_ms"] for f in final]) / tpot - 1) * 100
    ttft_pred = np.array([f["pred_ttft_ms"] for f in final]) + (onehot @ shortfall) * lone
    ttft_err = np.abs(ttft_pred / ttft - 1) * 100

    # Stage 3: the roofline's fixed per-step and per-sequence cost on every k-th training row.
    roof_rows = screened[:: max(1, len(screened) // ROOFLINE_ROWS)]
    roof_meas = np.array([r.tpot_ms for r in roof_rows])

    def roof_tpot(y):
        return np.array([_sim(r, _roofline_cost(r, y[0] * 1e-3, y[1] * 1e-6), False)["pred_tpot_ms"]
                         for r in roof_rows])

    y = linearised_fit(roof_tpot, roof_meas, x0=np.array([3.0, 20.0]), h=np.array([0.5, 10.0]),
                       lower=np.array([0.0, 0.0]), upper=np.array([30.0, 500.0]))
    roof_err = np.abs(roof_tpot(y) / roof_meas - 1) * 100
    log(f"  stage 3 (roofline, {len(roof_rows)} rows): step {y[0]:.3f} ms, per-seq {y[1]:.1f} us, "
        f"TPOT median |err| {np.median(roof_err):.1f} %")
    overhead = {v: ServingOverhead(compute_scale=kept_scale, step_overhead_s=float(x[0]) * 1e-3,
                                   per_seq_overhead_s=float(x[1]) * 1e-6, host_per_seq_s=0.0,
                                   response_latency_s=lat_ms * 1e-3, request_jitter_s=j_ms * 1e-3,
                                   overlap=version_overlaps(v))
                for v in versions}
    by_v = {v: [r for r in keep if r.backend_version == v] for v in versions}
    return Fit(overhead=overhead, roofline={"step_overhead_s": float(y[0]) * 1e-3,
                                            "per_seq_overhead_s": float(y[1]) * 1e-6},
               rows={v: [r.id for r in rs] for v, rs in by_v.items()},
               models={v: sorted({r.model for r in rs}) for v, rs in by_v.items()},
               gpus={v: sorted({r.gpu for r in rs}) for v, rs in by_v.items()}, excluded=excluded,
               model_scale=scale, gpu_scale=gpu_scale, prefill_shortfall=dict(zip(pair_names, map(float, shortfall))),
               tpot_mdape_pct=float(np.median(tpot_err)), ttft_mdape_pct=float(np.median(ttft_err)),
               roofline_tpot_mdape_pct=float(np.median(roof_err)))


def fit_all(log=print, stage1: list[float] | None = None) -> dict:
    """The engine_terms.json document fitted on every training row (calibration/engine_fit_record.py)."""
    from .engine_fit_record import fit_all as record  # imported here: that module reads this one's constants

    return record(log, stage1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(terms_path()), help="where to write the terms ('' for nowhere)")
    ap.add_argument("--stage1", nargs="+", type=float, metavar="X",
                    help="reuse stage 1's result (step ms, per-seq us, factors per model and GPU, in the "
                         "order the log prints) instead of fitting it again")
    args = ap.parse_args(argv)
    data = fit_all(stage1=args.stage1)
    print(json.dumps({v: {k: e[k] for k in (*TERM_NAMES, "roofline")}
                      for v, e in data["engines"]["vllm"]["versions"].items()}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
