"""A profile from NVIDIA aiconfigurator-core's per-operator GPU measurements (no GPU needed here).

aiconfigurator-core (Apache-2.0, `pip install aiconfigurator-core`, import name
`aiconfigurator_core`) ships operator latencies measured on real GPUs under vLLM,
TensorRT-LLM and SGLang:

    aiconfigurator_core/systems/data/<system>/<family>/<framework>/<version>/*.parquet
      gemm/.../gemm_perf.parquet                    m (tokens) x n x k, by gemm_dtype, ms per call
      attention/.../context_attention_perf.parquet  batch x isl (prompt length, no cached prefix), heads, KV heads
      attention/.../generation_attention_perf.parquet  batch x step (cached tokens), heads, KV heads
      comm/.../custom_allreduce_perf.parquet        num_gpus x message_size (elements, bf16), CUDA graph / eager
      quantize/.../scale_matrix_perf.parquet        fp8 activation quantisation, m x k
    aiconfigurator_core/systems/<system>.yaml       memory bandwidth and the constants of its analytic memory ops

This module composes one engine STEP the way a dense decoder runs it, per layer:
QKV GEMM, attention (context kernel for prompts, generation kernel for decodes), O-proj
GEMM, gate/up GEMM, down GEMM, two all-reduces when TP > 1, the residual-add+RMSNorm and
SiLU-and-mul element-wise ops; times num_layers; plus the embedding (and its all-reduce)
and the LM-head GEMM over the sampled positions. Tables are interpolated linearly in
log(latency) over log(shape) between measured points; a query outside the measured range is
clamped to the edge and recorded, never extrapolated silently. A grid of prefill, decode and
mixed steps is composed, fitted with calibration.fit.fit_profile and saved as a Profile.

What per-op data do NOT contain: the engine's per-step CPU work (scheduling, input
preparation, sampling, detokenisation) and gaps between kernels. A profile built with the
default step_overhead_s = 0 is therefore a LOWER BOUND on a real engine's step time.

    python -m calibration.aiconfigurator_import --model llama-3.1-8b --system h100_sxm --tp 1 \\
        --dtype bf16 --out calibration/profiles/h100-sxm_llama-3.1-8b_tp1_bf16
    python -m calibration.aiconfigurator_import --shipped     # regenerate every shipped profile
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import itertools
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from calibration.fit import FitResult, fit_profile, format_report
from calibration.profile import MEASUREMENTS_FILE, Profile, save_profile, shipped_profiles_dir
from sim.catalog import ModelSpec, resolve_gpu, resolve_model
from sim.configio import ConfigError
from sim.cost_model import step_features
from sim.memory import kv_heads_per_gpu, plan_memory

PACKAGE = "aiconfigurator-core"
MODULE = "aiconfigurator_core"
MS = 1e-3  # the tables are in milliseconds

# aiconfigurator system name -> servesim catalog GPU name.
SYSTEMS = {"h100_sxm": "h100-sxm", "a100_sxm": "a100-80gb-sxm", "h200_sxm": "h200-sxm"}
# servesim dtype -> (gemm_dtype, kv_cache_dtype) as the tables spell them.
GEMM_DTYPES = {"bf16": "bfloat16", "fp8": "fp8"}
KV_DTYPES = {"bf16": "bfloat16", "fp8": "fp8"}
BLOCK_SIZE_TOKENS = 16  # vLLM's default KV block size

# vLLM V1 captures CUDA graphs for steps of up to 512 tokens (its default
# max_cudagraph_capture_size); larger steps run eagerly. Only the all-reduce table
# distinguishes the two (the eager custom all-reduce pays ~20-45 us of launch and sync).
CUDA_GRAPH_MAX_TOKENS = 512
# The step grid stays within vLLM's default token budget per step (max_num_batched_tokens
# 8192), which is also the largest m of the A100 GEMM table.
MAX_STEP_TOKENS = 8192
MAX_DECODE_BATCH = 512
# The KV capacity that bounds the decode grid: vLLM's defaults, 2 GiB for CUDA context,
# NCCL buffers and CUDA graphs.
GPU_MEMORY_UTILIZATION = 0.9
RUNTIME_OVERHEAD_GIB = 2.0
# A fixed per-step engine overhead (seconds) added to every composed step. Default 0: the
# profile is then the kernel time alone, a lower bound. A real vLLM V1 step adds CPU
# scheduling, input preparation and sampling that async scheduling partly hides; pass a
# measured value (e.g. the gap between a measured TPOT and the composed decode step) here.
# For scale: the package's silicon_sample.csv has end-to-end TPOTs of Llama-3.1-8B on H100
# under TensorRT-LLM (TP 1, batch 8, 512 output tokens) 0.6-1.6 ms (8-20 %) above the
# composed decode steps at the same batch and mean context.
DEFAULT_STEP_OVERHEAD_S = 0.0

PREFILL_LENGTHS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
PREFILL_BATCHES = (1, 2, 4, 8, 16, 32, 64)
DECODE_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DECODE_CONTEXTS = (127, 511, 1023, 2047, 4095, 8191, 16383, 32767)
MIXED_CHUNKS = (128, 512, 2048)
MIXED_DECODES = (8, 32, 128)
MIXED_CONTEXTS = (511, 4095)

NOT_MODELLED = [
    "per-step engine CPU work (scheduling, input preparation, sampling, detokenisation): see step_overhead_s",
    "gaps between kernels and rotary embedding / KV-cache write kernels (not in the op tables)",
    "model-specific small ops (e.g. Qwen3's q/k RMSNorm)",
    "the LM-head all-gather of logits under TP",
    "prefill chunks on top of a cached prefix (the context-attention tables measure prompts from position 0)",
]


class ImportFailed(ConfigError):
    """The tables lack what a model/system/dtype needs, or the request is not supported; the message says which."""


def require_package() -> Path:
    """The installed package's systems/ folder (ImportFailed with the install command if absent)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportFailed(f"the {PACKAGE} package is not installed: pip install '{PACKAGE}>=0.12' "
                           "(or servesim[aiconfigurator])")
    return Path(list(spec.submodule_search_locations)[0]) / "systems"


