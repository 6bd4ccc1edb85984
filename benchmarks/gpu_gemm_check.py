"""The GEMMs of a composed GPU profile, measured on a real GPU and set beside aiconfigurator's tables.

A composed profile (calibration/aic_compose.py) prices every projection of a step from
aiconfigurator-core's per-operator tables, measured by NVIDIA on their machines. This script
times the same GEMMs on the GPU in hand, so a table entry can be checked against silicon:

  measure   (on a GPU; needs torch only) time each projection of a model at a set of token
            counts, bf16 (torch.nn.functional.linear) and fp8 e4m3 per-tensor
            (torch._scaled_mm, the kernel family vLLM's per-tensor fp8 linear calls),
            CUDA events around a CUDA graph of 20 calls, median of --repeats. Writes a CSV with the device's name.
  compare   (anywhere; needs aiconfigurator-core) the table's time for each measured row, from
            the same lookup the composer uses (calibration.aic_step's LogGrid), and the ratio.

    python benchmarks/gpu_gemm_check.py measure --model llama-3.1-8b --out gemm.csv
    python benchmarks/gpu_gemm_check.py compare gemm.csv --system h200_sxm

Nothing here is fitted: the comparison is a check of the tables the composed profiles rest on.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

TOKENS = (1, 4, 16, 64, 256, 1024, 2048, 4096, 8192)


def projections(hidden: int, heads: int, kv_heads: int, head_dim: int, ffn: int, tp: int = 1) -> dict:
    """name -> (n, k): output and input width of each dense projection of one layer under TP."""
    q, kv = heads * head_dim // tp, kv_heads * head_dim // tp
    return {"qkv": (q + 2 * kv, hidden), "o": (hidden, q), "gate_up": (2 * ffn // tp, hidden),
            "down": (hidden, ffn // tp)}


def _model_shape(model: str, tp: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sim.catalog import model_catalog

    m = model_catalog()[model]
    return projections(m.hidden_size, m.num_attention_heads, m.num_kv_heads, m.head_dim, m.ffn_size, tp)


def _time_ms(fn, repeats: int, inner: int = 20) -> float:
    """Median over `repeats` of one call's time, each sample a CUDA graph of `inner` back-to-back calls
    (the way aiconfigurator-core times its operators): no launch gaps, no host in the loop."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(inner):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / inner)
    return statistics.median(times)


def measure(args) -> int:
    import torch
    import torch.nn.functional as F

    from gpu_cli import no_cuda

    if no_cuda():
        return 2
    shapes = _model_shape(args.model, args.tp)
    name = torch.cuda.get_device_name()
    rows = []
    for proj, (n, k) in shapes.items():
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
        w8 = w.to(torch.float8_e4m3fn)
        w8_t = w8.t()  # column-major (k, n), the layout _scaled_mm wants for its second operand
        one = torch.ones((), device="cuda", dtype=torch.float32)
        for m in args.tokens:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            bf16_ms = _time_ms(lambda: F.linear(x, w), args.repeats)
            x8 = x.to(torch.float8_e4m3fn)
            try:
                fp8_ms = _time_ms(lambda: torch._scaled_mm(x8, w8_t, scale_a=one, scale_b=one,
                                                           out_dtype=torch.bfloat16), args.repeats)
            except (RuntimeError, TypeError) as exc:  # e.g. m not a multiple the kernel accepts
                print(f"  fp8 {proj} m={m}: {exc}".splitlines()[0], file=sys.stderr)
                fp8_ms = float("nan")
            rows.append({"device": name, "torch": torch.__version__, "model": args.model, "tp": args.tp,
                         "projection": proj, "m": m, "n": n, "k": k, "bf16_ms": round(bf16_ms, 5),
                         "fp8_ms": round(fp8_ms, 5)})
            print(f"{proj:8s} m={m:5d} n={n:6d} k={k:6d}  bf16 {bf16_ms:8.4f} ms  fp8 {fp8_ms:8.4f} ms",
                  flush=True)
    from gpu_cli import write_rows

    write_rows(args.out, rows)
    print(f"wrote {args.out} ({len(rows)} rows, {name})")
    return 0


def compare_frame(rows, system: str = "h200_sxm", version: str | None = None):
    """One row per measured GEMM and dtype: the table's time for it beside the measured one, looked up by
    the composer itself (calibration.aic_step.StepComposer's GEMM grid and _gemm_s) for the rows' model."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import pandas as pd

    from calibration.aic_step import StepComposer
    from calibration.aic_tables import LookupLog, load_tables
    from sim.catalog import model_catalog

    tables = load_tables(system, "vllm", version)
    model = model_catalog()[rows["model"].iloc[0]]
    log = LookupLog()
    out = []
    for dtype, col in (("bf16", "bf16_ms"), ("fp8", "fp8_ms")):
        comp = StepComposer(tables, model, tp=1, dtype=dtype, kv_dtype="bf16")
        for r in rows.itertuples():
            measured = getattr(r, col)
            if measured != measured:  # nan: not measured
                continue
            table = comp._gemm_s(comp.gemm, r.m, r.n, r.k, log) * 1e3
            out.append({"dtype": comp.gemm_dtype, "projection": r.projection, "m": r.m, "n": r.n, "k": r.k,
                        "measured_ms": measured, "table_ms": round(table, 5),
                        "table_over_measured": round(table / measured, 3)})
    return pd.DataFrame(out)


def compare(args) -> int:
    import pandas as pd

    from calibration.aic_tables import load_tables

    rows = pd.read_csv(args.csv)
    df = compare_frame(rows, args.system, args.version)
    print(f"{rows['device'].iloc[0]} (torch {rows['torch'].iloc[0]}) vs {load_tables(args.system, 'vllm', args.version).source}")
    print(df.to_string(index=False))
    for dtype, d in df.groupby("dtype"):
        big = d[d["m"] >= 256]
        print(f"{dtype}: table/measured median {d['table_over_measured'].median():.3f} "
              f"(m >= 256: {big['table_over_measured'].median():.3f}, m < 256: "
              f"{d[d['m'] < 256]['table_over_measured'].median():.3f})")
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


def main(argv=None) -> int:
    from gpu_cli import measure_compare_main

    def extra_measure(m):
        m.add_argument("--tp", type=int, default=1, help="tensor-parallel size: each GPU's share of the projections")
        m.add_argument("--tokens", type=lambda s: tuple(int(x) for x in s.split(",")), default=TOKENS,
                       help="token counts m, comma-separated (default " + ",".join(map(str, TOKENS)) + ")")

    def extra_compare(c):
        c.add_argument("--system", default="h200_sxm", help="aiconfigurator system (default h200_sxm)")
        c.add_argument("--version", default=None, help="vLLM table version (default: the newest)")

    return measure_compare_main(__doc__, measure, compare, measure_args=extra_measure, compare_args=extra_compare,
                                argv=argv)


if __name__ == "__main__":
    sys.exit(main())
