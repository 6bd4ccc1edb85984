"""The TTFT-vs-TP diagnostic's what-if algebra (benchmarks/ttft_tp_tables.py): rows that scale with TP
exactly as a what-if composer says leave no excess after that what-if, and only after it."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from ttft_tp_tables import MAIN, attribution, implied_prefill  # noqa: E402

GPU, DTYPE = "h200-sxm", "fp8"
RATIO0 = 1.2  # measured ms per composed ms at the lowest TP
RL_MS = 33.0  # a per-request constant in every measured TTFT: Δ must cancel it


def step(tp: int, isl: int) -> dict:
    """A made-up composed lone prefill: GEMMs shrink with TP, the all-reduce does not."""
    gemm = 0.1 * isl / tp
    comm = 0.0 if tp == 1 else 0.012 * isl
    quant, elem = 0.003 * isl / tp, 0.006 * isl
    return {"gemm_s": gemm + quant, "quant_s": quant, "gemm_tflops": 1000.0, "attention_s": 0.0, "comm_s": comm,
            "elementwise_s": elem, "lm_head_s": 0.0, "total": gemm + quant + comm + elem,
            "ar_call_ms": 0.5, "nccl_call_ms": 0.4}


def rows(comp: dict, measured_ms, tps) -> pd.DataFrame:
    out = []
    for tp in tps:
        for isl in (1024, 8192):
            out.append({"gpu": GPU, "dtype": DTYPE, "tp": tp, "isl": isl, "concurrency": 4, "terms_version": "0.19.0",
                        "ttft_ms": RL_MS + measured_ms(comp[(GPU, DTYPE, tp, isl)]), "pred_ttft_ms": 0.0,
                        "pred_ttft_steady_ms": 0.0, "lone_prefill_ms": 0.0})
    return pd.DataFrame(out)


@pytest.mark.parametrize("tps", [(1, 8), (2, 8)])  # (2, 8): the what-if moves the baseline too (H100's rows)
def test_rows_scaling_like_the_nccl_priced_composer_leave_no_excess_after_that_what_if(tps):
    comp = {(GPU, DTYPE, tp, isl): step(tp, isl) for tp in tps for isl in (1024, 8192)}
    # The GPU ran every prefill at RATIO0 x the composer with the all-reduce at NCCL's price.
    df = rows(comp, lambda c: RATIO0 * (c["total"] - c["comm_s"] * (1 - c["nccl_call_ms"] / c["ar_call_ms"])), tps)
    _, ratios = implied_prefill(df, comp, MAIN)
    if tps[0] == 1:
        assert ratios[(GPU, DTYPE, 1)] == pytest.approx(RATIO0)
        comm_delta = comp[(GPU, DTYPE, 8, 8192)]["comm_s"] - comp[(GPU, DTYPE, 8, 1024)]["comm_s"]
        assert attribution(df, comp, MAIN)[1][(GPU, DTYPE, 8)]["as composed"] == pytest.approx(0.2 * comm_delta)
    assert ratios[(GPU, DTYPE, 8)] < ratios[(GPU, DTYPE, tps[0])]  # the composer's TP8 over-charges more
    _, attr = attribution(df, comp, MAIN)
    a = attr[(GPU, DTYPE, 8)]
    assert a["as composed"] > 0
    assert a["all-reduce at NCCL's price"] == pytest.approx(0.0, abs=1e-9)
    # The GEMMs already run at the lowest TP's TFLOP/s: that what-if changes nothing.
    assert a["GEMMs at lowest TP's TFLOP/s"] == pytest.approx(a["as composed"])
    # Dropping the quantisation or the element-wise ops moves the excess but does not close it.
    assert a["no fp8 quant"] != pytest.approx(0.0, abs=1e-6)
    assert a["no element-wise ops"] != pytest.approx(0.0, abs=1e-6)