def package_version() -> str:
    return importlib.metadata.version(PACKAGE)


# --------------------------------------------------------------------------------------------
# Interpolation


@dataclass
class LookupLog:
    """What the lookups of one import had to do beyond interpolation: clamps and splits, by table."""

    clamped: Counter = field(default_factory=Counter)  # table: count of lookups clamped to the measured range
    split: Counter = field(default_factory=Counter)  # table: GEMMs split into measured-size pieces
    examples: dict = field(default_factory=dict)  # table: one example message

    def clamp(self, table: str, message: str) -> None:
        self.clamped[table] += 1
        self.examples.setdefault(table, message)

    def as_dict(self) -> dict:
        return {"clamped": dict(self.clamped), "split": dict(self.split), "examples": dict(self.examples)}


@dataclass(frozen=True)
class LogGrid:
    """Latency (ms) on a rectilinear grid of positive coordinates; cells never measured are NaN.

    `lookup` interpolates log(latency) multilinearly in log(coordinates) between the 2^d
    surrounding measured points: exact for power laws, so for both the flat launch-bound and
    the linear throughput-bound regimes of a kernel.
    """

    table: str
    axis_names: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    log_ms: np.ndarray

    @classmethod
    def from_frame(cls, table: str, df: pd.DataFrame, axis_names: tuple[str, ...]) -> LogGrid:
        if df.empty:
            raise ImportFailed(f"{table}: no rows for the requested slice")
        # Rows repeated for one shape (re-measurements) are averaged.
        mean = df.groupby(list(axis_names))["latency"].mean()
        axes = tuple(np.array(sorted(df[a].unique()), dtype=np.float64) for a in axis_names)
        values = np.full(tuple(len(a) for a in axes), np.nan)
        index = tuple(np.searchsorted(ax, mean.index.get_level_values(i).to_numpy(dtype=np.float64))
                      for i, ax in enumerate(axes))
        values[index] = np.log(mean.to_numpy(dtype=np.float64))
        return cls(table, tuple(axis_names), axes, values)

    def max(self, axis: str) -> float:
        return float(self.axes[self.axis_names.index(axis)][-1])

    def lookup(self, point: tuple[float, ...], log: LookupLog) -> float:
        """Latency in ms at `point` (one coordinate per axis)."""
        brackets = []
        for name, ax, x in zip(self.axis_names, self.axes, point):
            if x < ax[0] or x > ax[-1]:
                log.clamp(self.table, f"{name}={x:g} outside measured {ax[0]:g}..{ax[-1]:g} (clamped)")
                x = min(max(x, ax[0]), ax[-1])
            hi = int(np.searchsorted(ax, x))
            if ax[min(hi, len(ax) - 1)] == x or len(ax) == 1:
                brackets.append(((min(hi, len(ax) - 1), 1.0),))
                continue
            lo = hi - 1
            w = (math.log(x) - math.log(ax[lo])) / (math.log(ax[hi]) - math.log(ax[lo]))
            brackets.append(((lo, 1.0 - w), (hi, w)))
        total, weight = 0.0, 0.0
        missing = False
        for corner in itertools.product(*brackets):
            w = math.prod(c[1] for c in corner)
            v = self.log_ms[tuple(c[0] for c in corner)]
            if np.isnan(v):
                missing = True
                continue
            total += w * v
            weight += w
        if not missing:
            return math.exp(total / weight)
        # The unmeasured cells are the large shapes (the collector skips what does not fit in
        # memory): leaning on the measured neighbours, or on the nearest measured cell, is a clamp.
        log.clamp(self.table, f"{dict(zip(self.axis_names, point))} next to unmeasured cells (clamped)")
        if weight > 0.0:
            return math.exp(total / weight)
        measured = np.argwhere(~np.isnan(self.log_ms))
        logs = np.stack([np.log(ax[measured[:, i]]) for i, ax in enumerate(self.axes)], axis=1)
        nearest = measured[np.argmin(((logs - np.log(np.asarray(point, dtype=np.float64))) ** 2).sum(axis=1))]
        return math.exp(self.log_ms[tuple(nearest)])


