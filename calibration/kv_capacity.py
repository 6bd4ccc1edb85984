"""The KV cache vLLM would allocate for a profile's GPU, model, TP and dtypes, at vLLM's server defaults.

sim.memory.plan_memory follows vLLM's memory profiling (weights, the profile run's activation peak
at max_num_batched_tokens, non-torch memory, gpu_memory_utilization); this module fills in what a
plain `vllm serve` would use when nothing is set, so each composed profile can record the block
count it implies, and writes the table of them (docs/kv_capacity_gpu.md).

vLLM's OpenAI-server defaults by GPU memory (vllm/engine/arg_utils.py, read in the installed
vllm 0.32 source): >= 160 GiB -> max_num_batched_tokens 16384, max_num_seqs 1024; >= 70 GiB and not
an A100 -> 8192 / 1024; otherwise 2048 / 256. Block size 16 on CUDA, max_model_len = the model's context.
gpu_memory_utilization 0.9: the default through vLLM 0.19, the releases of the measured runs these block counts
are checked against; vLLM 0.20 and later take 0.92 (sim/engine_terms.gpu_memory_utilization_default), about
3 % more KV (docs/gpu_vllm_h200.md).
"""
from __future__ import annotations

from pathlib import Path

from sim.catalog import GIB, GpuSpec, ModelSpec, resolve_gpu, resolve_model
from sim.memory import plan_memory

GPU_MEMORY_UTILIZATION = 0.9
BLOCK_SIZE_TOKENS = 16
# Non-torch memory per GPU besides NCCL buffers, as vLLM's profiling subtracts it: the non-torch
# growth after its starting snapshot (cuBLAS and attention workspaces: 0.07 GiB on an H100,
# docs/gpu_h100.md; the CUDA context, 0.6 GiB there, comes before the snapshot and is not
# subtracted) plus its CUDA-graph estimate (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1, not
# measured here). An estimate: the scenario default serving.overhead_gib.
NON_TORCH_GIB = 1.0
CLIFF_SECTION = "## Check against the measured KV cliffs"


def vllm_server_limits(gpu: GpuSpec) -> dict[str, int]:
    """max_num_batched_tokens and max_num_seqs that vLLM's OpenAI server picks for `gpu`."""
    if gpu.memory_bytes >= 160 * GIB:
        return {"max_num_batched_tokens": 16384, "max_num_seqs": 1024}
    if gpu.memory_bytes >= 70 * GIB and not gpu.name.startswith("a100"):
        return {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
    return {"max_num_batched_tokens": 2048, "max_num_seqs": 256}


def vllm_kv_capacity(model: ModelSpec | str, gpu: GpuSpec | str, tp: int, weight_dtype: str,
                     kv_dtype: str) -> dict:
    """Block count and the memory split behind it at vLLM's defaults (ConfigError if the model does not fit)."""
    model = resolve_model(model, "model") if isinstance(model, str) else model
    gpu = resolve_gpu(gpu, "gpu") if isinstance(gpu, str) else gpu
    limits = vllm_server_limits(gpu)
    plan = plan_memory(model=model, gpu=gpu, tp=tp, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                       gpu_memory_utilization=GPU_MEMORY_UTILIZATION, block_size_tokens=BLOCK_SIZE_TOKENS,
                       max_model_len=model.max_context_tokens, overhead_bytes=int(NON_TORCH_GIB * GIB), **limits)
    return {"num_kv_blocks": plan.num_kv_blocks, "block_size_tokens": BLOCK_SIZE_TOKENS,
            "kv_capacity_tokens": plan.kv_capacity_tokens, "kv_dtype": kv_dtype,
            "gpu_memory_utilization": GPU_MEMORY_UTILIZATION, **limits,
            "requested_gib": round(plan.usable_bytes / GIB, 3), "weights_gib": round(plan.weights_bytes / GIB, 3),
            "reserve_gib": round(plan.reserve_bytes / GIB, 3), "kv_gib": round(plan.kv_budget_bytes / GIB, 3),
            "method": "sim.memory.plan_memory (vLLM's memory profiling), non-torch memory "
                      f"{NON_TORCH_GIB} GiB + NCCL buffers under TP; an estimate, not a measured block count"}


def write_kv_table(path: Path) -> None:
    """A markdown table of the block count every shipped aiconfigurator profile implies."""
    from calibration.profile import list_shipped_profiles, load_profile

    rows = []
    for name in list_shipped_profiles():
        p = load_profile(name)
        if p.gpu is None or not p.provenance.get("source", "").startswith("aiconfigurator-core"):
            continue
        try:
            kv = vllm_kv_capacity(p.model, p.gpu, p.tensor_parallel, p.weight_dtype, p.kv_dtype)
        except Exception as exc:  # noqa: BLE001 - a model that does not fit is a row, not a crash
            rows.append(f"| {name} | - | - | - | - | - | - | {exc} |")
            continue
        rows.append(f"| {name} | {kv['max_num_batched_tokens']} / {kv['max_num_seqs']} | {kv['requested_gib']:.1f} "
                    f"| {kv['weights_gib']:.1f} | {kv['reserve_gib']:.2f} | {kv['kv_gib']:.1f} | "
                    f"{kv['num_kv_blocks']:,} | {kv['kv_capacity_tokens']:,} |")
    lines = ["# KV-cache capacity each GPU profile implies", "",
             "Written by `python -m calibration.aiconfigurator_import --kv-table docs/kv_capacity_gpu.md` "
             "(do not edit by hand).", "",
             ("Per GPU, at vLLM's OpenAI-server defaults for that GPU (`gpu_memory_utilization` 0.9, block size "
              "16, `max_model_len` = the model's context, the token budget and sequence limit vLLM picks by GPU "
              "memory) and the profile's weight and KV dtypes, following vLLM's memory profiling "
              "(`sim/memory.py`): requested = ceil(memory x 0.9); reserve = the profile run's activation peak "
              f"+ {NON_TORCH_GIB} GiB non-torch memory (workspaces and CUDA graphs, an estimate) + NCCL buffers under TP; "
              "KV = requested - weights - reserve. Estimates, not block counts measured on the GPU: the "
              "profiles' `num_kv_blocks` stays null and the simulator computes the same plan for each scenario's "
              "own settings."), "",
             "| profile | tokens / seqs per step | requested GiB | weights GiB | reserve GiB | KV GiB | KV blocks "
             "| KV tokens |",
             "|---|---|---:|---:|---:|---:|---:|---:|"] + rows
    # Keep the cliff check that benchmarks/kv_cliffs.py appends (it needs the simulator, this does not).
    tail = ""
    if path.is_file() and CLIFF_SECTION in path.read_text():
        tail = "\n" + CLIFF_SECTION + path.read_text().split(CLIFF_SECTION, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + tail)
