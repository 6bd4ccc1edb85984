"""A physical-plausibility screen for measured serving rows: work a GPU cannot have done.

    python -m calibration.plausibility            # every usable silicon_sample.csv row: the screened ones

A closed loop of `concurrency` clients with no think time completes, by Little's law,

    rate = concurrency / (TTFT + (OSL - 1) x TPOT)   requests/s

and every request costs a known minimum of work: its ISL prompt tokens and OSL - 1 decoded tokens
each pass through the model's active weights (2 FLOPs per weight), causal attention over its
context, one LM-head row per sampled token; every decode step reads the active weights, and every
decoded token its context's KV cache. Per GPU (divided by TP) that is a share of the GPU's dense
tensor-core peak (sim/catalog/gpus.yaml, at the row's weight dtype) and of its HBM bandwidth.

Every term is a LOWER bound on what the engine did: no norms, activations, rotary, all-reduce,
launch gaps or padding are counted; attention skips the masked half exactly; the KV cache is read
at 1 byte per value whatever its dtype; an MoE reads only one token's experts per step; TP splits
work perfectly. (The one upper bound is the rate: a client's own gap between answer and next request
lowers the true rate; measured here at 0.03-0.6 ms against request times of seconds.) So a row whose
implied work exceeds what the GPU can sustain was not served as the CSV describes it: most likely
the prompts shared a prefix and vLLM's prefix cache (on by default in v1) skipped their prefill.
The CSV does not say what the prompts were. Such rows are 'implausible' and are neither fitted
(calibration/engine_fit.py, engine_cv.py) nor counted in the validation's headline
(benchmarks/validate_silicon.py shows them apart).

The thresholds come from what hardware attains, not from which rows they remove.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from sim.catalog import resolve_gpu, resolve_model
from sim.memory import kv_bytes_per_token
from sim.quantization import matmul_tflops, weight_bytes_per_param

# The most of the DENSE tensor-core peak a serving engine's compute can sustain. The catalog's peak is
# the datasheet's at boost clock; the fastest published Hopper GEMMs reach about 75-80 % of it on
# their best shapes (DeepSeek's DeepGEMM: up to ~1550 TFLOPS FP8 on H800, whose SMs and clocks are the
# H100 SXM's: 78 % of 1979; cuBLAS bf16 GEMMs ~700-750 of 989 TFLOPS; figures recalled, not
# re-verified): under sustained load the clock sits below the boost clock the peak assumes. A whole
# engine step (attention, norms, sampling, all-reduce, launch gaps) cannot run at a higher share than
# its best GEMM does alone. 1.0 would be the bare datasheet limit; the CLI prints the counts at other
# shares (SENSITIVITY_SHARES) for the record. Chosen before the rows were screened, and kept.
MAX_COMPUTE_SHARE = 0.8
# The most of the datasheet HBM bandwidth a kernel streams: 80-90 % is what is achieved
# (sim/catalog/gpus.yaml's own note); the top of that range, so only rows beyond it are screened.
MAX_MEMORY_SHARE = 0.9
KV_MIN_BYTES = "fp8"  # the KV cache read at 1 byte per value: the least any row's cache can be
SENSITIVITY_SHARES = (1.0, 0.8, 0.7, 0.6, 0.5)  # printed by the CLI beside the screen, for the record
REASON = "implausible without prefix-cache hits"


@dataclass(frozen=True)
class Load:
    """The work a measured row implies per GPU, from its TTFT, TPOT and lengths (Little's law)."""

    rate_rps: float  # requests completed per second (the whole replica)
    prefill_tflops: float  # prefill FLOP/s per GPU, 1e12 (linear + causal attention + the first LM-head row)
    decode_tflops: float  # decode FLOP/s per GPU, 1e12
    compute_share: float  # the above as a share of the dense peak (linear at the weight dtype's rate)
    memory_share: float  # weights per decode step + KV reads per token, share of the HBM bandwidth

    @property
    def share(self) -> float:
        """The larger of the two, each against what is attainable (1.0 = at the attainable limit)."""
        return max(self.compute_share / MAX_COMPUTE_SHARE, self.memory_share / MAX_MEMORY_SHARE)

    @property
    def implausible(self) -> bool:
        return self.compute_share > MAX_COMPUTE_SHARE or self.memory_share > MAX_MEMORY_SHARE

    def describe(self) -> str:
        return (f"{REASON}: {self.rate_rps:.1f} req/s implies {self.prefill_tflops + self.decode_tflops:.0f} "
                f"TFLOP/s per GPU ({self.compute_share:.2f} of the dense peak; attainable {MAX_COMPUTE_SHARE}) and "
                f"{self.memory_share:.2f} of HBM bandwidth (attainable {MAX_MEMORY_SHARE})"
                if self.implausible else f"plausible ({self.compute_share:.2f} of peak, {self.memory_share:.2f} of HBM)")


def _causal_pairs(first: int, last: int, window: int = 0) -> float:
    """Query-key pairs of queries at positions first..last (1-based; each sees itself and every earlier
    position, at most `window` of them where window > 0)."""
    if last < first:
        return 0.0
    n = last - first + 1
    full = n * (first + last) / 2.0
    if window <= 0 or last <= window:
        return full
    capped_from = max(first, window)  # positions >= window see exactly `window`
    below = 0.0 if capped_from == first else (capped_from - first) * (first + capped_from - 1) / 2.0
    return below + (last - capped_from + 1) * window


def implied_load(row) -> Load:
    """The work per GPU a row implies. `row`: anything with model, gpu, dtype, kv_dtype, tp, isl, osl,
    concurrency, ttft_ms and tpot_ms (a calibration.silicon.Row, or a validation result record)."""
    m, g = resolve_model(row.model, "model"), resolve_gpu(row.gpu, "gpu")
    tp, isl, osl = int(row.tp), int(row.isl), int(row.osl)
    cycle_s = (row.ttft_ms + (osl - 1) * row.tpot_ms) / 1e3
    rate = row.concurrency / cycle_s
    # Attention FLOPs per query-key pair per layer: Q.K^T and P.V, 2 x heads x head_dim each.
    per_pair = 4.0 * m.num_attention_heads * m.head_dim
    full, sliding, w = m.num_full_attention_layers, m.num_sliding_layers, m.sliding_window_tokens

    def attn(first: int, last: int) -> float:
        return per_pair * (full * _causal_pairs(first, last) + sliding * _causal_pairs(first, last, w))

    head = 2.0 * m.lm_head_params  # per sampled token
    prefill_linear = 2.0 * m.active_linear_params * isl + head
    decode_linear = (osl - 1) * (2.0 * m.active_linear_params + head)
    prefill_attn, decode_attn = attn(1, isl), attn(isl + 1, isl + osl - 1)
    linear_peak = matmul_tflops(g, row.dtype, "dtype") * 1e12
    kv_fp8 = getattr(row, "kv_dtype", "bf16") == "fp8" and g.fp8_tflops is not None
    attn_peak = (g.fp8_tflops if kv_fp8 else g.bf16_tflops) * 1e12  # the faster rate the cache's dtype allows
    compute_share = rate / tp * ((prefill_linear + decode_linear) / linear_peak + (prefill_attn + decode_attn) / attn_peak)
    # Memory: each decode step reads at least one token's active weights (the LM head in 16 bit); the steps
    # run at 1 / TPOT while any request decodes, which is at least in_decode / concurrency of the time.
    step_bytes = (m.active_linear_params * weight_bytes_per_param(row.dtype) + 2.0 * m.lm_head_params) / tp
    dec_s = (osl - 1) * row.tpot_ms / 1e3
    busy = dec_s / cycle_s  # in_decode / concurrency (calibration.silicon.in_decode)
    steps_per_s = busy / (row.tpot_ms / 1e3) if osl > 1 else 0.0
    kv_read = rate * ((osl - 1) * isl + (osl - 1) * osl / 2.0) * kv_bytes_per_token(m, KV_MIN_BYTES, tp)
    memory_share = (step_bytes * steps_per_s + kv_read) / g.hbm_bandwidth_bytes_per_s
    return Load(rate_rps=rate, prefill_tflops=rate * (prefill_linear + prefill_attn) / tp / 1e12,
                decode_tflops=rate * (decode_linear + decode_attn) / tp / 1e12,
                compute_share=compute_share, memory_share=memory_share)


def screen(rows: list) -> tuple[list, list[tuple[object, Load]]]:
    """(plausible rows, [(implausible row, its load)]), order kept."""
    keep, out = [], []
    for r in rows:
        load = implied_load(r)
        (out.append((r, load)) if load.implausible else keep.append(r))
    return keep, out


def summary(screened: list[tuple[object, Load]], total: list) -> list[dict]:
    """Per model, GPU and dtype with a screened row: rows screened of rows, and the largest shares."""
    groups: dict[tuple, list] = {}
    for r, load in screened:
        groups.setdefault((r.model, r.gpu, r.dtype), []).append(load)
    counts: dict[tuple, int] = {}
    for r in total:
        counts[(r.model, r.gpu, r.dtype)] = counts.get((r.model, r.gpu, r.dtype), 0) + 1
    return [{"model": k[0], "gpu": k[1], "dtype": k[2], "screened": len(v), "rows": counts.get(k, len(v)),
             "max_compute_share": max(x.compute_share for x in v), "max_memory_share": max(x.memory_share for x in v)}
            for k, v in sorted(groups.items())]


def summary_markdown(screened: list[tuple[object, Load]], total: list, split=None) -> list[str]:
    """`summary` as a markdown table; `split(row)` adds training / held-out counts."""
    lines = ["| model | GPU | dtype | rows screened / rows | training / held-out | max implied share of dense peak "
             "| max implied share of HBM |", "|---|---|---|---:|---|---:|---:|"]
    for s in summary(screened, total):
        rs = [r for r, _ in screened if (r.model, r.gpu, r.dtype) == (s["model"], s["gpu"], s["dtype"])]
        by = (f"{sum(split(r) == 'train' for r in rs)} / {sum(split(r) == 'held-out' for r in rs)}"
              if split else "-")
        lines.append(f"| {s['model']} | {s['gpu']} | {s['dtype']} | {s['screened']} / {s['rows']} | {by} | "
                     f"{s['max_compute_share']:.2f} | {s['max_memory_share']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from .engine_fit import TRAIN_MODELS
    from .silicon import read_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="list every row with its implied shares, not only the screened")
    args = ap.parse_args(argv)
    rows, _ = read_rows()
    keep, out = screen(rows)
    split = lambda r: "train" if r.model in TRAIN_MODELS else "held-out"  # noqa: E731
    loads = [implied_load(r) for r in rows]
    print(f"{len(out)} of {len(rows)} rows implausible without prefix-cache hits (compute > {MAX_COMPUTE_SHARE} of "
          f"dense peak or memory > {MAX_MEMORY_SHARE} of HBM)")
    # Disclosure, not a choice: how many rows other compute thresholds would screen (memory kept at its own).
    print("rows over other shares of the dense peak: " + ", ".join(
        f"{t:g}: {sum(x.compute_share > t for x in loads)}" for t in SENSITIVITY_SHARES) + "\n")
    print("\n".join(summary_markdown(out, rows, split)))
    listed = list(zip(rows, loads)) if args.all else out
    print("\n| split | setup | GPU | vLLM | TTFT ms | TPOT ms | req/s | prefill TFLOP/s/GPU | decode TFLOP/s/GPU | "
          "share of dense peak | share of HBM | screened |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r, x in sorted(listed, key=lambda p: -p[1].share):
        print(f"| {split(r)} | {r.setup} | {r.gpu} | {r.backend_version} | {r.ttft_ms:.0f} | {r.tpot_ms:.2f} | "
              f"{x.rate_rps:.1f} | {x.prefill_tflops:.0f} | {x.decode_tflops:.0f} | {x.compute_share:.2f} | "
              f"{x.memory_share:.2f} | {'yes' if x.implausible else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
