"""Which structure of the engine fit generalises: leave-one-training-model-out cross-validation.

    python -m calibration.engine_cv             # simulate the basis (minutes), fit every structure on every fold,
                                                # print the table, write calibration/profiles/engine_cv.json

Only the TRAINING models (calibration/engine_fit.TRAIN_MODELS) are used: each fold fits on two of
them and measures the TPOT/TTFT error on the third, whose rows the fold's fit never sees (`folds`).
The held-out models of the validation play no part here, so a structure is chosen without them.

The fit's stages are linear in their parameters but for batching effects (calibration/engine_fit:
one linearisation), so every row is simulated a few times (`basis`: the kernels alone, with a
kernel-time factor, a step time and a per-sequence time added one at a time, and at each request
jitter of the grid) and each structure is then fitted on that linear surrogate in milliseconds,
as stage 1 and stage 2 of the fit do (soft-L1 least squares on log ratios, same bounds). The
structure with the lowest pooled median |TPOT error| over the three folds is chosen (TTFT breaks
a tie within 0.5 points; a candidate that changes stage 2 alone, e.g. t1's response latency per prompt
token, has its base structure's TPOT to the bit, so its pooled TTFT decides against that base); engine_fit.STRUCTURE names it and engine_fit fits it on all three
training models. The candidates are listed in calibration/engine_structures.py; the overlapped ones
(engine time beside the kernels, a max, not a sum) are priced on the same basis by
calibration/engine_overlap.py, and `--check` simulates the best of them to test that surrogate.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from sim.cost_model import ServingOverhead
from sim.engine_terms import _nearest, _version_key, newest_release

from .engine_fit import (JITTER_GRID_MS, QUEUEING_TTFT_S, SCALE_BOUNDS, TRAIN_MODELS, _profile_cost, _sim,
                         select_training)
from .engine_basis import (BASIS_JITTER_MS, BASIS_PER_SEQ_US, BASIS_SCALE, BASIS_STEP_MS, Basis,
                           cached_basis)
from .engine_latency import fit_latency
from .engine_rows import DATA_EXCLUSIONS, EXCLUDE_DATA, data_screen, screen_fit_rows, split
from .engine_overlap import engine_share, overlapped_rows
from .engine_structures import POST_HOC_BAR_PCT, STRUCTURES, Structure  # noqa: F401 (Structure: re-exported)
from .plausibility import MAX_COMPUTE_SHARE, MAX_MEMORY_SHARE, REASON as IMPLAUSIBLE
from .silicon import Row, read_rows

CV_PATH = Path(__file__).resolve().parent / "profiles" / "engine_cv.json"


def folds(rows: list[Row], models=TRAIN_MODELS) -> list[tuple[str, list[int], list[int]]]:
    """(held-out model, indices fitted, indices scored): one fold per training model with rows; a
    fold never fits a row of the model it scores."""
    out = []
    for m in models:
        test = [i for i, r in enumerate(rows) if r.model == m]
        if test:
            out.append((m, [i for i, r in enumerate(rows) if r.model != m], test))
    return out


@dataclass
class Terms:
    """A fold's fitted terms, as engine_terms would serve them."""
    step_ms: dict[str, float]  # per version
    per_seq_us: dict[str, float]  # per GPU ('*': elsewhere)
    scale: dict[str, float]  # kept, per GPU ('*': elsewhere)
    default_version: str
    jitter_ms: float = BASIS_JITTER_MS
    latency_ms: float = 0.0
    latency_per_token_us: float = 0.0  # response latency per prompt token (Structure.latency_per_token)
    pair_factor: dict[str, float] | None = None  # the training pairs' own factors (for the record)
    overlap: str = "none"  # which rows' steps overlap (engine_overlap.overlapped_rows: by the row's own version)
    exposed_ms: float = 0.0

    def of(self, r: Row) -> tuple[float, float, float]:
        v = r.backend_version if r.backend_version in self.step_ms else _nearest(
            "" if r.backend_version == "not recorded" else r.backend_version,
            sorted(self.step_ms, key=_version_key), self.default_version)
        return (self.scale.get(r.gpu, self.scale["*"]), self.step_ms[v], self.per_seq_us.get(r.gpu, self.per_seq_us["*"]))


