"""Measure real vLLM engine steps for a cost profile: `measure_vllm` runs a sweep
(calibration/sweep.py) on vLLM in a child process and returns its rows and the engine's facts.

Per-step times come from timing vLLM's `EngineCore.step` (schedule + forward + sample +
update; the period of the engine loop) with perf_counter, in an in-process engine core
(VLLM_ENABLE_V1_MULTIPROCESSING=0). What each step computed comes from wrapping the
scheduler's `schedule()`: per request, tokens scheduled and tokens already computed.
Not used, and why:
  * `enable_logging_iteration_details` elapsed ms: in vLLM 0.32 its timer starts after
    `execute_model(non_block=True)` has returned, and the single-process executor runs the
    forward pass synchronously inside that call, so on CPU it times only sampling (0.1-1 ms
    where the whole step takes 3-70 ms). Kept as the column `vllm_iteration_ms` to show that.
  * `RequestOutput.metrics` timestamps: per request (queued, scheduled, first and last
    token), not per step; a step's time cannot be separated from its neighbours'.

The engine runs in a subprocess (`python -m calibration.vllm_harness --worker spec.json`)
under a timeout (calibration/engine_process.py): a crash or a hang is an EngineError carrying
the tail of the engine log. The parent never imports vllm or torch.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# The sweep, the process and the model folder moved out of this file; their names stay importable
# from here (the UI, benchmarks, tests and older scripts import them from calibration.vllm_harness).
from .engine_process import (  # noqa: F401
    SAMPLING_TEMPERATURE, EngineError, cache_env, cpu_worker_env, cuda_available, log_tail, run_worker,
    serving_worker_cores)
from .model_dir import MODELS_DIR, model_config_from_catalog, resolve_model_dir  # noqa: F401
from .sweep import (  # noqa: F401
    FEATURES, FIT_STATS, GRIDS, SHAPE, Driver, Grid, Point, StepRecorder, SweepResult, device_name, drive_point,
    short_dtype, step_row, step_shapes, sweep_points)

STEPS_FILE = "steps.csv"
ENGINE_FILE = "engine.json"
LOG_FILE = "engine.log"


@dataclass(frozen=True)
class VllmSettings:
    """Engine arguments of a sweep (recorded in the profile's provenance)."""

    dtype: str = "bfloat16"
    kv_cache_gib: float | None = None  # KV pool; None: 1 GiB on a CPU, vLLM's sizing on a GPU (gpu_memory_utilization)
    max_model_len: int = 8192  # capped by the model's max_position_embeddings
    max_num_batched_tokens: int | None = None  # default: max_model_len
    max_num_seqs: int = 256
    dummy_weights: bool = True
    seed: int = 0
    # True: torch.compile and CUDA graphs, as vLLM serves by default (a GPU: eager decode steps there are
    # launch-bound, docs/gpu_vllm_h200.md); False: eager (--enforce-eager), the default.
    cuda_graphs: bool = False


def measure_vllm(model_dir: Path, grid: Grid, work_dir: Path, *, settings: VllmSettings = VllmSettings(),
                 timeout_s: float = 900.0, keep_log: bool = False) -> SweepResult:
    """Run the grid on vLLM in a subprocess; the measured steps and the engine's facts."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = {"model_dir": str(Path(model_dir).resolve()), "grid": asdict(grid), "settings": asdict(settings),
            "out_dir": str(work_dir.resolve())}
    spec_path = work_dir / "vllm_spec.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    log_path = work_dir / LOG_FILE
    for stale in (STEPS_FILE, ENGINE_FILE):
        (work_dir / stale).unlink(missing_ok=True)
    try:
        env = cache_env()
        if not cuda_available():
            env.update(cpu_worker_env(serving_worker_cores()))
        run_worker([sys.executable, "-m", "calibration.vllm_harness", "--worker", str(spec_path)], log_path,
                   timeout_s, env=env)
        engine = json.loads((work_dir / ENGINE_FILE).read_text())
        steps = pd.read_csv(work_dir / STEPS_FILE)
        engine["kv_cache_tokens_logged"] = _logged_kv_tokens(log_path)
    finally:
        spec_path.unlink(missing_ok=True)
    for tmp in (STEPS_FILE, ENGINE_FILE):
        (work_dir / tmp).unlink(missing_ok=True)
    if not keep_log:
        log_path.unlink(missing_ok=True)
    return SweepResult(measurements=steps, engine=engine)


def _logged_kv_tokens(log_path: Path) -> int | None:
    """The KV pool size vLLM logs at start-up ("GPU KV cache size: 524,288 tokens")."""
    m = re.search(r"KV cache size: ([\d,]+) tokens", log_path.read_text(errors="replace"))
    return int(m.group(1).replace(",", "")) if m else None


# --------------------------------------------------------------------------- inside the worker (imports vllm)

class _VllmDriver:
    """LLMEngine behind the Driver protocol; token-id prompts of random ids, EOS ignored."""

    def __init__(self, engine, vocab_size: int, seed: int):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        self._engine, self._sp, self._tp = engine, SamplingParams, TokensPrompt
        self._rng = np.random.default_rng(seed)
        self._vocab = vocab_size
        self._n = 0
        self._tokens: dict[str, int] = {}

    def prepare(self, point: Point) -> None:
        pass  # vLLM's KV pool is allocated once, at start-up

    def add(self, prompt_tokens: int, max_tokens: int) -> str:
        rid = f"r{self._n}"
        self._n += 1
        ids = self._rng.integers(3, self._vocab, size=prompt_tokens).tolist()
        params = self._sp(max_tokens=max_tokens, min_tokens=max_tokens, ignore_eos=True, temperature=SAMPLING_TEMPERATURE,
                          detokenize=False)
        self._engine.add_request(rid, self._tp(prompt_token_ids=ids), params)
        self._tokens[rid] = 0
        return rid

    def step(self) -> None:
        for o in self._engine.step():
            self._tokens[o.request_id] = len(o.outputs[0].token_ids)
            if o.finished:
                self._tokens.pop(o.request_id, None)

    def decoding(self, request_id: str) -> bool:
        return self._tokens.get(request_id, 1) >= 1

    def busy(self) -> bool:
        return self._engine.has_unfinished_requests()


def _instrument(core, recorder: StepRecorder) -> None:
    """Time each EngineCore step and capture what its scheduler scheduled (see module docstring)."""
    scheduler = core.scheduler
    if not hasattr(scheduler, "requests") or not hasattr(scheduler, "schedule"):
        raise EngineError(f"vLLM internals changed: {type(scheduler).__name__} has no `requests`/`schedule`; "
                          "calibration/vllm_harness.py reads them to know each step's batch")
    captured: list[list[tuple[int, int, int]]] = []
    schedule, step_fn = scheduler.schedule, core.step_fn

    def schedule_and_capture(*args, **kwargs):
        before = {rid: (r.num_computed_tokens, r.num_prompt_tokens) for rid, r in scheduler.requests.items()}
        out = schedule(*args, **kwargs)
        captured.append([(int(n), *before[rid]) for rid, n in out.num_scheduled_tokens.items() if n > 0])
        return out

    def timed_step():
        captured.clear()
        t_unix, t0, c0 = time.time(), time.perf_counter(), time.process_time()
        result = step_fn()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        outputs = result[0] or {}
        details = getattr(getattr(next(iter(outputs.values()), None), "scheduler_stats", None),
                          "iteration_details", None)
        if captured:
            recorder.record(captured[-1], dt, t_unix, cpu_time_s=cpu,
                            vllm_iteration_ms=getattr(details, "elapsed_ms", float("nan")))
        return result

    scheduler.schedule = schedule_and_capture
    core.step_fn = timed_step


def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    s = VllmSettings(**spec["settings"])
    g = spec["grid"]
    grid = Grid(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                   for k, v in g.items()})
    out_dir = Path(spec["out_dir"])
    model_dir = Path(spec["model_dir"])
    cfg = json.loads((model_dir / "config.json").read_text())

    import torch

    cpu_cores = [int(c) for c in os.environ["SERVESIM_CPU_WORKER_CORES"].split(",")] \
        if os.environ.get("SERVESIM_CPU_WORKER_CORES") else None
    import vllm
    from vllm import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    max_len = min(s.max_model_len, int(cfg.get("max_position_embeddings", s.max_model_len)))
    budget = s.max_num_batched_tokens or max_len
    kwargs = dict(model=str(model_dir), skip_tokenizer_init=True, enforce_eager=not s.cuda_graphs,
                  enable_prefix_caching=False,
                  disable_log_stats=False, enable_logging_iteration_details=True, dtype=s.dtype, seed=s.seed,
                  max_model_len=max_len, max_num_batched_tokens=budget, max_num_seqs=s.max_num_seqs,
                  enable_chunked_prefill=True, async_scheduling=False)
    if s.dummy_weights:
        kwargs["load_format"] = "dummy"
    from vllm.platforms import current_platform

    kv_gib = 1.0 if s.kv_cache_gib is None and current_platform.is_cpu() else s.kv_cache_gib
    if kv_gib is not None:  # a fixed pool: the CPU default would take a share of all memory
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * 2**30)
    t0 = time.time()
    engine = LLMEngine.from_engine_args(EngineArgs(**kwargs))
    startup_s = time.time() - t0
    core = engine.engine_core.engine_core
    vc = core.vllm_config
    try:
        recorder = StepRecorder()
        _instrument(core, recorder)
        points = grid.points(max_len, budget)
        print(f"servesim: engine up in {startup_s:.1f} s; {len(points)} points x (1 warm-up + {grid.repeats})",
              flush=True)
        driver = _VllmDriver(engine, int(cfg["vocab_size"]), s.seed)
        t_sweep = time.time()
        sweep_points(driver, points, grid.repeats, recorder, log=lambda m: print(f"servesim: {m}", flush=True),
                     max_repeats=grid.max_repeats)
        recorder.frame().to_csv(out_dir / STEPS_FILE, index=False)
        pool = getattr(getattr(core.scheduler, "kv_cache_manager", None), "block_pool", None)
        cache_dtype = str(vc.cache_config.cache_dtype)
        info = {
            "engine": "vllm", "engine_version": vllm.__version__, "device": device_name(),
            "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "cpu_worker_cores": cpu_cores,
            "dtype": short_dtype(vc.model_config.dtype),
            "kv_dtype": short_dtype(vc.model_config.dtype if cache_dtype == "auto" else cache_dtype),
            "block_size_tokens": int(vc.cache_config.block_size),
            "num_kv_blocks": int(vc.cache_config.num_gpu_blocks),
            "block_pool_blocks": int(pool.num_gpu_blocks) if pool is not None else None,
            "kv_cache_memory_bytes": kwargs.get("kv_cache_memory_bytes"),
            "max_model_len": int(vc.model_config.max_model_len),
            "max_num_batched_tokens": int(vc.scheduler_config.max_num_batched_tokens),
            "max_num_seqs": int(vc.scheduler_config.max_num_seqs),
            "chunked_prefill": bool(vc.scheduler_config.enable_chunked_prefill),
            "enforce_eager": not s.cuda_graphs, "prefix_caching": False, "sampling_temperature": SAMPLING_TEMPERATURE, "load_format": kwargs.get("load_format", "auto"),
            "startup_s": round(startup_s, 2), "sweep_s": round(time.time() - t_sweep, 2),
            "timing": "perf_counter around vLLM EngineCore.step (schedule + forward + sample + update), "
                      "in-process engine core (on a CPU: pinned to the cores and thread count vLLM gives a served "
                      "model worker); batch read from Scheduler.schedule",
            "grid": grid.name, "repeats": int(recorder.frame()["repeat"].max()) + 1, "points": len(points),
            "model_config": cfg,
        }
        (out_dir / ENGINE_FILE).write_text(json.dumps(info, indent=2))
    finally:
        engine.engine_core.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="vLLM calibration worker (run by measure_vllm)")
    ap.add_argument("--worker", required=True, help="spec JSON written by measure_vllm")
    args = ap.parse_args(argv)
    _worker(args.worker)
    return 0


if __name__ == "__main__":  # vLLM may spawn processes: nothing may run at import
    sys.exit(main())
