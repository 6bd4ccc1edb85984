"""A grid of engine steps composed from aiconfigurator-core's per-operator vLLM tables, as measurements.

Each step (prefill, decode and mixed, within vLLM's default limits and the KV cache the GPU holds)
is priced per op group by calibration/aic_step.StepComposer; the grid is the measurements schema of
calibration.fit.fit_profile (calibration/aiconfigurator_import.py builds and saves the profile).

What per-op data do NOT contain: the engine's per-step CPU work (scheduling, input
preparation, sampling, detokenisation) and gaps between kernels. A composition with the
default step_overhead_s = 0 is therefore a LOWER BOUND on a real engine's step time.
"""
from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

# The composer and its dtypes, checkpoint formats and MoE splits: calibration/aic_step.py (re-exported here).
from calibration.aic_step import (CHECKPOINT_FORMATS, CUDA_GRAPH_MAX_TOKENS, DEFAULT_STEP_OVERHEAD_S,  # noqa: F401
                                  GEMM_DTYPES, KV_DTYPES, MOE_DISTRIBUTIONS, MOE_DTYPES, MOE_PARALLEL, StepComposer)
from calibration.aic_tables import PACKAGE, ImportFailed, LookupLog, OpTables, load_tables, package_version
from sim.catalog import ModelSpec, resolve_gpu, resolve_model
from sim.configio import ConfigError
from sim.step_features import step_features
from sim.memory import plan_memory

# aiconfigurator system name -> servesim catalog GPU name: every system with vLLM GEMM + attention tables.
SYSTEMS = {"h100_sxm": "h100-sxm", "a100_sxm": "a100-80gb-sxm", "h200_sxm": "h200-sxm", "b200_sxm": "b200-sxm",
           "b300_sxm": "b300-sxm", "l40s": "l40s"}
BLOCK_SIZE_TOKENS = 16  # vLLM's default KV block size
# The step grid stays within vLLM's default token budget per step (max_num_batched_tokens
# 8192), which is also the largest m of the A100 GEMM table.
MAX_STEP_TOKENS = 8192
MAX_DECODE_BATCH = 512
# The KV capacity that bounds the decode grid: vLLM's defaults, 2 GiB for CUDA context,
# NCCL buffers and CUDA graphs.
GPU_MEMORY_UTILIZATION = 0.9
RUNTIME_OVERHEAD_GIB = 2.0

PREFILL_LENGTHS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
PREFILL_BATCHES = (1, 2, 4, 8, 16, 32, 64)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DECODE_CONTEXTS = (127, 511, 1023, 2047, 4095, 8191, 16383, 32767)
MIXED_CHUNKS = (128, 512, 2048)
MIXED_DECODES = (8, 32, 128)
MIXED_CONTEXTS = (511, 4095)

NOT_MODELLED = [
    "per-step engine CPU work (scheduling, input preparation, sampling, detokenisation): see step_overhead_s",
    "gaps between kernels; kernel fusion by torch.compile (each module call is priced as its own memory-bound op)",
    "the LM-head all-gather of logits under TP",
    "prefill chunks on top of a cached prefix (the context-attention tables measure prompts from position 0)",
    "activation quantisation of block-scaled fp8 and NVFP4 GEMMs (per-tensor fp8 uses the scale_matrix table)",
    "MoE: routing skew beyond the table's power-law distribution; gpt-oss's attention sinks and biases",
]


def step_grid() -> list[tuple[str, list[int], list[int], list[int]]]:
    """(phase, chunk_tokens, context_tokens, samples) of every step to compose, before memory limits.

    prefill: b prompts of L tokens (b * L <= MAX_STEP_TOKENS), each sampling its first token;
    decode: b sequences with c cached tokens; mixed: one prompt chunk (finishing and sampling,
    or not) beside b decodes, as a chunked-prefill scheduler forms them.
    """
    steps = []
    for L, b in itertools.product(PREFILL_LENGTHS, PREFILL_BATCHES):
        if b * L <= MAX_STEP_TOKENS:
            steps.append(("prefill", [L] * b, [0] * b, [1] * b))
    for b, c in itertools.product(DECODE_BATCHES, DECODE_CONTEXTS):
        steps.append(("decode", [1] * b, [c] * b, [1] * b))
    for chunk, b, c, finishes in itertools.product(MIXED_CHUNKS, MIXED_DECODES, MIXED_CONTEXTS, (True, False)):
        if chunk + b <= MAX_STEP_TOKENS:
            steps.append(("mixed", [chunk] + [1] * b, [0] + [c] * b, [int(finishes)] + [1] * b))
    return steps


