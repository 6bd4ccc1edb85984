"""Fit ProfileCostModel's coefficients to measured engine steps, and report the error on held-out steps.

Input: one row per measured step with the five step features of sim/cost_model.py, the
step's `phase` (prefill, decode or mixed) and its `step_time_s`. The formula

    t = overhead_s + per_seq_s * num_seqs + max(weights_s, per_token_s * new_tokens)
        + per_pair_s * attn_pairs + per_kv_token_s * kv_read_tokens + per_sample_s * sampled

plus, for a mixture of experts (`expert_pick_fraction` = k/E given), experts_s times the expected
share of experts the step's tokens touch, 1 - (1 - k/E)^new_tokens (sim.cost_model.expert_fraction),

is not linear (the max), so the fit is a bounded non-linear least squares on RELATIVE
residuals (step times span three orders of magnitude: a 10 ms decode step matters as much
as a 2 s prefill). Starts come from non-negative linear least squares with the max term
resolved by a threshold on new_tokens (memory-bound below, compute-bound above); each
start is polished and the lowest cost wins. Everything is deterministic for a given seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares, nnls

from sim.cost_model import PROFILE_COEFFICIENTS, ProfileCostModel, expert_fraction

FEATURES = ("new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs")
PHASES = ("prefill", "decode", "mixed")
MIN_POINTS_PER_COEFFICIENT = 3
MIN_TEST_POINTS_PER_PHASE = 2

# Index of each coefficient in the parameter vector (the order of PROFILE_COEFFICIENTS; a mixture of
# experts appends experts_s, whose feature is the share of experts a step touches, EXPERT_FEATURE).
_I = {name: i for i, name in enumerate(PROFILE_COEFFICIENTS)}
EXPERT_FEATURE = "expert_fraction"
# The linear coefficients and the feature each multiplies (weights_s and per_token_s form the max).
_LINEAR = (("overhead_s", None), ("per_seq_s", "num_seqs"), ("per_pair_s", "attn_pairs"),
           ("per_kv_token_s", "kv_read_tokens"), ("per_sample_s", "sampled"))


class FitError(ValueError):
    """The measurements cannot support a fit; the message says what is wrong and what would do."""


@dataclass(frozen=True)
class FitResult:
    coefficients: dict[str, float]  # PROFILE_COEFFICIENTS -> seconds per unit, all >= 0
    report: dict  # held-out error: n_train, n_test, phases{phase: mape_pct, max_abs_pct_error, n}, overall
    predictions: pd.DataFrame = field(repr=False)  # held-out rows + predicted_s, error_pct (signed, %)


def _validate(df: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise FitError(f"measurements must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ("phase", *FEATURES, "step_time_s") if c not in df.columns]
    if missing:
        raise FitError(f"measurements lack column(s) {missing}; required: phase, {', '.join(FEATURES)}, step_time_s")
    if df.empty:
        raise FitError("measurements are empty")
    bad_phase = sorted(set(df["phase"].astype(str)) - set(PHASES))
    if bad_phase:
        raise FitError(f"column 'phase' has {bad_phase}; allowed: {list(PHASES)}")
    t = pd.to_numeric(df["step_time_s"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(t) | (t <= 0)
    if bad.any():
        rows = list(df.index[bad][:5])
        raise FitError(f"column 'step_time_s' must be a finite number > 0; {int(bad.sum())} row(s) are not "
                       f"(first: index {rows}, values {list(df['step_time_s'][bad][:5])})")
    for name in FEATURES:
        v = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        if not np.isfinite(v).all() or (v < 0).any():
            raise FitError(f"column {name!r} must hold finite counts >= 0")
    constant = [name for name in FEATURES if df[name].nunique() < 2]
    if constant:
        raise FitError(f"degenerate grid: feature(s) {constant} take a single value, so their coefficient cannot "
                       "be told apart from overhead_s; measure steps that vary them (prefill lengths, decode "
                       "batch sizes and context lengths, mixed steps)")
    out = df.copy()
    out["phase"] = out["phase"].astype(str)
    return out


def _split(df: pd.DataFrame, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the training and held-out sets, stratified by phase."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    phase = df["phase"].to_numpy()
    for name in sorted(set(phase)):
        pos = np.flatnonzero(phase == name)
        n_test = int(round(test_fraction * len(pos)))
        if n_test < MIN_TEST_POINTS_PER_PHASE or n_test >= len(pos):
            raise FitError(f"phase {name!r} has {len(pos)} row(s): a test_fraction of {test_fraction} holds out "
                           f"{n_test}; need at least {MIN_TEST_POINTS_PER_PHASE} held-out and 1 training row per "
                           f"phase (measure more {name} steps)")
        pos = rng.permutation(pos)
        test.append(pos[:n_test])
        train.append(pos[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _predict(c: np.ndarray, X: dict[str, np.ndarray]) -> np.ndarray:
    """The ProfileCostModel formula on a parameter vector in PROFILE_COEFFICIENTS order (+ experts_s)."""
    t = (c[_I["overhead_s"]] + c[_I["per_seq_s"]] * X["num_seqs"]
         + np.maximum(c[_I["weights_s"]], c[_I["per_token_s"]] * X["new_tokens"])
         + c[_I["per_pair_s"]] * X["attn_pairs"] + c[_I["per_kv_token_s"]] * X["kv_read_tokens"]
         + c[_I["per_sample_s"]] * X["sampled"])
    return t + c[-1] * X[EXPERT_FEATURE] if EXPERT_FEATURE in X else t


def _columns(X: dict[str, np.ndarray], memory_bound: np.ndarray) -> np.ndarray:
    """Design matrix (rows x coefficients) with the max resolved row by row."""
    n = len(X["new_tokens"])
    A = np.zeros((n, len(PROFILE_COEFFICIENTS) + (EXPERT_FEATURE in X)))
    if EXPERT_FEATURE in X:
        A[:, -1] = X[EXPERT_FEATURE]
    for name, feature in _LINEAR:
        A[:, _I[name]] = 1.0 if feature is None else X[feature]
    A[:, _I["weights_s"]] = memory_bound.astype(np.float64)
    A[:, _I["per_token_s"]] = np.where(memory_bound, 0.0, X["new_tokens"])
    return A


def _fit_arrays(X: dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
    """Best non-negative parameter vector (relative least squares) over several starts."""
    A_full = _columns(X, np.zeros(len(y), dtype=bool))
    # Unknowns are scaled to "seconds at the largest feature value" / median step time, so all are O(1).
    scale = np.ones(A_full.shape[1])  # the expert share is at most 1: its unknown needs no scaling
    for name in PROFILE_COEFFICIENTS:
        col = A_full[:, _I[name]]
        scale[_I[name]] = 1.0 if name in ("overhead_s", "weights_s") else max(float(col.max()), 1.0)
    y_typ = float(np.median(y))

    def to_c(u):
        return u * y_typ / scale

    def residuals(u):
        return _predict(to_c(u), X) / y - 1.0

    def jacobian(u):
        c = to_c(u)
        A = _columns(X, c[_I["weights_s"]] >= c[_I["per_token_s"]] * X["new_tokens"])
        return A / y[:, None] * (y_typ / scale)[None, :]

    T = X["new_tokens"]
    thresholds = np.unique(np.quantile(T, np.linspace(0.0, 1.0, 11)))
    starts = []
    for tau in [-np.inf, *thresholds, np.inf]:
        A = _columns(X, T <= tau) / y[:, None]
        c0, _ = nnls(A, np.ones(len(y)), maxiter=50 * A.shape[1])
        if tau == -np.inf:  # all compute-bound: seed the weights floor just below the smallest step
            c0[_I["weights_s"]] = 0.5 * float(y.min())
        starts.append(c0 * scale / y_typ)

    best, best_cost = None, np.inf
    for u0 in starts:
        u0 = np.clip(np.nan_to_num(u0), 0.0, None) + 1e-9
        sol = least_squares(residuals, u0, jac=jacobian, bounds=(0.0, np.inf), method="trf",
                            x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=2000)
        if sol.cost < best_cost:
            best, best_cost = sol.x, sol.cost
    return np.clip(to_c(best), 0.0, None)


def _errors(pred: np.ndarray, y: np.ndarray) -> dict:
    err = 100.0 * (pred - y) / y
    return {"mape_pct": float(np.mean(np.abs(err))), "max_abs_pct_error": float(np.max(np.abs(err))),
            "n": int(len(y))}


def fit_profile(measurements: pd.DataFrame, *, test_fraction: float = 0.25, seed: int = 0,
                expert_pick_fraction: float | None = None) -> FitResult:
    """Fit the coefficients on a stratified training split; report relative errors on the held-out rows.
    `expert_pick_fraction` (k/E of a mixture of experts) adds the expert term and its coefficient experts_s.

    Raises FitError for: missing columns, unknown phases, NaN / non-positive times, a feature
    that never varies, fewer than 3 training rows per coefficient, or a phase with fewer than
    2 held-out rows.
    """
    if not 0.0 < test_fraction < 1.0:
        raise FitError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if expert_pick_fraction is not None and not 0.0 < expert_pick_fraction <= 1.0:
        raise FitError(f"expert_pick_fraction must be in (0, 1] (experts per token / experts), got "
                       f"{expert_pick_fraction!r}")
    df = _validate(measurements)
    train, test = _split(df, test_fraction, seed)
    n_coef = len(PROFILE_COEFFICIENTS) + (expert_pick_fraction is not None)
    need = MIN_POINTS_PER_COEFFICIENT * n_coef
    if len(train) < need:
        raise FitError(f"{len(train)} training rows for {n_coef} coefficients; need at least "
                       f"{need} ({MIN_POINTS_PER_COEFFICIENT} per coefficient) after holding out "
                       f"{len(test)} of {len(df)} rows")

    X = {name: df[name].to_numpy(dtype=np.float64) for name in FEATURES}
    if expert_pick_fraction is not None:
        X[EXPERT_FEATURE] = expert_fraction(X["new_tokens"], expert_pick_fraction)
    y = df["step_time_s"].to_numpy(dtype=np.float64)
    c = _fit_arrays({k: v[train] for k, v in X.items()}, y[train])
    coefficients = {name: float(c[_I[name]]) for name in PROFILE_COEFFICIENTS}
    if expert_pick_fraction is not None:
        coefficients.update(experts_s=float(c[-1]), expert_pick_fraction=float(expert_pick_fraction))

    pred = ProfileCostModel(coefficients).step_times_s(*(X[k] for k in FEATURES))
    held = df.iloc[test].copy()
    held["predicted_s"] = pred[test]
    held["error_pct"] = 100.0 * (pred[test] - y[test]) / y[test]
    phases = {p: _errors(pred[test][held["phase"].to_numpy() == p], y[test][held["phase"].to_numpy() == p])
              for p in PHASES if (held["phase"] == p).any()}
    report = {"n_train": int(len(train)), "n_test": int(len(test)), "test_fraction": test_fraction, "seed": seed,
              "phases": phases, "overall": _errors(pred[test], y[test]),
              "train_overall": _errors(pred[train], y[train])}
    return FitResult(coefficients=coefficients, report=report, predictions=held.reset_index(drop=True))


def format_report(result: FitResult) -> str:
    """Coefficients and the held-out error per phase as a small text table."""
    r = result.report
    lines = [f"held-out error ({r['n_test']} test / {r['n_train']} training steps)",
             f"{'phase':<9}{'n':>5}{'MAPE %':>10}{'max |err| %':>14}"]
    for name, e in [*r["phases"].items(), ("overall", r["overall"])]:
        lines.append(f"{name:<9}{e['n']:>5}{e['mape_pct']:>10.2f}{e['max_abs_pct_error']:>14.2f}")
    lines.append("coefficients")
    lines += [f"  {name:<15}{value:.4g}" for name, value in result.coefficients.items()]
    return "\n".join(lines)
