"""Run vLLM's real in-process engine on requests arriving at wall-clock times, and record every
step: what the scheduler decided (the parity record) and how long the step took.

The engine is vLLM's `LLMEngine` with its engine core in-process (tiny-llama, dummy weights),
on a CPU under the thread binding a served model worker gets (calibration/engine_process.py
`cpu_worker_env`), so its step times are those the calibrated profile was fitted on. A request
is added as soon as its arrival time has passed, before the next step; when nothing is left to
run the loop sleeps until the next arrival. Each step is timed with perf_counter around
`EngineCore.step` (schedule + forward + sample + update), as the calibration sweep times it,
with the engine process's CPU time beside it. Before and after the run a reference shape (one
sequence decoding alone) is timed the same way: on a machine shared with other jobs it shows
how much slower every step is than on the day the profile was measured.

Run as a subprocess (`python -m calibration.parity.timed_engine spec.json out.json`): it imports
vllm and torch. `run_timed_engine` is the parent's side: it never imports them.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from calibration.engine_process import SAMPLING_TEMPERATURE, cache_env, cpu_worker_env, run_worker, serving_worker_cores

PROBE_ID, PROBE_PROMPT, PROBE_OUTPUT = 10**9, 128, 33  # the reference shape: 32 decode steps of one sequence
MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "tiny-llama"


def run_timed_engine(requests: list[tuple[float, int, int]], work_dir: Path, *, max_model_len: int = 2048,
                     max_num_batched_tokens: int = 2048, max_num_seqs: int = 256, block_size: int = 128,
                     warmup_requests: int = 16, probe: bool = True, timeout_s: float = 600.0) -> dict:
    """Replay `requests` = (arrival s, prompt tokens, output tokens), sorted by arrival, through the
    in-process engine; the engine's facts, one record per step and one per request (see `_worker`)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = {"requests": requests, "max_model_len": max_model_len, "max_num_batched_tokens": max_num_batched_tokens,
            "max_num_seqs": max_num_seqs, "block_size": block_size, "warmup_requests": warmup_requests, "probe": probe}
    spec_path, out_path = work_dir / "timed_spec.json", work_dir / "timed_out.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    env = cache_env()
    env.update(cpu_worker_env(serving_worker_cores()))
    run_worker([sys.executable, "-m", "calibration.parity.timed_engine", str(spec_path), str(out_path)],
               work_dir / "timed_engine.log", timeout_s, env=env)
    return json.loads(out_path.read_text())


# --------------------------------------------------------------------------- inside the worker (imports vllm)