def _lin_tpot(B: Basis, idx, s, st, ps, ov=None, ex=0.0):
    """TPOT on the surrogate; `ov`: rows whose steps overlap (engine_overlap), `ex`: exposed step ms."""
    if ov is None or not np.any(ov):
        share = 1.0
    else:
        share = engine_share(B.d_tpot[idx], B.kernel_step()[idx], s, st, ps, ov)
    return (B.tpot0[idx] + (s - 1) * B.d_tpot[idx, 0] + share * (st * B.d_tpot[idx, 1] + ps * B.d_tpot[idx, 2])
            + ex * B.d_tpot[idx, 1])


def _lin_ttft(B: Basis, idx, j, s, st, ps, ov=None, ex=0.0):
    if ov is None or not np.any(ov):
        share = 1.0
    else:
        share = engine_share(B.d_tpot[idx], B.kernel_step()[idx], s, st, ps, ov)
    return (B.ttft0[idx, j] + (s - 1) * B.d_ttft[idx, 0] + share * (st * B.d_ttft[idx, 1] + ps * B.d_ttft[idx, 2])
            + ex * B.d_ttft[idx, 1])


def fit_structure(B: Basis, idx: list[int], st: Structure) -> Terms:
    """Stage 1 (and stage 2) of engine_fit on the surrogate of rows `idx`, in structure `st`."""
    idx = np.asarray(idx)
    rows = [B.rows[i] for i in idx]
    versions = sorted({r.backend_version for r in rows})
    gpus = sorted({r.gpu for r in rows})
    pairs = sorted({(r.model, r.gpu) for r in rows})
    vi = np.array([versions.index(r.backend_version) for r in rows])
    gi = np.array([gpus.index(r.gpu) for r in rows])
    pi = np.array([pairs.index((r.model, r.gpu)) for r in rows])
    nv, ng, npair = len(versions), len(gpus), len(pairs)
    nstep = 0 if st.step == "none" else (1 if st.step == "shared" else (1 + nv if st.step == "shrunk" else nv))
    nps = 0 if st.per_seq == "none" else (ng if st.per_seq == "gpu" else 1)
    nf = {"none": 0, "gpu": ng}.get(st.factor, npair)
    fidx = gi if st.factor == "gpu" else pi
    ov = overlapped_rows(rows, st.overlap)
    nex = 1 if st.exposed else 0  # the exposed step ms, last

    def unpack(z):
        steps = z[:nstep]
        if st.step == "none":
            step = np.zeros(len(rows))
        elif st.step == "shared":
            step = np.full(len(rows), steps[0])
        elif st.step == "shrunk":
            step = np.maximum(steps[0] + steps[1:][vi], 0.0)
        else:
            step = steps[vi]
        ps = z[nstep:nstep + nps][gi if nps > 1 else np.zeros(len(rows), int)] if nps else np.zeros(len(rows))
        s = z[nstep + nps:nstep + nps + nf][fidx] if nf else np.ones(len(rows))
        return s, step, ps

    def ex_of(z):
        return float(z[-1]) if nex else 0.0

    def res(z):
        s, step, ps = unpack(z)
        r = np.log(np.maximum(_lin_tpot(B, idx, s, step, ps, ov, ex_of(z)), 1e-9) / B.tpot[idx])
        if st.factor == "model_gpu_prior":
            r = np.r_[r, np.sqrt(st.prior) * np.log(z[nstep + nps:nstep + nps + nf])]
        if st.step == "shrunk":
            r = np.r_[r, np.sqrt(st.prior) * 0.1 * z[1:nstep]]  # 0.1 per ms: a 1 ms offset costs like a 10 % miss
        return r

    lo_step = np.r_[0.0, np.full(nstep - 1, -20.0)] if st.step == "shrunk" else np.zeros(nstep)
    lower = np.r_[lo_step, np.zeros(nps), np.full(nf, SCALE_BOUNDS[0]), np.zeros(nex)]
    upper = np.r_[np.full(nstep, 20.0), np.full(nps, 500.0), np.full(nf, SCALE_BOUNDS[1]), np.full(nex, 20.0)]
    x0 = np.r_[np.full(nstep, 1.0) if st.step != "shrunk" else np.r_[1.0, np.zeros(nv)], np.full(nps, 20.0),
               np.full(nf, 1.0), np.full(nex, 0.5)]
    x_scale = np.r_[np.full(nstep, 0.5), np.full(nps, 10.0), np.full(nf, 0.05), np.full(nex, 0.5)]
    if not len(x0):
        x = x0
    elif not ov.any():
        x = least_squares(res, x0, bounds=(lower, upper), loss="soft_l1", f_scale=0.1, x_scale=x_scale).x
    else:  # a max() has kinks: start from a short and a long engine step, keep the better
        sols = []
        for step0, ps0 in ((1.0, 20.0), (5.0, 50.0)):
            z0 = x0.copy()
            z0[:nstep], z0[nstep:nstep + nps] = step0, ps0
            sols.append(least_squares(res, z0, bounds=(lower, upper), loss="soft_l1", f_scale=0.1, x_scale=x_scale))
        x = min(sols, key=lambda sol: sol.cost).x
    factors = x[nstep + nps:nstep + nps + nf]
    if st.drop_bound and st.factor in ("model_gpu", "model_gpu_prior"):
        at = [p for k, p in enumerate(pairs) if not SCALE_BOUNDS[0] + 1e-6 < factors[k] < SCALE_BOUNDS[1] - 1e-6]
        if at and len(at) < len(pairs):
            keep = [i for i in idx if (B.rows[i].model, B.rows[i].gpu) not in at]
            return fit_structure(B, keep, replace(st, drop_bound=False))
    s_row, step_row, ps_row = unpack(x)
    # What is kept (served for any model): steps per version, per-seq, factors per GPU (medians of free ones).
    if st.step == "none":
        step_ms = {v: 0.0 for v in versions}
    elif st.step == "shared":
        step_ms = {v: float(x[0]) for v in versions}
    elif st.step == "shrunk":
        step_ms = {v: float(max(x[0] + x[1 + k], 0.0)) for k, v in enumerate(versions)}
    else:
        step_ms = {v: float(x[k]) for k, v in enumerate(versions)}
    per_seq = {g: float(x[nstep + k]) for k, g in enumerate(gpus)} if nps > 1 else {}
    per_seq["*"] = float(np.median(x[nstep:nstep + nps])) if nps else 0.0
    if st.factor == "none" or st.keep_one:
        scale = {"*": 1.0}
    elif st.factor == "gpu":
        scale = {g: float(factors[k]) for k, g in enumerate(gpus)}
        scale["*"] = float(np.median(factors))
    else:
        from .engine_fit import kept_factors
        by_gpu, else_ = kept_factors({p: float(factors[k]) for k, p in enumerate(pairs)}, st.min_models_per_gpu)
        scale = {**by_gpu, "*": else_}
    counts = {v: int((vi == k).sum()) for k, v in enumerate(versions)}
    t = Terms(step_ms=step_ms, per_seq_us=per_seq, scale=scale,
              default_version=newest_release(counts), overlap=st.overlap, exposed_ms=ex_of(x),
              pair_factor={f"{m} on {g}": float(factors[k]) for k, (m, g) in enumerate(pairs)}
              if st.factor in ("model_gpu", "model_gpu_prior") else None)
    # Stage 2: jitter on the grid, latency (+ per prompt token: Structure.latency_per_token) + a
    # prefill-shortfall nuisance per training (model, GPU) pair.
    t.jitter_ms, t.latency_ms, t.latency_per_token_us = stage2(B, idx, pi, npair, st.latency_per_token,
                                                               lambda j: _lin_ttft(B, idx, j, s_row, step_row, ps_row,
                                                                                   ov, ex_of(x)))
    return t