@dataclass(frozen=True)
class Composition:
    """Composed steps (the measurements schema of calibration.fit) and what it took to make them."""

    measurements: pd.DataFrame
    tables: OpTables
    kernels: dict[str, str]
    lookups: dict  # LookupLog.as_dict() over the kept steps
    skipped: dict  # reason -> number of grid steps left out
    kv_capacity_tokens: int
    composer: StepComposer


def compose_measurements(model: ModelSpec | str, system: str, tp: int, dtype: str = "bf16", *,
                         kv_dtype: str | None = None, framework: str = "vllm", version: str | None = None,
                         step_overhead_s: float = DEFAULT_STEP_OVERHEAD_S, moe_parallel: str = "tp",
                         tables: OpTables | None = None) -> Composition:
    """Compose the step grid for `model` on `system` at TP `tp`; steps whose KV does not fit on the GPU,
    or that would need a clamped table lookup, are left out (and counted). `moe_parallel` ("tp" or
    "ep") says how a mixture of experts splits its experts over the TP group."""
    if system not in SYSTEMS:
        raise ImportFailed(f"--system: got {system!r}; supported: {sorted(SYSTEMS)}")
    model = resolve_model(model, "--model") if isinstance(model, str) else model
    kv_dtype = kv_dtype or (dtype if dtype in KV_DTYPES else "bf16")
    tables = tables or load_tables(system, framework, version)
    composer = StepComposer(tables, model, tp=tp, dtype=dtype, kv_dtype=kv_dtype, step_overhead_s=step_overhead_s,
                            moe_parallel=moe_parallel)
    gpu = resolve_gpu(SYSTEMS[system], "--system")
    try:
        plan = plan_memory(model=model, gpu=gpu, tp=tp, weight_dtype=dtype, kv_dtype=kv_dtype,
                           gpu_memory_utilization=GPU_MEMORY_UTILIZATION, block_size_tokens=BLOCK_SIZE_TOKENS,
                           max_num_batched_tokens=MAX_STEP_TOKENS, max_num_seqs=MAX_DECODE_BATCH,
                           max_model_len=MAX_STEP_TOKENS, overhead_bytes=int(RUNTIME_OVERHEAD_GIB * 1024**3))
    except ConfigError as exc:
        raise ImportFailed(f"--tp: {exc}") from None

    source = f"{PACKAGE} {package_version()} {tables.system} {tables.framework} {tables.version}"
    rows, skipped, kept_log = [], Counter(), LookupLog()
    for phase, chunk, context, samples in step_grid():
        if sum(c + L for c, L in zip(context, chunk)) > plan.kv_capacity_tokens:
            skipped["kv_cache_does_not_fit"] += 1
            continue
        log = LookupLog()
        parts = composer.step(chunk, context, samples, log)
        if log.clamped:
            skipped["outside_measured_tables"] += 1
            continue
        kept_log.split.update(log.split)
        f = step_features(np.array(chunk), np.array(context), np.array(samples))
        decodes = [c for c, L in zip(context, chunk) if c > 0]
        rows.append({"phase": phase, "new_tokens": f.new_tokens, "sampled": f.sampled, "attn_pairs": f.attn_pairs,
                     "kv_read_tokens": f.kv_read_tokens, "num_seqs": f.num_seqs,
                     "step_time_s": float(np.float64(sum(parts.values()))),
                     "batch_size": len(chunk), "prompt_tokens": max([L for L, c in zip(chunk, context) if c == 0],
                                                                    default=0),
                     "context_tokens": max(decodes, default=0),
                     **{k: v for k, v in parts.items() if k != "overhead_s"}, "source": source})
    df = pd.DataFrame(rows)
    return Composition(measurements=df, tables=tables, kernels=dict(composer.kernels), lookups=kept_log.as_dict(),
                       skipped=dict(skipped), kv_capacity_tokens=int(plan.kv_capacity_tokens),
                       composer=composer)
