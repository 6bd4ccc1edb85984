"""Profiles composed from aiconfigurator-core's per-op tables: the composition behaves like a GPU
(more batch / context / length costs more, TP helps a big prefill), the fit is close, lookups never
extrapolate silently, and every shipped profile loads with its provenance.

Tests that read the tables skip when aiconfigurator-core (import name aiconfigurator_core) is absent.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from calibration.aiconfigurator_import import SYSTEMS, LogGrid, LookupLog
from calibration.profile import list_shipped_profiles, load_profile, shipped_profiles_dir
from sim.catalog import gpu_catalog, model_catalog

# Held-out MAPE bounds for the composed-and-fitted profiles. bf16 steps are smooth in the token
# count; the fp8 GEMM tables jump up to ~2x just past tile boundaries (m = 256 j + 1), which the
# smooth cost formula can only average.
MAPE_BOUND_PCT = {"bf16": 8.0, "fp8": 12.0}
NAME = re.compile(r"^(?P<gpu>[a-z0-9-]+)_(?P<model>[a-z0-9.-]+)_tp(?P<tp>\d+)_(?P<dtype>bf16|fp8)$")


# -- no aiconfigurator needed ---------------------------------------------------------------------

def imported_profiles() -> list[str]:
    """Shipped profiles made by this importer (others, e.g. measured with vLLM, sit beside them)."""
    return [n for n in list_shipped_profiles()
            if load_profile(n).provenance["source"].startswith("aiconfigurator-core")]


def test_shipped_profiles_exist_and_load():
    assert len(imported_profiles()) >= 20
    for name in list_shipped_profiles():
        p = load_profile(name)
        assert p.name == name
        assert p.provenance["source"]
        assert p.cost_model().step_time_s(1, 1, 128, 128, 1) > 0


@pytest.mark.parametrize("name", imported_profiles())
def test_shipped_profile_is_consistent(name):
    p = load_profile(name)
    m = NAME.match(name)
    assert m, name
    assert (m["gpu"], m["model"], int(m["tp"]), m["dtype"]) == (p.gpu, p.model, p.tensor_parallel, p.weight_dtype)
    assert p.gpu in gpu_catalog() and p.model in model_catalog()
    assert p.num_kv_blocks is None
    prov = p.provenance
    for key in ("package_version", "system", "framework", "framework_version", "tables", "date", "command", "note"):
        assert prov[key], key
    assert SYSTEMS[prov["system"]] == p.gpu
    assert f"--model {p.model} " in prov["command"] and f"--tp {p.tensor_parallel} " in prov["command"]
    assert prov["step_overhead_s"] == 0 and prov["lower_bound"] and "LOWER BOUND" in prov["note"]
    assert not prov["lookups"]["clamped"]  # composed steps never lean on clamped lookups
    assert p.fit["overall"]["mape_pct"] < MAPE_BOUND_PCT[p.weight_dtype]
    assert set(p.fit["phases"]) == {"prefill", "decode", "mixed"}
    # Small composed-steps file beside it, in the measurements schema.
    csv = shipped_profiles_dir() / name / "measurements.csv"
    assert csv.stat().st_size < 200_000
    df = pd.read_csv(csv)
    assert {"phase", "new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs", "step_time_s",
            "source"} <= set(df.columns)
    assert (df["source"] == prov["source"]).all()


def test_shipped_profiles_are_json_with_sorted_keys():
    for name in imported_profiles():
        text = (shipped_profiles_dir() / name / "profile.json").read_text()
        assert json.loads(text)["name"] == name


def test_log_grid_is_exact_on_power_laws_and_records_clamps():
    m = np.array([1.0, 16.0, 256.0])
    k = np.array([64.0, 4096.0])
    mm, kk = np.meshgrid(m, k, indexing="ij")
    df = pd.DataFrame({"m": mm.ravel(), "k": kk.ravel(), "latency": (2e-3 * mm * np.sqrt(kk)).ravel()})
    grid = LogGrid.from_frame("toy", df, ("m", "k"))
    log = LookupLog()
    assert grid.lookup((40.0, 1000.0), log) == pytest.approx(2e-3 * 40 * math.sqrt(1000))
    assert not log.clamped
    edge = grid.lookup((1024.0, 1000.0), log)  # beyond the largest m: clamped, never extrapolated
    assert edge == pytest.approx(2e-3 * 256 * math.sqrt(1000))
    assert log.clamped["toy"] == 1 and "clamped" in log.examples["toy"]


def test_log_grid_records_lookups_next_to_unmeasured_cells():
    df = pd.DataFrame({"b": [1, 1, 2], "s": [1, 2, 1], "latency": [1.0, 2.0, 2.0]})  # (2, 2) never measured
    grid = LogGrid.from_frame("holes", df, ("b", "s"))
    log = LookupLog()
    assert grid.lookup((1.0, 1.5), log) == pytest.approx(1.5, rel=0.1)
    assert not log.clamped
    grid.lookup((1.5, 1.5), log)
    grid.lookup((2.0, 2.0), log)
    assert log.clamped["holes"] == 2


# -- reading the tables ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def h100():
    pytest.importorskip("aiconfigurator_core")
    from calibration.aiconfigurator_import import load_tables
    return load_tables("h100_sxm")


@pytest.fixture(scope="module")
def composer_8b(h100):
    from calibration.aiconfigurator_import import StepComposer
    return lambda tp=1, dtype="bf16": StepComposer(h100, model_catalog()["llama-3.1-8b"], tp=tp, dtype=dtype)


def _step_s(composer, chunk, context, samples):
    log = LookupLog()
    t = sum(composer.step(chunk, context, samples, log).values())
    assert not log.clamped, log.examples
    return t


def decode_s(composer, batch, context):
    return _step_s(composer, [1] * batch, [context] * batch, [1] * batch)


def prefill_s(composer, batch, length):
    return _step_s(composer, [length] * batch, [0] * batch, [1] * batch)


def test_tables_come_from_vllm(h100):
    assert h100.framework == "vllm" and h100.version
    assert "H100" in h100.device
    assert any("gemm_perf" in f for f in h100.files)


def test_decode_step_grows_with_batch_and_context(composer_8b):
    c = composer_8b()
    batches = [decode_s(c, b, 2047) for b in (1, 4, 16, 64)]
    contexts = [decode_s(c, 8, ctx) for ctx in (127, 1023, 4095, 16383)]
    assert batches == sorted(batches) and batches[-1] > 1.2 * batches[0]
    assert contexts == sorted(contexts) and contexts[-1] > 1.2 * contexts[0]
    # Batch 1 decode of an 8B bf16 model streams ~16 GB of weights: 5-8 ms on an H100.
    assert 0.005 < decode_s(c, 1, 127) < 0.008


def test_prefill_grows_superlinearly_with_length(composer_8b):
    c = composer_8b()
    t = {L: prefill_s(c, 1, L) for L in (1024, 2048, 4096, 8192)}
    assert t[8192] > 2.0 * t[4096] > 4.0 * t[2048] * 0.98
    # Marginal cost per prompt token rises with length (attention is quadratic).
    assert (t[8192] - t[4096]) / 4096 > (t[2048] - t[1024]) / 1024
    log = LookupLog()
    attention = [c.step([L], [0], [1], log)["attention_s"] for L in (1024, 8192)]
    assert attention[1] > 20 * attention[0]


def test_tensor_parallel_speeds_up_a_big_prefill(composer_8b):
    tp1, tp2 = prefill_s(composer_8b(1), 1, 8192), prefill_s(composer_8b(2), 1, 8192)
    assert tp2 < 0.75 * tp1
    log = LookupLog()
    assert composer_8b(2).step([8192], [0], [1], log)["comm_s"] > 0


def test_fp8_gemms_are_faster_than_bf16_for_a_big_prefill(composer_8b):
    assert prefill_s(composer_8b(1, "fp8"), 1, 8192) < prefill_s(composer_8b(1, "bf16"), 1, 8192)


def test_lookups_outside_the_tables_are_clamped_and_recorded(composer_8b):
    log = LookupLog()
    composer_8b().step([1] * 4, [500_000] * 4, [1] * 4, log)
    assert log.clamped["generation_attention"] >= 1


def test_fitted_profile_meets_its_bound(h100):
    from calibration.aiconfigurator_import import build_profile
    profile, comp, result = build_profile("llama-3.1-8b", "h100_sxm", 1, tables=h100)
    assert profile.name == "h100-sxm_llama-3.1-8b_tp1_bf16"
    assert result.report["overall"]["mape_pct"] < MAPE_BOUND_PCT["bf16"]
    assert set(comp.measurements["phase"]) == {"prefill", "decode", "mixed"}
    assert profile.provenance["source"] == f"aiconfigurator-core {profile.provenance['package_version']} " \
                                           f"h100_sxm vllm {h100.version}"
    # The profile prices steps close to the composition it was fitted on.
    df = comp.measurements
    pred = profile.cost_model().step_times_s(df.new_tokens, df.sampled, df.attn_pairs, df.kv_read_tokens,
                                             df.num_seqs)
    assert np.median(np.abs(pred / df.step_time_s - 1)) < 0.06


def test_shipped_profile_is_reproduced_by_its_command(h100):
    from calibration.aiconfigurator_import import import_profile, package_version
    shipped = load_profile("h100-sxm_llama-3.1-8b_tp2_bf16")
    if shipped.provenance["package_version"] != package_version():
        pytest.skip(f"shipped from {shipped.provenance['package_version']}, installed {package_version()}")
    again = import_profile("llama-3.1-8b", "h100_sxm", 2, "bf16", tables=h100)
    for key, value in shipped.coefficients.items():
        assert again.coefficients[key] == pytest.approx(value, rel=1e-6, abs=1e-15), key


def test_step_overhead_is_a_named_parameter_that_shifts_every_step(h100):
    from calibration.aiconfigurator_import import compose_measurements
    base = compose_measurements("llama-3.1-8b", "h100_sxm", 1, tables=h100).measurements
    more = compose_measurements("llama-3.1-8b", "h100_sxm", 1, tables=h100, step_overhead_s=0.002).measurements
    np.testing.assert_allclose(more.step_time_s - base.step_time_s, 0.002, rtol=1e-9)


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "mixtral-8x7b", "tp": 2}, "mixture of experts"),
    ({"model": "llama-3.1-70b", "tp": 1}, "does not fit"),
    ({"model": "llama-3.1-8b", "tp": 3}, "evenly"),
])
def test_unsupported_requests_fail_clearly(h100, kwargs, message):
    from calibration.aiconfigurator_import import ImportFailed, compose_measurements
    with pytest.raises(ImportFailed, match=message):
        compose_measurements(kwargs["model"], "h100_sxm", kwargs["tp"], tables=h100)


def test_a100_has_no_fp8_tables():
    pytest.importorskip("aiconfigurator_core")
    from calibration.aiconfigurator_import import ImportFailed, compose_measurements
    with pytest.raises(ImportFailed, match="fp8"):
        compose_measurements("llama-3.1-8b", "a100_sxm", 1, "fp8")


def test_cli_writes_a_loadable_profile(tmp_path, h100, capsys):
    from calibration.aiconfigurator_import import main
    out = tmp_path / "p"
    assert main(["--model", "llama-3.1-8b", "--system", "h100_sxm", "--tp", "4", "--dtype", "bf16",
                 "--step-overhead-ms", "1.5", "--out", str(out)]) == 0
    p = load_profile(out)
    assert p.tensor_parallel == 4 and p.provenance["step_overhead_s"] == pytest.approx(0.0015)
    assert not p.provenance["lower_bound"] and "--step-overhead-ms 1.5" in p.provenance["command"]
    assert (out / "measurements.csv").is_file()
    assert "overall" in capsys.readouterr().out
    assert main(["--model", "mixtral-8x7b", "--system", "h100_sxm", "--tp", "2", "--out", str(out)]) == 2
    assert "mixture of experts" in capsys.readouterr().err
