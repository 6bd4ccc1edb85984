"""benchmarks/fp8_fixed_cost_experiment.py's patched composer does what its report says: H1 takes Δ off each
per-tensor fp8 GEMM call (about 4 x layers x Δ off a decode step, less where the byte floor binds), H2 drops
exactly the scale_matrix quantisation, and a bf16 composer is left alone by both."""
from __future__ import annotations

import math

import pytest

from benchmarks.fp8_fixed_cost_experiment import decode_ms, patched_composer
from benchmarks.grid_bias import composer_of
from calibration.aic_step import StepComposer
from calibration.aic_tables import LookupLog
from sim.profile import load_profile

DELTA_S = 5.5e-6
LAYERS = 80  # Llama-3.1-70B


def test_h1_takes_delta_off_each_fp8_gemm_and_h2_drops_the_quantisation():
    pytest.importorskip("aiconfigurator_core")
    prof = load_profile("h200-sxm_llama-3.1-70b_tp8_fp8")
    base, h1 = composer_of(prof), composer_of(prof, patched_composer(DELTA_S, False))
    h2 = composer_of(prof, patched_composer(0.0, True))
    b, c = 128, 2048
    removed_ms = decode_ms(base, b, c) - decode_ms(h1, b, c)
    full_ms = 4 * LAYERS * DELTA_S * 1e3
    assert 0.5 * full_ms < removed_ms <= full_ms + 1e-9
    assert base.quant is not None and h2.quant is None
    quant_ms = 1e3 * LAYERS * sum(base.quant.lookup((b, k), LookupLog()) * 1e-3 for _, k in base.shapes.values())
    assert decode_ms(base, b, c) - decode_ms(h2, b, c) == pytest.approx(quant_ms, rel=1e-9)
    assert quant_ms > 0


def test_a_bf16_composer_is_unchanged():
    pytest.importorskip("aiconfigurator_core")
    prof = load_profile("h200-sxm_llama-3.1-70b_tp8_bf16")
    base = composer_of(prof)
    both = composer_of(prof, patched_composer(DELTA_S, True))
    assert type(base) is StepComposer and base.gemm_dtype == "bfloat16"
    for b, c in ((1, 1024), (64, 2048)):
        assert decode_ms(both, b, c) == decode_ms(base, b, c)


def test_rebuild_gives_a_shipped_expert_parallel_profile_back():
    """grid_bias.rebuild imports with every option the profile was imported with (the refits of the fp8
    experiments rest on it): an expert-parallel MoE profile rebuilt unpatched is the shipped one. Built with
    tensor-parallel experts (the option dropped) it is not, which is what the first H2 run got wrong."""
    pytest.importorskip("aiconfigurator_core")
    from benchmarks.grid_bias import import_args, rebuild
    from calibration.aiconfigurator_import import build_profile

    def same(a: dict, b: dict) -> bool:  # to rounding: the fit's last bits move with numpy/scipy/BLAS releases
        return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-18) for k in a)

    prof = load_profile("h100-sxm_minimax-m2.5_tp4_ep4_fp8_kvbf16")
    assert same(rebuild(prof)[0].coefficients, prof.coefficients)
    a = import_args(prof)
    as_tp, _, _ = build_profile(a["--model"], a["--system"], int(a["--tp"]), a["--dtype"], kv_dtype=a["--kv-dtype"],
                                version=a["--version"])
    assert not same(as_tp.coefficients, prof.coefficients)
