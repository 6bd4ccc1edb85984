"""GPU validation on a few rows of aiconfigurator-core's measured serving runs (silicon_sample.csv).

benchmarks/validate_silicon.py simulates every vLLM row a shipped profile covers; here a small
subset checks that the reader still finds and maps the rows, that the simulation still behaves
like the measurement where it should (TPOT grows with concurrency, the KV cliff), that the
engine terms were never fitted on the held-out rows, and that the held-out error on a slice
does not grow beyond today's (docs/validation_gpu.md).
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

# Qwen3-32B bf16 on H100, TP8, 1024/1024 at three concurrencies (training rows of the engine terms):
# the measured TPOT rises 7.96 -> 10.45 -> 19.28 ms. The profile alone predicts -24 %, -30 %, -36 %
# (no engine time); with the engine terms (kernel factor and terms fitted on three models) -2 %, -1 %, +8 %.
LADDER = ("qwen3-32b", "bf16", 8, 1024, 1024, (8, 32, 128))
# Qwen3-32B bf16 TP2 4096/128: c64 measured TTFT 1.36 s, c128 19 s (requests wait for KV blocks).
CLIFF = ("qwen3-32b", "bf16", 2, 4096, 128, (64, 128))

# |error| bounds in %, on the ladder: its TPOT is within 10 % today; 50 % leaves room for modelling
# changes while still catching a cost model that is off by half. TTFT swings more across the rows
# (see the doc); bound 150 %.
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


def pick(rows, model, dtype, tp, isl, osl, concurrencies, gpu="h100-sxm"):
    """The rows of one H100 setup (the same setups were also measured on H200 / B200)."""
    found = {r.concurrency: r for r in rows if (r.model, r.dtype, r.tp, r.isl, r.osl) == (model, dtype, tp, isl, osl)
             and r.gpu == gpu and r.concurrency in concurrencies}
    assert sorted(found) == sorted(concurrencies), f"rows missing from silicon_sample.csv: {model} TP{tp} {isl}/{osl}"
    return [found[c] for c in concurrencies]


def test_reader_finds_rows_and_maps_them_to_shipped_profiles(vs, rows):
    from calibration.profile import load_profile

    kept, skipped = rows
    from calibration.silicon import silicon_csv

    total = len(pd.read_csv(silicon_csv()))
    # 1,052 in aiconfigurator-core 0.12.0 (of 1,328 aggregated vLLM rows): H100, H200, B200, B300;
    # Qwen3-32B, Llama-3.1-8B/70B, gpt-oss-120b, Qwen3-235B-A22B, MiniMax-M2.5 (Kimi-K2.5 has none).
    assert len(kept) >= 800
    assert len(kept) + int(skipped["rows"].sum()) == total  # every row is used or counted under a reason
    assert {"h100-sxm", "h200-sxm", "b200-sxm", "b300-sxm"} <= {r.gpu for r in kept}
    assert {"gpt-oss-120b", "qwen3-235b-a22b", "minimax-m2.5"} <= {r.model for r in kept}
    for name in {r.profile for r in kept}:
        prof = load_profile(name)
        row = next(r for r in kept if r.profile == name)
        assert (prof.gpu, prof.model, prof.tensor_parallel, prof.weight_dtype) == (row.gpu, row.model, row.tp, row.dtype)
        moe = prof.provenance.get("moe")
        assert (moe is not None and moe["parallel"] == "ep") == row.expert_parallel, name
    assert all(r.concurrency >= 1 and r.ttft_ms > 0 and r.tpot_ms > 0 for r in kept)
    # gpt-oss's checkpoint is MXFP4 whatever the CSV's precision column says; NVFP4 checkpoints declare fp8 KV.
    assert {r.dtype for r in kept if r.model == "gpt-oss-120b"} == {"mxfp4"}
    assert {r.kv_dtype for r in kept if r.dtype == "fp4"} == {"fp8"}
    # Rows no shipped profile covers are skipped with a reason, never mapped to a wrong profile.
    reasons = set(skipped["reason"])
    assert "backend is not vLLM" in reasons and "model without a shipped profile" in reasons
    assert "experts split differently from the TP group (attention data parallel)" in reasons


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
    # No engine time in the profile alone: its prediction stays under the measurement on this ladder.
    bare = vs.validate(ladder, engine=False, log=lambda m: None)
    assert (bare["tpot_gap_ms"] > 0).all(), bare["tpot_gap_ms"].tolist()
    assert (res["tpot_err_pct"].abs() < bare["tpot_err_pct"].abs()).all()


def test_kv_cliff_is_reproduced(vs, rows):
    below, above = pick(rows[0], *CLIFF)
    res = vs.validate([below, above], log=lambda m: None).set_index("concurrency")
    # Measured TTFT jumps 14x when 128 x 4224 tokens no longer fit the KV cache; the simulation
    # must show the same cliff (requests queue for blocks), not a gentle slope.
    assert res.loc[128, "ttft_ms"] > 10 * res.loc[64, "ttft_ms"]
    assert res.loc[128, "kv_bound"] and not res.loc[64, "kv_bound"]
    # In steady state (the benchmark's first-wave burst, which pred_ttft_ms also counts, is no cliff: it
    # raises the c64 mean 1.3 -> 2.0 s and the KV-bound c128 one barely, calibration/silicon.BENCH_PROMPTS_PER_CLIENT).
    assert res.loc[128, "pred_ttft_steady_ms"] > 10 * res.loc[64, "pred_ttft_steady_ms"]
    assert res.loc[128, "pred_ttft_ms"] > 5 * res.loc[64, "pred_ttft_ms"]
    assert abs(res.loc[128, "ttft_err_pct"]) < 50.0  # measured 19.0 s, predicted 18.1 s


# Held out from the engine-terms fit (calibration/engine_fit.TRAIN_MODELS: Llama-3.1-8B, MiniMax-M2.5,
# Qwen3-32B). The issue's H100 slice: Llama-3.1-70B fp8 across TP, prompt length and concurrency.
HELD_SLICE = (("llama-3.1-70b", "fp8", 8, 1024, 1024, (4, 16, 64)), ("llama-3.1-70b", "fp8", 4, 8192, 1024, (4, 16)),
              ("llama-3.1-70b", "fp8", 2, 1024, 1024, (8,)))
# Beside it, the other held-out models and GPUs: gpt-oss-120b (MXFP4 MoE) on H200, Qwen3-235B-A22B
# (fp8 MoE) on H200, Llama-3.1-70B fp8 on B200.
HELD_OTHER = ((("gpt-oss-120b", "mxfp4", 1, 1024, 1024, (4, 16, 64)), "h200-sxm"),
              (("qwen3-235b-a22b", "fp8", 4, 1000, 1000, (48,)), "h200-sxm"),
              (("llama-3.1-70b", "fp8", 4, 1024, 1024, (4, 32)), "b200-sxm"))
# Today's median |error| % on those slices (docs/validation_gpu.md has the full held-out set), one
# point of slack. The simulation is seeded, so these are exact: a change that moves them is a model
# change, and it must not make the held-out error grow.
# With the engine terms fitted on Qwen3-32B alone (before the multi-model fit) the H100 slice was at TTFT
# 17.8 %, TPOT 15.4 % and the other slice at 38.3 %, 26.0 %; with the multi-model fit and a step per vLLM
# version at 38.1 %, 21.7 % and 21.9 %, 17.9 %. Then two changes: the MoE profiles gained their expert term
# (sim.cost_model.expert_fraction: kernels-only TPOT error on the held-out MoE rows 14.7 -> 7.6 %), and the
# engine fit took the structure that leave-one-training-model-out cross-validation chose on the re-composed
# profiles (one step time for every vLLM version: calibration/engine_cv.py). H100 slice better (TTFT
# 38.1 -> 30.0 %, TPOT 21.7 -> 19.6 %); other slice WORSE (TTFT 21.9 -> 27.8 %, TPOT 17.9 -> 23.0 %), and on
# all 485 held-out rows TPOT 25.2 -> 33.0 %, TTFT 25.8 -> 29.2 %: predictions now sit above the measurements
# (signed TPOT +31 %), engine time stacked on kernels that alone are close for these models.
# Then three more principled changes, none chosen on held-out rows: the composed profiles gained RoPE, the
# KV-cache write and q/k RMSNorm in every layer (benchmarks/compose_audit.py); the engine fit took the
# structure cross-validation chose among new candidates (o2: engine time overlapped with the kernels from
# vLLM 0.14 on, where async scheduling is vLLM's default); one training row is left out as physically
# implausible (calibration/plausibility.py); and the default vLLM version is the newest release with data.
# H100 slice TTFT 30.0 -> 28.7 %, TPOT 19.6 -> 7.5 %; other slice TTFT 27.8 -> 26.1 %, TPOT 23.0 -> 16.6 %;
# all 485 held-out rows TPOT 33.0 -> 17.2 % (signed +15.0 %), TTFT 29.2 -> 29.3 %.
# Then the measured rows' TTFT is predicted as `vllm bench serve` measures it, its first wave of C requests
# to an idle server included (calibration/silicon.py, docs/ttft_gpu.md; found and k = 10 prompts per client
# chosen on training rows only) and the response latency refitted with it: all held-out rows TTFT
# 29.3 -> 26.3 %, but this H100 slice WORSE, 28.7 -> 50.5 % (signed +50 %: its steady state was already
# predicted high, the shared 33 ms response latency fitted on the training models is too much for it, and
# the first wave adds to that; the growth with concurrency now matches, 2.7x vs 2.6x measured from c4 to
# c64); the other slice 26.1 -> 21.5 %. TPOT 7.5 -> 7.7 % and 16.6 -> 16.7 % (the refit's jitter change).
TODAY_HELD_TTFT_PCT, TODAY_HELD_TPOT_PCT = 50.5, 7.7
TODAY_OTHER_TTFT_PCT, TODAY_OTHER_TPOT_PCT = 21.5, 16.7
XFAIL_REASON = ("issue 10 targets on held-out rows (TPOT <= 5 %, TTFT <= 15 %): not met; today on the H100 slice "
                "TPOT 7.7 %, TTFT 50.5 %; on all 485 held-out rows TPOT 17.1 %, TTFT 26.3 % (docs/validation_gpu.md)")


def test_engine_terms_were_not_fitted_on_held_out_rows(vs, rows):
    from calibration.engine_fit import TRAIN_MODELS, split
    from sim.engine_terms import engine_terms, known_versions

    train, held = split(rows[0])
    assert train and held and not {r.model for r in held} & set(TRAIN_MODELS)
    fitted = set()
    for v in known_versions():
        prov = engine_terms("vllm", v).provenance
        fitted |= set(prov["row_ids"])
        assert "by model" in prov["split"] and set(prov["models"]) <= set(TRAIN_MODELS)
    assert fitted and not fitted & {r.id for r in held}
    assert {vs.split_of(r) for r in held} == {"held-out"}


@pytest.fixture(scope="module")
def held_slice(vs, rows):
    return vs.validate([r for spec in HELD_SLICE for r in pick(rows[0], *spec)], log=lambda m: None)


@pytest.fixture(scope="module")
def held_other(vs, rows):
    return vs.validate([r for spec, gpu in HELD_OTHER for r in pick(rows[0], *spec, gpu=gpu)], log=lambda m: None)


def test_held_out_error_does_not_grow_beyond_today(held_slice, held_other):
    for res, today_ttft, today_tpot in ((held_slice, TODAY_HELD_TTFT_PCT, TODAY_HELD_TPOT_PCT),
                                        (held_other, TODAY_OTHER_TTFT_PCT, TODAY_OTHER_TPOT_PCT)):
        assert (res["split"] == "held-out").all()
        ttft, tpot = res["ttft_err_pct"].abs().median(), res["tpot_err_pct"].abs().median()
        assert ttft <= today_ttft + 1.0, res[["setup", "gpu", "ttft_err_pct"]].to_string()
        assert tpot <= today_tpot + 1.0, res[["setup", "gpu", "tpot_err_pct"]].to_string()


# The roofline (cost_model: {kind: roofline}, what a scenario gets where no profile matches) on the same slices
# (validate_silicon.py's roofline variant): today H100 slice TTFT 8.9 %, TPOT 11.2 %; other slice TTFT 42.8 %
# (signed -42.8 %: too fast), TPOT 14.9 %. Before the roofline carried the API server's response latency
# (2026-11-26) its held-out TTFT was 58.8 % over all 485 rows, 26.9 % after.
TODAY_ROOF_SLICE_PCT, TODAY_ROOF_OTHER_PCT = (8.9, 11.2), (42.8, 14.9)  # (TTFT, TPOT) median |error| %


def test_roofline_held_out_error_does_not_grow_beyond_today(vs, rows):
    slices = (([(s, "h100-sxm") for s in HELD_SLICE], TODAY_ROOF_SLICE_PCT), (HELD_OTHER, TODAY_ROOF_OTHER_PCT))
    for spec, (today_ttft, today_tpot) in slices:
        res = vs.validate([r for s, gpu in spec for r in pick(rows[0], *s, gpu=gpu)], roofline=True,
                          log=lambda m: None)
        assert res["ttft_err_pct"].abs().median() <= today_ttft + 1.0, res[["setup", "ttft_err_pct"]].to_string()
        assert res["tpot_err_pct"].abs().median() <= today_tpot + 1.0, res[["setup", "tpot_err_pct"]].to_string()


# The issue's targets on held-out rows: TPOT <= 5 %, TTFT <= 15 % median |error|, KV-cliff rows within 25 %.
TARGET_TPOT_PCT, TARGET_TTFT_PCT = 5.0, 15.0


@pytest.mark.xfail(reason=XFAIL_REASON, strict=True)
def test_held_out_slice_meets_the_issue_targets(held_slice):
    res = held_slice
    assert res["tpot_err_pct"].abs().median() <= TARGET_TPOT_PCT
    assert res["ttft_err_pct"].abs().median() <= TARGET_TTFT_PCT
