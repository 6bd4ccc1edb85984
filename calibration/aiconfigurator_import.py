"""A profile from NVIDIA aiconfigurator-core's per-operator GPU measurements (no GPU needed here).

calibration/aic_tables.py reads the package's vLLM operator tables (GEMM, attention, fused MoE,
all-reduce, quantisation) and interpolates them; calibration/aic_compose.py composes engine steps
from them (dense or mixture-of-experts models, TP, expert parallelism); this module fits the
composed steps with calibration.fit.fit_profile, records where every number came from and the KV
cache vLLM would allocate (sim.memory at vLLM's server defaults), and saves the profile.

The profiles contain no engine overhead (scheduling, sampling, CPU work): with the default
step_overhead_s = 0 a profile is a LOWER BOUND on a real engine's step time.

    python -m calibration.aiconfigurator_import --model llama-3.1-8b --system h100_sxm --tp 1 \\
        --dtype bf16 --out calibration/profiles/h100-sxm_llama-3.1-8b_tp1_bf16
    python -m calibration.aiconfigurator_import --model minimax-m2.5 --system b200_sxm --tp 4 --dtype fp4 \\
        --moe-parallel ep
    python -m calibration.aiconfigurator_import --shipped     # regenerate every shipped profile
    python -m calibration.aiconfigurator_import --kv-table docs/kv_capacity_gpu.md   # block counts of the shipped ones
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from calibration.aic_compose import (BLOCK_SIZE_TOKENS, CUDA_GRAPH_MAX_TOKENS, DEFAULT_STEP_OVERHEAD_S, GEMM_DTYPES,
                                     KV_DTYPES, MAX_STEP_TOKENS, MOE_PARALLEL, NOT_MODELLED, SYSTEMS, Composition,
                                     StepComposer, compose_measurements, step_grid)
from calibration.aic_tables import (PACKAGE, ImportFailed, LogGrid, LookupLog, OpTables, load_tables,
                                    package_version, require_package)
from calibration.fit import FitResult, fit_profile, format_report
from calibration.profile import MEASUREMENTS_FILE, Profile, save_profile, shipped_profiles_dir
from calibration.kv_capacity import vllm_kv_capacity
from sim.catalog import ModelSpec, resolve_model
from sim.cli_errors import run_command
from sim.configio import ConfigError

__all__ = ["SYSTEMS", "LogGrid", "LookupLog", "OpTables", "StepComposer", "ImportFailed", "load_tables",
           "compose_measurements", "build_profile", "import_profile", "write_profile", "profile_name", "step_grid",
           "package_version", "require_package", "main"]


def default_kv_dtype(dtype: str) -> str:
    """The KV dtype a profile name leaves implicit: the weights' dtype for bf16/fp8, else bf16."""
    return dtype if dtype in KV_DTYPES else "bf16"


# What vLLM's --kv-cache-dtype auto resolves to for the checkpoint a (model, weight dtype) stands for
# (vllm/utils/torch_utils.py resolve_kv_cache_dtype_string: the checkpoint's kv_cache_quant_algo, else the
# model dtype): NVIDIA's modelopt FP8/NVFP4 checkpoints (nvidia/Llama-3.1-*-FP8, *-NVFP4,
# nvidia/MiniMax-M2.5-NVFP4) declare FP8 KV; Qwen3-235B-A22B-FP8, MiniMax-M2.5 (fp8) and gpt-oss do not.
CHECKPOINT_KV_DTYPES = {("qwen3-235b-a22b", "fp8"): "bf16", ("minimax-m2.5", "fp8"): "bf16",
                        ("minimax-m2.5", "fp4"): "fp8", ("llama-3.1-70b", "fp4"): "fp8",
                        ("llama-3.1-8b", "fp4"): "fp8"}


def checkpoint_kv_dtype(model: str, dtype: str) -> str:
    """The KV dtype vLLM would use by default for this model's checkpoint in `dtype`."""
    return CHECKPOINT_KV_DTYPES.get((model, dtype), default_kv_dtype(dtype))


def profile_name(system: str, model: str, tp: int, dtype: str, kv_dtype: str | None = None,
                 moe_parallel: str | None = None) -> str:
    """<gpu>_<model>_tp<N>[_ep<N>]_<dtype>[_kv<kv dtype>]: `_ep<N>` when a mixture of experts places whole
    experts on each of the N GPUs, `_kv..` when the KV cache's dtype is not the weights' default."""
    ep = f"_ep{tp}" if moe_parallel == "ep" else ""
    name = f"{SYSTEMS[system]}_{model}_tp{tp}{ep}_{dtype}"
    return name if (kv_dtype or default_kv_dtype(dtype)) == default_kv_dtype(dtype) else f"{name}_kv{kv_dtype}"


