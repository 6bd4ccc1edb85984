"""The expert term of a mixture of experts' profile (sim.cost_model.expert_fraction, EXPERT_COEFFICIENTS):
a step streams the weights of the distinct experts its tokens pick, concave in the tokens and bounded by
every expert; the fit finds the term, the profile file validates it, and the shipped MoE profiles carry
their model's k/E. Tests that read aiconfigurator-core's tables skip when the package is absent."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from calibration.fit import fit_profile
from calibration.profile import list_shipped_profiles, load_profile, parse_profile
from sim.catalog import model_catalog
from sim.configio import ConfigError
from sim.cost_model import PROFILE_COEFFICIENTS, ProfileCostModel, ServingOverhead, expert_fraction

DENSE = {"overhead_s": 2e-3, "per_seq_s": 1e-5, "weights_s": 1e-3, "per_token_s": 2e-5, "per_pair_s": 0.0,
         "per_kv_token_s": 1e-8, "per_sample_s": 1e-6}
PICK = 4 / 128  # gpt-oss-120b: 4 of 128 experts per token


def test_expert_fraction_is_concave_and_bounded_by_every_expert():
    tokens = np.arange(0, 8193)
    f = expert_fraction(tokens, PICK)
    assert f[0] == 0.0 and f[1] == pytest.approx(PICK)
    early = f[:400]  # before the share rounds to 1.0 in floating point
    assert np.all(np.diff(early) > 0) and np.all(np.diff(early, 2) < 0)  # rising, each token adds less
    assert np.all(np.diff(f) >= 0) and f.max() == 1.0  # never more than every expert; all of them at 8k tokens
    # 32 tokens x 4 picks = 128 picks touch ~64 % of 128 experts, not all of them (expected distinct count).
    assert expert_fraction(32, PICK) == pytest.approx(1 - (1 - PICK) ** 32) == pytest.approx(0.638, abs=1e-3)


def test_profile_cost_adds_the_expert_term_to_every_path_and_serving_scales_it():
    moe = ProfileCostModel({**DENSE, "experts_s": 0.012, "expert_pick_fraction": PICK})
    dense = ProfileCostModel(DENSE)
    batches = np.array([1, 4, 16, 64, 256])
    extra = moe.decode_step_times_s(batches, 1000 * batches) - dense.decode_step_times_s(batches, 1000 * batches)
    assert extra == pytest.approx(0.012 * expert_fraction(batches, PICK))
    assert np.all(np.diff(extra / batches) < 0) and extra.max() <= 0.012  # concave, bounded by all experts
    for b in batches:  # the scalar and array paths agree
        args = (int(b), int(b), int(1000 * b), int(1000 * b), int(b))
        assert moe.step_time_s(*args) == pytest.approx(float(moe.step_times_s(*args)), rel=1e-12)
    served = ProfileCostModel({**DENSE, "experts_s": 0.012, "expert_pick_fraction": PICK},
                              ServingOverhead(compute_scale=2.0))
    assert served.coefficients["experts_s"] == pytest.approx(0.024)  # kernel time: scaled
    assert served.expert_pick_fraction == PICK  # k/E belongs to the model: never scaled
    # A dense profile (no expert keys) prices exactly as before.
    assert "experts_s" not in dense.coefficients and dense.step_time_s(8, 8, 8000, 8000, 8) == pytest.approx(
        DENSE["overhead_s"] + 8 * DENSE["per_seq_s"] + max(DENSE["weights_s"], 8 * DENSE["per_token_s"])
        + 8000 * DENSE["per_kv_token_s"] + 8 * DENSE["per_sample_s"], rel=1e-15)


def _profile_json(coefficients):
    return {"name": "x", "coefficients": coefficients, "model": "gpt-oss-120b", "device": "d", "gpu": "h100-sxm",
            "tensor_parallel": 1, "weight_dtype": "mxfp4", "kv_dtype": "bf16", "block_size_tokens": 16,
            "num_kv_blocks": None, "provenance": {"source": "test"}}


@pytest.mark.parametrize("extra, field", [({"experts_s": 0.01}, "coefficients.expert_pick_fraction"),
                                          ({"expert_pick_fraction": PICK}, "coefficients.experts_s"),
                                          ({"experts_s": 0.01, "expert_pick_fraction": 1.5},
                                           "coefficients.expert_pick_fraction"),
                                          ({"experts_s": -1.0, "expert_pick_fraction": PICK}, "coefficients.experts_s")])
def test_a_profile_with_half_an_expert_term_is_refused_naming_the_field(extra, field):
    with pytest.raises(ConfigError) as err:
        parse_profile(_profile_json({**DENSE, **extra}), "p.json")
    assert err.value.field == field and field in str(err.value)
    ok = parse_profile(_profile_json({**DENSE, "experts_s": 0.01, "expert_pick_fraction": PICK}), "p.json")
    assert ok.coefficients["expert_pick_fraction"] == PICK and ok.cost_model().expert_pick_fraction == PICK


def _synthetic_steps(truth: dict) -> pd.DataFrame:
    """Decode, prefill and mixed steps priced by `truth` (a profile with an expert term)."""
    cost = ProfileCostModel(truth)
    rows = []
    for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        for c in (255, 2047, 8191):
            rows.append(("decode", b, b, b * c + b, b * c + b, b))
    for L in (64, 256, 1024, 4096):
        for b in (1, 2, 4):
            rows.append(("prefill", b * L, b, b * L * (L + 1) // 2, b * L, b))
    for chunk in (128, 512, 2048):
        for b in (8, 32, 128):
            rows.append(("mixed", chunk + b, b + 1, chunk * (chunk + 1) // 2 + b * 1025, chunk + b * 1025, b + 1))
    df = pd.DataFrame(rows, columns=["phase", "new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs"])
    df["step_time_s"] = cost.step_times_s(*(df[k] for k in ("new_tokens", "sampled", "attn_pairs",
                                                           "kv_read_tokens", "num_seqs")))
    return df


def test_the_fit_recovers_the_expert_term_that_the_linear_terms_cannot_mimic():
    truth = {**DENSE, "experts_s": 0.012, "expert_pick_fraction": PICK}
    df = _synthetic_steps(truth)
    with_term = fit_profile(df, expert_pick_fraction=PICK)
    assert with_term.coefficients["experts_s"] == pytest.approx(0.012, rel=0.02)
    assert with_term.coefficients["expert_pick_fraction"] == PICK
    assert with_term.report["overall"]["mape_pct"] < 1.0
    without = fit_profile(df)
    assert "experts_s" not in without.coefficients
    assert without.report["overall"]["mape_pct"] > 5 * with_term.report["overall"]["mape_pct"]
    with pytest.raises(ValueError, match="expert_pick_fraction"):
        fit_profile(df, expert_pick_fraction=0.0)


def _moe_profiles():
    catalog = model_catalog()
    return [n for n in list_shipped_profiles() if load_profile(n).model in catalog and catalog[load_profile(n).model].is_moe]


@pytest.mark.parametrize("name", _moe_profiles())
def test_every_shipped_moe_profile_carries_its_models_expert_term(name):
    p = load_profile(name)
    model = model_catalog()[p.model]
    assert p.coefficients["expert_pick_fraction"] == pytest.approx(model.experts_per_token / model.num_experts)
    assert p.coefficients["experts_s"] > 0 and set(PROFILE_COEFFICIENTS) < set(p.coefficients)
    assert p.provenance["lower_bound"] and "expert term" in p.provenance["method"]


# -- against the tables -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def b200():
    pytest.importorskip("aiconfigurator_core")
    from calibration.aiconfigurator_import import load_tables
    return load_tables("b200_sxm")


def test_the_fused_moe_table_is_concave_in_tokens_and_the_profile_follows_it(b200):
    """gpt-oss-120b on B200: the composed fused-MoE time per token falls as the batch grows (experts shared),
    and the shipped profile tracks the composed decode step within 20 % where the linear formula missed by
    up to 40 % (its B = 1 and B = 16 steps)."""
    from calibration.aic_tables import LookupLog
    from calibration.aiconfigurator_import import StepComposer
    oss = StepComposer(b200, model_catalog()["gpt-oss-120b"], tp=1, dtype="mxfp4", kv_dtype="bf16")
    log = LookupLog()
    tokens = np.array([1, 4, 16, 64, 128, 256, 1024])
    moe = np.array([oss.moe.lookup((t,), log) for t in tokens])  # one fused-MoE layer, ms
    assert not log.clamped
    assert np.all(np.diff(moe) > 0) and np.all(np.diff(moe / tokens) < 0)
    cost = load_profile("b200-sxm_gpt-oss-120b_tp1_mxfp4").cost_model(serving=False)
    for b in (1, 4, 16, 64, 128):
        composed = sum(oss.step([1] * b, [1535] * b, [1] * b, log).values())
        assert cost.decode_step_times_s(np.array([b]), np.array([1536 * b]))[0] == pytest.approx(composed, rel=0.2)


@pytest.mark.parametrize("system", ["b200_sxm", "h100_sxm"])
def test_an_mxfp4_expert_op_resolves_to_the_mxfp4_table_or_names_what_is_missing(system):
    pytest.importorskip("aiconfigurator_core")
    from dataclasses import replace

    from calibration.aiconfigurator_import import ImportFailed, StepComposer, load_tables
    tables = load_tables(system)
    oss = StepComposer(tables, model_catalog()["gpt-oss-120b"], tp=2, dtype="mxfp4", kv_dtype="bf16")
    assert oss.moe_dtype == "w4a16_mxfp4" and "mxfp4" in oss.kernels["moe"]
    assert oss.gemm_dtype == "bfloat16"  # gpt-oss keeps attention, router and LM head in bf16
    no_mxfp4 = replace(tables, moe=tables.moe[tables.moe["moe_dtype"] != "w4a16_mxfp4"])
    with pytest.raises(ImportFailed, match=r"moe: nothing measured .* in w4a16_mxfp4 at moe_tp 2"):
        StepComposer(no_mxfp4, model_catalog()["gpt-oss-120b"], tp=2, dtype="mxfp4", kv_dtype="bf16")
