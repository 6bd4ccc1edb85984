"""Which measured serving runs the engine-terms fit (calibration/engine_fit.py) uses, and how it simulates one.

The split by model (TRAIN_MODELS: fitted; every other model held out for benchmarks/validate_silicon.py),
the screens (data-quality exclusions by model, GPU and engine, DATA_EXCLUSIONS; implausible rows,
calibration/plausibility.py; then queueing for KV blocks or KV-bound in the
simulation), the thinning to ROWS_PER_SETUP rows per setup, and the simulation of one row as the fit runs
it (closed loop, constant lengths, FIT_WAVES x concurrency requests, seed SEED).
"""
from __future__ import annotations

import numpy as np

from sim.catalog import resolve_gpu, resolve_model
from sim.cost_model import ProfileCostModel, RooflineCostModel, RooflineParams, ServingOverhead

from .plausibility import screen
from .profile import load_profile
from .silicon import KV_BOUND_PEAK, Row, simulate_row

# The split, by model. Training: a dense model at two sizes and a mixture of experts, covering vLLM
# 0.12.0 (Qwen3-32B on H100, Llama-3.1-8B FP8 on H200) and 0.16.0 ... 0.19.0 plus a nightly
# (MiniMax-M2.5 on H100, H200, B200). Held out, never fitted: Llama-3.1-70B (H100, H200, B200; the
# issue's H100 slice), gpt-oss-120b (H100, H200, B200) and Qwen3-235B-A22B (H200): a dense model
# and two mixtures of experts of other sizes, routings and checkpoint formats.
TRAIN_MODELS = ("llama-3.1-8b", "minimax-m2.5", "qwen3-32b")
QUEUEING_TTFT_S = 2.0  # a measured TTFT above this is requests waiting for KV blocks, not engine time
FIT_WAVES, FIT_MIN, FIT_MAX = 4, 40, 192  # requests per row in the fit: clamp(4 * concurrency, 40, 192)
ROWS_PER_SETUP = 4  # training rows kept per (model, GPU, dtype, TP, ISL/OSL, version), spread over concurrency
SEED = 0
# Data-quality exclusions: (model, GPU, engine) whose measured rows are not fitted, with why. Unlike the
# plausibility screen (a rule over each row's own figures), each entry names rows that a diagnosis found
# unfit as training data, and the cross-validation rule of docs/llama8b_h200.md ("Does the fit do better
# without these rows?") decides whether the screen is applied (EXCLUDE_DATA). Every row here is a vLLM run
# (calibration.silicon.read_rows keeps the vLLM rows alone): ROW_ENGINE.
ROW_ENGINE = "vllm"
DATA_EXCLUSIONS: dict[tuple[str, str, str], str] = {
    ("llama-3.1-8b", "h200-sxm", "vllm"): (
        "reduced prefill suspected (prefix-cache hits the CSV does not record): the rows run 2-3x faster than the "
        "composed kernels where prefill dominates, beyond the fp8 GEMM tables' best efficiency, while the same "
        "composition reproduces SGLang's H200 and TensorRT-LLM's H100 rows of this model (docs/llama8b_h200.md)"),
}
# Whether select_training applies DATA_EXCLUSIONS. Off: by the rule fixed before the runs, the cross-validation
# without the Llama-3.1-8B H200 rows scored the other training models' rows worse (TPOT 8.6 % against 5.5 %;
# docs/llama8b_h200.md, "Does the fit do better without these rows?", docs/llama8b_cv/cv_A.json, cv_B.json).
EXCLUDE_DATA = False


def fit_requests(row: Row) -> int:
    """clamp(FIT_WAVES x concurrency, FIT_MIN, FIT_MAX), and two waves at least (the first is warm-up)."""
    return int(max(min(max(FIT_WAVES * row.concurrency, FIT_MIN), FIT_MAX), 2 * row.concurrency))


def _profile_cost(row: Row, ov: ServingOverhead | None) -> ProfileCostModel:
    return ProfileCostModel(load_profile(row.profile).coefficients, ov)


def _roofline_cost(row: Row, step_s: float, per_seq_s: float) -> RooflineCostModel:
    return RooflineCostModel(resolve_model(row.model, "model"), resolve_gpu(row.gpu, "gpu"), tp=row.tp,
                             weight_dtype=row.dtype, kv_dtype=row.kv_dtype,
                             params=RooflineParams(step_overhead_s=step_s, per_seq_overhead_s=per_seq_s))