def expert_pick_fraction(model: ModelSpec) -> float | None:
    """k / E of a mixture of experts (the share of its experts one token's routing picks), None for a dense
    model: the profile's expert term, experts_s x (1 - (1 - k/E)^tokens), the expected share of expert
    weights a step streams. The fused-MoE table grows that way with tokens (concave, flat once every expert
    is touched); the dense formula alone, linear in tokens, cannot follow it."""
    return model.experts_per_token / model.num_experts if model.is_moe else None


def _command(model: str, system: str, tp: int, dtype: str, kv_dtype: str, framework: str, version: str,
             step_overhead_s: float, out: str, moe_parallel: str | None = None) -> str:
    parts = [f"python -m calibration.aiconfigurator_import --model {model} --system {system} --tp {tp}",
             f"--dtype {dtype}"]
    if kv_dtype != default_kv_dtype(dtype):
        parts.append(f"--kv-dtype {kv_dtype}")
    if moe_parallel == "ep":
        parts.append("--moe-parallel ep")
    parts.append(f"--framework {framework} --version {version}")
    if step_overhead_s:
        parts.append(f"--step-overhead-ms {step_overhead_s * 1e3:g}")
    parts.append(f"--out {out}")
    return " ".join(parts)


def _method(comp: Composition, model: ModelSpec, test_fraction: float, seed: int) -> str:
    mlp = ("router GEMM and one fused-MoE call per layer from the moe table (experts "
           + ("split by TP" if comp.composer.moe_parallel == "tp" else "placed whole on each GPU, EP") + ")"
           if model.is_moe else "gate/up and down GEMMs, SiLU-and-mul")
    pick = expert_pick_fraction(model)
    experts = (f" with the expert term experts_s x (1 - (1 - k/E)^tokens), k/E = {model.experts_per_token}/"
               f"{model.num_experts}: the expected share of expert weights a step's tokens touch under uniform "
               "routing (the composed steps use the moe table's own routing distribution)" if pick else "")
    qk = {"none": "", "per_head": " and q/k RMSNorm per head",
          "across_heads": " and q/k RMSNorm across heads (+1 all-reduce per layer under TP)"}[model.qk_norm]
    window = (f"; {model.num_sliding_layers} sliding-window layers from the window-{model.sliding_window_tokens} "
              "attention rows" if model.num_sliding_layers else "")
    return ("per-step latency composed from per-operator tables (QKV and O-proj GEMMs; context and generation "
            f"attention{window}; {mlp}; 2 all-reduces per layer under TP; residual-add+RMSNorm, RoPE, the KV-cache "
            f"write{qk} by aiconfigurator's analytic memory model; embedding; LM head over sampled positions), "
            "log-log interpolation between "
            f"measured shapes, then calibration.fit.fit_profile on {len(comp.measurements)} composed steps "
            f"(test_fraction {test_fraction}, seed {seed})" + experts)


