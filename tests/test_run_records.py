"""Optional records of a run: every engine step (a Chrome trace) and every chunk a request received
(real ITLs in --save-detailed). They must not change a simulated number."""
import json

import numpy as np
import pytest

from sim.chrome_trace import chrome_trace
from sim.cli import main
from sim.scenario import load_scenario
from sim.simulation import run
from sim.vllm_bench import bench_result

from conftest import make_scenario

PREEMPTING = {"serving": {"num_kv_blocks": 250, "max_model_len": 2048},
              "workload": {"arrival": {"rate_per_s": 8.0}, "num_requests": 120,
                           "output_tokens": {"kind": "uniform", "min": 300, "max": 900},
                           "prompt_tokens": {"kind": "constant", "value": 200}}}
SPECULATIVE = {"serving": {"speculative": {"draft_model": "llama-3.2-1b", "num_speculative_tokens": 3,
                                           "mean_acceptance_length": 2.5}},
               "workload": {"num_requests": 150}}


@pytest.fixture(scope="module", params=["plain", "preempting", "speculative"])
def pair(request):
    patch = {"plain": {"workload": {"num_requests": 200}}, "preempting": PREEMPTING,
             "speculative": SPECULATIVE}[request.param]
    sc = make_scenario(patch)
    return request.param, run(sc), run(sc, record_steps=True, record_token_times=True)


def test_recording_changes_nothing(pair):
    _, plain, recorded = pair
    assert plain.requests.equals(recorded.requests)
    assert plain.itl.total == recorded.itl.total and plain.end_s == recorded.end_s
    assert plain.steps is None and plain.token_times is None


def test_token_times_are_the_requests_own(pair):
    kind, _, res = pair
    r = res.requests
    if kind == "preempting":
        assert r["preemptions"].sum() > 0  # the case it is there for
    tt = res.token_times
    chunks = np.diff(tt.offsets)
    done = np.flatnonzero(r["finish_s"].notna().to_numpy())
    assert chunks.sum() == res.itl.total + len(done)  # one chunk per first token and per ITL entry
    for i in done:
        times = tt.of(i)
        assert times[0] == r["first_token_s"][i] and times[-1] == r["finish_s"][i]
        assert np.all(np.diff(times) > 0)
    if kind == "speculative":
        assert (chunks[done] < r["output_tokens"].to_numpy()[done]).any()  # several tokens per verify step
    else:
        np.testing.assert_array_equal(chunks[done], r["output_tokens"].to_numpy()[done])


def test_detailed_itls_are_recorded_gaps(pair):
    kind, plain, res = pair
    doc = bench_result(res, detailed=True)
    even = bench_result(plain, detailed=True)
    ok = [not e for e in doc["errors"]]
    spread = 0.0
    for itls, ttft, e2e, n, good in zip(doc["itls"], doc["ttfts"], doc["latencies"], doc["output_lens"], ok):
        if not good or n < 2:
            continue
        assert sum(itls) == pytest.approx(e2e - ttft, rel=1e-9, abs=1e-12)  # TPOT is unchanged
        if kind != "speculative":
            assert len(itls) == n - 1
        spread = max(spread, max(itls) - min(itls))
    assert spread > 1e-3  # real jitter (prefills in between), not an even spacing
    assert not any("gaps between the engine steps" in note for note in even["servesim"]["notes"])
    assert any("gaps between the engine steps" in note for note in doc["servesim"]["notes"])
    for key in ("mean_ttft_ms", "mean_tpot_ms", "p99_itl_ms"):
        assert doc[key] == even[key]  # the statistics come from the same run either way


def test_chrome_trace_round_trips_and_matches_the_run(pair, tmp_path):
    kind, _, res = pair
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(chrome_trace(res, "test")))
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    timed = [e for e in events if e["ph"] != "M"]
    assert all(e["ph"] == "M" for e in events[:len(events) - len(timed)])  # metadata first
    ts = [e["ts"] for e in timed]
    assert ts == sorted(ts)
    steps = [e for e in timed if e.get("cat") == "step"]
    assert len(steps) == len(res.steps)
    for replica in range(res.scenario.serving.replicas):
        busy = sum(e["dur"] for e in steps if e["pid"] == replica + 1) / 1e6
        assert busy == pytest.approx(res.replica_busy_s[replica], rel=1e-9)
    r = res.requests
    prefill = sum(e["args"]["prefill_tokens"] for e in steps)
    decode_positions = sum(e["args"]["decode_tokens"] for e in steps)
    if kind == "plain":
        assert prefill == r["prompt_tokens"].sum()
        assert decode_positions == (r["output_tokens"] - 1).sum()
    elif kind == "preempting":
        assert prefill > r["prompt_tokens"].sum()  # recomputes after preemption
    else:
        k = 3
        assert decode_positions == (k + 1) * res.itl.total  # every verify step computes k+1 positions per sequence
    spans = {name: [e for e in timed if e.get("cat") == "request" and e["name"] == name]
             for name in ("queue", "prefill", "decode")}
    assert len(spans["queue"]) == r["scheduled_s"].notna().sum()
    assert len(spans["prefill"]) == r["first_token_s"].notna().sum()
    assert len(spans["decode"]) == r["finish_s"].notna().sum()
    by_request = {}
    for name in ("queue", "prefill", "decode"):
        for e in spans[name]:
            by_request.setdefault(e["tid"] - 1, []).append(e)
    for rid, (queue, pre, dec) in list(by_request.items())[:50]:
        assert queue["ts"] == pytest.approx(r["arrival_s"][rid] * 1e6)
        assert queue["ts"] + queue["dur"] == pytest.approx(pre["ts"])
        assert pre["ts"] + pre["dur"] == pytest.approx(dec["ts"])
        assert dec["ts"] + dec["dur"] == pytest.approx(r["finish_s"][rid] * 1e6)


def test_refused_requests_are_instant_events():
    sc = load_scenario("trace_replay_azure.yaml", ["serving.max_model_len=600"])
    res = run(sc, record_steps=True)
    trace = chrome_trace(res)
    refused = [e for e in trace["traceEvents"] if e["name"] == "refused"]
    assert len(refused) == int(res.requests["failed"].sum()) > 0
    assert any(e["ph"] == "M" and e["args"].get("name", "").startswith("refused") for e in trace["traceEvents"])


def test_cli_writes_a_trace_and_recorded_itls(tmp_path, capsys):
    trace, result = tmp_path / "run.json", tmp_path / "bench.json"
    argv = ["run", "--set", "workload.num_requests=30", "--trace-out", str(trace), "--save-result", str(result),
            "--save-detailed"]
    assert main(argv) == 0
    assert "Chrome trace written" in capsys.readouterr().out
    doc = json.loads(trace.read_text())
    assert doc["displayTimeUnit"] == "ms" and doc["otherData"]["scenario"] == "chat-llama3-8b-a100"
    bench = json.loads(result.read_text())
    assert any("gaps between the engine steps" in n for n in bench["servesim"]["notes"])
    assert main(argv[:5]) == 2  # the trace exists: not overwritten without --force
    assert "--trace-out" in capsys.readouterr().err
    assert main(["run", "--trace-out", str(tmp_path / "t.txt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--trace-out" in err and ".json" in err