def stage2(B: Basis, idx: np.ndarray, pi: np.ndarray, npair: int, per_token: bool,
           pred_at) -> tuple[float, float, float]:
    """(jitter ms, response latency ms, per prompt token us): engine_latency.fit_latency at each jitter of the
    grid on rows `idx` (`pred_at(j)`: their surrogate TTFT at jitter j, no latency); the lowest cost wins."""
    isl = np.array([B.rows[i].isl for i in idx], dtype=float)
    fits = [(fit_latency(pred_at(j), B.ttft[idx], B.lone[idx], isl, pi, npair, per_token), j_ms)
            for j, j_ms in enumerate(JITTER_GRID_MS)]
    f, j_ms = min(fits, key=lambda fj: fj[0].cost)  # the first of equal costs, as the loop before
    return j_ms, f.latency_ms, f.per_token_us


def predict(B: Basis, idx, t: Terms) -> tuple[np.ndarray, np.ndarray]:
    """(TPOT, TTFT) ms of rows `idx` on the surrogate with the kept terms `t` (no training nuisance)."""
    idx = np.asarray(idx)
    s, step, ps = map(np.array, zip(*(t.of(B.rows[i]) for i in idx)))
    j = list(JITTER_GRID_MS).index(t.jitter_ms)
    ov = overlapped_rows([B.rows[i] for i in idx], t.overlap)
    isl = np.array([B.rows[i].isl for i in idx], dtype=float)
    return (_lin_tpot(B, idx, s, step, ps, ov, t.exposed_ms),
            _lin_ttft(B, idx, j, s, step, ps, ov, t.exposed_ms) + t.latency_ms + t.latency_per_token_us * 1e-3 * isl)


