"""Traces people have (sim/traces.py): each format on its small shipped sample, replayed end to end,
and malformed files refused in one line naming the line and field."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sim.configio import ConfigError
from sim.scenario import scenario_from_dict
from sim.simulation import run
from sim.traces import load_trace
from sim.workload import WorkloadConfig, generate_workload
from sim.configio import build

TRACES = Path(__file__).resolve().parents[1] / "scenarios" / "traces"


def replay(path: Path, **workload) -> "object":
    sc = scenario_from_dict({"workload": {"arrival": {"kind": "trace", "path": str(path)}, **workload},
                             "serving": {"max_model_len": 16384}})
    return run(sc, seed=1)


@pytest.mark.parametrize("name, n", [("sample_burstgpt.csv", 40), ("sample_mooncake.jsonl", 30),
                                     ("sample_mooncake.parquet", 30), ("sample_openai_log.jsonl", 30),
                                     ("sample_vllm_bench_detailed.json", 20), ("sample_azure_trace.csv", 200)])
def test_each_shipped_sample_replays_end_to_end(name, n):
    res = replay(TRACES / name)
    r = res.requests
    assert len(r) == n and r["finish_s"].notna().all() and res.stable
    assert (r["prompt_tokens"] >= 1).all() and (r["output_tokens"] >= 1).all()
    assert r["arrival_s"].iloc[0] == 0.0 and r["arrival_s"].is_monotonic_increasing


def test_burstgpt_columns_and_failed_rows():
    raw = pd.read_csv(TRACES / "sample_burstgpt.csv")
    t = load_trace(TRACES / "sample_burstgpt.csv")
    order = np.argsort(raw["Timestamp"].to_numpy(), kind="stable")
    np.testing.assert_array_equal(t.prompt_tokens, raw["Request tokens"].to_numpy()[order])
    np.testing.assert_allclose(t.arrival_s, raw["Timestamp"].to_numpy()[order] - raw["Timestamp"].min())
    assert "2 of 40 rows had Response tokens 0" in t.notes[0]  # BurstGPT logs failures with 0 response tokens


def test_mooncake_milliseconds_and_hash_ids_reach_the_workload():
    lines = [json.loads(x) for x in (TRACES / "sample_mooncake.jsonl").read_text().splitlines()]
    t = load_trace(TRACES / "sample_mooncake.jsonl")
    assert t.arrival_s[1] == pytest.approx((lines[1]["timestamp"] - lines[0]["timestamp"]) / 1000.0)
    assert t.hash_ids[0] == lines[0]["hash_ids"] and t.hash_block_tokens == 512
    cfg = build(WorkloadConfig, {"arrival": {"kind": "trace", "path": str(TRACES / "sample_mooncake.jsonl")},
                                 "num_requests": 5}, "workload")
    w = generate_workload(cfg, seed=1)
    assert len(w) == 5 and len(w.hash_ids) == 5 and w.hash_ids[1] == lines[1]["hash_ids"]
    # Shared prefixes are visible: requests share leading block ids.
    assert sum(1 for h in t.hash_ids if h[:1] == [0]) > 1
    parquet = load_trace(TRACES / "sample_mooncake.parquet")
    np.testing.assert_array_equal(parquet.prompt_tokens, t.prompt_tokens)
    np.testing.assert_allclose(parquet.arrival_s, t.arrival_s)
    assert parquet.hash_ids == t.hash_ids


def test_openai_logs_read_created_and_usage():
    lines = [json.loads(x) for x in (TRACES / "sample_openai_log.jsonl").read_text().splitlines()]
    t = load_trace(TRACES / "sample_openai_log.jsonl")
    assert t.prompt_tokens[0] == lines[0]["usage"]["prompt_tokens"]
    assert t.arrival_s[-1] == lines[-1]["created"] - lines[0]["created"]
    assert any("1 s resolution" in n for n in t.notes)


def test_vllm_detailed_result_replays_its_send_times_and_leaves_failures_out(tmp_path):
    doc = json.loads((TRACES / "sample_vllm_bench_detailed.json").read_text())
    t = load_trace(TRACES / "sample_vllm_bench_detailed.json")
    np.testing.assert_allclose(t.arrival_s, np.sort(doc["start_times"]) - min(doc["start_times"]))
    doc["output_lens"][3] = 0  # a failed request
    (tmp_path / "r.json").write_text(json.dumps(doc))
    t = load_trace(tmp_path / "r.json")
    assert len(t.arrival_s) == 19 and "1 failed request" in t.notes[0]


@pytest.mark.parametrize("name, text, needle", [
    ("t.jsonl", '{"timestamp": 0, "input_length": 10, "output_length": 2}\n{"timestamp": 5, "input_length": 0, '
                '"output_length": 2}\n', "line 2, field input_length: got 0"),
    ("t.jsonl", '{"timestamp": 0, "input_length": 10, "output_length": 2}\nnot json\n', "line 2: not a JSON object"),
    ("t.jsonl", '{"foo": 1}\n', "neither a Mooncake record"),
    ("t.jsonl", '{"created": 1, "usage": {"prompt_tokens": "many", "completion_tokens": 1}}\n',
     "line 1, field usage.prompt_tokens: got 'many'"),
    ("t.json", '{"start_times": [0, 1], "input_lens": [10], "output_lens": [1, 1]}', "input_lens: 1 entries"),
    ("t.json", '[1, 2]', "expected a JSON object"),
    ("t.csv", "Timestamp,Request tokens,Response tokens\n0,10,1\n1,-3,1\n", "line 3, column Request tokens"),
])
def test_malformed_traces_are_one_line_naming_the_place(tmp_path, name, text, needle):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as info:
        load_trace(tmp_path / name)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_request_longer_than_max_model_len_fails_alone_as_in_vllm(tmp_path):
    (tmp_path / "t.csv").write_text("timestamp,prompt_tokens,output_tokens\n0,100,10\n0.5,5000,100\n1,200,20\n")
    sc = scenario_from_dict({"workload": {"arrival": {"kind": "trace", "path": str(tmp_path / "t.csv")}},
                             "serving": {"max_model_len": 4096}})
    res = run(sc, seed=1)
    r = res.requests
    assert list(r["failed"]) == [False, True, False]
    assert r["finish_s"].notna().tolist() == [True, False, True] and res.stable
    assert any("fail on arrival" in n for n in res.notes)
    from sim.metrics import summarize
    from sim.vllm_bench import bench_result
    assert summarize(res)["requests_failed"] == 1
    doc = bench_result(res, detailed=True)
    assert (doc["completed"], doc["failed"]) == (2, 1) and doc["output_lens"][1] == 0 and doc["errors"][1]


def test_closed_loop_clients_move_on_after_a_failed_request(tmp_path):
    rows = "\n".join(f"{i},{9000 if i % 2 else 100},10" for i in range(40))
    (tmp_path / "t.csv").write_text("timestamp,prompt_tokens,output_tokens\n" + rows + "\n")
    from sim.traces import load_trace
    from sim.workload import Workload
    t = load_trace(tmp_path / "t.csv")
    wl = Workload(arrival_s=np.full(40, np.nan), prompt_tokens=t.prompt_tokens, output_tokens=t.output_tokens,
                  priority=np.zeros(40, dtype=np.int64), priority_names={0: "default"}, duration_s=np.inf,
                  concurrency=2)
    sc = scenario_from_dict({"workload": {"arrival": {"kind": "closed_loop", "concurrency": 2}, "num_requests": 40,
                                          "prompt_tokens": {"kind": "constant", "value": 100},
                                          "output_tokens": {"kind": "constant", "value": 10}},
                             "serving": {"max_model_len": 4096}})
    res = run(sc, seed=1, workload=wl)
    r = res.requests
    assert r["failed"].sum() == 20 and r["finish_s"].notna().sum() == 20 and res.stable


# ---- properties: any file gets a replay or one clear line ------------------------------------------------------

from hypothesis import given, strategies as st  # noqa: E402

from test_properties import CI  # noqa: E402  (the suite's fixed, small CI budget)

VALUES = st.one_of(st.integers(-5, 10**7), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                   st.none(), st.booleans(), st.just(9223372036854775808), st.lists(st.integers(0, 9), max_size=3))


@CI
@given(records=st.lists(st.dictionaries(st.sampled_from(["timestamp", "input_length", "output_length", "hash_ids",
                                                         "created", "usage"]), VALUES, max_size=5),
                        min_size=0, max_size=5),
       junk=st.sampled_from(["", "not json\n", "[1]\n", "{\"input_length\": 5}\n"]))
def test_any_jsonl_is_replayed_or_refused_in_one_line(tmp_path_factory, records, junk):
    folder = tmp_path_factory.mktemp("jsonl")
    (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + junk)
    try:
        t = load_trace(folder / "t.jsonl")
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 800
        return
    assert (t.prompt_tokens >= 1).all() and (t.output_tokens >= 1).all()
    assert t.arrival_s[0] == 0 and np.all(np.diff(t.arrival_s) >= 0) and np.isfinite(t.arrival_s).all()


@CI
@given(doc=st.dictionaries(st.sampled_from(["start_times", "input_lens", "output_lens", "completed"]),
                           st.one_of(VALUES, st.lists(VALUES, max_size=4)), max_size=4))
def test_any_vllm_result_json_is_replayed_or_refused_in_one_line(tmp_path_factory, doc):
    folder = tmp_path_factory.mktemp("json")
    (folder / "r.json").write_text(json.dumps(doc))
    try:
        t = load_trace(folder / "r.json")
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 800
        return
    assert (t.prompt_tokens >= 1).all() and (t.output_tokens >= 1).all() and np.isfinite(t.arrival_s).all()


def test_trace_bounds_are_the_workloads():
    import sim.traces
    import sim.workload
    assert sim.traces.MAX_TOKENS == sim.workload.MAX_TOKENS and sim.traces.MAX_ROWS == sim.workload.MAX_REQUESTS
