"""A run as a Chrome trace (the Trace Event Format that Perfetto and chrome://tracing open).

One process per replica. Its first thread holds the engine's steps as complete events ("X"),
named by what they computed (prefill, decode, prefill+decode) with the batch in `args`
(sequences, prefill tokens, decode tokens: a speculative verify counts k+1 per sequence), and
counters ("C") of waiting and running requests and KV blocks in use when the run recorded
them. Every request routed to the replica gets a thread of its own with up to three spans:
queue (arrival to first scheduled), prefill (to its first token) and decode (to its last);
a phase still open when the run stopped ends at the end of the run and says so. Requests
refused on arrival (longer than max_model_len) are instant events in a process of their own.
Times are microseconds from the start of the simulation; first-token and finish times are
the client's (they include the engine-to-client delay of a profile's serving terms).

A request that was preempted shows one longer decode span (the recompute is inside it).
"""
from __future__ import annotations

import math
from typing import Any

from .simulation import Results

US = 1e6  # trace timestamps are microseconds
_STEP_NAMES = {(True, True): "prefill+decode", (True, False): "prefill", (False, True): "decode",
               (False, False): "idle"}


def chrome_trace(results: Results, version: str = "unknown") -> dict[str, Any]:
    """The trace document of `results`, which must come from run(..., record_steps=True)."""
    if results.steps is None:
        raise ValueError("chrome_trace needs a run with record_steps=True")
    meta: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    replicas = results.scenario.serving.replicas
    refused_pid = replicas + 1
    for r in range(replicas):
        pid = r + 1
        meta += [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"replica {r}"}},
                 {"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}},
                 {"name": "thread_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "engine steps"}}]
    events += _steps(results)
    events += _counters(results)
    req_meta, req_events = _requests(results, refused_pid)
    meta += req_meta
    events += req_events
    events.sort(key=lambda e: e["ts"])  # stable: a step's spans keep their order at equal times
    sc = results.scenario
    return {"traceEvents": meta + events, "displayTimeUnit": "ms",
            "otherData": {"servesim_version": version, "scenario": sc.name, "seed": results.seed,
                          "cost_model": results.cost_model_name, "status": results.status,
                          "simulated_s": results.end_s}}


def _steps(results: Results) -> list[dict[str, Any]]:
    st = results.steps
    out = []
    for replica, start, dur, seqs, pre, dec in zip(st["replica"].tolist(), st["start_s"].tolist(),
                                                  st["duration_s"].tolist(), st["num_seqs"].tolist(),
                                                  st["prefill_tokens"].tolist(), st["decode_tokens"].tolist()):
        out.append({"name": _STEP_NAMES[(pre > 0, dec > 0)], "cat": "step", "ph": "X", "pid": replica + 1,
                    "tid": 0, "ts": start * US, "dur": dur * US,
                    "args": {"num_seqs": seqs, "prefill_tokens": pre, "decode_tokens": dec}})
    return out


def _counters(results: Results) -> list[dict[str, Any]]:
    ts = results.timeseries
    out = []
    for replica, t, waiting, running, blocks in zip(ts["replica"].tolist(), ts["time_s"].tolist(),
                                                    ts["waiting"].tolist(), ts["running"].tolist(),
                                                    ts["kv_blocks_used"].tolist()):
        out.append({"name": "requests", "ph": "C", "pid": replica + 1, "tid": 0, "ts": t * US,
                    "args": {"waiting": waiting, "running": running}})
        out.append({"name": "kv_blocks_used", "ph": "C", "pid": replica + 1, "tid": 0, "ts": t * US,
                    "args": {"blocks": blocks}})
    return out


def _requests(results: Results, refused_pid: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    req = results.requests
    end = results.end_s
    meta: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    any_refused = False
    cols = [req[c].tolist() for c in ("request_id", "replica", "arrival_s", "scheduled_s", "first_token_s",
                                      "finish_s", "prompt_tokens", "output_tokens", "preemptions", "failed")]
    for rid, replica, arrival, scheduled, first, finish, prompt, output, preempt, failed in zip(*cols):
        if failed or replica < 0:
            any_refused = True
            out.append({"name": "refused", "cat": "request", "ph": "i", "s": "p", "pid": refused_pid, "tid": 0,
                        "ts": arrival * US, "args": {"request": rid, "prompt_tokens": prompt,
                                                     "output_tokens": output}})
            continue
        pid, tid = replica + 1, rid + 1
        meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": f"request {rid}"}})
        phases = (("queue", arrival, scheduled, {"prompt_tokens": prompt}),
                  ("prefill", scheduled, first, {"prompt_tokens": prompt}),
                  ("decode", first, finish, {"output_tokens": output, "preemptions": preempt}))
        for name, begin, stop, args in phases:
            if math.isnan(begin):
                break  # the run stopped before this phase began
            if math.isnan(stop):
                out.append({"name": f"{name} (unfinished)", "cat": "request", "ph": "X", "pid": pid, "tid": tid,
                            "ts": begin * US, "dur": max(end - begin, 0.0) * US, "args": args})
                break
            out.append({"name": name, "cat": "request", "ph": "X", "pid": pid, "tid": tid, "ts": begin * US,
                        "dur": (stop - begin) * US, "args": args})
    if any_refused:
        meta.append({"name": "process_name", "ph": "M", "pid": refused_pid, "tid": 0,
                     "args": {"name": "refused (longer than max_model_len)"}})
    return meta, out