# --------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class OpTables:
    """The operator tables of one system and framework version, as read from the package."""

    system: str
    framework: str
    version: str
    comm_version: str
    device: str  # GPU name as the tables record it
    files: tuple[str, ...]  # paths relative to aiconfigurator_core/systems/data
    mem_bw_bytes_per_s: float  # from <system>.yaml: the analytic memory-op model
    mem_bw_scaling: float
    mem_latency_s: float
    gemm: pd.DataFrame
    context_attention: pd.DataFrame
    generation_attention: pd.DataFrame
    allreduce: pd.DataFrame
    scale_matrix: pd.DataFrame | None

    @property
    def source(self) -> str:
        return f"{PACKAGE} {package_version()} {self.system} {self.framework} {self.version}"


def _version_key(v: str) -> tuple:
    """Sort key for version folders (0.14.0 < 0.24.0; 1.3.0rc20 < 1.3.0)."""
    main, _, pre = v.partition("rc")
    nums = tuple(int(p) if p.isdigit() else 0 for p in main.split(".post")[0].split("."))
    return nums + ((int(pre) if pre.isdigit() else 0, 0) if pre else (1 << 30, 0))


def _versions(folder: Path, table: str) -> list[str]:
    """Version folders under `folder` holding `table`, oldest first."""
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if (p / table).is_file()), key=_version_key)


