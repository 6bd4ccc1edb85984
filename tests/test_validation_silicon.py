"""GPU validation on a few rows of aiconfigurator-core's measured serving runs (silicon_sample.csv).

benchmarks/validate_silicon.py simulates every vLLM row a shipped profile covers; here a small
subset checks that the reader still finds and maps the rows, that the simulation still behaves
like the measurement where it should (TPOT grows with concurrency, the KV cliff), and that the
errors stay within bounds set from the full run (docs/validation_gpu.md) with margin.
"""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_AIC = importlib.util.find_spec("aiconfigurator_core") is not None

pytestmark = pytest.mark.skipif(not HAS_AIC, reason="aiconfigurator-core not installed (pip install 'servesim[aiconfigurator]')")

# Qwen3-32B bf16 on H100, TP8, 1024/1024 at three concurrencies: the measured TPOT rises
# 7.96 -> 10.45 -> 19.28 ms. The full run predicts -24 %, -30 %, -36 % (the profile has no engine
# overhead); TTFT +73 %, +15 %, -45 %.
LADDER = ("qwen3-32b", "bf16", 8, 1024, 1024, (8, 32, 128))
# Qwen3-32B bf16 TP2 4096/128: c64 measured TTFT 1.36 s, c128 19 s (requests wait for KV blocks).
CLIFF = ("qwen3-32b", "bf16", 2, 4096, 128, (64, 128))

# |error| bounds in %. The whole validation's worst |TPOT error| over the 135 rows with a recorded
# concurrency is ~36 % (Qwen3-32B TP8 c128); 50 % leaves room for modelling changes while still
# catching a cost model that is off by half. TTFT in a synchronised closed loop swings from +330 %
# to -80 % across the rows (see the doc); on these rows it is within +-75 %, bound 150 %.
TPOT_BOUND_PCT = 50.0
TTFT_BOUND_PCT = 150.0


@pytest.fixture(scope="module")
def vs():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import validate_silicon

    return validate_silicon


@pytest.fixture(scope="module")
def rows(vs):
    kept, skipped = vs.read_rows()
    return kept, skipped


def pick(rows, model, dtype, tp, isl, osl, concurrencies):
    found = {r.concurrency: r for r in rows if (r.model, r.dtype, r.tp, r.isl, r.osl) == (model, dtype, tp, isl, osl)
             and r.concurrency in concurrencies}
    assert sorted(found) == sorted(concurrencies), f"rows missing from silicon_sample.csv: {model} TP{tp} {isl}/{osl}"
    return [found[c] for c in concurrencies]


def test_reader_finds_rows_and_maps_them_to_shipped_profiles(vs, rows):
    from calibration.profile import load_profile

    kept, skipped = rows
    total = len(pd.read_csv(vs.silicon_csv()))
    assert len(kept) >= 100  # 138 in aiconfigurator-core 0.12.0: Qwen3-32B bf16/fp8, Llama-3.1-70B fp8 on H100
    assert len(kept) + int(skipped["rows"].sum()) == total  # every row is used or counted under a reason
    assert {r.gpu for r in kept} == {"h100-sxm"}
    for name in {r.profile for r in kept}:
        prof = load_profile(name)
        assert prof.gpu == "h100-sxm"
    assert all(r.concurrency >= 1 and r.ttft_ms > 0 and r.tpot_ms > 0 for r in kept)
    # Rows no shipped profile covers are skipped with a reason, never mapped to a wrong profile.
    reasons = set(skipped["reason"])
    assert "backend is not vLLM" in reasons and "GPU without a shipped profile" in reasons


def test_predicted_tpot_grows_with_concurrency_like_the_measured(vs, rows):
    ladder = pick(rows[0], *LADDER)
    res = vs.validate(ladder, log=lambda m: None)
    pred, real = res["pred_tpot_ms"].tolist(), res["tpot_ms"].tolist()
    assert all(p > 0 for p in pred)
    assert real == sorted(real) and pred == sorted(pred), (real, pred)
    # The larger batch costs more per step in both, by a comparable factor (measured 2.4x, predicted 2.1x).
    assert 0.5 < (pred[-1] / pred[0]) / (real[-1] / real[0]) < 2.0
    for col, bound in (("tpot_err_pct", TPOT_BOUND_PCT), ("ttft_err_pct", TTFT_BOUND_PCT)):
        errs = res[col].tolist()
        assert all(math.isfinite(e) for e in errs)
        assert max(abs(e) for e in errs) < bound, (col, errs)
    # No engine overhead in the profile: the prediction stays under the measurement on this ladder.
    assert (res["tpot_gap_ms"] > 0).all(), res["tpot_gap_ms"].tolist()


def test_kv_cliff_is_reproduced(vs, rows):
    below, above = pick(rows[0], *CLIFF)
    res = vs.validate([below, above], log=lambda m: None).set_index("concurrency")
    # Measured TTFT jumps 14x when 128 x 4224 tokens no longer fit the KV cache; the simulation
    # must show the same cliff (requests queue for blocks), not a gentle slope.
    assert res.loc[128, "ttft_ms"] > 10 * res.loc[64, "ttft_ms"]
    assert res.loc[128, "kv_bound"] and not res.loc[64, "kv_bound"]
    assert res.loc[128, "pred_ttft_ms"] > 10 * res.loc[64, "pred_ttft_ms"]
    assert abs(res.loc[128, "ttft_err_pct"]) < 50.0  # measured 19.0 s, predicted 14.9 s
