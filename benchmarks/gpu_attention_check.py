"""A composed profile's attention kernels, measured on a real GPU and set beside aiconfigurator's tables.

The companion of gpu_gemm_check.py for the other table a composed step rests on:

  measure   (on a GPU; torch only) one layer's attention of a model at TP1 through PyTorch's
            scaled_dot_product_attention (its flash kernel), bf16, timed as a CUDA graph of 20 calls:
            decode: `batch` sequences, one new token each, over `context` cached tokens, the KV
              contiguous per sequence (a grouped-query decode is the KV head's query heads attending
              together, no mask);
            prefill: one prompt of `tokens`, causal.
  compare   (anywhere; aiconfigurator-core) the generation/context attention tables' time for the same
            shapes, from the composer's own grids (calibration.aic_step.StepComposer).

    python benchmarks/gpu_attention_check.py measure --out attention.csv
    python benchmarks/gpu_attention_check.py compare attention.csv --system h200_sxm

vLLM reads a paged cache with its own kernels (FlashAttention 3 / FlashInfer on Hopper); PyTorch's
flash kernel is FlashAttention 2 over a contiguous cache. A decode step is bound by reading the KV
bytes either way; a prefill is compute-bound, where FA3 is the faster kernel. Nothing is fitted.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

DECODE = [(b, c) for c in (512, 2048, 8192) for b in (1, 8, 32, 64, 128) if b * c <= 64 * 8192]  # (128, 8192) is past the tables
PREFILL = (256, 1024, 2048, 4096, 8192)


def measure(args) -> int:
    import torch
    import torch.nn.functional as F

    from gpu_cli import no_cuda
    from gpu_gemm_check import _time_ms

    if no_cuda():
        return 2
    from sim.catalog import model_catalog

    m = model_catalog()[args.model]
    heads, kv, d = m.num_attention_heads, m.num_kv_heads, m.head_dim
    group = heads // kv
    name = torch.cuda.get_device_name()
    rows = []
    for b, c in DECODE:
        q = torch.randn(b, kv, group, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, kv, c + 1, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        ms = _time_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)
        rows.append({"device": name, "torch": torch.__version__, "model": args.model, "phase": "decode",
                     "batch": b, "tokens": c, "ms": round(ms, 5)})
        print(rows[-1], flush=True)
        del q, k, v
    for L in PREFILL:
        q = torch.randn(1, heads, L, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, kv, L, d, device="cuda", dtype=torch.bfloat16).repeat_interleave(group, dim=1)
        v = torch.randn_like(k)
        ms = _time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), args.repeats)
        rows.append({"device": name, "torch": torch.__version__, "model": args.model, "phase": "prefill",
                     "batch": 1, "tokens": L, "ms": round(ms, 5)})
        print(rows[-1], flush=True)
    from gpu_cli import write_rows

    write_rows(args.out, rows)
    return 0


def compare_frame(rows, system: str = "h200_sxm", model: str = "llama-3.1-8b"):
    """Each measured shape beside the table's time for one layer of it (ms)."""
    import pandas as pd

    from calibration.aic_step import StepComposer
    from calibration.aic_tables import LookupLog, load_tables
    from sim.catalog import model_catalog

    comp = StepComposer(load_tables(system, "vllm"), model_catalog()[model], tp=1, dtype="bf16")
    log = LookupLog()
    out = []
    for r in rows.itertuples():
        grid = comp.generation_attention[0] if r.phase == "decode" else comp.context_attention[0]
        table = grid.lookup((r.batch, r.tokens), log)
        out.append({"phase": r.phase, "batch": r.batch, "tokens": r.tokens, "measured_ms": r.ms,
                    "table_ms": round(table, 5), "table_over_measured": round(table / r.ms, 3)})
    return pd.DataFrame(out)


def compare(args) -> int:
    import pandas as pd

    rows = pd.read_csv(args.csv)
    df = compare_frame(rows, args.system, rows["model"].iloc[0])
    print(f"{rows['device'].iloc[0]} (torch {rows['torch'].iloc[0]}) vs {args.system} vllm tables")
    print(df.to_string(index=False))
    return 0


def main(argv=None) -> int:
    from gpu_cli import measure_compare_main

    def extra_compare(c):
        c.add_argument("--system", default="h200_sxm", help="aiconfigurator system (default h200_sxm)")

    return measure_compare_main(__doc__, measure, compare, compare_args=extra_compare, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
