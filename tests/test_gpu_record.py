"""The GPU leases' records (docs/gpu_runs/<run>, docs/gpu_h200.md and docs/gpu_h100.md): each doc is what
its data gives, the measured profiles load with their provenance, the GEMM and attention tables the
composed profiles rest on still agree with what was measured on the GPUs (a lookup or unit change
would break it), and the catalog's H100 memory is the figure the H100 lease read."""
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("aiconfigurator_core")  # the tables: the [aiconfigurator] extra (CI installs it)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_gemm_check  # noqa: E402
import gpu_record  # noqa: E402

H200 = gpu_record.LEASES["h200"]
H100 = gpu_record.LEASES["h100"]


def test_docs_are_current():
    assert gpu_record.main(["--check"]) == 0


def test_bf16_prefill_gemm_tables_agree_with_the_h200():
    d = gpu_gemm_check.compare_frame(pd.read_csv(H200.run / "gemm_llama-3.1-8b_tp1.csv"), "h200_sxm")
    big = d[(d["dtype"] == "bfloat16") & (d["m"] >= 1024)]
    assert len(big) == 16  # 4 projections x m in 1024, 2048, 4096, 8192
    assert 0.8 <= big["table_over_measured"].median() <= 1.1
    # the comparison is not tautological: a table timed in seconds read as ms would be off by 1000x
    assert (big["table_ms"] > 0.04).all() and (big["table_ms"] < 5).all()


def test_measured_profile_carries_its_provenance():
    from sim.profile import load_profile

    prof = load_profile(H200.measured)
    assert prof.gpu == "h200-sxm" and prof.model == "llama-3.1-8b" and prof.device == "NVIDIA H200"
    assert prof.provenance["engine"] == "torch" and prof.provenance["telemetry"] == "telemetry.csv"
    # an eager step is host-bound: about the same time at batch 1 and 64 (the fit says so too)
    cm = prof.cost_model(serving=False)
    one, many = cm.step_time_s(1, 1, 513, 513, 1), cm.step_time_s(64, 64, 64 * 513, 64 * 513, 64)
    assert 0.010 < one < 0.030 and many < 2 * one


def test_decode_attention_tables_agree_with_the_h200_at_batch_8_and_more():
    import gpu_attention_check

    d = gpu_attention_check.compare_frame(pd.read_csv(H200.run / "attention_llama-3.1-8b.csv"), "h200_sxm")
    dec = d[(d["phase"] == "decode") & (d["batch"] >= 8)]
    assert len(dec) == 11  # batch 8-128 at contexts 512 and 2048, 8-64 at 8192
    assert 0.85 <= dec["table_over_measured"].median() <= 1.2
    # the tables grow with the KV bytes read as the measurement does: more context, more time
    by_ctx = dec[dec["batch"] == 32].sort_values("tokens")
    assert by_ctx["table_ms"].is_monotonic_increasing and by_ctx["measured_ms"].is_monotonic_increasing


def test_bf16_tables_agree_with_the_h100_and_its_eager_profile_records_the_device():
    from sim.profile import load_profile

    d = gpu_gemm_check.compare_frame(pd.read_csv(H100.run / "gemm_llama-3.1-8b_tp1.csv"), "h100_sxm")
    big = d[(d["dtype"] == "bfloat16") & (d["m"] >= 1024)]
    assert len(big) == 16 and 0.8 <= big["table_over_measured"].median() <= 1.1
    prof = load_profile(H100.measured)
    assert prof.gpu == "h100-sxm" and prof.device == "NVIDIA H100 80GB HBM3"
    assert prof.provenance["engine"] == "torch" and prof.provenance["telemetry"] == "telemetry.csv"


def test_catalog_h100_memory_is_what_cuda_reported_on_the_lease():
    """vLLM sizes its KV cache from CUDA's total (mem_get_info), which the lease read: the catalog carries it."""
    import gpu_memory_probe

    from sim.catalog import resolve_gpu

    raw = pd.read_csv(H100.run / "memory_llama-3.1-8b.csv")
    measured = int(raw.set_index("what").loc["device_total", "bytes"])
    assert resolve_gpu("h100-sxm", "gpu").memory_bytes == measured
    assert measured < 81559 * 2**20  # below what nvidia-smi shows: the driver keeps some
    f = gpu_memory_probe.compare_frame(raw, "h100-sxm").set_index("what")
    assert f.loc["device_total", "servesim_over_measured"] == 1.0
    # servesim's non-torch reserve covers the workspaces the lease saw grow after CUDA init
    grew = raw.set_index("what")["bytes"]
    assert 0 < grew["non_torch_after_kernels"] - grew["non_torch_after_init"] < f.loc["non_torch_after_kernels",
                                                                                        "servesim_gib"] * 2**30


def test_fp8_tables_jump_past_powers_of_two_where_the_h100_cublaslt_barely_does():
    import gpu_record_extra

    f = gpu_record_extra.fp8_jump_frame(H100)
    fp8 = f[f["dtype"] == "fp8"]
    assert len(fp8) == 12  # 4 projections x m in 128, 256, 512
    assert fp8["table_jump"].median() > 1.4 and fp8["measured_jump"].median() < 1.2
    assert gpu_record_extra.fp8_jump_frame(H200).empty  # that lease did not measure 2^k + 1: no section


@pytest.mark.parametrize("script", ["gpu_gemm_check", "gpu_attention_check", "gpu_decode_graph", "gpu_memory_probe"])
def test_a_measure_without_a_gpu_says_so_in_one_line(script, tmp_path, capsys):
    import importlib

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the measure would run")
    mod = importlib.import_module(script)
    assert mod.main(["measure", "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["measure: no CUDA device (run it on a GPU machine; `compare` runs anywhere)"]
    assert not (tmp_path / "x.csv").exists()
