"""A decode step's GPU time with and without the host in the loop, on a real GPU.

`servesim calibrate run --engine torch` times whole steps of an eager PyTorch Llama: the GPU waits
on Python between kernel launches, so its steps carry launch overhead an engine with CUDA graphs
(vLLM's default for decode) does not pay. This script runs the same model (calibration.torch_harness)
on one decode step of `batch` sequences at `context` tokens two ways:

  eager   the step as the harness runs it (CUDA events around one call);
  graph   the same step captured in a CUDA graph and replayed (kernel time alone, as
          aiconfigurator-core's tables and the composed profiles count it).

The difference is the host's share of an eager step. Writes a CSV; `--compare` (anywhere) sets
the graph times beside the composed profile's kernel-only decode step for the same shapes.

    python benchmarks/gpu_decode_graph.py measure --out decode.csv            # on a GPU
    python benchmarks/gpu_decode_graph.py compare decode.csv --profile h200-sxm_llama-3.1-8b_tp1_bf16
"""
from __future__ import annotations

import statistics
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCHES = (1, 8, 32, 64, 128)
CONTEXTS = (512, 2048)


def measure(args) -> int:
    import torch

    from calibration.model_dir import model_config_from_catalog
    from calibration.torch_harness import KVCache, LlamaShape, StepBatch, TinyLlama
    from gpu_cli import no_cuda

    if no_cuda():
        return 2
    shape = LlamaShape.from_config(model_config_from_catalog(args.model))
    dev = "cuda"
    model = TinyLlama(shape, dtype=torch.bfloat16, device=dev)
    cache = KVCache(shape, max(BATCHES), max(CONTEXTS) + 2, torch.bfloat16, dev)
    rows = []
    for ctx in CONTEXTS:
        for b in BATCHES:
            ar = torch.arange(b, device=dev)
            batch = StepBatch(tokens=torch.full((b,), 7, device=dev), positions=torch.full((b,), ctx, device=dev),
                              token_slots=ar, groups=((ar.view(b, 1), ar, ctx, 1),), sample_index=ar)

            def step():
                return model.forward_step(batch, cache).argmax(dim=-1)

            for _ in range(3):
                step()
            torch.cuda.synchronize()
            eager = []
            for _ in range(args.repeats):
                a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                step()
                e.record()
                e.synchronize()
                eager.append(a.elapsed_time(e))
            graph = torch.cuda.CUDAGraph()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                step()
            torch.cuda.current_stream().wait_stream(s)
            with torch.cuda.graph(graph):
                step()
            graph.replay()
            torch.cuda.synchronize()
            replay = []
            for _ in range(args.repeats):
                a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                graph.replay()
                e.record()
                e.synchronize()
                replay.append(a.elapsed_time(e))
            del graph
            row = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "model": args.model,
                   "batch": b, "context_tokens": ctx, "eager_ms": round(statistics.median(eager), 4),
                   "graph_ms": round(statistics.median(replay), 4)}
            rows.append(row)
            print(row, flush=True)
    from gpu_cli import write_rows

    write_rows(args.out, rows)
    return 0


@lru_cache(maxsize=None)
def _kernels(profile):
    from sim.profile import load_profile

    return load_profile(profile).cost_model(serving=False)  # read once per profile


def decode_step_ms(profile, batch: int, context_tokens: int) -> float:
    """A profile's decode step (its kernels, no engine terms) of `batch` sequences at `context_tokens` each, ms."""
    cm = _kernels(profile)
    pairs = batch * (context_tokens + 1)  # each sequence attends over its context and itself
    return cm.step_time_s(batch, batch, pairs, pairs, batch) * 1e3


def compare(args) -> int:
    import pandas as pd

    rows = pd.read_csv(args.csv)
    out = []
    for r in rows.itertuples():
        composed_ms = decode_step_ms(args.profile, r.batch, r.context_tokens)
        out.append({"batch": r.batch, "context_tokens": r.context_tokens, "eager_ms": r.eager_ms,
                    "graph_ms": r.graph_ms, "composed_ms": round(composed_ms, 4),
                    "composed_over_graph": round(composed_ms / r.graph_ms, 3)})
    df = pd.DataFrame(out)
    print(f"{rows['device'].iloc[0]} (torch {rows['torch'].iloc[0]}) vs {args.profile} (kernels alone)")
    print(df.to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)
    return 0


def main(argv=None) -> int:
    from gpu_cli import measure_compare_main

    def extra_compare(c):
        c.add_argument("--profile", default="h200-sxm_llama-3.1-8b_tp1_bf16", help="composed profile to compare")

    return measure_compare_main(__doc__, measure, compare, repeats=20, compare_args=extra_compare, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
