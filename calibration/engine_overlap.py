"""The overlapped engine step on the cross-validation's linear surrogate (calibration/engine_cv.py).

With vLLM's async scheduling (sim.engine_terms.async_scheduling_default) a step takes
max(s * kernels, step + per_seq * seqs) (+ an exposed part), not their sum
(sim.cost_model.ServingOverhead.overlap). A max is not linear, so the surrogate's additive engine
term cannot carry it. What the basis does give per row, without new simulations:

    d_step  = d TPOT / d step           (steps per output token)
    d_seq   = d TPOT / d per-seq time   (steps x sequences per output token, / 1000: us -> ms)

so the row's mean batch is n = 1000 * d_seq / d_step, and the kernels' time of a decode step of n
sequences at the row's mean context (k, closed form from the row's profile: `kernel_step_ms`).
Then, at steady state, where decode steps set TPOT,

    TPOT = TPOT_kernels(s) + d_step * (exposed + max(0, step + per_seq * n / 1000 - s * k))

(the additive surrogate is TPOT_kernels(s) + d_step * (exposed + step + per_seq * n / 1000)). Steps that
carry a prefill chunk have longer kernels and hide more: the surrogate counts them at the decode step's
rate, so it leans pessimistic; engine_cv's `--check` simulates the scored rows to say by how much.
TTFT's engine share is scaled by the same share of engine time left exposed on a decode step.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from sim.cost_model import ProfileCostModel
from sim.engine_terms import async_scheduling_default

from .profile import load_profile


def mean_batch(d_tpot: np.ndarray) -> np.ndarray:
    """Sequences per step, each row's mean (from the basis derivatives; at least 1)."""
    d_step, d_seq = d_tpot[:, 1], d_tpot[:, 2]
    return np.maximum(1e3 * d_seq / np.maximum(d_step, 1e-9), 1.0)


def kernel_step_ms(rows, d_tpot: np.ndarray) -> np.ndarray:
    """The profile's kernels for one decode step of each row's mean batch at its mean context
    (ISL + OSL / 2 tokens per sequence), at kernel factor 1 (ms)."""
    n = mean_batch(d_tpot)
    out = np.zeros(len(rows))
    for i, r in enumerate(rows):
        cost = ProfileCostModel(load_profile(r.profile).coefficients)
        out[i] = 1e3 * float(cost.decode_step_times_s(np.array([n[i]]), np.array([n[i] * (r.isl + r.osl / 2)]))[0])
    return out


def overlapped_rows(rows, rule: str) -> np.ndarray:
    """Which rows' steps are overlapped: rule 'all' (every version), 'async_default' (the versions where
    vLLM's async scheduling is on by default; a version that does not say: not overlapped), 'none'."""
    if rule == "none":
        return np.zeros(len(rows), bool)
    if rule == "all":
        return np.ones(len(rows), bool)
    if rule == "async_default":
        return np.array([bool(async_scheduling_default("vllm", r.backend_version)) for r in rows])
    raise ValueError(f"overlap rule must be one of none, all, async_default; got {rule!r}")


def engine_share(d_tpot: np.ndarray, k_ms: np.ndarray, s, step, ps, overlapped: np.ndarray) -> np.ndarray:
    """Per row, the share of its additive engine time (step + per-seq) that the step pays: 1 where not
    overlapped, max(0, E - s k) / E where overlapped (E = step + per_seq x mean batch, ms)."""
    e = step + ps * d_tpot[:, 2] / np.maximum(d_tpot[:, 1], 1e-9)
    shown = np.maximum(e - s * k_ms, 0.0) / np.maximum(e, 1e-12)
    return np.where(overlapped, np.where(e > 0, shown, 0.0), 1.0)


def solve_stage1(f0: np.ndarray, J: np.ndarray, x0: np.ndarray, measured: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray, h: np.ndarray, pair: np.ndarray, overlapped: np.ndarray,
                 k_ms: np.ndarray) -> np.ndarray:
    """engine_fit's stage 1 with overlapped rows: x = (step ms, per-seq us, factor per (model, GPU) pair),
    `f0`, `J` the ADDITIVE simulation linearised at x0 (calibration/linearised.linearise; columns in x's
    order), `pair` each row's pair, `overlapped` which rows overlap, `k_ms` their kernels' decode step.
    The kernels alone are f0 less the linear engine part at x0; the engine part is then added in full on
    additive rows and its exposed share (engine_share) on overlapped ones. Soft-L1 on log ratios, from a
    short and a long engine step, the better kept."""
    cols = np.arange(2, len(x0))
    kernels0 = f0 - J[:, 0] * x0[0] - J[:, 1] * x0[1]
    d = np.c_[np.zeros(len(f0)), J[:, 0], J[:, 1]]  # engine_share's view: (unused, d/d step, d/d per-seq)

    def res(z):
        kern = kernels0 + J[:, cols] @ (z[2:] - x0[2:])
        share = engine_share(d, k_ms, z[2:][pair], z[0], z[1], overlapped)
        return np.log(np.maximum(kern + share * (J[:, 0] * z[0] + J[:, 1] * z[1]), 1e-9) / measured)

    sols = []
    for step0, ps0 in ((x0[0], x0[1]), (5.0, 50.0)):
        z0 = np.clip(np.r_[step0, ps0, x0[2:]], lower, upper)
        sols.append(least_squares(res, z0, bounds=(lower, upper), loss="soft_l1", f_scale=0.1, x_scale=h))
    return min(sols, key=lambda s: s.cost).x