def _pooled(e_tp: np.ndarray, e_tt: np.ndarray) -> dict:
    return {"rows": int(len(e_tp)), "tpot_mdape": float(np.median(np.abs(e_tp))), "tpot_signed": float(np.median(e_tp)),
            "ttft_mdape": float(np.median(np.abs(e_tt))), "ttft_signed": float(np.median(e_tt))}


def cross_validate(B: Basis, structures=STRUCTURES, models=TRAIN_MODELS) -> list[dict]:
    """One record per structure: pooled and per-fold median |error| and median signed error (%), and
    `pooled_without`: for each training model, the pooled figures over the OTHER models' folds (the
    figure to compare between runs that differ in one model's rows)."""
    out = []
    for st in structures:
        tp_err, tt_err, per_fold, fold_models = [], [], {}, []
        for model, fit_idx, test_idx in folds(B.rows, models):
            t = fit_structure(B, fit_idx, st)
            ptp, ptt = predict(B, test_idx, t)
            e_tp = 100 * (ptp / B.tpot[test_idx] - 1)
            e_tt = 100 * (ptt / B.ttft[test_idx] - 1)
            tp_err.append(e_tp)
            tt_err.append(e_tt)
            fold_models.append(model)
            per_fold[model] = {"rows": len(test_idx), "tpot_mdape": float(np.median(np.abs(e_tp))),
                               "ttft_mdape": float(np.median(np.abs(e_tt))), "tpot_signed": float(np.median(e_tp))}
        without = {m: _pooled(np.concatenate([e for e, f in zip(tp_err, fold_models) if f != m]),
                              np.concatenate([e for e, f in zip(tt_err, fold_models) if f != m]))
                   for m in models if any(f != m for f in fold_models)}
        e_tp, e_tt = np.concatenate(tp_err), np.concatenate(tt_err)
        out.append({"structure": st.name, "spec": asdict(st), **_pooled(e_tp, e_tt), "folds": per_fold,
                    "pooled_without": without})
    return out


