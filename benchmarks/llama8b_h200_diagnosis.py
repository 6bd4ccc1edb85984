"""Why the composed llama-3.1-8b fp8 profile on H200 is ~2x slower than its measured vLLM rows (issue 10).

Diagnosis only: nothing here changes a profile or a fit. Four tables (markdown on stdout), written up in
docs/llama8b_h200.md:

1. Each measured row (aiconfigurator-core's silicon_sample.csv, vLLM 0.12.0, nvidia/Llama-3.1-8B-Instruct-FP8)
   turned into the mean engine step it implies (closed loop, Little's law): rate X = C / (TTFT + (OSL-1) TPOT),
   D = X (OSL-1) TPOT sequences decoding, r = X TPOT prompts entering per step, a step lasting ~TPOT.
   The same mean step composed from the op tables (calibration/aic_compose.StepComposer, the kernels the
   shipped profile was built from), per op group: decode(D) + r x (decode(D) + one ISL prompt - decode(D)).
   "fitted" is the shipped profile's own formula (kernels only, no engine terms) on that step.
   "hit" is the share of each prompt that would have to be served from the prefix cache for the composed
   step to match the measured one (kernels only, so a lower bound; the prompt is shortened from position 0).
2. The GEMM tables at the model's shapes: fp8 (per-tensor, the profile's) vs bf16 on H200 and fp8 on H100.
3. The attention tables: fp8 vs bf16 KV cache, decode and prompt kernels.
4. One decode at batch 1 per op group vs the HBM floor (weights / bandwidth).

    python benchmarks/llama8b_h200_diagnosis.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.aic_compose import StepComposer  # noqa: E402
from calibration.aic_tables import MS, LookupLog, load_tables  # noqa: E402
from calibration.silicon import read_rows  # noqa: E402
from sim.catalog import resolve_gpu, resolve_model  # noqa: E402
from sim.cost_model import ProfileCostModel  # noqa: E402
from sim.step_features import step_features  # noqa: E402
from sim.profile import shipped_profiles_dir  # noqa: E402

MODEL = "llama-3.1-8b"
GROUPS = ("gemm_s", "attention_s", "elementwise_s", "comm_s", "lm_head_s")
M_VALUES = (1, 16, 64, 128, 512, 1024, 2048, 8192)


def composer(system: str, tp: int = 1, dtype: str = "fp8", kv: str = "fp8") -> StepComposer:
    return StepComposer(load_tables(system), resolve_model(MODEL, "model"), tp=tp, dtype=dtype, kv_dtype=kv)


def groups(c: StepComposer, chunk: list[int], context: list[int]) -> dict[str, float]:
    p = c.step(chunk, context, [1] * len(chunk), LookupLog())
    return {g: p[g] for g in GROUPS}


def mean_step(c: StepComposer, d: int, ctx: int, r: float, prompt: int) -> dict[str, float]:
    """decode(d) + r x (the same step with one `prompt`-token prompt added - decode(d)), per group."""
    dec = groups(c, [1] * d, [ctx] * d)
    mix = groups(c, [prompt] + [1] * d, [0] + [ctx] * d)
    return {g: dec[g] + r * (mix[g] - dec[g]) for g in GROUPS}


def fitted_step_s(coef: dict, d: int, ctx: int, r: float, prompt: int) -> float:
    m = ProfileCostModel(coef)
    def t(chunk, context):
        f = step_features(chunk, context, [1] * len(chunk))
        return m.step_time_s(f.new_tokens, f.sampled, f.attn_pairs, f.kv_read_tokens, f.num_seqs)
    dec = t([1] * d, [ctx] * d)
    return dec + r * (t([prompt] + [1] * d, [0] + [ctx] * d) - dec)


def hit_share(c: StepComposer, d: int, ctx: int, r: float, isl: int, target_s: float) -> str:
    """Share of each prompt that must come from the prefix cache for the composed step to last target_s."""
    if sum(mean_step(c, d, ctx, r, 16).values()) > target_s:
        return "> 0.98"
    lo, hi = 16, isl
    if sum(mean_step(c, d, ctx, r, hi).values()) <= target_s:
        return "0"
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sum(mean_step(c, d, ctx, r, int(mid)).values()) <= target_s else (lo, mid)
    return f"{1 - lo / isl:.2f}"


def row_table() -> list[str]:
    rows = [r for r in read_rows()[0] if r.model == MODEL and r.gpu == "h200-sxm"]
    out = ["| row | X req/s | D decoding | r prompts/step | measured step (TPOT) ms | composed ms | fitted ms | "
           "composed/measured | gemm | attn | elem | comm | lm_head | prefill share of composed | hit needed |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    comps = {}
    for row in rows:
        c = comps.setdefault(row.tp, composer("h200_sxm", row.tp))
        coef = json.loads((shipped_profiles_dir() / row.profile / "profile.json").read_text())["coefficients"]
        cycle_ms = row.ttft_ms + (row.osl - 1) * row.tpot_ms
        x = row.concurrency / cycle_ms * 1e3
        d = max(1, round(x * (row.osl - 1) * row.tpot_ms * 1e-3))
        r = x * row.tpot_ms * 1e-3
        ctx = row.isl + row.osl // 2
        g = mean_step(c, d, ctx, r, row.isl)
        dec = sum(groups(c, [1] * d, [ctx] * d).values())
        tot = sum(g.values())
        fit = fitted_step_s(coef, d, ctx, r, row.isl)
        cells = " | ".join(f"{g[k] / MS:.2f}" for k in GROUPS)
        out.append(f"| TP{row.tp} {row.isl}/{row.osl} c{row.concurrency} | {x:.1f} | {d} | {r:.2f} | {row.tpot_ms:.2f} | "
                   f"{tot / MS:.2f} | {fit / MS:.2f} | {tot / MS / row.tpot_ms:.2f} | {cells} | {1 - dec / tot:.2f} | "
                   f"{hit_share(c, d, ctx, r, row.isl, row.tpot_ms * MS)} |")
    return out


def other_engines_table() -> list[str]:
    """The same model measured under SGLang (H200, fp8 block scales) and TensorRT-LLM (H100, bf16): their rows
    against the same composed mean step (per-tensor fp8 on H200 for SGLang, a lower bound; bf16 on H100)."""
    import pandas as pd
    from calibration.silicon import silicon_csv
    df = pd.read_csv(silicon_csv())
    df = df[df["model_path"].str.contains("Llama-3.1-8B") & (df["backend"] != "vllm") & (df["tp_size"] == 1)]
    out = ["| engine, GPU, weights | ISL/OSL c | measured step (TPOT) ms | composed ms | composed/measured | "
           "prefill share |", "|---|---|---:|---:|---:|---:|"]
    comps = {"sglang": composer("h200_sxm", 1, "fp8", "bf16"), "trtllm": composer("h100_sxm", 1, "bf16", "bf16")}
    for _, r in df.sort_values(["backend", "isl", "osl", "batch_size"]).iterrows():
        c, isl, osl, conc = comps[r["backend"]], int(r["isl"]), int(r["osl"]), int(r["batch_size"])
        if r["backend"] == "trtllm" and (osl != 128 or conc not in (8, 32, 128)):
            continue
        ttft, tpot = float(r["silicon_ttft_ms"]), float(r["silicon_tpot_ms"])
        x = conc / (ttft + (osl - 1) * tpot) * 1e3
        d, rate = max(1, round(x * (osl - 1) * tpot * 1e-3)), x * tpot * 1e-3
        g = mean_step(c, min(d, 512), isl + osl // 2, rate, isl)
        dec = sum(groups(c, [1] * min(d, 512), [isl + osl // 2] * min(d, 512)).values())
        tot = sum(g.values())
        out.append(f"| {r['backend']} {r['backend_version']}, {r['system']}, {r['gemm_quant_mode'] if pd.notna(r['gemm_quant_mode']) else 'bf16'} "
                   f"| {isl}/{osl} c{conc} | {tpot:.2f} | {tot / MS:.2f} | {tot / MS / tpot:.2f} | {1 - dec / tot:.2f} |")
    return out


def gemm_table() -> list[str]:
    h200, h100 = composer("h200_sxm"), composer("h100_sxm")
    peak = {"fp8": resolve_gpu("h200-sxm", "gpu").fp8_tflops, "bf16": resolve_gpu("h200-sxm", "gpu").bf16_tflops}
    out = ["| GEMM (n x k) | m | H200 fp8 us (TFLOP/s, share of fp8 peak) | + act. quant us | H200 bf16 us (TFLOP/s) | "
           "H100 fp8 us | fp8 / bf16 time |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, (n, k) in h200.shapes.items():
        for m in M_VALUES:
            log = LookupLog()
            f8 = h200.gemm.lookup((m, n, k), log)
            b16 = h200.gemm_bf16.lookup((m, n, k), log)
            f8h100 = h100.gemm.lookup((m, n, k), log)
            q = h200.quant.lookup((m, k), log)
            fl = 2 * m * n * k / 1e9  # GFLOP, so GFLOP / ms = TFLOP/s
            out.append(f"| {name} ({n} x {k}) | {m} | {f8 * 1e3:.1f} ({fl / f8:.0f}, {fl / f8 / peak['fp8']:.2f}) | "
                       f"{q * 1e3:.1f} | {b16 * 1e3:.1f} ({fl / b16:.0f}) | {f8h100 * 1e3:.1f} | {f8 / b16:.2f} |"
                       + (" clamped" if log.clamped else ""))
    return out


def attention_table() -> list[str]:
    f8, b16 = composer("h200_sxm", kv="fp8"), composer("h200_sxm", kv="bf16")
    kv_bytes = {"fp8": 2 * 8 * 128 * 1, "bf16": 2 * 8 * 128 * 2}  # per token per layer
    out = ["| kernel | batch x length | fp8 KV us (GB/s) | bf16 KV us (GB/s) | fp8 / bf16 |", "|---|---|---:|---:|---:|"]
    for b, ctx in ((1, 1024), (1, 4096), (64, 2048), (128, 1024), (128, 4096), (128, 8191)):
        log = LookupLog()
        a = f8.generation_attention[0].lookup((b, ctx), log)
        z = b16.generation_attention[0].lookup((b, ctx), log)
        gb = lambda ms, kv: b * ctx * kv_bytes[kv] / ms / 1e6  # noqa: E731
        out.append(f"| decode | {b} x {ctx} | {a * 1e3:.1f} ({gb(a, 'fp8'):.0f}) | {z * 1e3:.1f} ({gb(z, 'bf16'):.0f}) "
                   f"| {a / z:.2f} |" + (" clamped" if log.clamped else ""))
    for b, isl in ((1, 1024), (1, 2048), (1, 4096), (1, 8192)):
        log = LookupLog()
        a = f8.context_attention[0].lookup((b, isl), log)
        z = b16.context_attention[0].lookup((b, isl), log)
        out.append(f"| prompt | {b} x {isl} | {a * 1e3:.1f} | {z * 1e3:.1f} | {a / z:.2f} |"
                   + (" clamped" if log.clamped else ""))
    return out


def batch1_table() -> list[str]:
    m = resolve_model(MODEL, "model")
    g = resolve_gpu("h200-sxm", "gpu")
    out = ["| setup | decode 1 x 1000 ms | gemm | attn | elem | comm | lm_head | floor ms | composed / floor |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, sysname, tp, dt, kv, bytes_w in (("H200 fp8, KV fp8 (the profile)", "h200_sxm", 1, "fp8", "fp8", 1),
                                                 ("H200 bf16, KV bf16", "h200_sxm", 1, "bf16", "bf16", 2),
                                                 ("H100 fp8, KV fp8", "h100_sxm", 1, "fp8", "fp8", 1),
                                                 ("H200 fp8 TP8, KV fp8", "h200_sxm", 8, "fp8", "fp8", 1)):
        c = composer(sysname, tp, dt, kv)
        p = groups(c, [1], [1000])
        # per GPU: the layers' GEMM weights at the GEMM dtype, the LM head in bf16 (the embedding is gathered)
        weights = m.num_layers * sum(a * b for a, b in c.shapes.values()) * bytes_w + c.lm_head_n * m.hidden_size * 2
        floor = weights / g.hbm_bandwidth_bytes_per_s
        tot = sum(p.values())
        cells = " | ".join(f"{p[k] / MS:.2f}" for k in GROUPS)
        out.append(f"| {label} | {tot / MS:.2f} | {cells} | {floor / MS:.2f} | {tot / floor:.1f} |")
    return out


def main() -> int:
    for title, table in (("Rows: measured vs composed mean step (kernels only)", row_table),
                         ("Other engines, same model (TP1)", other_engines_table),
                         ("GEMM tables at Llama-3.1-8B's TP1 shapes", gemm_table),
                         ("Attention tables (32 heads, 8 KV heads, head_dim 128)", attention_table),
                         ("One decode at batch 1 vs the HBM floor", batch1_table)):
        print(f"\n### {title}\n")
        print("\n".join(table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