def load_tables(system: str, framework: str = "vllm", version: str | None = None) -> OpTables:
    """Read one system's GEMM, attention, all-reduce and quantisation tables for `framework`.

    `version=None` takes the newest framework version that has both GEMM and attention tables;
    the all-reduce table comes from the same version or, failing that, the newest older one.
    """
    systems = require_package()
    root = systems / "data" / system
    if not root.is_dir():
        have = sorted(p.name for p in (systems / "data").iterdir() if p.is_dir())
        raise ImportFailed(f"--system: no data for {system!r}; {PACKAGE} {package_version()} has {have}")
    gemm_versions = _versions(root / "gemm" / framework, "gemm_perf.parquet")
    attn_versions = set(_versions(root / "attention" / framework, "context_attention_perf.parquet"))
    both = [v for v in gemm_versions if v in attn_versions]
    if not both:
        raise ImportFailed(f"--framework: {system} has no {framework} GEMM + attention tables")
    if version is None:
        version = both[-1]
    elif version not in both:
        raise ImportFailed(f"--version: {system}/{framework} has GEMM + attention tables for {both}, not {version!r}")
    comm = [v for v in _versions(root / "comm" / framework, "custom_allreduce_perf.parquet")
            if _version_key(v) <= _version_key(version)]
    if not comm:
        raise ImportFailed(f"{system}/{framework}: no custom_allreduce_perf table at or before version {version}")
    comm_version = comm[-1]

    rel = {
        "gemm": f"{system}/gemm/{framework}/{version}/gemm_perf.parquet",
        "context_attention": f"{system}/attention/{framework}/{version}/context_attention_perf.parquet",
        "generation_attention": f"{system}/attention/{framework}/{version}/generation_attention_perf.parquet",
        "allreduce": f"{system}/comm/{framework}/{comm_version}/custom_allreduce_perf.parquet",
        "scale_matrix": f"{system}/quantize/{framework}/{version}/scale_matrix_perf.parquet",
    }
    frames = {}
    for name, path in rel.items():
        f = systems / "data" / path
        if f.is_file():
            frames[name] = pd.read_parquet(f)
        elif name != "scale_matrix":
            raise ImportFailed(f"missing table {path}")
    spec = yaml.safe_load((systems / f"{system}.yaml").read_text())["gpu"]
    device = str(frames["gemm"]["device"].iloc[0])
    return OpTables(system=system, framework=framework, version=version, comm_version=comm_version, device=device,
                    files=tuple(p for n, p in rel.items() if n in frames),
                    mem_bw_bytes_per_s=float(spec["mem_bw"]),
                    mem_bw_scaling=float(spec.get("mem_bw_empirical_scaling_factor", 1.0)),
                    mem_latency_s=float(spec.get("mem_empirical_constant_latency", 0.0)),
                    gemm=frames["gemm"], context_attention=frames["context_attention"],
                    generation_attention=frames["generation_attention"], allreduce=frames["allreduce"],
                    scale_matrix=frames.get("scale_matrix"))


def _one_kernel(df: pd.DataFrame, what: str) -> tuple[pd.DataFrame, str]:
    """The rows of the kernel with the most measurements in this slice (tables can hold several)."""
    if df.empty:
        raise ImportFailed(f"{what}: no measured rows")
    if "kernel_source" not in df.columns:
        return df, "unnamed"
    kernel = df["kernel_source"].value_counts().index[0]
    return df[df["kernel_source"] == kernel], str(kernel)


# --------------------------------------------------------------------------------------------
# Composition


