"""benchmarks/step_sequence.py: vLLM's per-step log read, cut into the warm-up and the sweep points by their
token totals, and set beside the simulated steps."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import step_sequence as ss  # noqa: E402


def line(i, ctx_reqs, ctx_tokens, gen_reqs, ms=10.0, dummy=False):
    return (f"(APIServer pid=1) INFO 11-27 03:28:49 [loggers.py:199] Engine 000: Iteration({i}): {ctx_reqs} context "
            f"requests, {ctx_tokens} context tokens, {gen_reqs} generation requests, {gen_reqs} generation tokens, "
            f"iteration elapsed time: {ms:.2f} ms{' (dummy)' if dummy else ''}, CPU KV cache usage: 0.4%")


POINTS = [{"concurrency": 2, "prompt_tokens": 100, "output_tokens": 3, "num_requests": 2}]


def test_the_log_is_read_and_cut_by_token_totals():
    # warm-up: 2 prompts of 100 tokens, 16 tokens out (15 generation tokens each); then the point: 2 x 100
    # context tokens, 2 x 2 generation tokens; a trailing decode-only step stays with the warm-up.
    text = "\n".join([
        "INFO something else",
        line(0, 1, 100, 0), line(1, 1, 100, 1), *[line(2 + k, 0, 0, 2) for k in range(14)], line(16, 0, 0, 1),
        line(17, 0, 0, 0, dummy=True),  # an idle data-parallel rank's step: left out
        line(18, 0, 0, 1),  # one step past the last token
        line(19, 1, 100, 0, ms=30.0), line(20, 1, 100, 1), line(21, 0, 0, 2), line(22, 0, 0, 1),
    ])
    steps = ss.parse_steps(text)
    assert len(steps) == 22 and steps[0] == ss.Step(1, 100, 0, 0, 10.0)
    segs = ss.segments_of(POINTS)
    assert [(s.name, s.ctx_tokens, s.gen_tokens) for s in segs] == [("warm-up", 200, 30), ("c2 p100 o3", 200, 4)]
    parts = ss.split_steps(steps, segs)
    assert len(parts["warm-up"]) == 18 and parts["warm-up"][-1] == ss.Step(0, 0, 1, 1, 10.0)
    point = parts["c2 p100 o3"]
    assert [s.ctx_reqs for s in point] == [1, 1, 0, 0] and point[0].ms == 30.0
    s = ss.summary(point)
    assert s["prefill_steps"] == 2 and s["prompts_per_prefill_step"] == [1, 1] and s["steps"] == 4
    assert ss.waves(point) == "1 1" and ss.waves(parts["warm-up"]) == "1 1"
    assert ss.waves([ss.Step(1, 9, 0, 0, 1.0), *[ss.Step(0, 0, 1, 1, 1.0)] * 4, ss.Step(8, 72, 1, 1, 1.0)]) == "1 (4) 8"


def test_a_log_that_does_not_add_up_is_refused():
    text = "\n".join([line(0, 2, 200, 0), *[line(1 + k, 0, 0, 2) for k in range(15)],
                      line(16, 1, 150, 0), line(17, 0, 0, 1)])  # the point's prompts are 100 tokens, not 150
    with pytest.raises(ValueError, match="c2 p100 o3: the log's steps give 150 context"):
        ss.split_steps(ss.parse_steps(text), ss.segments_of(POINTS))


def test_simulated_steps_of_a_closed_loop_take_a_wave_together():
    # The serving fit's closed loop: every client starts at once, so the first step prefills the whole wave
    # (what the real server does not: docs/step_sequence_cpu.md).
    from sim.scenario import load_scenario

    scenario = load_scenario(ROOT / "scenarios" / "cpu_vllm_tiny_llama.yaml")
    steps = ss.simulated_steps(scenario, {"concurrency": 4, "prompt_tokens": 256, "output_tokens": 8,
                                          "num_requests": 8})
    assert steps[0].ctx_reqs == 4 and steps[0].ctx_tokens == 1024
    assert sum(s.ctx_tokens for s in steps) == 8 * 256 and sum(s.gen_tokens for s in steps) == 8 * 7
    assert ss.summary(steps)["prompts_per_prefill_step"] == [4, 4]
