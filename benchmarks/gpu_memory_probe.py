"""The memory figures behind servesim's KV capacity, read on a real GPU.

calibration/kv_capacity.py divides a GPU as vLLM's memory profiling does: the device's total memory
x gpu_memory_utilization, minus the weights, the profile run's activation peak, and non-torch memory
(CUDA context, cuBLAS workspaces: NON_TORCH_GIB, an estimate). This script measures what a GPU in
hand says about three of those:

  total     the device's total memory as torch.cuda.mem_get_info reports it (what vLLM multiplies
            by gpu_memory_utilization), beside the catalog's memory_bytes for the GPU;
  non-torch memory used on the device that torch's allocator does not hold, after CUDA init and
            after the first bf16 GEMM, fp8 GEMM and attention call (CUDA context, cuBLAS/cuBLASLt
            workspaces, kernel modules), beside NON_TORCH_GIB;
  peak      the transient peak of one prefill forward pass of servesim's PyTorch Llama
            (calibration/torch_harness.py, dummy weights) at T tokens above what stays allocated,
            beside sim.memory.activation_reserve_bytes' forward part (no sampler logits). The
            harness is not vLLM (unfused fp32 norms and RoPE, a contiguous KV cache), so this bounds
            the formula's order of magnitude, not vLLM's figure.

    python benchmarks/gpu_memory_probe.py measure --out memory.csv     # on a GPU
    python benchmarks/gpu_memory_probe.py compare memory.csv --gpu h100-sxm
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PREFILL_TOKENS = (2048, 8192)


def prefill_batch(tokens: int, device: str):
    """One sequence's whole prompt of `tokens` tokens in cache slot 0 (a prefill step of the harness)."""
    import torch

    from calibration.torch_harness import StepBatch

    ar = torch.arange(tokens, device=device)
    slot = torch.zeros(1, dtype=torch.long, device=device)
    return StepBatch(tokens=torch.full((tokens,), 7, device=device), positions=ar,
                     token_slots=torch.zeros(tokens, dtype=torch.long, device=device),
                     groups=((ar.view(1, tokens), slot, 0, tokens),), sample_index=torch.tensor([tokens - 1], device=device))


def _used_bytes() -> tuple[int, int, int]:
    import torch

    free, total = torch.cuda.mem_get_info()
    return total, total - free, torch.cuda.memory_reserved()


def measure(args) -> int:
    import torch
    import torch.nn.functional as F

    from gpu_cli import no_cuda

    if no_cuda():
        return 2
    from calibration.model_dir import model_config_from_catalog
    from calibration.torch_harness import KVCache, LlamaShape, TinyLlama

    rows = []
    name = torch.cuda.get_device_name()

    def note(what: str, value: int, detail: str = "") -> None:
        rows.append({"device": name, "torch": torch.__version__, "model": args.model, "what": what,
                     "bytes": int(value), "detail": detail})
        print(f"{what:32s} {value / 2**30:9.3f} GiB  {detail}", flush=True)

    torch.cuda.init()
    torch.zeros(1, device="cuda")
    total, used, reserved = _used_bytes()
    note("device_total", total, "torch.cuda.mem_get_info total")
    note("non_torch_after_init", used - reserved, "used - torch reserved, after CUDA init")
    a = torch.randn(1024, 4096, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    (a @ b).sum().item()
    one = torch.ones((), device="cuda", dtype=torch.float32)
    try:
        torch._scaled_mm(a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t(), scale_a=one, scale_b=one,
                         out_dtype=torch.bfloat16).sum().item()
    except (RuntimeError, TypeError) as exc:
        print(f"fp8 GEMM: {exc}".splitlines()[0], file=sys.stderr)
    q = torch.randn(1, 32, 2048, 128, device="cuda", dtype=torch.bfloat16)
    F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().item()
    torch.cuda.synchronize()
    total, used, reserved = _used_bytes()
    note("non_torch_after_kernels", used - reserved, "after a bf16 GEMM, an fp8 GEMM and flash attention")
    del a, b, q
    torch.cuda.empty_cache()

    shape = LlamaShape.from_config(model_config_from_catalog(args.model))
    model = TinyLlama(shape, dtype=torch.bfloat16, device="cuda")
    torch.cuda.synchronize()
    note("harness_weights", torch.cuda.memory_allocated(), "allocated after building the model (bf16, dummy)")
    for T in PREFILL_TOKENS:
        cache = KVCache(shape, 1, T + 2, torch.bfloat16, "cuda")
        batch = prefill_batch(T, "cuda")
        model.forward_step(batch, cache)  # warm: kernel choice, workspaces
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        model.forward_step(batch, cache)
        torch.cuda.synchronize()
        note(f"harness_prefill_peak_{T}", torch.cuda.max_memory_allocated() - base,
             f"one prefill of {T} tokens: peak allocated above the weights, KV cache and inputs")
        del cache, batch
        torch.cuda.empty_cache()
    total, used, reserved = _used_bytes()
    note("non_torch_after_harness", used - reserved, "after the harness's prefills")
    from gpu_cli import write_rows

    write_rows(args.out, rows)
    print(f"wrote {args.out}")
    return 0


def compare_frame(rows, gpu: str):
    """Each measured figure beside what servesim assumes for it (bytes; ratio servesim / measured)."""
    import pandas as pd

    from calibration.kv_capacity import NON_TORCH_GIB
    from sim.catalog import GIB, resolve_gpu, resolve_model
    from sim.memory import activation_reserve_bytes, weight_bytes

    spec = resolve_gpu(gpu, "gpu")
    model = resolve_model(rows["model"].iloc[0], "model")
    got = dict(zip(rows["what"], rows["bytes"]))
    out = [("device_total", got["device_total"], spec.memory_bytes, f"catalog {gpu}.memory_bytes"),
           ("non_torch_after_kernels", got["non_torch_after_kernels"], NON_TORCH_GIB * GIB,
            "calibration.kv_capacity.NON_TORCH_GIB"),
           ("harness_weights", got["harness_weights"], weight_bytes(model, "bf16"), "sim.memory.weight_bytes bf16")]
    for T in PREFILL_TOKENS:
        key = f"harness_prefill_peak_{T}"
        if key in got:
            forward = activation_reserve_bytes(model, 1, T, 1) - model.vocab_size * 4  # no sampler logits
            out.append((key, got[key], forward, "sim.memory.activation_reserve_bytes, forward part"))
    return pd.DataFrame([{"what": w, "measured_gib": round(m / GIB, 3), "servesim_gib": round(s / GIB, 3),
                          "servesim_over_measured": round(s / m, 3), "servesim_source": src}
                         for w, m, s, src in out])


def compare(args) -> int:
    import pandas as pd

    rows = pd.read_csv(args.csv)
    print(f"{rows['device'].iloc[0]} (torch {rows['torch'].iloc[0]}), model {rows['model'].iloc[0]}")
    print(compare_frame(rows, args.gpu).to_string(index=False))
    return 0


def main(argv=None) -> int:
    from gpu_cli import measure_compare_main

    def extra_compare(c):
        c.add_argument("--gpu", default="h100-sxm", help="catalog GPU the device is (default h100-sxm)")

    return measure_compare_main(__doc__, measure, compare, repeats=1, compare_args=extra_compare, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
