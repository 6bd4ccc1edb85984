"""Bit-identity check for speed work: hash every per-request output of ~15 varied runs.

A change that claims "same results, faster" must leave every line this prints unchanged.
Each run's hash covers the whole request table (arrival, scheduled, first token, finish,
generated tokens, preemptions, replica, prefix hits, failed), the per-replica time series,
the inter-token-latency histogram, busy seconds and end time; the recorded-steps run also
hashes its step log and per-request token times.

    python benchmarks/output_hashes.py                 # print one hash per scenario
    python benchmarks/output_hashes.py --save F.json   # keep them
    python benchmarks/output_hashes.py --check F.json  # exit 1 naming each scenario that changed
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.scenario import load_scenario, patch_scenario, scenario_from_dict  # noqa: E402
from sim.simulation import run  # noqa: E402

BASE = {
    "name": "hash",
    "seed": 7,
    "workload": {
        "arrival": {"kind": "poisson", "rate_per_s": 4.0},
        "num_requests": 600,
        "prompt_tokens": {"kind": "lognormal", "mean": 400, "sigma": 0.6, "min": 16, "max": 2048},
        "output_tokens": {"kind": "lognormal", "mean": 150, "sigma": 0.5, "min": 4, "max": 1024},
    },
    "model": "llama-3.1-8b",
    "hardware": {"gpu": "a100-80gb-sxm"},
    "serving": {"replicas": 1, "max_model_len": 4096, "scheduler": {"policy": "continuous"}},
}
# Relative hourly volume (00..23 h), benchmarks/day_1m.py's curve.
DIURNAL = [0.35, 0.25, 0.2, 0.2, 0.25, 0.35, 0.55, 0.8, 1.1, 1.35, 1.5, 1.55,
           1.55, 1.55, 1.5, 1.45, 1.4, 1.3, 1.2, 1.1, 1.0, 0.85, 0.65, 0.45]
SPEC = {"draft_model": "llama-3.2-1b", "num_speculative_tokens": 4, "acceptance_rate": 0.7}


def _built(patch: dict, overrides: tuple[str, ...] = ()):
    return scenario_from_dict(patch_scenario(BASE, patch), list(overrides))


# name -> (scenario factory, run keyword arguments)
CASES = {
    "shipped_chat_llama3_8b": (lambda: load_scenario(ROOT / "scenarios/chat_llama3_8b_a100.yaml"), {}),
    "shipped_cpu_profile": (lambda: load_scenario(ROOT / "scenarios/cpu_vllm_tiny_llama.yaml"), {}),
    "shipped_fifo": (lambda: load_scenario(ROOT / "scenarios/fifo_baseline.yaml"), {}),
    "shipped_priority": (lambda: load_scenario(ROOT / "scenarios/priority_mixed.yaml"), {}),
    "shipped_speculative": (lambda: load_scenario(ROOT / "scenarios/speculative_llama70b_h100.yaml"), {}),
    "shipped_static": (lambda: load_scenario(ROOT / "scenarios/static_batching.yaml"), {}),
    "shipped_trace_azure": (lambda: load_scenario(ROOT / "scenarios/trace_replay_azure.yaml"), {}),
    "roofline_continuous": (lambda: _built({"cost_model": {"kind": "roofline"}}), {}),
    "heavy_preemption": (lambda: _built({"workload": {"arrival": {"rate_per_s": 10.0}},
                                         "serving": {"num_kv_blocks": 300}}), {}),
    "prefix_caching_preempting": (lambda: _built({"workload": {"shared_prefix_tokens": 256,
                                                               "arrival": {"rate_per_s": 8.0}},
                                                  "serving": {"enable_prefix_caching": True, "num_kv_blocks": 500}}),
                                  {}),
    "priority_preempting_chunked": (lambda: _built({
        "workload": {"arrival": {"rate_per_s": 8.0}, "priorities": [
            {"name": "chat", "level": 0, "share": 0.4}, {"name": "batch", "level": 1, "share": 0.6}]},
        "serving": {"num_kv_blocks": 400, "scheduler": {"policy": "priority", "max_num_batched_tokens": 512,
                                                          "chunked_prefill": True}}}), {}),
    "speculative_small_budget": (lambda: _built({
        "workload": {"arrival": {"rate_per_s": 6.0}},
        "serving": {"speculative": SPEC, "num_kv_blocks": 600,
                    "scheduler": {"max_num_batched_tokens": 256, "max_num_seqs": 48, "chunked_prefill": True}}}),
        {}),
    "closed_loop": (lambda: _built({"workload": {"arrival": {"kind": "closed_loop", "concurrency": 24,
                                                             "think_time_s": 0.5}}}), {}),
    "static_two_replicas": (lambda: _built({"serving": {"replicas": 2, "scheduler": {
        "policy": "static", "batch_size": 8, "batch_timeout_s": 0.05}}}), {}),
    "recorded_steps_tokens": (lambda: _built({"serving": {"num_kv_blocks": 350, "scheduler": {
        "max_num_batched_tokens": 1024, "chunked_prefill": True}}}),
        {"record_steps": True, "record_token_times": True}),
    "day_slice_20k": (lambda: _built({
        "workload": {"arrival": {"kind": "daily", "queries_per_day": 20_000,
                                 "hourly_weights": DIURNAL},
                     "num_requests": None},
        "serving": {"max_model_len": 8192}, "sim": {"record_timeseries": True}}), {}),
    # Three replicas whose open runs (sim/open_run.py) are still in flight when the arrivals end: a crash there
    # once passed every case above.
    "day_three_replicas_3000": (lambda: _built({
        "workload": {"arrival": {"kind": "daily", "queries_per_day": 1_000_000,
                                 "hourly_weights": DIURNAL},
                     "num_requests": 3000},
        "serving": {"replicas": 3, "max_model_len": 8192}}), {}),
}


def _feed(h, a) -> None:
    a = np.ascontiguousarray(np.asarray(a))
    h.update(str(a.dtype).encode() + str(a.shape).encode())
    h.update(a.tobytes())


def digest(res) -> str:
    h = hashlib.sha256()
    t = res.table
    for name in ("arrival_s", "scheduled_s", "first_token_s", "finish_s", "generated", "preemptions", "replica",
                 "prefix_hit_tokens", "failed", "last_token_s"):
        _feed(h, getattr(t, name))
    for name in sorted(res.timeseries_columns):
        _feed(h, res.timeseries_columns[name])
    res.itl.flush()
    _feed(h, res.itl.counts)
    _feed(h, res.replica_busy_s)
    _feed(h, np.array([res.end_s]))
    h.update(res.status.encode())
    if res.steps is not None:
        for col in res.steps.columns:
            _feed(h, res.steps[col].to_numpy())
    if res.token_times is not None:
        _feed(h, res.token_times.offsets)
        _feed(h, res.token_times.times)
    return h.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--save", type=Path)
    ap.add_argument("--check", type=Path)
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    a = ap.parse_args()
    got = {}
    for name, (make, kw) in CASES.items():
        if a.only and name not in a.only:
            continue
        c0 = time.process_time()
        scenario = make()
        res = run(scenario, **kw)
        got[name] = digest(res)
        print(f"{name:30s} {got[name]}  {len(res.table):6d} req  {int(res.table.preemptions.sum()):6d} preempt  "
              f"{time.process_time() - c0:5.2f} CPU s", flush=True)
    if a.save:
        a.save.write_text(json.dumps(got, indent=2) + "\n")
    if a.check:
        want = json.loads(a.check.read_text())
        bad = [k for k in got if want.get(k) != got[k]]
        print("hashes: all equal" if not bad else f"hashes CHANGED: {', '.join(bad)}")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
