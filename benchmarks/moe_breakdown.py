"""One decode step of a mixture of experts, op by op, against its shipped profile (issue 10, item 3).

    python benchmarks/moe_breakdown.py --model gpt-oss-120b --system b200_sxm --tp 1 --dtype mxfp4
    python benchmarks/moe_breakdown.py --model qwen3-235b-a22b --system h200_sxm --tp 2 --dtype fp8 --context 2500

For each batch size: the composed step from aiconfigurator-core's op tables (calibration/aic_compose.py:
GEMMs, attention, all-reduces, element-wise ops, LM head and the fused-MoE call, ms per step), the
expected share of experts the batch touches under uniform routing, 1 - (1 - k/E)^B, and the shipped
profile's price of the same step (kernels only, no engine terms). The tables and kernels each op
resolved to are printed first. Reads the tables in place; needs no GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.aic_compose import StepComposer  # noqa: E402
from calibration.aic_tables import LookupLog, load_tables  # noqa: E402
from calibration.aiconfigurator_import import SYSTEMS, checkpoint_kv_dtype, profile_name  # noqa: E402
from calibration.profile import load_profile  # noqa: E402
from sim.catalog import resolve_model  # noqa: E402
from sim.cost_model import expert_fraction  # noqa: E402

BATCHES = (1, 4, 8, 16, 32, 64, 128)


def breakdown(model: str, system: str, tp: int, dtype: str, context: int, moe_parallel: str = "tp") -> list[dict]:
    """One record per batch size: composed ms per op group, their total, the profile's ms, the expert share."""
    spec = resolve_model(model, "--model")
    if not spec.is_moe:
        raise SystemExit(f"--model: {model} is dense; this breakdown is for mixtures of experts")
    kv = checkpoint_kv_dtype(model, dtype)
    composer = StepComposer(load_tables(system), spec, tp=tp, dtype=dtype, kv_dtype=kv, moe_parallel=moe_parallel)
    name = profile_name(system, model, tp, dtype, kv, moe_parallel)
    cost = load_profile(name).cost_model(serving=False)
    print(f"{name}: dense GEMMs {composer.gemm_dtype}, experts {composer.moe_dtype}; kernels {composer.kernels}")
    out = []
    for b in BATCHES:
        log = LookupLog()
        parts = {k[:-2]: 1e3 * v for k, v in composer.step([1] * b, [context] * b, [1] * b, log).items() if v}
        profile_ms = 1e3 * float(cost.decode_step_times_s(np.array([b]), np.array([b * (context + 1)]))[0])
        out.append({"batch": b, **parts, "composed": sum(parts.values()), "profile": profile_ms,
                    "expert_share": float(expert_fraction(b, spec.experts_per_token / spec.num_experts)),
                    "clamped": bool(log.clamped)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--system", required=True, choices=sorted(SYSTEMS))
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--dtype", required=True)
    ap.add_argument("--moe-parallel", choices=("tp", "ep"), default="tp")
    ap.add_argument("--context", type=int, default=1535, help="cached tokens per sequence (default 1535)")
    a = ap.parse_args(argv)
    for r in breakdown(a.model, a.system, a.tp, a.dtype, a.context, a.moe_parallel):
        ops = " ".join(f"{k}={v:.2f}" for k, v in r.items()
                       if k not in ("batch", "composed", "profile", "expert_share", "clamped"))
        print(f"B={r['batch']:4d} composed {r['composed']:6.2f} ms profile {r['profile']:6.2f} ms "
              f"experts touched {100 * r['expert_share']:5.1f} % | {ops}{' (clamped lookup)' if r['clamped'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
