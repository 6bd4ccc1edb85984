"""calibration.fit: known coefficients are recovered from a realistic step grid; noise stays bounded on
held-out steps; bad measurements are refused with a message that names the problem."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibration.fit import FitError, FitResult, fit_profile, format_report
from sim.cost_model import PROFILE_COEFFICIENTS, ProfileCostModel
from sim.step_features import step_features

# Roughly an 8B model on one H100 in bf16 (the roofline's magnitudes), seconds per unit.
TRUE = {"overhead_s": 2.0e-3, "per_seq_s": 2.0e-5, "weights_s": 6.0e-3, "per_token_s": 2.7e-5,
        "per_pair_s": 1.3e-9, "per_kv_token_s": 5.0e-8, "per_sample_s": 2.0e-6}
DOMINANT = ("weights_s", "per_token_s", "per_pair_s", "per_kv_token_s")


def grid(coefficients=TRUE) -> pd.DataFrame:
    """Prefill across lengths and batches, decode across batch x context, mixed chunk + decodes."""
    steps = []
    for b in (1, 2, 4, 8):
        for L in (16, 64, 128, 256, 512, 1024, 2048, 4096, 8192):
            if b * L <= 16384:
                steps.append(("prefill", [L] * b, [0] * b, [1] * b))
    for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for c in (128, 512, 1024, 2048, 4096, 8192):
            if b * c <= 2**20:
                steps.append(("decode", [1] * b, [c] * b, [1] * b))
    for chunk in (64, 256, 512, 1024, 2048):
        for b in (4, 16, 64):
            for c in (256, 2048):
                steps.append(("mixed", [chunk] + [1] * b, [0] + [c] * b, [0] + [1] * b))
    rows = []
    for phase, L, c, s in steps:
        f = step_features(np.array(L), np.array(c), np.array(s))
        rows.append({"phase": phase, **f.__dict__, "batch_size": len(L), "source": "synthetic"})
    df = pd.DataFrame(rows)
    df["step_time_s"] = ProfileCostModel(coefficients).step_times_s(
        df.new_tokens, df.sampled, df.attn_pairs, df.kv_read_tokens, df.num_seqs)
    return df


def test_recovers_known_coefficients_exactly():
    result = fit_profile(grid())
    assert isinstance(result, FitResult)
    assert set(result.coefficients) == set(PROFILE_COEFFICIENTS)
    assert all(v >= 0 for v in result.coefficients.values())
    for name in DOMINANT:
        assert result.coefficients[name] == pytest.approx(TRUE[name], rel=0.05), name
    assert result.report["overall"]["max_abs_pct_error"] < 1.0


def test_three_percent_noise_keeps_held_out_error_small():
    df = grid()
    df["step_time_s"] *= np.exp(np.random.default_rng(1).normal(0.0, 0.03, len(df)))
    result = fit_profile(df)
    assert result.report["overall"]["mape_pct"] < 5.0
    for phase in ("prefill", "decode", "mixed"):
        assert result.report["phases"][phase]["mape_pct"] < 5.0
    # The coefficients that carry most of the time are still close.
    for name in ("weights_s", "per_token_s", "per_kv_token_s"):
        assert result.coefficients[name] == pytest.approx(TRUE[name], rel=0.10), name


def test_report_counts_and_split_are_stratified_and_deterministic():
    df = grid()
    a, b = fit_profile(df, seed=3), fit_profile(df, seed=3)
    assert a.coefficients == b.coefficients
    assert a.predictions.equals(b.predictions)
    assert a.report["n_train"] + a.report["n_test"] == len(df)
    for phase, n in df["phase"].value_counts().items():
        assert a.report["phases"][phase]["n"] == round(0.25 * n)
    other = fit_profile(df, seed=4)
    assert not other.predictions["new_tokens"].equals(a.predictions["new_tokens"])


def test_coefficients_plug_into_profile_cost_model():
    df = grid()
    df["step_time_s"] *= np.exp(np.random.default_rng(2).normal(0.0, 0.03, len(df)))
    result = fit_profile(df)
    p = result.predictions
    assert {"phase", "step_time_s", "predicted_s", "error_pct"} <= set(p.columns)
    cost = ProfileCostModel(result.coefficients)
    again = cost.step_times_s(p.new_tokens, p.sampled, p.attn_pairs, p.kv_read_tokens, p.num_seqs)
    np.testing.assert_allclose(again, p["predicted_s"], rtol=1e-12)
    np.testing.assert_allclose(p["error_pct"], 100 * (p["predicted_s"] - p["step_time_s"]) / p["step_time_s"])
    assert result.report["overall"]["mape_pct"] == pytest.approx(np.abs(p["error_pct"]).mean())
    one = p.iloc[0]
    assert cost.step_time_s(one.new_tokens, one.sampled, one.attn_pairs, one.kv_read_tokens,
                            one.num_seqs) == pytest.approx(one.predicted_s)


def test_format_report_is_a_table_per_phase():
    text = format_report(fit_profile(grid()))
    for word in ("prefill", "decode", "mixed", "overall", "MAPE", "weights_s"):
        assert word in text


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["attn_pairs"]), "attn_pairs"),
    (lambda d: d.assign(step_time_s=d.step_time_s.where(d.index != 3, np.nan)), "step_time_s"),
    (lambda d: d.assign(step_time_s=d.step_time_s.where(d.index != 3, 0.0)), "> 0"),
    (lambda d: d.assign(step_time_s=d.step_time_s.where(d.index != 3, -1e-3)), "> 0"),
    (lambda d: d.assign(phase=d.phase.where(d.index != 0, "warmup")), "warmup"),
    (lambda d: d.assign(num_seqs=4), "degenerate"),
    (lambda d: d.iloc[:0], "empty"),
])
def test_bad_measurements_are_refused(mutate, message):
    with pytest.raises(FitError, match=message):
        fit_profile(mutate(grid()))


def test_too_few_points_per_coefficient():
    df = grid()
    small = pd.concat([df[df.phase == p].iloc[:8] for p in ("prefill", "decode", "mixed")])  # 18 training rows
    with pytest.raises(FitError, match="3 per coefficient"):
        fit_profile(small)


def test_a_phase_with_too_few_held_out_points():
    df = grid()
    few_mixed = pd.concat([df[df.phase != "mixed"], df[df.phase == "mixed"].iloc[:5]])
    with pytest.raises(FitError, match="phase 'mixed'"):
        fit_profile(few_mixed)


def test_test_fraction_must_be_a_fraction():
    with pytest.raises(FitError, match="test_fraction"):
        fit_profile(grid(), test_fraction=1.0)


def test_phases_absent_from_the_data_are_absent_from_the_report():
    df = grid()
    result = fit_profile(df[df.phase != "mixed"])
    assert set(result.report["phases"]) == {"prefill", "decode"}
