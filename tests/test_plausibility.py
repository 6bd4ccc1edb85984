"""The physical-plausibility screen (calibration/plausibility.py) on synthetic rows: Little's law, lower
bounds on work, the thresholds, and that the engine fit's row selection leaves screened rows out."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from calibration import plausibility as pl
from calibration.silicon import Row
from sim.catalog import resolve_gpu, resolve_model

ROOT = Path(__file__).resolve().parents[1]


def _row(i=0, model="llama-3.1-8b", gpu="h200-sxm", dtype="fp8", tp=1, isl=1000, osl=100, conc=1,
         ttft_ms=30.0, tpot_ms=5.0, version="0.12.0", kv_dtype="bf16") -> Row:
    return Row(id=f"r{i}", model=model, gpu=gpu, dtype=dtype, tp=tp, isl=isl, osl=osl, concurrency=conc,
               concurrency_recorded=True, ttft_ms=ttft_ms, tpot_ms=tpot_ms, backend_version=version, kv_dtype=kv_dtype)


def test_rate_is_littles_law_and_prefill_work_is_two_flops_per_active_weight():
    r = _row(conc=4, isl=2000, osl=11, ttft_ms=100.0, tpot_ms=10.0)
    load = pl.implied_load(r)
    assert load.rate_rps == pytest.approx(4 / (0.100 + 10 * 0.010))  # 20 req/s
    m = resolve_model("llama-3.1-8b", "m")
    linear = 2.0 * m.active_linear_params * 2000 + 2.0 * m.lm_head_params
    attn = 4.0 * m.num_attention_heads * m.head_dim * m.num_layers * 2000 * 2001 / 2
    assert load.prefill_tflops == pytest.approx(20 * (linear + attn) / 1e12)
    # The share is FLOP/s over the dense peak at the weight dtype (fp8 on H200), attention at bf16.
    g = resolve_gpu("h200-sxm", "g")
    dec_linear = 10 * (2.0 * m.active_linear_params + 2.0 * m.lm_head_params)
    dec_attn = 4.0 * m.num_attention_heads * m.head_dim * m.num_layers * sum(range(2001, 2011))
    want = 20 * ((linear + dec_linear) / (g.fp8_tflops * 1e12) + (attn + dec_attn) / (g.bf16_tflops * 1e12))
    assert load.compute_share == pytest.approx(want)


def test_a_quiet_row_passes_and_a_row_beyond_the_peak_is_screened():
    ok = pl.implied_load(_row())
    assert not ok.implausible and ok.compute_share < 0.05 and ok.share < 1
    # 256 clients each with a 1000-token prompt every 0.84 s: ~300 req/s, ~4 PFLOP/s of prefill on one H200.
    hot = pl.implied_load(_row(conc=256, ttft_ms=50.0, tpot_ms=8.0))
    assert hot.implausible and hot.compute_share > 1.5 and hot.share > 1
    assert pl.REASON in hot.describe() and ok.describe().startswith("plausible")


def test_the_threshold_sits_at_the_stated_share_of_peak():
    # The compute share is proportional to the concurrency (the rate is): put it just either side.
    base = pl.implied_load(_row(conc=1, ttft_ms=40.0, tpot_ms=6.0)).compute_share
    below = int(pl.MAX_COMPUTE_SHARE / base)
    assert not pl.implied_load(_row(conc=below, ttft_ms=40.0, tpot_ms=6.0)).implausible
    assert pl.implied_load(_row(conc=below + 1, ttft_ms=40.0, tpot_ms=6.0)).implausible
    assert 0.5 <= pl.MAX_COMPUTE_SHARE <= 1.0 and 0.5 <= pl.MAX_MEMORY_SHARE <= 1.0


def test_tp_divides_the_work_and_a_faster_gpu_has_more_room():
    one = pl.implied_load(_row(conc=64, ttft_ms=80.0, tpot_ms=9.0))
    four = pl.implied_load(_row(conc=64, ttft_ms=80.0, tpot_ms=9.0, tp=4))
    assert four.compute_share == pytest.approx(one.compute_share / 4)
    b200 = pl.implied_load(_row(conc=64, ttft_ms=80.0, tpot_ms=9.0, gpu="b200-sxm"))
    assert b200.compute_share < one.compute_share / 2  # 4500 vs 1979 dense fp8 TFLOPS


def test_decoding_faster_than_the_weights_stream_is_screened():
    # Llama-3.1-70B bf16 on one H100: 141 GB of weights per step in 5 ms would need 28 TB/s (HBM: 3.35).
    load = pl.implied_load(_row(model="llama-3.1-70b", gpu="h100-sxm", dtype="bf16", conc=1, isl=100, osl=500,
                                ttft_ms=40.0, tpot_ms=5.0))
    assert load.compute_share < pl.MAX_COMPUTE_SHARE and load.memory_share > 5 and load.implausible
    slow = pl.implied_load(_row(model="llama-3.1-70b", gpu="h100-sxm", dtype="bf16", conc=1, isl=100, osl=500,
                                ttft_ms=40.0, tpot_ms=60.0))
    assert not slow.implausible


def test_sliding_window_pairs_match_a_direct_count():
    for first, last, w in ((1, 10, 0), (1, 300, 128), (200, 300, 128), (50, 200, 128), (1, 100, 128)):
        direct = sum(min(p, w) if w else p for p in range(first, last + 1))
        assert pl._causal_pairs(first, last, w) == pytest.approx(direct)
    assert pl._causal_pairs(5, 4) == 0.0


def test_screen_and_summary_per_model_and_gpu():
    rows = [_row(0), _row(1, conc=256, ttft_ms=50.0, tpot_ms=8.0), _row(2, conc=300, ttft_ms=50.0, tpot_ms=8.0),
            _row(3, gpu="h100-sxm")]
    keep, out = pl.screen(rows)
    assert [r.id for r in keep] == ["r0", "r3"] and [r.id for r, _ in out] == ["r1", "r2"]
    (s,) = pl.summary(out, rows)
    assert (s["model"], s["gpu"], s["screened"], s["rows"]) == ("llama-3.1-8b", "h200-sxm", 2, 3)
    assert s["max_compute_share"] == pytest.approx(max(x.compute_share for _, x in out))
    table = pl.summary_markdown(out, rows, split=lambda r: "train")
    assert "| llama-3.1-8b | h200-sxm | fp8 | 2 / 3 | 2 / 0 |" in table[-1]


def test_the_engine_fit_leaves_implausible_training_rows_out_before_thinning(monkeypatch):
    from calibration import engine_cv, engine_fit

    ladder = [_row(i, conc=c, ttft_ms=50.0, tpot_ms=8.0) for i, c in enumerate((1, 2, 4, 8, 16, 256, 300))]
    held = [_row(100, model="llama-3.1-70b", conc=1)]
    fitted, why = engine_fit.select_training(ladder + held, per_setup=4)
    ids = {r.id for r in fitted}
    assert not ids & {"r5", "r6"} and len(fitted) == 4  # four plausible rows kept, spread over concurrency
    assert {"r0", "r4"} <= ids and "r100" not in ids  # the ends of what is left; held-out models never
    assert len(why) == 2 and all(pl.REASON in w for w in why)
    # The cross-validation starts from the same selection.
    monkeypatch.setattr(engine_cv, "read_rows", lambda: (ladder + held, pd.DataFrame()))
    rows, why_cv = engine_cv.training_rows(4)
    assert [r.id for r in rows] == [r.id for r in fitted] and why_cv == why


def test_the_validation_report_keeps_implausible_rows_out_of_the_headline():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from silicon_plausibility import section, with_screen
    from silicon_report import errors, headline

    rows = [_row(0, model="llama-3.1-70b", conc=1, ttft_ms=300.0, tpot_ms=30.0),
            _row(1, model="llama-3.1-70b", conc=2, ttft_ms=300.0, tpot_ms=30.0),
            _row(2, model="llama-3.1-70b", conc=1, ttft_ms=40.0, tpot_ms=2.0)]  # 70 GB per step in 2 ms
    res = pd.DataFrame([{**r.__dict__, "setup": r.setup, "split": "held-out", "pred_ttft_ms": r.ttft_ms * 1.1,
                         "pred_tpot_ms": r.tpot_ms * (1.1 if r.id != "r2" else 3.0)} for r in rows])
    res = res.assign(ttft_err_pct=10.0, tpot_err_pct=[10.0, 10.0, 200.0], tpot_gap_ms=0.0)
    res = with_screen(res)
    assert res["implausible"].tolist() == [False, False, True]
    line = headline(res)
    assert line.startswith("held-out (2 rows)") and "TPOT median |err| 10.0 %" in line
    assert "1 implausible held-out rows apart" in line and "TPOT 200.0 %" in line
    text = "\n".join(section(res, errors))
    assert rows[2].setup in text and "| 1 / 3 | 0 / 1 |" in text
