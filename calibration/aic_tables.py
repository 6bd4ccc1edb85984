"""aiconfigurator-core's per-operator tables: where they are, how to read one system's, how to look one up.

aiconfigurator-core (Apache-2.0, `pip install aiconfigurator-core`, import name
`aiconfigurator_core`) ships operator latencies measured on real GPUs under vLLM,
TensorRT-LLM and SGLang:

    aiconfigurator_core/systems/data/<system>/<family>/<framework>/<version>/*.parquet
      gemm/.../gemm_perf.parquet                    m (tokens) x n x k, by gemm_dtype, ms per call
      attention/.../context_attention_perf.parquet  batch x isl (prompt length, no cached prefix), heads, KV heads
      attention/.../generation_attention_perf.parquet  batch x step (cached tokens), heads, KV heads
      moe/.../moe_perf.parquet                      one fused-MoE layer: num_tokens x (experts, top-k, hidden,
                                                    expert intermediate, moe_tp, moe_ep, dtype, routing distribution)
      comm/.../custom_allreduce_perf.parquet        num_gpus x message_size (elements, bf16), CUDA graph / eager
      quantize/.../scale_matrix_perf.parquet        fp8 activation quantisation, m x k
    aiconfigurator_core/systems/<system>.yaml       memory bandwidth and the constants of its analytic memory ops

Tables are interpolated linearly in log(latency) over log(shape) between measured points; a
query outside the measured range is clamped to the edge and recorded, never extrapolated silently.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import itertools
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sim.configio import ConfigError

PACKAGE = "aiconfigurator-core"
MODULE = "aiconfigurator_core"
MS = 1e-3  # the tables are in milliseconds


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
    moe: pd.DataFrame | None = None  # fused-MoE layer latencies (None: the system has no MoE table)
    moe_version: str | None = None

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
    moe = [v for v in _versions(root / "moe" / framework, "moe_perf.parquet")
           if _version_key(v) <= _version_key(version)]
    moe_version = moe[-1] if moe else None

    rel = {
        "gemm": f"{system}/gemm/{framework}/{version}/gemm_perf.parquet",
        "context_attention": f"{system}/attention/{framework}/{version}/context_attention_perf.parquet",
        "generation_attention": f"{system}/attention/{framework}/{version}/generation_attention_perf.parquet",
        "allreduce": f"{system}/comm/{framework}/{comm_version}/custom_allreduce_perf.parquet",
        "scale_matrix": f"{system}/quantize/{framework}/{version}/scale_matrix_perf.parquet",
        "moe": f"{system}/moe/{framework}/{moe_version}/moe_perf.parquet",
    }
    frames = {}
    for name, path in rel.items():
        f = systems / "data" / path
        if f.is_file():
            frames[name] = pd.read_parquet(f)
        elif name not in ("scale_matrix", "moe"):
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
                    scale_matrix=frames.get("scale_matrix"), moe=frames.get("moe"),
                    moe_version=moe_version if "moe" in frames else None)


def _one_kernel(df: pd.DataFrame, what: str) -> tuple[pd.DataFrame, str]:
    """The rows of the kernel with the most measurements in this slice (tables can hold several)."""
    if df.empty:
        raise ImportFailed(f"{what}: no measured rows")
    if "kernel_source" not in df.columns:
        return df, "unnamed"
    kernel = df["kernel_source"].value_counts().index[0]
    return df[df["kernel_source"] == kernel], str(kernel)


