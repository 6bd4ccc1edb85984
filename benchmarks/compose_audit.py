"""Audit of the composed GPU steps (calibration/aic_compose.py) against aiconfigurator-core's own estimator.

aiconfigurator-core builds each model's op list from its Hugging Face config (sdk/models: llama.py for
Llama and Qwen3, moe.py for gpt-oss, Qwen3-MoE and MiniMax-M2) and prices it from the same per-operator
vLLM tables in its compiled engine. This script prices the same steps both ways, per op group, at one
representative setup per model (a GPU / TP / dtype that silicon_sample.csv has vLLM rows for):
decodes of 1, 16 and 64 sequences with 2000 cached tokens each, and one 1000-token prompt.

The reference is run with OUR kernel choices (dense GEMM dtype, MoE dtype, KV dtype; see
aic_compose.CHECKPOINT_FORMATS), so a difference is one of composition, not of kernel choice. Groups:
gemm (QKV, O, MLP, router; ours with fp8 activation quantisation), attn (ours: the attention kernel plus
RoPE, KV-cache write and q/k norm, which the reference folds into context attention only), moe, comm
(per-layer all-reduces, ours with the q/k-norm all-reduce; the reference's MoE pre/post dispatch),
elem (residual-add+RMSNorm, SiLU-and-mul, embedding and its all-reduce), lm_head. `aux` is the part of
our attn cell that the ops around attention take; `before` is our total without them.

    python benchmarks/compose_audit.py              # markdown table on stdout
    python benchmarks/compose_audit.py --models qwen3-32b,minimax-m2.5
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.aic_compose import StepComposer  # noqa: E402
from calibration.aic_tables import LookupLog, load_tables  # noqa: E402
from sim.catalog import resolve_model  # noqa: E402

GROUPS = ("gemm", "attn", "moe", "comm", "elem", "lm_head")
DECODE_BATCHES = (1, 16, 64)
DECODE_CONTEXT_TOKENS = 2000
PREFILL_TOKENS = 1000


@dataclass(frozen=True)
class Setup:
    model: str  # servesim catalog name
    hf_path: str  # aiconfigurator-core model_configs name
    system: str
    tp: int
    dtype: str
    kv_dtype: str
    ref_gemm: str  # aiconfigurator GEMMQuantMode / MoEQuantMode / KVCacheQuantMode names matching our kernels
    ref_moe: str | None
    ref_kv: str


# One representative setup per model: the GPU/TP/dtype with measured rows (training: the first three).
SETUPS = (
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "h200_sxm", 1, "fp8", "fp8", "fp8", None, "fp8"),
    Setup("qwen3-32b", "Qwen/Qwen3-32B", "h100_sxm", 2, "bf16", "bf16", "bfloat16", None, "bfloat16"),
    Setup("minimax-m2.5", "MiniMaxAI/MiniMax-M2.5", "h200_sxm", 4, "fp8", "bf16", "fp8", "fp8_block", "bfloat16"),
    Setup("gpt-oss-120b", "openai/gpt-oss-120b", "h200_sxm", 2, "mxfp4", "bf16", "bfloat16", "w4a16_mxfp4",
          "bfloat16"),
    Setup("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "h200_sxm", 2, "fp8", "bf16", "fp8", None, "bfloat16"),
    Setup("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B-FP8", "h200_sxm", 4, "fp8", "bf16", "fp8", "fp8_block",
          "bfloat16"),
)


def ref_group(op: str) -> str:
    """The group of one of aiconfigurator's op names (context_* / generation_*)."""
    name = op.split("_", 1)[1]
    if name in ("logits_gemm",):
        return "lm_head"
    if name.endswith("_gemm"):
        return "gemm"
    if name == "attention":
        return "attn"
    if name == "moe":
        return "moe"
    if name in ("ar_1", "ar_2", "moe_pre_dispatch", "moe_post_dispatch", "p2p"):
        return "comm"
    if name.startswith(("add_norm", "act_", "embedding")):
        return "elem"
    raise ValueError(f"unmapped aiconfigurator op {op!r}")


