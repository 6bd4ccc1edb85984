"""The data-quality screen of the engine fit (calibration/engine_rows.DATA_EXCLUSIONS): it selects exactly
the named (model, GPU, engine) rows, the fit's selection and its cross-validation apply and report it, the
validation shows the rows apart with the reason, and the cross-validation scores the other models' folds
pooled (the figure docs/llama8b_h200.md's rule compares)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibration import engine_cv, engine_rows
from calibration.silicon import Row

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _row(i, model="llama-3.1-8b", gpu="h200-sxm", conc=4, version="0.12.0") -> Row:
    return Row(id=f"r{i}", model=model, gpu=gpu, dtype="fp8", tp=1, isl=1000, osl=100, concurrency=conc,
               concurrency_recorded=True, ttft_ms=60.0, tpot_ms=8.0, backend_version=version)


MIXED = [_row(0), _row(1, conc=8), _row(2, gpu="h100-sxm"), _row(3, model="qwen3-32b"),
         _row(4, model="minimax-m2.5", version="0.18.0"), _row(5, model="llama-3.1-70b")]


def test_the_named_exclusion_is_the_llama8b_h200_vllm_rows_with_the_diagnosis_as_reason():
    why = engine_rows.DATA_EXCLUSIONS[("llama-3.1-8b", "h200-sxm", "vllm")]
    assert "docs/llama8b_h200.md" in why and "prefix-cache" in why
    assert engine_rows.data_exclusion(_row(0)) == why
    assert engine_rows.data_exclusion(_row(2, gpu="h100-sxm")) is None  # the same model elsewhere is not named


def test_the_screen_selects_exactly_those_rows_when_on_and_none_when_off():
    keep, out = engine_rows.data_screen(MIXED, on=True)
    assert [r.id for r, _ in out] == ["r0", "r1"] and [r.id for r in keep] == ["r2", "r3", "r4", "r5"]
    assert all("docs/llama8b_h200.md" in why for _, why in out)
    keep, out = engine_rows.data_screen(MIXED, on=False)
    assert out == [] and keep == MIXED


def test_the_fit_and_the_cross_validation_apply_the_screen_and_report_it(monkeypatch):
    on, _ = engine_rows.select_training(MIXED, per_setup=4, exclude_data=True)
    off, _ = engine_rows.select_training(MIXED, per_setup=4, exclude_data=False)
    assert {r.id for r in off} == {"r0", "r1", "r2", "r3", "r4"}  # training models only (r5 held out)
    assert {r.id for r in on} == {"r2", "r3", "r4"}
    monkeypatch.setattr(engine_cv, "read_rows", lambda: (MIXED, pd.DataFrame()))
    rows, _ = engine_cv.training_rows(4, True)
    assert [r.id for r in rows] == [r.id for r in on]
    lines = engine_cv.data_left_out(True)
    assert len(lines) == 2 and all(_row(0).setup.split(" c")[0] in ln and "prefix-cache" in ln for ln in lines)
    assert engine_cv.data_left_out(False) == []
    # The default follows the switch the rule set.
    assert engine_cv.data_left_out() == (lines if engine_rows.EXCLUDE_DATA else [])


def test_on_the_measured_rows_the_screen_takes_the_21_vllm_rows_of_llama8b_on_h200():
    from calibration.silicon import read_rows

    train, _ = engine_rows.split(read_rows()[0])
    keep, out = engine_rows.data_screen(train, on=True)
    assert len(out) == 21 and {(r.model, r.gpu, r.backend_version) for r, _ in out} == {
        ("llama-3.1-8b", "h200-sxm", "0.12.0")}
    assert not any((r.model, r.gpu) == ("llama-3.1-8b", "h200-sxm") for r in keep)
    assert len(keep) + len(out) == len(train)


def test_the_validation_shows_the_screened_training_rows_apart_with_the_reason():
    from silicon_data_quality import section, with_data_screen
    from silicon_report import errors

    recs = [{**r.__dict__, "setup": r.setup, "split": "held-out" if r.model == "llama-3.1-70b" else "train",
             "pred_ttft_ms": 66.0, "pred_tpot_ms": 16.0, "ttft_err_pct": 10.0, "tpot_err_pct": 100.0,
             "tpot_gap_ms": -8.0} for r in MIXED]
    res = with_data_screen(pd.DataFrame(recs), on=True)
    assert (res["data_excluded"] != "").tolist() == [True, True, False, False, False, False]
    text = "\n".join(section(res, errors, on=True))
    assert "**on**" in text and "2 rows" in text and "prefix-cache hits" in text
    assert text.count("| llama-3.1-8b / h200-sxm / vllm |") == 2
    assert _row(0).setup in text and _row(3, model="qwen3-32b").setup not in text
    off = with_data_screen(pd.DataFrame(recs), on=False)
    assert (off["data_excluded"] == "").all()
    assert "the screen is off" in "\n".join(section(off, errors, on=False))


def test_pooled_without_scores_the_other_models_folds_only():
    from test_engine_cv import MODELS, _basis

    B = _basis(factor={("m-a", "h100-sxm"): 1.6})
    st = engine_cv.STRUCTURES[0]
    rec = engine_cv.cross_validate(B, [st], MODELS)[0]
    errs = []
    for model, fit_idx, test_idx in engine_cv.folds(B.rows, MODELS):
        if model != "m-a":
            ptp, _ = engine_cv.predict(B, test_idx, engine_cv.fit_structure(B, fit_idx, st))
            errs.append(100 * (ptp / B.tpot[test_idx] - 1))
    want = float(np.median(np.abs(np.concatenate(errs))))
    got = rec["pooled_without"]["m-a"]
    assert got["rows"] == sum(len(e) for e in errs) and got["tpot_mdape"] == pytest.approx(want)
    assert got["rows"] == rec["rows"] - rec["folds"]["m-a"]["rows"]


def _cv(tpot, ttft, chosen="x"):
    rec = {"structure": chosen, "pooled_without": {"llama-3.1-8b": {"tpot_mdape": tpot, "ttft_mdape": ttft}}}
    other = {"structure": "y", "pooled_without": {"llama-3.1-8b": {"tpot_mdape": 0.0, "ttft_mdape": 0.0}}}
    return {"chosen": chosen, "table": [other, rec]}


def test_the_rule_reads_the_chosen_structure_on_the_other_models_rows():
    from llama8b_cv_compare import decide

    assert decide(_cv(10.0, 20.0), _cv(9.4, 30.0))[0] == "B"  # TPOT lower by more than 0.5
    assert decide(_cv(10.0, 20.0), _cv(9.6, 19.0))[0] == "B"  # within 0.5, TTFT lower
    assert decide(_cv(10.0, 20.0), _cv(9.6, 21.0))[0] == "A"  # within 0.5, TTFT not lower
    assert decide(_cv(10.0, 20.0), _cv(10.4, 19.0))[0] == "B"  # within 0.5 either way
    assert decide(_cv(10.0, 20.0), _cv(10.6, 1.0))[0] == "A"  # TPOT higher by more than 0.5
    # The unchosen structure's (better) figure is never read.
    assert decide(_cv(10.0, 20.0, chosen="x"), _cv(12.0, 20.0, chosen="x"))[0] == "A"
