"""Stage 2 of the engine fit (calibration/engine_fit.py) and of its cross-validation (engine_cv.py): the
response latency, fitted on TTFT for one request jitter at a time.

    measured TTFT = predicted (at the jitter, no latency) + latency [+ latency per prompt token x ISL]
                    + shortfall[training pair] x the pair's lone prefill

The latency is the engine's (kept); with `per_token` it grows with the prompt
(ServingOverhead.response_latency_per_prompt_token_s: the API server tokenises the prompt before the engine
sees it); the shortfall, one per training (model, GPU) pair, is that pair's own prefill error (a nuisance,
not kept). Soft-L1 least squares on log ratios, as every stage of the fit.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

LATENCY_MS_BOUNDS = (0.0, 500.0)
PER_TOKEN_US_BOUNDS = (0.0, 50.0)  # response latency per prompt token: 0 .. 50 us a token
SHORTFALL_BOUNDS = (-1.0, 10.0)


@dataclass(frozen=True)
class LatencyFit:
    cost: float
    latency_ms: float
    per_token_us: float  # 0 unless fitted (per_token)
    shortfall: np.ndarray  # per training pair


def fit_latency(pred_ms: np.ndarray, measured_ms: np.ndarray, lone_ms: np.ndarray, isl_tokens: np.ndarray,
                pair: np.ndarray, npair: int, per_token: bool) -> LatencyFit:
    """Stage 2 at one jitter: `pred_ms` the rows' simulated (or surrogate) TTFT without latency, `pair` each
    row's training pair (0 .. npair - 1)."""
    onehot = np.eye(npair)[pair]
    isl = np.asarray(isl_tokens, dtype=float)
    nt = 1 if per_token else 0

    def res(z):
        extra = z[1] * 1e-3 * isl if nt else 0.0
        return np.log(np.maximum(pred_ms + z[0] + extra + (onehot @ z[1 + nt:]) * lone_ms, 1e-6) / measured_ms)

    sol = least_squares(res, np.r_[10.0, np.full(nt, 2.0), np.full(npair, 0.5)],
                        bounds=(np.r_[LATENCY_MS_BOUNDS[0], np.full(nt, PER_TOKEN_US_BOUNDS[0]),
                                      np.full(npair, SHORTFALL_BOUNDS[0])],
                                np.r_[LATENCY_MS_BOUNDS[1], np.full(nt, PER_TOKEN_US_BOUNDS[1]),
                                      np.full(npair, SHORTFALL_BOUNDS[1])]),
                        loss="soft_l1", f_scale=0.3, x_scale=np.r_[10.0, np.full(nt, 2.0), np.full(npair, 0.5)])
    return LatencyFit(cost=float(sol.cost), latency_ms=float(sol.x[0]), per_token_us=float(sol.x[1]) if nt else 0.0,
                      shortfall=sol.x[1 + nt:])
