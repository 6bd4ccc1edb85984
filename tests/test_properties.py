"""Property-based tests (Hypothesis): generated scenarios, valid and malformed.

Valid scenarios must run to an answer that keeps the invariants: every request conserved,
TTFT <= E2E, KV blocks never above capacity, batch limits kept, the same seed giving the same
records, no exception. Malformed ones must give one ConfigError line naming the field, never a
traceback, a hang or a silent nonsense result.

Bounded in time for CI (small runs, a fixed example budget, derandomized so CI sees the same
cases every time); `benchmarks/fuzz_scenarios.py` runs the same strategies for longer.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.configio import ConfigError
from sim.scenario import read_scenario_file, scenario_from_dict
from sim.simulation import run

# CI: a fixed, small budget and the same cases every run. benchmarks/fuzz_scenarios.py sets
# SERVESIM_FUZZ_SCALE (examples x scale) and SERVESIM_FUZZ_RANDOM=1 (fresh cases) for a longer hunt.
SCALE = max(1, int(os.environ.get("SERVESIM_FUZZ_SCALE", "1")))
RANDOM = os.environ.get("SERVESIM_FUZZ_RANDOM") == "1"


def budget(examples: int) -> settings:
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=not RANDOM,
                    suppress_health_check=[HealthCheck.too_slow])


CI = budget(40)


# ---- valid scenarios --------------------------------------------------------------------------

def lengths(max_tokens: int):
    return st.one_of(
        st.builds(lambda v: {"kind": "constant", "value": v}, st.integers(1, max_tokens)),
        st.integers(1, max_tokens).flatmap(
            lambda hi: st.builds(lambda lo: {"kind": "uniform", "min": lo, "max": hi}, st.integers(1, hi))),
        st.builds(lambda mean, sigma, hi: {"kind": "lognormal", "mean": min(mean, hi), "sigma": sigma, "max": hi},
                  st.floats(1, max_tokens), st.sampled_from([0.0, 0.3, 1.0, 1.5]), st.integers(1, max_tokens)),
    )


arrivals = st.one_of(
    st.builds(lambda r: {"kind": "poisson", "rate_per_s": r}, st.floats(0.5, 40)),
    st.builds(lambda r, cv: {"kind": "gamma", "rate_per_s": r, "cv": cv}, st.floats(0.5, 40), st.floats(0.3, 3)),
    st.builds(lambda c, t: {"kind": "closed_loop", "concurrency": c, "think_time_s": t},
              st.integers(1, 24), st.sampled_from([0.0, 0.0, 0.05, 1.0])),
)


@st.composite
def valid_scenarios(draw):
    policy = draw(st.sampled_from(["continuous", "continuous", "priority", "static", "fifo"]))
    max_num_seqs = draw(st.integers(1, 64))
    data = {
        "seed": draw(st.integers(0, 2**32 - 1)),
        "workload": {"arrival": draw(arrivals), "num_requests": draw(st.integers(1, 120)),
                     "prompt_tokens": draw(lengths(1500)), "output_tokens": draw(lengths(400))},
        "model": "llama-3.1-8b",
        "hardware": {"gpu": draw(st.sampled_from(["a100-80gb-sxm", "h100-sxm"]))},
        "serving": {"replicas": draw(st.integers(1, 3)),
                    "router": draw(st.sampled_from(["round_robin", "least_outstanding"])),
                    "max_model_len": 2048,
                    "num_kv_blocks": draw(st.sampled_from([None, 200, 2000])),
                    "scheduler": {"policy": policy, "max_num_seqs": max_num_seqs,
                                  "max_num_batched_tokens": draw(st.integers(max(max_num_seqs, 256), 4096)),
                                  "chunked_prefill": True, "batch_size": draw(st.integers(1, 16))}},
    }
    if policy == "priority":
        data["workload"]["priorities"] = [{"name": "urgent", "share": 0.3, "level": 0},
                                          {"name": "batch", "share": 0.7, "level": draw(st.integers(1, 10))}]
    if policy in ("continuous", "priority") and draw(st.booleans()):
        # vLLM's default: prefix caching on, with a shared system prompt some of the time.
        data["serving"]["enable_prefix_caching"] = True
        data["workload"]["shared_prefix_tokens"] = draw(st.sampled_from([0, 64, 500]))
    elif draw(st.booleans()) and policy in ("continuous", "priority"):
        method = draw(st.sampled_from(["draft_model", "eagle", "eagle3", "mtp", "ngram"]))
        k = draw(st.integers(1, 5))
        spec = {"method": method, "num_speculative_tokens": k}
        if method == "draft_model":
            spec["draft_model"] = "llama-3.2-1b"
        acceptance = draw(st.sampled_from(["acceptance_rate", "draft_acceptance_rate", "mean_acceptance_length"]))
        spec[acceptance] = draw(st.floats(0.0, 0.95)) * (k if acceptance == "mean_acceptance_length" else 1) + (
            1 if acceptance == "mean_acceptance_length" else 0)
        data["serving"]["speculative"] = spec
    return data


def _check_invariants(scenario, res) -> None:
    r = res.requests
    assert len(r) == scenario.workload.num_requests or not res.stable
    done = r[r["finish_s"].notna()]
    if res.stable:
        assert len(done) == len(r)
    assert (done["generated_tokens"] == done["output_tokens"]).all()
    assert (done["arrival_s"] <= done["scheduled_s"]).all()
    assert (done["first_token_s"] <= done["finish_s"]).all()  # TTFT <= E2E
    assert (done["arrival_s"] <= done["first_token_s"]).all()
    for col in ("arrival_s", "first_token_s", "finish_s"):
        assert np.isfinite(done[col]).all()
    ts = res.timeseries
    assert ts["kv_blocks_used"].max() <= res.memory.num_kv_blocks
    sched = scenario.serving.scheduler
    cap = sched.batch_size if sched.policy == "static" else 1 if sched.policy == "fifo" else sched.max_num_seqs
    assert ts["running"].max() <= cap


@CI
@given(valid_scenarios())
def test_generated_valid_scenarios_keep_the_invariants_and_repeat(data):
    try:
        scenario = scenario_from_dict(data)
    except ConfigError as exc:  # a combination the validator refuses (e.g. a draft that does not fit)
        assert "\n" not in str(exc) and ":" in str(exc)
        return
    a = run(scenario)
    _check_invariants(scenario, a)
    b = run(scenario)
    pd.testing.assert_frame_equal(a.requests, b.requests)


@budget(60)
@given(concurrency=st.integers(1, 16), think=st.sampled_from([0.0, 0.0, 1e-3]), replicas=st.integers(1, 3),
       sigma=st.sampled_from([0.0, 0.5, 1.0, 2.0]), seed=st.integers(0, 40_000),
       profile=st.booleans())
def test_closed_loop_runs_never_crash(concurrency, think, replicas, sigma, seed, profile):
    """The shapes of the negative-delay crash (closed loop, think time 0, lognormal lengths), over
    many seeds, with and without a profile whose serving terms delay each response."""
    # The calibrated CPU scenario's profile has serving terms (a response latency on every reply).
    base = read_scenario_file("cpu_vllm_tiny_llama.yaml") if profile else {"serving": {"max_model_len": 2048}}
    base = {**base, "workload": {
        "arrival": {"kind": "closed_loop", "concurrency": concurrency, "think_time_s": think}, "num_requests": 40,
        "prompt_tokens": {"kind": "lognormal", "mean": 200, "sigma": sigma, "max": 1200},
        "output_tokens": {"kind": "lognormal", "mean": 40, "sigma": sigma, "max": 300}}}
    base["serving"] = {**base["serving"], "replicas": replicas}
    scenario = scenario_from_dict(base)
    res = run(scenario, seed=seed)
    assert res.stable
    _check_invariants(scenario, res)


# ---- malformed scenarios ----------------------------------------------------------------------

VALID = {"workload": {"arrival": {"kind": "poisson", "rate_per_s": 2.0}, "num_requests": 20,
                      "prompt_tokens": {"kind": "constant", "value": 100},
                      "output_tokens": {"kind": "constant", "value": 20}}}

# Every numeric field a scenario has, with where it lives.
NUMERIC_FIELDS = [
    "workload.arrival.rate_per_s", "workload.num_requests", "workload.duration_s",
    "workload.prompt_tokens.value", "workload.output_tokens.value", "serving.replicas",
    "serving.tensor_parallel", "serving.block_size_tokens", "serving.gpu_memory_utilization",
    "serving.max_model_len", "serving.overhead_gib", "serving.num_kv_blocks",
    "serving.scheduler.max_num_seqs", "serving.scheduler.max_num_batched_tokens",
    "serving.scheduler.batch_size", "serving.scheduler.batch_timeout_s", "hardware.price_usd_per_gpu_hour",
    "hardware.price_discount", "slo.ttft_s", "slo.tpot_s", "slo.e2e_s", "slo.percentile",
    "cost_model.step_overhead_s", "cost_model.per_seq_overhead_s", "cost_model.compute_efficiency",
    "sim.max_queue_requests", "sim.max_sim_time_s", "seed",
]
BAD_NUMBERS = st.one_of(st.sampled_from([math.inf, -math.inf, math.nan, 1e300, -1e300, 10**30, -(10**30), 2**63,
                                         -1, -0.5, 0, 1e16]),
                        st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=3))


def _set(data: dict, dotted: str, value) -> dict:
    import copy
    out = copy.deepcopy(data)
    node = out
    *head, last = dotted.split(".")
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value
    return out


@CI
@given(field=st.sampled_from(NUMERIC_FIELDS), value=BAD_NUMBERS)
def test_bad_numbers_get_one_line_naming_the_field_or_run_sanely(field, value):
    data = _set(VALID, field, value)
    try:
        scenario = scenario_from_dict(data)
    except ConfigError as exc:
        msg = str(exc)
        assert "\n" not in msg and len(msg) < 600
        assert field.split(".")[-1] in msg or field in msg
        return
    # Accepted: it must be a sane value that runs to a finite answer.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert math.isfinite(value) and abs(value) <= 1e15, f"{field}: {value!r} was accepted"
    res = run(scenario)
    s = res.requests
    assert np.isfinite(s["finish_s"].dropna()).all()
    assert res.stable or "unstable" in res.status


@CI
@given(st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8)),
                    lambda children: st.one_of(st.lists(children, max_size=3),
                                               st.dictionaries(st.text(max_size=8), children, max_size=3)),
                    max_leaves=12))
def test_arbitrary_documents_never_raise_anything_but_config_error(doc):
    try:
        scenario_from_dict(doc if isinstance(doc, dict) else {"workload": doc})
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600


# ---- malformed profiles, traces and planning files ----------------------------------------------

JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                        st.text(max_size=6), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                                    st.integers(), max_size=2))


@CI
@given(key=st.sampled_from(["coefficients.per_token_s", "coefficients.overhead_s", "weight_dtype", "kv_dtype",
                            "block_size_tokens", "tensor_parallel", "num_kv_blocks", "serving.response_latency_s",
                            "serving", "provenance", "name", "extra_field"]),
       value=JSON_VALUES)
def test_malformed_profiles_are_refused_in_one_line_or_run_sanely(tmp_path_factory, key, value):
    import json

    from calibration.profile import ProfileError, load_profile, shipped_profiles_dir
    data = json.loads((shipped_profiles_dir() / "cpu-vllm_tiny-llama_tp1_bf16" / "profile.json").read_text())
    node = data
    *head, last = key.split(".")
    for part in head:
        node = node[part]
    node[last] = value
    folder = tmp_path_factory.mktemp("prof")
    (folder / "profile.json").write_text(json.dumps(data))
    try:
        prof = load_profile(folder)
    except ProfileError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 800
        return
    cost = prof.cost_model()
    t = cost.step_time_s(100, 1, 5000, 100, 1)
    assert math.isfinite(t) and t > 0


CELLS = st.one_of(st.integers(-5, 10**6).map(str), st.floats(allow_nan=True).map(repr), st.text(max_size=6),
                  st.just("9223372036854775808"), st.just("2023-11-16 18:15:46.1+02:00"), st.just(""))


@CI
@given(header=st.sampled_from(["timestamp,prompt_tokens,output_tokens", "TIMESTAMP,ContextTokens,GeneratedTokens",
                               "a,b,c"]),
       rows=st.lists(st.tuples(CELLS, CELLS, CELLS), min_size=0, max_size=5))
def test_malformed_traces_are_refused_in_one_line_or_replayed(tmp_path_factory, header, rows):
    folder = tmp_path_factory.mktemp("trace")
    body = "\n".join(",".join(c.replace(",", ";").replace("\n", " ").replace("\r", " ") for c in r) for r in rows)
    (folder / "t.csv").write_text(header + "\n" + body + "\n")
    try:
        sc = scenario_from_dict({"workload": {"arrival": {"kind": "trace", "path": "t.csv"}},
                                 "serving": {"max_model_len": 8192}}, base_dir=folder)
        res = run(sc)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 800
        return
    r = res.requests
    assert (r["prompt_tokens"] >= 1).all() and (r["output_tokens"] >= 1).all()
    assert np.isfinite(r["arrival_s"]).all()


@budget(15)
@given(section=st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"candidates": st.lists(st.one_of(
        JSON_VALUES, st.fixed_dictionaries({"gpu": st.sampled_from(["a100-80gb-sxm", "h100-sxm", "nope", 7]),
                                            "tensor_parallel": st.sampled_from([1, 2, 3, -1]),
                                            "set": st.one_of(st.lists(st.sampled_from(
                                                ["serving.replicas=2", "x", "serving=3", "slo.ttft_s=.inf"]),
                                                max_size=2), JSON_VALUES)})), max_size=2),
                           "scale_up_margin": st.sampled_from([0.2, -1, math.inf])})))
def test_malformed_planning_sections_are_refused_or_listed_infeasible(section):
    from sim.plan.planner import plan
    data = read_scenario_file("customer_support_1m_per_day.yaml")
    data["plan"] = section
    if isinstance(section, dict):
        section.update(requests_per_point=150, max_requests_per_point=150, max_replicas=6)
    try:
        p = plan(data, workers=1, progress=False)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 800
        return
    for c in p.candidates:
        assert c.feasible or c.reason
