"""Progress and stop in sim.simulation.run: a caller's callback sees (finished, total) requests
while the run goes, can stop it, and never changes a number."""
from __future__ import annotations

import pandas as pd
import pytest

from sim.metrics import summarize
from sim.scenario import load_scenario
from sim.simulation import RunStopped, run

CASES = {
    "open loop": ("chat_llama3_8b_a100.yaml", ["workload.num_requests=3000"]),
    "closed loop, auto profile": ("chat_llama3_8b_a100.yaml",
                            ["workload.num_requests=1500", "workload.arrival={kind: closed_loop, concurrency: 24}",
                             "cost_model={kind: auto}"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_progress_reports_growing_counts_and_changes_no_number(case):
    name, overrides = CASES[case]
    scenario = load_scenario(name, overrides)
    plain = run(scenario)
    calls: list[tuple[int, int]] = []
    reported = run(scenario, on_progress=lambda done, total: calls.append((done, total)), progress_every_s=0.0)
    assert len(calls) >= 3, calls
    total = len(plain.requests)
    assert all(t == total for _d, t in calls)
    done = [d for d, _t in calls]
    assert done == sorted(done) and 0 <= done[0] and done[-1] <= total and done[-1] > done[0]
    pd.testing.assert_frame_equal(plain.requests, reported.requests)
    pd.testing.assert_frame_equal(plain.timeseries, reported.timeseries)
    a, b = summarize(plain), summarize(reported)
    a.pop("wall_s"), b.pop("wall_s")
    assert {k: repr(v) for k, v in a.items()} == {k: repr(v) for k, v in b.items()}  # NaN == NaN here
    assert (plain.end_s, plain.status) == (reported.end_s, reported.status)


def test_progress_callback_returning_false_stops_the_run_without_results():
    scenario = load_scenario("chat_llama3_8b_a100.yaml", ["workload.num_requests=20000"])
    seen: list[int] = []

    def stop_at_a_few_hundred(done: int, total: int) -> bool:
        seen.append(done)
        return done < 300

    with pytest.raises(RunStopped) as err:
        run(scenario, on_progress=stop_at_a_few_hundred, progress_every_s=0.0)
    stopped = err.value
    assert stopped.total == 20000 and 300 <= stopped.finished < 20000 and stopped.finished == seen[-1]
    assert stopped.sim_time_s > 0
    assert "stopped after" in str(stopped) and "of 20,000 requests" in str(stopped)


def test_a_callback_returning_none_or_true_goes_on():
    scenario = load_scenario("chat_llama3_8b_a100.yaml", ["workload.num_requests=800"])
    answers = iter([None, True] * 10_000)
    res = run(scenario, on_progress=lambda d, t: next(answers), progress_every_s=0.0)
    assert res.requests["finish_s"].notna().all()