def _worker(spec: dict) -> dict:
    import numpy as np
    import vllm
    from vllm import EngineArgs, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.v1.engine.llm_engine import LLMEngine

    reqs = [tuple(r) for r in spec["requests"]]
    engine = LLMEngine.from_engine_args(EngineArgs(
        model=str(MODEL_DIR), skip_tokenizer_init=True, enforce_eager=True, load_format="dummy", dtype="bfloat16",
        seed=0, enable_prefix_caching=False, enable_chunked_prefill=True, async_scheduling=False,
        max_model_len=spec["max_model_len"], max_num_batched_tokens=spec["max_num_batched_tokens"],
        max_num_seqs=spec["max_num_seqs"], block_size=spec["block_size"], kv_cache_memory_bytes=2**30))
    core = engine.engine_core.engine_core
    sched = core.scheduler
    pool = sched.kv_cache_manager.block_pool
    rng = np.random.default_rng(0)

    def add(rid: str, prompt: int, output: int) -> None:
        params = SamplingParams(max_tokens=output, min_tokens=output, ignore_eos=True,
                                temperature=SAMPLING_TEMPERATURE, detokenize=False)
        engine.add_request(rid, TokensPrompt(prompt_token_ids=rng.integers(3, 32000, prompt).tolist()), params)

    # Warm-up: the workload's first requests as one burst (the first run of a shape is slower).
    for k, (_, p, o) in enumerate(reqs[: spec["warmup_requests"]]):
        add(f"warm{k}", p, o)
    while engine.has_unfinished_requests():
        engine.step()
    usable = pool.get_num_free_blocks()

    steps: list[dict] = []
    sink = {"steps": steps}  # where timed_step records (the probes record apart)
    pending: dict = {}
    schedule, step_fn = sched.schedule, core.step_fn

    def idx(rid: str) -> int:
        return int(rid.split("-", 1)[0])  # vLLM appends "-<random>" to the id it was given

    def schedule_and_record(*args, **kwargs):
        before = {rid: (r.num_computed_tokens, r.num_prompt_tokens) for rid, r in sched.requests.items()}
        running_before = {r.request_id for r in sched.running}
        out = schedule(*args, **kwargs)
        n = out.num_scheduled_tokens
        pending.update(
            seqs=[(int(c), *before[rid]) for rid, c in n.items() if c > 0],
            scheduled=sorted((idx(rid), int(c)) for rid, c in n.items()),
            admitted=sorted(idx(r.request_id) for r in sched.running if r.request_id not in running_before),
            preempted=sorted(idx(r) for r in (out.preempted_req_ids or ())),
            kv_blocks=usable - pool.get_num_free_blocks())
        return out

    def timed_step():
        pending.clear()
        unfinished = set(sched.requests)
        t0, c0 = time.perf_counter(), time.process_time()
        result = step_fn()
        t1, c1 = time.perf_counter(), time.process_time()
        if pending:
            sink["steps"].append({**pending, "t_start_s": t0 - origin, "step_time_s": t1 - t0, "cpu_time_s": c1 - c0,
                          "finished": sorted(idx(r) for r in unfinished - set(sched.requests))})
        return result

    sched.schedule, core.step_fn = schedule_and_record, timed_step

    def probe() -> list[dict]:
        """A reference shape timed now: one sequence decoding alone (PROBE_PROMPT tokens of context),
        to compare the machine's speed during the run with the profile's (see module docstring)."""
        if not spec["probe"]:
            return []
        sink["steps"] = out = []
        add(str(PROBE_ID), PROBE_PROMPT, PROBE_OUTPUT)
        while engine.has_unfinished_requests():
            engine.step()
        sink["steps"] = steps
        return [s for s in out if s["seqs"] and s["seqs"][0][1] >= PROBE_PROMPT]

    origin = time.perf_counter()
    probe_before = probe()
    n = len(reqs)
    added_step, added_s = [0] * n, [0.0] * n
    first_token_s, finish_s = [float("nan")] * n, [float("nan")] * n
    origin = time.perf_counter()  # the replay's clock: arrival times count from here
    i = 0
    while i < n or engine.has_unfinished_requests():
        now = time.perf_counter() - origin
        while i < n and reqs[i][0] <= now:
            add(str(i), reqs[i][1], reqs[i][2])
            added_step[i], added_s[i] = len(steps), time.perf_counter() - origin
            i += 1
        if engine.has_unfinished_requests():
            outputs = engine.step()
            t = time.perf_counter() - origin
            for o in outputs:
                k = idx(o.request_id)
                if o.outputs and o.outputs[0].token_ids and math.isnan(first_token_s[k]):
                    first_token_s[k] = t
                if o.finished:
                    finish_s[k] = t
        elif i < n:
            time.sleep(max(0.0, reqs[i][0] - (time.perf_counter() - origin)))
    probe_after = probe()
    engine.engine_core.shutdown()
    return {"probe_before": probe_before, "probe_after": probe_after,
            "engine": {"vllm_version": vllm.__version__, "num_blocks": usable, "block_size": spec["block_size"],
                       "max_model_len": spec["max_model_len"], "max_num_seqs": spec["max_num_seqs"],
                       "max_num_batched_tokens": spec["max_num_batched_tokens"]},
            "steps": steps,
            "requests": {"added_step": added_step, "added_s": added_s, "first_token_s": first_token_s,
                         "finish_s": finish_s}}


if __name__ == "__main__":  # vLLM may spawn processes: nothing may run at import
    spec_file, out_file = sys.argv[1], sys.argv[2]
    Path(out_file).write_text(json.dumps(_worker(json.loads(Path(spec_file).read_text()))))
