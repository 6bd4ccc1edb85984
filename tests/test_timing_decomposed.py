"""Timing, decomposed (calibration/parity/timing.py, benchmarks/timing_vllm.py): latencies rebuilt
on a timed run's own schedule from chosen step times (no vLLM needed: the run is hand-made), and,
in the `vllm` tier, a short timed run of the real engine whose decisions servesim must repeat."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from calibration.parity.sim_driver import sim_trace
from calibration.parity.timing import TimedRun, replay
from calibration.parity.trace import StepRecord, first_divergence

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def worker_output():
    # Request 0 (prompt 20, 3 tokens out) arrives at 0.0 s; request 1 (prompt 10, 2 out) at 0.25 s,
    # while step 1 runs, so it is added before step 2. Steps take 0.1/0.2/0.3/0.4 s with 0.01 s of
    # host time between them; the engine samples a token at the end of every step of a request
    # whose prompt is done.
    steps = [
        {"scheduled": [[0, 20]], "admitted": [0], "preempted": [], "finished": [], "kv_blocks": 2,
         "seqs": [[20, 0, 20]], "t_start_s": 0.0, "step_time_s": 0.1, "cpu_time_s": 0.1},
        {"scheduled": [[0, 1]], "admitted": [], "preempted": [], "finished": [], "kv_blocks": 2,
         "seqs": [[1, 20, 20]], "t_start_s": 0.11, "step_time_s": 0.2, "cpu_time_s": 0.2},
        {"scheduled": [[0, 1], [1, 10]], "admitted": [1], "preempted": [], "finished": [0], "kv_blocks": 3,
         "seqs": [[1, 21, 20], [10, 0, 10]], "t_start_s": 0.32, "step_time_s": 0.3, "cpu_time_s": 0.3},
        {"scheduled": [[1, 1]], "admitted": [], "preempted": [], "finished": [1], "kv_blocks": 1,
         "seqs": [[1, 10, 10]], "t_start_s": 0.63, "step_time_s": 0.4, "cpu_time_s": 0.4},
    ]
    return {"engine": {"num_blocks": 200, "block_size": 16, "max_model_len": 2048, "max_num_seqs": 4,
                       "max_num_batched_tokens": 64},
            "steps": steps,
            "requests": {"added_step": [0, 2], "added_s": [0.0, 0.31], "first_token_s": [0.1, 0.62],
                         "finish_s": [0.62, 1.03]}}


@pytest.fixture
def run():
    return TimedRun.from_worker(worker_output(), [0.0, 0.25], [20, 10], [3, 2])


def test_replay_with_the_measured_steps_and_gaps_gives_the_measured_latencies(run):
    gaps = run.host_gap_s()
    assert gaps == pytest.approx([0.0, 0.01, 0.01, 0.01])
    ttft, e2e = replay(run, run.step_time_s, gaps)
    assert ttft == pytest.approx(run.first_token_s - run.arrival_s)
    assert e2e == pytest.approx(run.finish_s - run.arrival_s)


def test_replay_moves_latencies_by_the_step_times_it_is_given(run):
    ttft, e2e = replay(run, run.step_time_s, 0.0)  # no host time: each request 0.01 s per step sooner
    assert ttft == pytest.approx([0.1, 0.6 - 0.25])
    assert e2e == pytest.approx([0.6, 1.0 - 0.25])
    # Faster steps: step 2 still waits for request 1's arrival (0.25 s), as the schedule is held fixed,
    # so request 0's last token comes at 0.30 s. servesim's own timeline would run it at 0.10-0.15 s:
    # that difference is the decomposition's "timing feedback" part.
    ttft, e2e = replay(run, np.full(4, 0.05), 0.0)
    assert ttft == pytest.approx([0.05, 0.05])
    assert e2e == pytest.approx([0.30, 0.10])


def test_the_run_is_a_parity_case_servesim_schedules_alike(run):
    first, last = run.token_steps()
    assert first.tolist() == [0, 2] and last.tolist() == [2, 3]
    case = run.parity_case()
    assert [r.arrival_step for r in case.requests] == [0, 2]
    assert first_divergence(run.records, sim_trace(case)) is None
    changed = list(run.records)
    changed[2] = StepRecord(2, ((0, 1),), finished=(0,), kv_blocks=2)  # request 1 not admitted
    assert first_divergence(changed, sim_trace(case)).step == 2


def test_the_timing_section_is_replaced_in_place_and_kept_by_the_validation_writer(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import timing_vllm
    import validate_vllm

    doc = tmp_path / "validation.md"
    doc.write_text("# Validation\n\nintro\n\n## Per scenario\n\nrows\n")
    timing_vllm.write_section(doc, timing_vllm.BEGIN, timing_vllm.END, ["## Timing, decomposed", "first"])
    timing_vllm.write_section(doc, timing_vllm.BEGIN, timing_vllm.END, ["## Timing, decomposed", "second"])
    text = doc.read_text()
    assert text.count("## Timing, decomposed") == 1 and "second" in text and "first" not in text
    assert text.index("second") < text.index("## Per scenario")
    kept = validate_vllm.kept_sections(doc)
    assert len(kept) == 1 and "second" in kept[0] and kept[0].startswith("<!-- timing-decomposed")


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (bash .ci/install-vllm.sh)")
def test_the_real_engine_on_wall_clock_arrivals_decides_what_servesim_decides(tmp_path):
    # 12 requests over half a second into 4 slots and a 256-token budget: queueing, chunked prompts,
    # arrivals during steps. Only decisions are asserted; the step times depend on the machine's load.
    from calibration.parity.timed_engine import run_timed_engine

    rng = np.random.default_rng(3)
    arrival = np.sort(rng.uniform(0.0, 0.5, 12))
    prompt, output = rng.integers(8, 600, 12), rng.integers(2, 12, 12)
    out = run_timed_engine(list(zip(arrival.tolist(), prompt.tolist(), output.tolist())), tmp_path, max_num_seqs=4,
                           max_num_batched_tokens=256, warmup_requests=0, probe=False, timeout_s=240)
    run = TimedRun.from_worker(out, arrival, prompt, output)
    finished = [i for r in run.records for i in r.finished]
    assert sorted(finished) == list(range(12))
    assert any(0 < c < p for r in run.records for i, c in r.scheduled for p in [prompt[i]])  # a chunked prompt
    assert first_divergence(run.records, sim_trace(run.parity_case())) is None
    ttft, e2e = replay(run, run.step_time_s, run.host_gap_s())
    assert np.all(ttft <= run.first_token_s - run.arrival_s + 1e-9) and np.all(e2e <= run.finish_s - run.arrival_s + 1e-9)
