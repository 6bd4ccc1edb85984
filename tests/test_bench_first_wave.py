"""The measured rows' mean TTFT includes the benchmark's first wave (calibration/silicon.py,
BENCH_PROMPTS_PER_CLIENT; docs/ttft_gpu.md).

`vllm bench serve --max-concurrency C` sends its first C requests together to an idle server and
averages TTFT over all N requests; servesim's prediction of a measured row counts that burst as one
request in BENCH_PROMPTS_PER_CLIENT, and the steady state for the rest.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import replace

import pytest

HAS_AIC = importlib.util.find_spec("aiconfigurator_core") is not None


def test_bench_mean_weights_the_first_wave_once_per_prompts_per_client():
    from calibration.silicon import bench_mean_ttft_ms

    assert bench_mean_ttft_ms(1000.0, 100.0, 10) == pytest.approx(190.0)
    assert bench_mean_ttft_ms(1000.0, 100.0, 1) == pytest.approx(1000.0)
    with pytest.raises(ValueError, match="prompts_per_client"):
        bench_mean_ttft_ms(1000.0, 100.0, 0.5)


@pytest.mark.skipif(not HAS_AIC, reason="aiconfigurator-core not installed")
def test_first_wave_burst_grows_with_concurrency_and_raises_the_measured_mean():
    from calibration.silicon import BENCH_PROMPTS_PER_CLIENT, bench_mean_ttft_ms, read_rows, simulate_row

    rows, _ = read_rows()
    # Qwen3-32B bf16 on H100, TP8, 1024/1024 (training rows): the measured mean TTFT grows
    # 126 ms (c8) -> 426 ms (c128) while a steady-state prediction barely moves.
    base = next(r for r in rows if (r.gpu, r.model, r.dtype, r.tp, r.isl, r.osl)
                == ("h100-sxm", "qwen3-32b", "bf16", 8, 1024, 1024))
    small, large = (simulate_row(replace(base, concurrency=c), requests=3 * c) for c in (8, 128))
    for p in (small, large):
        assert p["pred_ttft_ms"] == pytest.approx(bench_mean_ttft_ms(
            p["pred_ttft_first_wave_ms"], p["pred_ttft_steady_ms"], BENCH_PROMPTS_PER_CLIENT))
    # 128 prompts of 1024 tokens queue for an 8192-token budget: 16 prefill steps, the mean waits ~8 of them;
    # 8 prompts fit in one step (which every one of them waits for: several times a lone prefill, but no queue).
    assert large["pred_ttft_first_wave_ms"] > 5 * large["pred_ttft_steady_ms"]
    assert small["pred_ttft_first_wave_ms"] < 8 * small["pred_ttft_steady_ms"]
    assert large["pred_ttft_first_wave_ms"] > 5 * small["pred_ttft_first_wave_ms"]
    # The burst moves the mean in proportion to concurrency; the steady state less.
    steady_growth = large["pred_ttft_steady_ms"] / small["pred_ttft_steady_ms"]
    assert large["pred_ttft_ms"] / small["pred_ttft_ms"] > 1.5 * steady_growth
    # first_wave=False: the steady state alone, as before.
    plain = simulate_row(replace(base, concurrency=8), requests=24, first_wave=False)
    assert plain["pred_ttft_ms"] == plain["pred_ttft_steady_ms"] and math.isnan(plain["pred_ttft_first_wave_ms"])