def build_profile(model: ModelSpec | str, system: str, tp: int, dtype: str = "bf16", *,
                  kv_dtype: str | None = None, framework: str = "vllm", version: str | None = None,
                  step_overhead_s: float = DEFAULT_STEP_OVERHEAD_S, moe_parallel: str = "tp",
                  test_fraction: float = 0.25, seed: int = 0, tables: OpTables | None = None,
                  out: str | None = None) -> tuple[Profile, Composition, FitResult]:
    """The profile, the composed steps behind it and the fit (import_profile returns only the profile)."""
    model = resolve_model(model, "--model") if isinstance(model, str) else model
    kv_dtype = kv_dtype or checkpoint_kv_dtype(model.name, dtype)
    moe = moe_parallel if model.is_moe else None
    comp = compose_measurements(model, system, tp, dtype, kv_dtype=kv_dtype, framework=framework, version=version,
                                step_overhead_s=step_overhead_s, moe_parallel=moe_parallel, tables=tables)
    result = fit_profile(comp.measurements, test_fraction=test_fraction, seed=seed,
                         expert_pick_fraction=expert_pick_fraction(model))
    t = comp.tables
    name = profile_name(system, model.name, tp, dtype, kv_dtype, moe)
    gemm_dtype = comp.composer.gemm_dtype
    provenance = {
        "source": t.source,
        "package": PACKAGE, "package_version": package_version(), "license": "Apache-2.0",
        "system": t.system, "framework": t.framework, "framework_version": t.version,
        "comm_framework_version": t.comm_version,
        "tables": [f for f in t.files if ("/quantize/" not in f or gemm_dtype == "fp8")
                   and ("/comm/" not in f or tp > 1) and ("/moe/" not in f or model.is_moe)],
        "kernels": comp.kernels,
        "date": datetime.date.today().isoformat(),
        "command": _command(model.name, system, tp, dtype, kv_dtype, t.framework, t.version, step_overhead_s,
                            out or f"calibration/profiles/{name}", moe),
        "method": _method(comp, model, test_fraction, seed),
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
    if model.is_moe:
        provenance["moe"] = {"parallel": moe, "moe_framework_version": t.moe_version,
                             "moe_dtype": comp.composer.moe_dtype, "dense_gemm_dtype": gemm_dtype}
    gpu = SYSTEMS[system]
    try:
        provenance["kv_cache_at_vllm_defaults"] = vllm_kv_capacity(model, gpu, tp, dtype, kv_dtype)
    except ConfigError as exc:
        provenance["kv_cache_at_vllm_defaults"] = {"error": str(exc)}
    profile = Profile(name=name, coefficients=result.coefficients, model=model.name, device=t.device,
                      gpu=gpu, tensor_parallel=tp, weight_dtype=dtype, kv_dtype=kv_dtype,
                      block_size_tokens=BLOCK_SIZE_TOKENS, num_kv_blocks=None, provenance=provenance,
                      fit=result.report)
    return profile, comp, result


def import_profile(model: ModelSpec | str, system: str, tp: int, dtype: str = "bf16", **kwargs) -> Profile:
    """A Profile fitted on steps composed from aiconfigurator-core's tables (see build_profile for options)."""
    return build_profile(model, system, tp, dtype, **kwargs)[0]


def write_profile(profile: Profile, comp: Composition, folder: str | Path, measurements: bool = True) -> Path:
    """profile.json, and with `measurements` the composed steps (measurements.csv, a few tens of KB), in `folder`."""
    out = save_profile(profile, folder)
    if measurements:
        comp.measurements.to_csv(Path(folder) / MEASUREMENTS_FILE, index=False, float_format="%.6g")
    return out


# Shipped profiles: (system, model, TP sizes, dtypes[, moe parallel]). 70B needs TP >= 2 on 80 GB GPUs;
# A100 has no fp8 tensor cores and its tables no fp8 rows. The first six groups ship with their composed
# steps (measurements.csv); the rest (the GPUs and MoE models of the measured vLLM runs in
# silicon_sample.csv, and L40S) ship profile.json only, to keep the package small.
SHIPPED = [
    ("h100_sxm", "llama-3.1-8b", (1, 2, 4, 8), ("bf16", "fp8")),
    ("h100_sxm", "llama-3.1-70b", (2, 4, 8), ("bf16", "fp8")),
    ("h100_sxm", "qwen3-32b", (1, 2, 4, 8), ("bf16", "fp8")),
    ("a100_sxm", "llama-3.1-8b", (1, 2, 4, 8), ("bf16",)),
    ("a100_sxm", "llama-3.1-70b", (2, 4, 8), ("bf16",)),
    ("a100_sxm", "qwen3-32b", (1, 2, 4, 8), ("bf16",)),
]
SHIPPED_WITH_MEASUREMENTS = len(SHIPPED)
SHIPPED += [
    ("h200_sxm", "llama-3.1-8b", (1, 2, 4, 8), ("bf16", "fp8")),
    ("h200_sxm", "llama-3.1-70b", (2, 4, 8), ("bf16",)),
    ("h200_sxm", "llama-3.1-70b", (1, 2, 4, 8), ("fp8",)),
    ("h200_sxm", "qwen3-32b", (1, 2, 4, 8), ("bf16", "fp8")),
    ("b200_sxm", "llama-3.1-8b", (1, 2, 4, 8), ("bf16", "fp8")),
    ("b200_sxm", "llama-3.1-70b", (1, 2, 4, 8), ("bf16", "fp8", "fp4")),
    ("l40s", "llama-3.1-8b", (1, 2, 4), ("bf16", "fp8")),
    ("l40s", "qwen3-32b", (2, 4), ("fp8",)),
    # Mixtures of experts (expert GEMMs from the moe tables).
    ("h100_sxm", "gpt-oss-120b", (2, 4, 8), ("mxfp4",)),
    ("h200_sxm", "gpt-oss-120b", (1, 2, 4, 8), ("mxfp4",)),
    ("b200_sxm", "gpt-oss-120b", (1, 2, 4, 8), ("mxfp4",)),
    ("l40s", "gpt-oss-120b", (2, 4), ("mxfp4",)),
    ("h100_sxm", "minimax-m2.5", (4,), ("fp8",), "ep"),
    ("h200_sxm", "minimax-m2.5", (4, 8), ("fp8",)),
    ("b200_sxm", "minimax-m2.5", (2, 4), ("fp8",)),
    ("b200_sxm", "minimax-m2.5", (2, 4), ("fp8",), "ep"),
    ("b200_sxm", "minimax-m2.5", (1, 2, 4, 8), ("fp4",)),
    ("b300_sxm", "minimax-m2.5", (1, 2, 4), ("fp8",)),
    ("b300_sxm", "minimax-m2.5", (1, 2, 4, 8), ("fp4",)),
    ("h200_sxm", "qwen3-235b-a22b", (2, 4), ("fp8",)),
    ("h200_sxm", "qwen3-235b-a22b", (2, 4), ("fp8",), "ep"),
    ("a100_sxm", "mixtral-8x7b", (2, 4, 8), ("bf16",)),
    ("h100_sxm", "mixtral-8x7b", (2, 4, 8), ("bf16",)),
]


def shipped_jobs() -> list[tuple[str, str, int, str, str, bool]]:
    """(system, model, tp, dtype, moe_parallel, with measurements.csv) of every shipped profile."""
    jobs = []
    for i, entry in enumerate(SHIPPED):
        system, model, tps, dtypes = entry[:4]
        moe = entry[4] if len(entry) > 4 else "tp"
        jobs += [(system, model, tp, d, moe, i < SHIPPED_WITH_MEASUREMENTS) for tp in tps for d in dtypes]
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.aiconfigurator_import", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="catalog model name, e.g. llama-3.1-8b")
    p.add_argument("--system", choices=sorted(SYSTEMS), help="aiconfigurator system")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--dtype", choices=sorted(GEMM_DTYPES), default="bf16", help="weights / GEMM dtype")
    p.add_argument("--kv-dtype", choices=sorted(KV_DTYPES), default=None,
                   help="KV cache dtype (default: what vLLM picks for the checkpoint, see CHECKPOINT_KV_DTYPES)")
    p.add_argument("--moe-parallel", choices=MOE_PARALLEL, default="tp",
                   help="mixture of experts: split every expert over the TP group (tp) or whole experts per GPU (ep)")
    p.add_argument("--framework", default="vllm")
    p.add_argument("--version", default=None, help="framework version of the tables (default: newest)")
    p.add_argument("--step-overhead-ms", type=float, default=DEFAULT_STEP_OVERHEAD_S * 1e3,
                   help="fixed engine overhead added to every step (default 0: a lower bound)")
    p.add_argument("--out", help="profile folder to write (default: calibration/profiles/<name>)")
    p.add_argument("--no-measurements", action="store_true", help="write profile.json only")
    p.add_argument("--shipped", action="store_true", help="regenerate every shipped profile")
    p.add_argument("--only-new", action="store_true", help="with --shipped: skip profiles that exist already")
    p.add_argument("--kv-table", metavar="MD", help="write the KV block counts of the shipped profiles to MD")
    a = p.parse_args(argv)
    return run_command(lambda args: _run(args, p), a)  # bad input: one line on stderr, status 2


def _run(a: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    if a.kv_table:
        from calibration.kv_capacity import write_kv_table
        write_kv_table(Path(a.kv_table))
        print(f"wrote {a.kv_table}")
        return 0
    if a.shipped:
        jobs = [(s, m, tp, d, None, None, None, moe, not csv) for s, m, tp, d, moe, csv in shipped_jobs()]
    elif a.model and a.system:
        jobs = [(a.system, a.model, a.tp, a.dtype, a.kv_dtype, a.version, a.out, a.moe_parallel,
                 a.no_measurements)]
    else:
        p.error("give --model and --system, or --shipped, or --kv-table")
    tables: dict[str, OpTables] = {}
    for system, model, tp, dtype, kv_dtype, version, out, moe, no_csv in jobs:
        spec = resolve_model(model, "--model")
        kv_dtype = kv_dtype or checkpoint_kv_dtype(model, dtype)
        name = profile_name(system, model, tp, dtype, kv_dtype, moe if spec.is_moe else None)
        folder = out or str(shipped_profiles_dir() / name)
        if a.only_new and (Path(folder) / "profile.json").is_file():
            continue
        if system not in tables:
            tables[system] = load_tables(system, a.framework, version)
        rel = out or f"calibration/profiles/{name}"
        profile, comp, result = build_profile(model, system, tp, dtype, kv_dtype=kv_dtype,
                                              framework=a.framework, step_overhead_s=a.step_overhead_ms * 1e-3,
                                              moe_parallel=moe, tables=tables[system], out=rel)
        write_profile(profile, comp, folder, measurements=not no_csv)
        print(f"== {name}: {len(comp.measurements)} steps ({profile.provenance['source']}), "
              f"skipped {comp.skipped or 'none'} -> {folder}")
        print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
