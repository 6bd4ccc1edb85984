"""Least squares on a simulation linearised by forward differences (the engine fit's solver).

Each evaluation of f simulates every row (slow), so f is linearised once around a point (grouped
perturbations: one simulation of every row per group) and the linear surrogate is solved exactly.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares


def linearise(f, x: np.ndarray, h: np.ndarray, groups: list[list[int]] | None = None,
              depends: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(f(x), J): f linearised around x by forward differences. `groups` (default: one per parameter)
    are parameters perturbed together in one simulation of every row; `depends` (rows x parameters,
    0/1) says which parameters each row depends on, so a group's difference is credited to its members
    a row depends on. A group must hold parameters of which each row depends on one at most (one
    factor per model)."""
    x = np.asarray(x, dtype=float)
    groups = groups or [[i] for i in range(len(x))]
    f0 = f(x)
    J = np.zeros((len(f0), len(x)))
    for g in groups:
        dx = np.zeros(len(x))
        dx[g] = h[g]
        df = f(x + dx) - f0
        for i in g:
            J[:, i] = df / h[i]
    return f0, (J * depends if depends is not None else J)


def solve_linearised(f0: np.ndarray, J: np.ndarray, x: np.ndarray, measured: np.ndarray, lower: np.ndarray,
                     upper: np.ndarray, h: np.ndarray) -> np.ndarray:
    """z within bounds minimising the soft-L1 cost of log((f0 + J (z - x)) / measured)."""
    def res(z):
        return np.log(np.maximum(f0 + J @ (z - x), 1e-9) / measured)

    return least_squares(res, np.clip(x, lower, upper), bounds=(lower, upper), loss="soft_l1", f_scale=0.1,
                         x_scale=h).x


def linearised_fit(f, measured: np.ndarray, x0: np.ndarray, h: np.ndarray, lower: np.ndarray,
                   upper: np.ndarray, iterations: int = 2, groups: list[list[int]] | None = None,
                   depends: np.ndarray | None = None) -> np.ndarray:
    """x within bounds minimising the soft-L1 cost of log(f(x) / measured), where f simulates every
    row (slow): f is linearised around the current x (`linearise`), the surrogate is solved exactly,
    and that repeats `iterations` times. The engine terms enter a step's time linearly, so the
    surrogate is close to exact."""
    x = np.asarray(x0, dtype=float)
    for _ in range(iterations):
        f0, J = linearise(f, x, h, groups, depends)
        x = solve_linearised(f0, J, x, measured, lower, upper, h)
    return x
