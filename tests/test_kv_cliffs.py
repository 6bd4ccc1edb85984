"""The KV-cliff diagnosis: Little's-law in-flight counts, steady-state occupancy, the cause of a cliff
row, and the block-count what-if (calibration/silicon.py, benchmarks/silicon_cliffs.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from calibration.silicon import in_decode, steady_occupancy
from sim.metrics import latency_table
from sim.simulation import run

from conftest import make_scenario

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from silicon_cliffs import cliff_cause  # noqa: E402

HAS_AIC = importlib.util.find_spec("aiconfigurator_core") is not None
CONC, ISL, OSL = 16, 400, 200


def closed_loop(num_kv_blocks: int | None = None):
    serving = {"num_kv_blocks": num_kv_blocks} if num_kv_blocks else {}
    sc = make_scenario({"workload": {"arrival": {"kind": "closed_loop", "concurrency": CONC, "think_time_s": 0.0},
                                     "num_requests": 12 * CONC,
                                     "prompt_tokens": {"kind": "constant", "value": ISL},
                                     "output_tokens": {"kind": "constant", "value": OSL}},
                        "serving": serving, "sim": {"record_timeseries": True}})
    res = run(sc)
    lat = latency_table(res.requests)
    steady = lat[lat["request_id"] >= CONC]
    n = in_decode(CONC, OSL, 1e3 * steady["ttft_s"].mean(), 1e3 * steady["tpot_s"].mean())
    return n, steady_occupancy(res, CONC), res


def test_littles_law_counts_the_running_batch_of_a_simulated_closed_loop():
    # Room for every client: all 16 run, none waits, and Little's law on TTFT/TPOT gives the same count.
    n, occ, _ = closed_loop()
    assert occ["pred_waiting_mean"] < 0.5
    assert occ["pred_running_mean"] == pytest.approx(CONC, rel=0.1)
    assert n == pytest.approx(occ["pred_running_mean"], rel=0.1)
    # 256 blocks (the least one max_model_len sequence needs) hold at most 10 of these sequences (25
    # blocks of prompt, 38 at the end): the rest wait before their first token, and the count from
    # TTFT/TPOT drops with the running batch.
    n, occ, res = closed_loop(num_kv_blocks=256)
    assert res.memory.num_kv_blocks == 256
    most = 256 // -(-ISL // 16)
    assert occ["pred_running_mean"] <= most
    assert occ["pred_waiting_mean"] > CONC - most - 1
    assert n == pytest.approx(occ["pred_running_mean"], rel=0.25)
    assert n < 0.6 * CONC  # 16 with room for all


def _row(ttft_ms, tpot_ms, pred_ttft_ms, pred_tpot_ms, kv_bound, concurrency=64, osl=1024, kv_dtype="bf16"):
    return SimpleNamespace(ttft_ms=ttft_ms, tpot_ms=tpot_ms, pred_ttft_ms=pred_ttft_ms, pred_tpot_ms=pred_tpot_ms,
                           kv_bound=kv_bound, concurrency=concurrency, osl=osl, kv_dtype=kv_dtype)


def test_cliff_cause_reads_the_in_flight_counts():
    # Off the cliff: no cause.
    assert cliff_cause(_row(300, 20, 280, 21, kv_bound=False)) is None
    # The measurement held ~100 of 512 (TTFT ~4x the decode time) while the prediction ran all 512.
    why = cliff_cause(_row(4.12 * 1023 * 5.0, 5.0, 200, 80, kv_bound=False, concurrency=512))
    assert why.startswith("in-flight limit") and "100 of 512" in why
    # Predicted KV-bound with 20 of 64 decoding, measured 47: vLLM held more; bf16 'auto' -> fp8 hint.
    meas = _row(40_000, 107, 163_000, 71, kv_bound=True)
    assert cliff_cause(meas).startswith("KV capacity below vLLM's") and "fp8" in cliff_cause(meas)
    assert "fp8 KV cache" not in cliff_cause(_row(40_000, 107, 163_000, 71, kv_bound=True, kv_dtype="fp8"))
    # The same occupancy on both sides, both queueing: the cliff in both.
    assert cliff_cause(_row(6_500, 52, 14_800, 54, kv_bound=True, concurrency=32)).startswith("KV cliff in both")
    # Long outputs keep both counts near the concurrency; then the TTFT decides: predicted wait far longer.
    long = _row(474, 38, 7_441, 44, kv_bound=True, concurrency=32, osl=8192)
    assert cliff_cause(long).startswith("KV capacity below vLLM's")
    assert cliff_cause(_row(30_000, 42, 3_000, 40, kv_bound=True, osl=8192)).startswith("KV capacity above vLLM's")


@pytest.mark.skipif(not HAS_AIC, reason="aiconfigurator-core not installed")
def test_block_count_what_if_moves_the_simulated_cliff():
    from calibration.silicon import read_rows, simulate_row

    rows, _ = read_rows()
    # Qwen3-32B bf16 TP2 4096/128 c128 on H100: measured 19 s TTFT, requests wait for KV blocks.
    row = next(r for r in rows if (r.gpu, r.model, r.dtype, r.tp, r.isl, r.osl, r.concurrency)
               == ("h100-sxm", "qwen3-32b", "bf16", 2, 4096, 128, 128))
    base = simulate_row(row)
    more = simulate_row(row, num_kv_blocks=2 * base["kv_blocks"])
    assert base["pred_waiting_mean"] > 10 and more["kv_blocks"] == 2 * base["kv_blocks"]
    assert more["pred_ttft_ms"] < base["pred_ttft_ms"] / 5
    assert more["pred_running_mean"] > base["pred_running_mean"]
    # The measured in-flight count of every H100 gpt-oss-120b c512 row (2025-12 campaign) is ~100 at
    # TP2, TP4 and TP8 alike: a limit on requests in flight, not a KV cache (which grows 6x over those TPs).
    c512 = [r for r in rows if r.model == "gpt-oss-120b" and r.gpu == "h100-sxm" and r.concurrency == 512]
    assert {r.tp for r in c512} == {2, 4, 8}
    assert all(90 < in_decode(r.concurrency, r.osl, r.ttft_ms, r.tpot_ms) < 110 for r in c512)