def check_by_simulation(B: Basis, st: Structure, models=TRAIN_MODELS) -> dict:
    """The CV error of `st` with each fold's terms fitted on the surrogate as above but its scored rows
    SIMULATED with them (not the surrogate): whether the surrogate ranks structures right."""
    e_tp, e_tt = [], []
    for _, fit_idx, test_idx in folds(B.rows, models):
        t = fit_structure(B, fit_idx, st)
        for i in test_idx:
            r = B.rows[i]
            s, step, ps = t.of(r)
            ov = ServingOverhead(compute_scale=s, step_overhead_s=step * 1e-3, per_seq_overhead_s=ps * 1e-6,
                                 host_per_seq_s=0.0, response_latency_s=t.latency_ms * 1e-3,
                                 response_latency_per_prompt_token_s=t.latency_per_token_us * 1e-6,
                                 request_jitter_s=t.jitter_ms * 1e-3,
                                 overlap=bool(overlapped_rows([r], t.overlap)[0]), exposed_step_s=t.exposed_ms * 1e-3)
            p = _sim(r, _profile_cost(r, ov))
            e_tp.append(100 * (p["pred_tpot_ms"] / r.tpot_ms - 1))
            e_tt.append(100 * (p["pred_ttft_ms"] / r.ttft_ms - 1))
    e_tp, e_tt = np.array(e_tp), np.array(e_tt)
    return {"tpot_mdape": float(np.median(np.abs(e_tp))), "tpot_signed": float(np.median(e_tp)),
            "ttft_mdape": float(np.median(np.abs(e_tt))), "ttft_signed": float(np.median(e_tt))}


def choose(table: list[dict]) -> dict:
    """The lowest pooled TPOT median |error|; within 0.5 points of it, the lowest TTFT one; a tie
    beyond that keeps the earlier (simpler / today's) structure. A structure that changes stage 2 only
    (Structure.latency_per_token) has its base structure's TPOT exactly, so between those two the
    pooled TTFT median |error| alone decides (the rule is not changed for it).

    A post-hoc candidate (Structure.post_hoc: proposed after held-out results were seen) competes only if it
    beats the choice among the others by POST_HOC_BAR_PCT points of TPOT and is not more than that worse on
    TTFT; those that do then join the others under the rule above."""
    def plain(rows: list[dict]) -> dict:
        best_tp = min(r["tpot_mdape"] for r in rows)
        near = [r for r in rows if r["tpot_mdape"] <= best_tp + 0.5]
        return min(near, key=lambda r: r["ttft_mdape"])

    def post_hoc(r: dict) -> bool:
        return bool(r.get("spec", {}).get("post_hoc"))

    base = [r for r in table if not post_hoc(r)] or table
    first = plain(base)
    passed = [r for r in table if post_hoc(r) and r["tpot_mdape"] <= first["tpot_mdape"] - POST_HOC_BAR_PCT
              and r["ttft_mdape"] <= first["ttft_mdape"] + POST_HOC_BAR_PCT]
    return plain([r for r in table if not post_hoc(r) or r in passed]) if passed else first


def training_rows(per_setup: int, exclude_data: bool | None = None) -> tuple[list[Row], list[str]]:
    """engine_fit.select_training on every usable row: (rows, why each implausible row was left out)."""
    rows, _ = read_rows()
    return select_training(rows, per_setup, exclude_data)