def _sim(row: Row, cost, first_wave: bool = True) -> dict:
    """The row simulated as the fit does; `first_wave` False where only TPOT or KV use is read (the
    benchmark's first wave moves TTFT alone: silicon.simulate_row), one simulation instead of two."""
    return simulate_row(row, requests=fit_requests(row), cost_model=cost, seed=SEED, first_wave=first_wave)


def thin(rows: list[Row], per_setup: int = ROWS_PER_SETUP) -> list[Row]:
    """At most `per_setup` rows of each setup (model, GPU, dtype, TP, lengths, version), evenly spread
    over its concurrencies (lowest and highest kept)."""
    setups: dict[tuple, list[Row]] = {}
    for r in rows:
        setups.setdefault((r.model, r.gpu, r.dtype, r.tp, r.expert_parallel, r.isl, r.osl, r.backend_version),
                          []).append(r)
    out = []
    for group in setups.values():
        group.sort(key=lambda r: (r.concurrency, r.id))
        idx = np.unique(np.round(np.linspace(0, len(group) - 1, min(per_setup, len(group)))).astype(int))
        out += [group[i] for i in idx]
    return sorted(out, key=lambda r: r.id)


def screen_fit_rows(rows: list[Row]) -> tuple[list[Row], list[str]]:
    """(rows kept, one line per row left out, saying why): the fit's screen before stage 1. A row whose measured
    TTFT shows queueing for KV blocks (> QUEUEING_TTFT_S) or that the simulation predicts KV-bound is left out:
    KV capacity is another model's job."""
    keep, excluded = [], []
    for r in rows:
        if r.ttft_ms / 1e3 > QUEUEING_TTFT_S:
            excluded.append(f"{r.setup} ({r.gpu}): measured TTFT {r.ttft_ms / 1e3:.1f} s (queueing)")
        elif _sim(r, _profile_cost(r, None), first_wave=False)["kv_peak"] >= KV_BOUND_PEAK:
            excluded.append(f"{r.setup} ({r.gpu}): KV-bound in the simulation")
        else:
            keep.append(r)
    return keep, excluded


def split(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(training rows, held-out rows): by model, recorded concurrency only (the † rows are neither)."""
    usable = [r for r in rows if r.concurrency_recorded]
    return [r for r in usable if r.model in TRAIN_MODELS], [r for r in usable if r.model not in TRAIN_MODELS]


def data_exclusion(row: Row) -> str | None:
    """Why `row` is excluded as training data (DATA_EXCLUSIONS, whether or not the screen is on), or None."""
    return DATA_EXCLUSIONS.get((row.model, row.gpu, ROW_ENGINE))


def data_screen(rows: list[Row], on: bool | None = None) -> tuple[list[Row], list[tuple[Row, str]]]:
    """(rows kept, [(row left out, why)]): the data-quality screen (DATA_EXCLUSIONS), order kept. `on`:
    whether it applies (None: EXCLUDE_DATA); off, every row is kept."""
    if not (EXCLUDE_DATA if on is None else on):
        return list(rows), []
    keep, out = [], []
    for r in rows:
        why = data_exclusion(r)
        if why:
            out.append((r, why))
        else:
            keep.append(r)
    return keep, out


def select_training(rows: list[Row], per_setup: int = ROWS_PER_SETUP,
                    exclude_data: bool | None = None) -> tuple[list[Row], list[str]]:
    """The training rows the fit starts from (before fit_rows' queueing / KV-bound screen): the training
    models' rows with a recorded concurrency and vLLM version, less the data-quality exclusions
    (data_screen; `exclude_data` None: EXCLUDE_DATA) and those implausible without prefix-cache hits
    (calibration/plausibility.py), thinned to `per_setup` per setup among the rest; and one line per row
    left out as implausible, saying why (the data-quality ones: data_screen on split(rows)[0])."""
    train, _ = split(rows)
    train, _ = data_screen(train, exclude_data)
    train, implausible = screen([r for r in train if r.backend_version != "not recorded"])
    return thin(train, per_setup), [f"{r.setup} ({r.gpu}): {load.describe()}" for r, load in implausible]

