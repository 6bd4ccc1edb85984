"""The basis of the engine-terms cross-validation (calibration/engine_cv.py): every training row
simulated at a few points of the engine terms (kernels alone, a kernel factor, a step time, a
per-sequence time, each request jitter of the grid), from which the CV's linear surrogate predicts
any terms' TPOT and TTFT without simulating again; and its npz cache."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.cost_model import ServingOverhead

from .engine_fit import JITTER_GRID_MS, _profile_cost, _sim
from .engine_overlap import kernel_step_ms
from .silicon import Row, lone_prefill_ms

BASIS_SCALE, BASIS_STEP_MS, BASIS_PER_SEQ_US = 1.2, 2.0, 50.0  # the perturbations the surrogate is built from
BASIS_JITTER_MS = 20.0  # the jitter the derivatives are taken at


@dataclass
class Basis:
    """Per row: measured TPOT/TTFT, and the simulated ones at the basis points (ms)."""
    rows: list[Row]
    tpot: np.ndarray
    ttft: np.ndarray
    tpot0: np.ndarray  # kernels alone (scale 1, no step, no per-seq), jitter BASIS_JITTER_MS
    d_tpot: np.ndarray  # rows x 3: d TPOT / d (scale, step ms, per-seq us)
    ttft0: np.ndarray  # rows x len(JITTER_GRID_MS): kernels alone at each jitter
    d_ttft: np.ndarray  # rows x 3
    lone: np.ndarray
    k_step: np.ndarray | None = None  # kernels of a decode step at each row's mean batch, ms (engine_overlap)

    def kernel_step(self) -> np.ndarray:
        if self.k_step is None:
            self.k_step = kernel_step_ms(self.rows, self.d_tpot)
        return self.k_step


def _ov(scale=1.0, step_ms=0.0, per_seq_us=0.0, jitter_ms=BASIS_JITTER_MS) -> ServingOverhead:
    return ServingOverhead(compute_scale=scale, step_overhead_s=step_ms * 1e-3, per_seq_overhead_s=per_seq_us * 1e-6,
                           host_per_seq_s=0.0, response_latency_s=0.0, request_jitter_s=jitter_ms * 1e-3)


def basis(rows: list[Row], log=print) -> Basis:
    """Simulate every row at the basis points (3 + len(JITTER_GRID_MS) simulations per row)."""
    t0 = time.perf_counter()
    pts = [_ov(), _ov(scale=BASIS_SCALE), _ov(step_ms=BASIS_STEP_MS), _ov(per_seq_us=BASIS_PER_SEQ_US)]
    steps = np.array([BASIS_SCALE - 1.0, BASIS_STEP_MS, BASIS_PER_SEQ_US])
    tp, tt = np.zeros((len(rows), 4)), np.zeros((len(rows), 4))
    t_j = np.zeros((len(rows), len(JITTER_GRID_MS)))
    for i, r in enumerate(rows):
        for k, ov in enumerate(pts):
            p = _sim(r, _profile_cost(r, ov))
            tp[i, k], tt[i, k] = p["pred_tpot_ms"], p["pred_ttft_ms"]
        for j, jit in enumerate(JITTER_GRID_MS):
            t_j[i, j] = tt[i, 0] if jit == BASIS_JITTER_MS else _sim(r, _profile_cost(r, _ov(jitter_ms=jit)))["pred_ttft_ms"]
        if (i + 1) % 25 == 0:
            log(f"  basis {i + 1}/{len(rows)} rows, {time.perf_counter() - t0:.0f} s")
    return Basis(rows=rows, tpot=np.array([r.tpot_ms for r in rows]), ttft=np.array([r.ttft_ms for r in rows]),
                 tpot0=tp[:, 0], d_tpot=(tp[:, 1:] - tp[:, :1]) / steps, ttft0=t_j,
                 d_ttft=(tt[:, 1:] - tt[:, :1]) / steps, lone=np.array([lone_prefill_ms(r) for r in rows]))


BASIS_FIELDS = ("tpot", "ttft", "tpot0", "d_tpot", "ttft0", "d_ttft", "lone")  # Basis's arrays, in its order


def cached_basis(rows: list[Row], cache: Path | None, log=print) -> Basis:
    """The basis of `rows`: read from `cache` if that file exists (load_basis), else simulated (basis) and,
    with a `cache` path, written there for the next run."""
    if cache is not None and cache.is_file():
        return load_basis(cache, rows)
    b = basis(rows, log)
    if cache is not None:
        np.savez(cache, ids=[r.id for r in rows], **{k: getattr(b, k) for k in BASIS_FIELDS})
    return b


def load_basis(cache: Path, rows: list[Row]) -> Basis:
    """The basis of `rows` from a cache of the same rows or of more (each row is simulated on its own,
    seed fixed, so a subset's basis is the rows' own entries)."""
    z = np.load(cache)
    ids = list(z["ids"])
    missing = [r.id for r in rows if r.id not in ids]
    assert not missing, f"basis cache {cache} lacks {len(missing)} of the rows (first: {missing[0]})"
    at = np.array([ids.index(r.id) for r in rows], int)
    return Basis(rows, *(z[k][at] for k in BASIS_FIELDS))