def data_left_out(exclude_data: bool | None = None) -> list[str]:
    """One line per training row the data-quality screen leaves out (engine_rows.data_screen), saying why."""
    return [f"{r.setup} ({r.gpu}): {why}" for r, why in data_screen(split(read_rows()[0])[0], exclude_data)[1]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-setup", type=int, default=4, help="training rows per setup (engine_fit.thin)")
    ap.add_argument("--basis", default="", help="npz cache of the basis simulations (read if present, else written)")
    ap.add_argument("--check", action="store_true",
                    help="also simulate the scored rows with each fold's terms for today's, the chosen and the best "
                         "overlapped structure")
    ap.add_argument("--out", default=str(CV_PATH), help="where to write the table ('' for nowhere)")
    ap.add_argument("--exclude-data", choices=("default", "on", "off"), default="default",
                    help=f"the data-quality screen (engine_rows.DATA_EXCLUSIONS): 'default' as the fit applies it "
                         f"(EXCLUDE_DATA = {EXCLUDE_DATA}), or on / off")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    exclude = {"default": EXCLUDE_DATA, "on": True, "off": False}[args.exclude_data]
    selected, implausible = training_rows(args.per_setup, exclude)
    data_out = data_left_out(exclude)
    rows, excluded = screen_fit_rows(selected)  # engine_fit's screen: no queueing, not KV-bound
    print(f"{len(rows)} training rows; data-quality screen {'on' if exclude else 'off'}: {len(data_out)} rows left out")
    B = cached_basis(rows, Path(args.basis) if args.basis else None)
    table = cross_validate(B)
    best = choose(table)
    # --check: today's, the chosen and the best overlapped structure (whose surrogate is the rougher one)
    overlapped = [r for r in table if r["spec"]["overlap"] != "none"]
    checked = {best["structure"], STRUCTURES[0].name}
    if overlapped:
        checked.add(min(overlapped, key=lambda r: r["tpot_mdape"])["structure"])
    for r in table:
        if r["structure"] in checked and args.check:
            r["simulated"] = check_by_simulation(B, Structure(**r["spec"]))
            print(f"  simulated check, {r['structure']}: {r['simulated']}")
    for r in table:
        folds_s = "; ".join(f"{m} {f['tpot_mdape']:.1f}/{f['ttft_mdape']:.1f}" for m, f in r["folds"].items())
        print(f"{r['structure']:<55} TPOT {r['tpot_mdape']:5.1f} ({r['tpot_signed']:+.1f})  TTFT {r['ttft_mdape']:5.1f} "
              f"({r['ttft_signed']:+.1f})  [{folds_s}]")
    print(f"chosen: {best['structure']}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "note": "Written by `python -m calibration.engine_cv` (do not edit by hand): leave-one-training-model-out "
                    "cross-validation of the engine fit's structure on the training models only.",
            "training_models": list(TRAIN_MODELS), "rows": len(rows), "rows_per_setup": args.per_setup,
            "rows_left_out": {
                "data quality": {"count": len(data_out), "screen": "on" if exclude else "off",
                                 "exclusions": {" / ".join(k): why for k, why in DATA_EXCLUSIONS.items()},
                                 "rule": "(model, GPU, engine) named in calibration/engine_rows.DATA_EXCLUSIONS, "
                                         "applied when the screen is on", "rows": data_out},
                "implausible": {"count": len(implausible), "reason": IMPLAUSIBLE,
                                "rule": f"before thinning: measured TTFT/TPOT imply compute above {MAX_COMPUTE_SHARE} of "
                                        f"the dense peak or memory above {MAX_MEMORY_SHARE} of HBM bandwidth "
                                        "(calibration/plausibility.py)", "rows": implausible},
                "queueing or KV-bound": {"count": len(excluded), "reason": "measured TTFT above "
                                         f"{QUEUEING_TTFT_S:g} s or KV-bound in the simulation (engine_fit's screen)"}},
            "basis_points": ["kernels alone (jitter 20 ms)", f"kernel factor {BASIS_SCALE}", f"step {BASIS_STEP_MS} ms",
                             f"per-seq {BASIS_PER_SEQ_US} us"] + [f"jitter {j:g} ms" for j in JITTER_GRID_MS
                                                                   if j != BASIS_JITTER_MS],
            "rule": "lowest pooled TPOT median |err|; within 0.5 points, lowest TTFT median |err| (a structure "
                    "that changes stage 2 only, latency_per_token, has its base's TPOT exactly: TTFT decides); a "
                    f"post-hoc candidate (proposed after held-out results were seen) only if it beats the others' "
                    f"choice by {POST_HOC_BAR_PCT:g} point of TPOT, TTFT not {POST_HOC_BAR_PCT:g} point worse",
            "chosen": best["structure"], "folds": [m for m, _, _ in folds(rows)],
            "chosen_terms_all_rows": {"note": "the chosen structure fitted on every row here, on the surrogate "
                                      "(not engine_fit's simulation fit): how the terms move with the rows",
                                      **asdict(fit_structure(B, list(range(len(rows))), Structure(**best["spec"])))},
            "table": table, "wall_s": round(time.perf_counter() - t0, 1)},
            indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