class Reference:
    """aiconfigurator-core's model and compiled estimator for one setup."""

    def __init__(self, s: Setup, version: str):
        from aiconfigurator_core.sdk import common, config
        from aiconfigurator_core.sdk.models import get_model
        from aiconfigurator_core.sdk.perf_database import get_database
        kw = {}
        if s.ref_moe:
            kw = {"moe_tp_size": s.tp, "moe_ep_size": 1, "moe_quant_mode": common.MoEQuantMode[s.ref_moe]}
        cfg = config.ModelConfig(tp_size=s.tp, gemm_quant_mode=common.GEMMQuantMode[s.ref_gemm],
                                 kvcache_quant_mode=common.KVCacheQuantMode[s.ref_kv],
                                 fmha_quant_mode=common.FMHAQuantMode.bfloat16, **kw)
        self.model = get_model(s.hf_path, cfg, "vllm")
        self.db = get_database(s.system, "vllm", version)

    def groups(self, phase: str, batch: int, s: int) -> dict[str, float]:
        """Seconds per group; `s` is the sequence length the step reaches (context + the new token)."""
        from aiconfigurator_core.sdk.rust_engine_step import (evaluate_context_ops_with_rust,
                                                              evaluate_generation_ops_with_rust)
        ops = self.model.context_ops if phase == "prefill" else self.model.generation_ops
        run = evaluate_context_ops_with_rust if phase == "prefill" else evaluate_generation_ops_with_rust
        out = dict.fromkeys(GROUPS, 0.0)
        for name, latency_ms, *_ in run(self.model, self.db, indices=range(len(ops)), batch_size=batch, s=s):
            out[ref_group(name)] += latency_ms * 1e-3
        return out


def ours(c: StepComposer, chunk: list[int], context: list[int]) -> tuple[dict[str, float], float]:
    """Seconds per group of our composed step, and the part of it the ops around attention take."""
    log = LookupLog()
    p = c.step(chunk, context, [1] * len(chunk), log)
    aux = c.attention_aux_s(sum(chunk), log)
    layers = c.model.num_layers
    around = layers * sum(v for k, v in aux.items() if k != "qk_norm_allreduce")
    g = {"gemm": p["gemm_s"], "attn": p["attention_s"] + around, "moe": p.get("moe_s", 0.0), "comm": p["comm_s"],
         "elem": p["elementwise_s"] - around, "lm_head": p["lm_head_s"]}
    return g, layers * sum(aux.values())


def audit(setups) -> list[str]:
    lines = ["| model (setup) | step | " + " | ".join(f"{g} ours / ref" for g in GROUPS)
             + " | total ours / ref (ms) | ours vs ref | aux | before vs ref |",
             "|---|---|" + "---|" * (len(GROUPS) + 4)]
    for s in setups:
        tables = load_tables(s.system)
        spec = resolve_model(s.model, "--models")
        c = StepComposer(tables, spec, tp=s.tp, dtype=s.dtype, kv_dtype=s.kv_dtype)
        ref = Reference(s, tables.version)
        steps = [(f"decode {b}x{DECODE_CONTEXT_TOKENS}", "decode", [1] * b, [DECODE_CONTEXT_TOKENS] * b, b,
                  DECODE_CONTEXT_TOKENS + 1) for b in DECODE_BATCHES]
        steps.append((f"prefill 1x{PREFILL_TOKENS}", "prefill", [PREFILL_TOKENS], [0], 1, PREFILL_TOKENS))
        for label, phase, chunk, context, batch, seq in steps:
            o, aux = ours(c, chunk, context)
            r = ref.groups(phase, batch, seq)
            to, tr = sum(o.values()), sum(r.values())
            cells = " | ".join(f"{o[g] * 1e3:.2f} / {r[g] * 1e3:.2f}" for g in GROUPS)
            lines.append(f"| {s.model} ({s.system} TP{s.tp} {s.dtype}, KV {s.kv_dtype}) | {label} | {cells} | "
                         f"{to * 1e3:.2f} / {tr * 1e3:.2f} | {100 * (to / tr - 1):+.1f} % | {aux * 1e3:.2f} | "
                         f"{100 * ((to - aux) / tr - 1):+.1f} % |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="", help="comma-separated catalog models (default: all six)")
    a = p.parse_args(argv)
    known = {s.model: s for s in SETUPS}
    names = [m for m in a.models.split(",") if m] or list(known)
    bad = [m for m in names if m not in known]
    if bad:
        print(f"error: --models: unknown {bad}; allowed {sorted(known)}", file=sys.stderr)
        return 2
    try:
        import aiconfigurator_core  # noqa: F401  (a clear error before any work)
    except ImportError:
        print("error: the reference needs aiconfigurator-core: pip install 'aiconfigurator-core>=0.12'",
              file=sys.stderr)
        return 2
    logging.disable(logging.WARNING)  # the package logs every fallback table it loads
    print("\n".join(audit([known[m] for m in names])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