class StepComposer:
    """Per-step latency of one dense model at one TP size and dtype, from the op tables."""

    def __init__(self, tables: OpTables, model: ModelSpec, *, tp: int, dtype: str = "bf16",
                 kv_dtype: str | None = None, step_overhead_s: float = DEFAULT_STEP_OVERHEAD_S):
        kv_dtype = kv_dtype or dtype
        if model.is_moe:
            raise ImportFailed(f"--model: {model.name} is a mixture of experts; this importer composes dense models")
        if tp < 1 or model.num_attention_heads % tp or (model.num_kv_heads % tp and tp % model.num_kv_heads):
            raise ImportFailed(f"--tp: {tp} does not split {model.name}'s {model.num_attention_heads} heads / "
                               f"{model.num_kv_heads} KV heads evenly")
        if dtype not in GEMM_DTYPES or kv_dtype not in KV_DTYPES:
            raise ImportFailed(f"--dtype/--kv-dtype: got {dtype!r}/{kv_dtype!r}; allowed {sorted(GEMM_DTYPES)}")
        if step_overhead_s < 0:
            raise ImportFailed(f"--step-overhead-ms: must be >= 0, got {step_overhead_s * 1e3:g}")
        self.tables, self.model, self.tp = tables, model, tp
        self.dtype, self.kv_dtype, self.step_overhead_s = dtype, kv_dtype, step_overhead_s
        self.kernels: dict[str, str] = {}

        h, hd = model.hidden_size, model.head_dim
        self.heads = model.num_attention_heads // tp
        self.kv_heads = kv_heads_per_gpu(model, tp)
        # (n, k) of each per-layer GEMM: output features x input features, per GPU.
        self.shapes = {"qkv": ((self.heads + 2 * self.kv_heads) * hd, h), "o_proj": (h, self.heads * hd),
                       "gate_up": (2 * model.ffn_size // tp, h), "down": (h, model.ffn_size // tp)}
        self.lm_head_n = -(-model.vocab_size // tp)

        g = tables.gemm
        self.gemm = self._gemm_grid(g, GEMM_DTYPES[dtype], "gemm")
        self.gemm_bf16 = self.gemm if dtype == "bf16" else self._gemm_grid(g, "bfloat16", "lm_head_gemm")
        self.context_attention = self._attention_grid(tables.context_attention, "context_attention", "isl")
        self.generation_attention = self._attention_grid(tables.generation_attention, "generation_attention", "step")
        self.allreduce = self._allreduce_grids() if tp > 1 else {}
        self.quant = None
        if dtype == "fp8":
            sm = tables.scale_matrix
            if sm is None or sm[sm["quant_dtype"] == "fp8"].empty:
                raise ImportFailed(f"{tables.system}/{tables.framework} {tables.version}: no fp8 quantisation table")
            rows, self.kernels["fp8_activation_quant"] = _one_kernel(sm[sm["quant_dtype"] == "fp8"], "scale_matrix")
            self.quant = LogGrid.from_frame("scale_matrix", rows, ("m", "k"))

    def _gemm_grid(self, g: pd.DataFrame, gemm_dtype: str, role: str) -> LogGrid:
        sub = g[g["gemm_dtype"] == gemm_dtype]
        if sub.empty:
            have = sorted(g["gemm_dtype"].unique())
            raise ImportFailed(f"{self.tables.system}/{self.tables.framework} {self.tables.version}: no {gemm_dtype} "
                               f"GEMM measurements (the table has {have})")
        rows, self.kernels[role] = _one_kernel(sub, f"{gemm_dtype} GEMM")
        return LogGrid.from_frame(f"gemm[{gemm_dtype}]", rows, ("m", "n", "k"))

    def _attention_grid(self, a: pd.DataFrame, table: str, length_axis: str) -> LogGrid:
        keep = ((a["num_heads"] == self.heads) & (a["num_key_value_heads"] == self.kv_heads)
                & (a["head_dim"] == self.model.head_dim) & (a["kv_cache_dtype"] == KV_DTYPES[self.kv_dtype]))
        if "window_size" in a.columns:
            keep &= a["window_size"] == 0  # full attention, no sliding window
        if "beam_width" in a.columns:
            keep &= a["beam_width"] == 1
        if table == "context_attention" and "step" in a.columns:
            keep &= a["step"] == 0
        if not keep.any():
            have = sorted(set(zip(a["num_heads"], a["num_key_value_heads"], a["head_dim"], a["kv_cache_dtype"])))
            raise ImportFailed(f"{self.tables.system}/{self.tables.framework} {self.tables.version} {table}: nothing "
                               f"measured for {self.heads} heads / {self.kv_heads} KV heads / head_dim "
                               f"{self.model.head_dim} / KV {KV_DTYPES[self.kv_dtype]}; measured (heads, kv heads, "
                               f"head_dim, kv dtype): {have[:40]}")
        rows, self.kernels[table] = _one_kernel(a[keep], table)
        return LogGrid.from_frame(table, rows, ("batch_size", length_axis))

    def _allreduce_grids(self) -> dict[bool, LogGrid]:
        """{cuda_graph: grid} for this TP size; one grid for both when the table has no graph/eager split."""
        ar = self.tables.allreduce
        ar = ar[ar["num_gpus"] == self.tp]
        if "allreduce_dtype" in ar.columns:
            ar = ar[ar["allreduce_dtype"] == "bfloat16"]
        if ar.empty:
            raise ImportFailed(f"{self.tables.system}/{self.tables.framework} {self.tables.comm_version}: no bf16 "
                               f"all-reduce measured on {self.tp} GPUs")
        if "backend" not in ar.columns or ar["backend"].nunique() == 1:
            rows, self.kernels["allreduce"] = _one_kernel(ar, "all-reduce")
            grid = LogGrid.from_frame("allreduce", rows, ("message_size",))
            return {True: grid, False: grid}
        grids = {}
        for graph in (True, False):
            sub = ar[ar["backend"].str.contains("graph" if graph else "eager")]
            rows, self.kernels[f"allreduce_{'graph' if graph else 'eager'}"] = _one_kernel(sub, "all-reduce")
            grids[graph] = LogGrid.from_frame(f"allreduce[{'graph' if graph else 'eager'}]", rows, ("message_size",))
        return grids

    # -- lookups, in seconds -------------------------------------------------------------------

    def _gemm_s(self, grid: LogGrid, m: int, n: int, k: int, log: LookupLog) -> float:
        """A GEMM larger than any measured m or n is run as equal measured-size pieces (rows and output
        columns split without changing the work), summed."""
        if m <= 0:
            return 0.0
        pieces_m = -(-m // int(grid.max("m")))
        pieces_n = -(-n // int(grid.max("n")))
        if pieces_m * pieces_n > 1:
            log.split[grid.table] += 1
        return pieces_m * pieces_n * grid.lookup((m / pieces_m, n / pieces_n, k), log) * MS

    def _memory_op_s(self, bytes_moved: float) -> float:
        """aiconfigurator's analytic model of an element-wise op (not a measured table)."""
        t = self.tables
        return t.mem_latency_s + bytes_moved / (t.mem_bw_bytes_per_s * t.mem_bw_scaling)

    def _allreduce_s(self, tokens: int, log: LookupLog) -> float:
        grid = self.allreduce[tokens <= CUDA_GRAPH_MAX_TOKENS]
        return grid.lookup((tokens * self.model.hidden_size,), log) * MS

    def step(self, chunk_tokens, context_tokens, samples, log: LookupLog) -> dict[str, float]:
        """Seconds per op group for one step: sequence j computes chunk_tokens[j] tokens on top of
        context_tokens[j] cached ones and samples samples[j] positions (as sim.cost_model.step_features)."""
        chunk = [int(x) for x in chunk_tokens]
        context = [int(x) for x in context_tokens]
        sampled = int(sum(int(s) for s in samples))
        T = sum(chunk)
        prompts, decodes = Counter(), Counter()
        for L, c in zip(chunk, context):
            if L <= 0:
                continue
            if c == 0:
                prompts[L] += 1
            elif L == 1:
                decodes[c] += 1
            else:
                raise ImportFailed(f"a {L}-token chunk on top of {c} cached tokens: the context-attention tables "
                                   "measure prompts from position 0 only")
        m, layers = self.model, self.model.num_layers
        gemm = sum(self._gemm_s(self.gemm, T, n, k, log) for n, k in self.shapes.values())
        if self.quant is not None:  # fp8 GEMMs quantise their bf16 input activations first
            gemm += sum(self.quant.lookup((T, k), log) * MS for _, k in self.shapes.values())
        attention = sum(self.context_attention.lookup((cnt, L), log) * MS for L, cnt in prompts.items())
        attention += sum(self.generation_attention.lookup((cnt, c), log) * MS for c, cnt in decodes.items())
        h, f = m.hidden_size, m.ffn_size // self.tp
        # Two residual-add + RMSNorm (2h in, 2h out per token) and SiLU-and-mul (2f in, f out), bf16.
        elementwise = 2 * self._memory_op_s(T * 4 * h * 2) + self._memory_op_s(T * 3 * f * 2)
        comm = 2 * self._allreduce_s(T, log) if self.tp > 1 else 0.0
        embedding = self._memory_op_s(T * 2 * h * 2) + (self._allreduce_s(T, log) if self.tp > 1 else 0.0)
        lm_head = self._gemm_s(self.gemm_bf16, sampled, self.lm_head_n, h, log)
        return {"gemm_s": layers * gemm, "attention_s": layers * attention, "comm_s": layers * comm,
                "elementwise_s": layers * elementwise + embedding, "lm_head_s": lm_head,
                "overhead_s": self.step_overhead_s}


# --------------------------------------------------------------------------------------------
# The step grid


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


def compose_measurements(model: ModelSpec | str, system: str, tp: int, dtype: str = "bf16", *,
                         kv_dtype: str | None = None, framework: str = "vllm", version: str | None = None,
                         step_overhead_s: float = DEFAULT_STEP_OVERHEAD_S,
                         tables: OpTables | None = None) -> Composition:
    """Compose the step grid for `model` on `system` at TP `tp`; steps whose KV does not fit on the GPU,
    or that would need a clamped table lookup, are left out (and counted)."""
    if system not in SYSTEMS:
        raise ImportFailed(f"--system: got {system!r}; supported: {sorted(SYSTEMS)}")
    model = resolve_model(model, "--model") if isinstance(model, str) else model
    kv_dtype = kv_dtype or dtype
    tables = tables or load_tables(system, framework, version)
    composer = StepComposer(tables, model, tp=tp, dtype=dtype, kv_dtype=kv_dtype, step_overhead_s=step_overhead_s)
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
                       skipped=dict(skipped), kv_capacity_tokens=int(plan.kv_capacity_tokens))


def profile_name(system: str, model: str, tp: int, dtype: str, kv_dtype: str | None = None) -> str:
    name = f"{SYSTEMS[system]}_{model}_tp{tp}_{dtype}"
    return name if (kv_dtype or dtype) == dtype else f"{name}_kv{kv_dtype}"


def _command(model: str, system: str, tp: int, dtype: str, kv_dtype: str, framework: str, version: str,
             step_overhead_s: float, out: str) -> str:
    parts = [f"python -m calibration.aiconfigurator_import --model {model} --system {system} --tp {tp}",
             f"--dtype {dtype}"]
    if kv_dtype != dtype:
        parts.append(f"--kv-dtype {kv_dtype}")
    parts.append(f"--framework {framework} --version {version}")
    if step_overhead_s:
        parts.append(f"--step-overhead-ms {step_overhead_s * 1e3:g}")
    parts.append(f"--out {out}")
    return " ".join(parts)


def build_profile(model: ModelSpec | str, system: str, tp: int, dtype: str = "bf16", *,
                  kv_dtype: str | None = None, framework: str = "vllm", version: str | None = None,
                  step_overhead_s: float = DEFAULT_STEP_OVERHEAD_S, test_fraction: float = 0.25, seed: int = 0,
                  tables: OpTables | None = None, out: str | None = None) -> tuple[Profile, Composition, FitResult]:
    """The profile, the composed steps behind it and the fit (import_profile returns only the profile)."""
    model = resolve_model(model, "--model") if isinstance(model, str) else model
    kv_dtype = kv_dtype or dtype
    comp = compose_measurements(model, system, tp, dtype, kv_dtype=kv_dtype, framework=framework, version=version,
                                step_overhead_s=step_overhead_s, tables=tables)
    result = fit_profile(comp.measurements, test_fraction=test_fraction, seed=seed)
    t = comp.tables
    name = profile_name(system, model.name, tp, dtype, kv_dtype)
    provenance = {
        "source": t.source,
        "package": PACKAGE, "package_version": package_version(), "license": "Apache-2.0",
        "system": t.system, "framework": t.framework, "framework_version": t.version,
        "comm_framework_version": t.comm_version,
        "tables": [f for f in t.files if ("/quantize/" not in f or dtype == "fp8") and ("/comm/" not in f or tp > 1)],
        "kernels": comp.kernels,
        "date": datetime.date.today().isoformat(),
        "command": _command(model.name, system, tp, dtype, kv_dtype, t.framework, t.version, step_overhead_s,
                            out or f"calibration/profiles/{name}"),
        "method": ("per-step latency composed from per-operator tables (QKV, O-proj, gate/up, down GEMMs; context "
                   "and generation attention; 2 all-reduces per layer under TP; residual-add+RMSNorm and "
                   "SiLU-and-mul by aiconfigurator's analytic memory model; embedding; LM head over sampled "
                   "positions), log-log interpolation between measured shapes, then calibration.fit.fit_profile "
                   f"on {len(comp.measurements)} composed steps (test_fraction {test_fraction}, seed {seed})"),
        "step_overhead_s": step_overhead_s,
        "lower_bound": step_overhead_s == 0,
        "note": ("Per-op data exclude the engine's per-step overhead (scheduling, input preparation, sampling, CPU "
                 "work, gaps between kernels): with step_overhead_s = 0 this profile is a LOWER BOUND on a real "
                 "engine's step time."),
        "not_modelled": NOT_MODELLED,
        "cuda_graph_max_tokens": CUDA_GRAPH_MAX_TOKENS,
        "grid": {"max_step_tokens": MAX_STEP_TOKENS, "kv_capacity_tokens": comp.kv_capacity_tokens,
                 "steps": int(len(comp.measurements)), "skipped": comp.skipped},
        "lookups": comp.lookups,
    }
    profile = Profile(name=name, coefficients=result.coefficients, model=model.name, device=t.device,
                      gpu=SYSTEMS[system], tensor_parallel=tp, weight_dtype=dtype, kv_dtype=kv_dtype,
                      block_size_tokens=BLOCK_SIZE_TOKENS, num_kv_blocks=None, provenance=provenance,
                      fit=result.report)
    return profile, comp, result


def import_profile(model: ModelSpec | str, system: str, tp: int, dtype: str = "bf16", **kwargs) -> Profile:
    """A Profile fitted on steps composed from aiconfigurator-core's tables (see build_profile for options)."""
    return build_profile(model, system, tp, dtype, **kwargs)[0]


def write_profile(profile: Profile, comp: Composition, folder: str | Path) -> Path:
    """profile.json plus the composed steps (measurements.csv, a few tens of KB) in `folder`."""
    out = save_profile(profile, folder)
    comp.measurements.to_csv(Path(folder) / MEASUREMENTS_FILE, index=False, float_format="%.6g")
    return out


# Shipped profiles: (system, model, TP sizes, dtypes). 70B needs TP >= 2 on 80 GB GPUs;
# A100 has no fp8 tensor cores and its tables no fp8 rows.
SHIPPED = [
    ("h100_sxm", "llama-3.1-8b", (1, 2, 4, 8), ("bf16", "fp8")),
    ("h100_sxm", "llama-3.1-70b", (2, 4, 8), ("bf16", "fp8")),
    ("h100_sxm", "qwen3-32b", (1, 2, 4, 8), ("bf16", "fp8")),
    ("a100_sxm", "llama-3.1-8b", (1, 2, 4, 8), ("bf16",)),
    ("a100_sxm", "llama-3.1-70b", (2, 4, 8), ("bf16",)),
    ("a100_sxm", "qwen3-32b", (1, 2, 4, 8), ("bf16",)),
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.aiconfigurator_import", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="catalog model name, e.g. llama-3.1-8b")
    p.add_argument("--system", choices=sorted(SYSTEMS), help="aiconfigurator system")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--dtype", choices=sorted(GEMM_DTYPES), default="bf16", help="weights / GEMM dtype")
    p.add_argument("--kv-dtype", choices=sorted(KV_DTYPES), default=None, help="KV cache dtype (default: --dtype)")
    p.add_argument("--framework", default="vllm")
    p.add_argument("--version", default=None, help="framework version of the tables (default: newest)")
    p.add_argument("--step-overhead-ms", type=float, default=DEFAULT_STEP_OVERHEAD_S * 1e3,
                   help="fixed engine overhead added to every step (default 0: a lower bound)")
    p.add_argument("--out", help="profile folder to write (default: calibration/profiles/<name>)")
    p.add_argument("--shipped", action="store_true", help="regenerate every shipped profile")
    a = p.parse_args(argv)
    try:
        if a.shipped:
            jobs = [(s, m, tp, d, None, None, None) for s, m, tps, dts in SHIPPED for tp in tps for d in dts]
        elif a.model and a.system:
            jobs = [(a.system, a.model, a.tp, a.dtype, a.kv_dtype, a.version, a.out)]
        else:
            p.error("give --model and --system, or --shipped")
        tables: dict[str, OpTables] = {}
        for system, model, tp, dtype, kv_dtype, version, out in jobs:
            if system not in tables:
                tables[system] = load_tables(system, a.framework, version)
            name = profile_name(system, model, tp, dtype, kv_dtype)
            folder = out or str(shipped_profiles_dir() / name)
            rel = out or f"calibration/profiles/{name}"
            profile, comp, result = build_profile(model, system, tp, dtype, kv_dtype=kv_dtype,
                                                  framework=a.framework, step_overhead_s=a.step_overhead_ms * 1e-3,
                                                  tables=tables[system], out=rel)
            write_profile(profile, comp, folder)
            print(f"== {name}: {len(comp.measurements)} steps ({profile.provenance['source']}), "
                  f"skipped {comp.skipped or 'none'} -> {folder}")
            print(format_report(result))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
