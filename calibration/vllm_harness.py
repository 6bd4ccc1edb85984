"""Measure real engine steps for a cost profile: the sweep grid, and the vLLM driver.

A sweep runs a grid of *points* (a batch composition to drive through the engine) and
records every engine step it causes as one row: the five step features of
sim/cost_model.py (computed by `step_features` from what the engine actually scheduled),
the step's phase and its wall time. The first pass over the grid is warm-up (the first run
of a new shape is 5-19 % slower) and is discarded; the next passes are the repeats, and a
profile is fitted on each step shape's fastest repeat (`step_shapes`, `sweep_points`).

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
under a timeout: a crash or a hang is an EngineError carrying the tail of the engine log.
The parent never imports vllm or torch.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sim.cost_model import step_features

MODELS_DIR = Path(__file__).parent / "models"
STEPS_FILE = "steps.csv"
ENGINE_FILE = "engine.json"
LOG_FILE = "engine.log"
FEATURES = ("new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs")


class EngineError(RuntimeError):
    """The measured engine failed to start, crashed, or ran past its time limit."""


# --------------------------------------------------------------------------- the grid

@dataclass(frozen=True)
class Point:
    """One batch composition to drive through the engine.

    prefill: `batch` prompts of `prompt` tokens, one output token each (prefill-only steps).
    decode:  `batch` prompts of `prompt` tokens, then `steps` decode steps of the whole batch.
    mixed:   `batch` sequences decoding at context ~`prompt`; then each of `new_prompts`
             arrives alone, so the next step prefills it beside the running decodes.
    """

    kind: str
    batch: int
    prompt: int
    steps: int = 0
    new_prompts: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        extra = f" +{'/'.join(map(str, self.new_prompts))}" if self.new_prompts else ""
        return f"{self.kind} b{self.batch} p{self.prompt}{extra}"


@dataclass(frozen=True)
class Grid:
    """The points of a sweep. Points that do not fit the engine's limits are dropped by `points`."""

    name: str
    prefill: tuple[tuple[int, int], ...]  # (batch, prompt tokens)
    decode_batches: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    decode_steps: int
    mixed_batches: tuple[int, ...]
    mixed_contexts: tuple[int, ...]
    mixed_new_prompts: tuple[int, ...]
    repeats: int
    max_repeats: int  # extra passes, up to this many, while the machine is busy (see sweep_points)
    max_resident_tokens: int  # cap on batch x context of decode/mixed points (their prefill dominates the time)

    def points(self, max_model_len: int, max_batched_tokens: int) -> list[Point]:
        """Points within the engine's limits: a prompt plus its outputs fits max_model_len; a
        prefill batch fits one step's token budget; a mixed step fits it too."""
        pts = [Point("prefill", b, min(p, max_model_len - 1)) for b, p in self.prefill
               if b * min(p, max_model_len - 1) <= max_batched_tokens]
        for p in self.decode_contexts:
            for b in self.decode_batches:
                p_fit = min(p, max_model_len - self.decode_steps - 1)
                if b * p_fit <= self.max_resident_tokens:
                    pts.append(Point("decode", b, p_fit, steps=self.decode_steps))
        for p in self.mixed_contexts:
            for b in self.mixed_batches:
                news = tuple(n for n in self.mixed_new_prompts if b + n <= max_batched_tokens and n < max_model_len)
                p_fit = min(p, max_model_len - 2 * len(news) - 3)
                if news and b * p_fit <= self.max_resident_tokens:
                    pts.append(Point("mixed", b, p_fit, new_prompts=news))
        return list(dict.fromkeys(pts))  # de-duplicated, order kept


GRIDS = {
    # Seconds on a CPU with a toy model: checks an install end to end (and the tests' torch run).
    "smoke": Grid(
        name="smoke",
        prefill=((1, 16), (1, 32), (1, 64), (1, 96), (1, 128), (2, 32), (2, 64), (4, 16)),
        decode_batches=(1, 4), decode_contexts=(32, 96), decode_steps=6,
        mixed_batches=(1, 3), mixed_contexts=(48,), mixed_new_prompts=(8, 24, 40),
        repeats=2, max_repeats=2, max_resident_tokens=4096),
    # Enough shapes per phase for a held-out fit. A pass is about 60 s of engine time for tiny-llama
    # on this 2-core machine (the sweep runs under the served worker's binding: one thread), so
    # warm-up + 3 passes take about 4 minutes; a busy machine adds passes (up to max_repeats).
    # Decode points pay for their prompts' prefill, so batch x context is capped at 8k tokens.
    "quick": Grid(
        name="quick",
        prefill=((1, 16), (1, 64), (1, 128), (1, 256), (1, 384), (1, 512), (1, 768), (1, 1024), (1, 1536),
                 (1, 2047), (2, 512), (4, 32), (4, 256), (8, 128), (16, 64)),
        decode_batches=(1, 4, 16, 64), decode_contexts=(128, 512, 1024), decode_steps=6,
        mixed_batches=(1, 4, 16), mixed_contexts=(256, 768), mixed_new_prompts=(32, 256, 1024),
        repeats=3, max_repeats=8, max_resident_tokens=8192),
    # Pins each curve: prompt lengths up to the model limit, decode batch 1-128 x context up to
    # the limit, mixed steps across batch, context and new-prompt length.
    "full": Grid(
        name="full",
        prefill=tuple((1, p) for p in (8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2047, 4096,
                                       8191))
        + ((2, 64), (2, 512), (2, 1024), (4, 16), (4, 128), (4, 512), (8, 32), (8, 256), (16, 16), (16, 128),
           (32, 8), (32, 64), (64, 32)),
        decode_batches=(1, 2, 4, 8, 16, 32, 64, 128), decode_contexts=(64, 256, 1024, 1984), decode_steps=8,
        mixed_batches=(1, 4, 16, 64), mixed_contexts=(128, 1024), mixed_new_prompts=(16, 128, 512, 1024),
        repeats=10, max_repeats=16, max_resident_tokens=32768),
}


# --------------------------------------------------------------------------- one step -> one row

def step_row(seqs: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Features, phase and composition of one step in which sequence j computes seqs[j] =
    (chunk tokens, tokens already computed, prompt tokens). A sequence samples when its chunk
    reaches the end of its prompt (a decode always does): sim.cost_model's definition."""
    chunk = np.array([s[0] for s in seqs], dtype=np.int64)
    ctx = np.array([s[1] for s in seqs], dtype=np.int64)
    prompt = np.array([s[2] for s in seqs], dtype=np.int64)
    is_prefill = ctx < prompt
    samples = (ctx + chunk >= prompt).astype(np.int64)
    f = step_features(chunk, ctx, samples)
    phase = "prefill" if is_prefill.all() else "decode" if not is_prefill.any() else "mixed"
    return {"phase": phase, **asdict(f), "prefill_seqs": int(is_prefill.sum()),
            "prefill_tokens": int(chunk[is_prefill].sum()), "decode_seqs": int((~is_prefill).sum()),
            "context_tokens": int(ctx.max())}


class Driver(Protocol):
    """What `drive_point` needs from an engine (vLLM here, the torch model in torch_harness)."""

    def prepare(self, point: Point) -> None: ...  # before each pass of a point (e.g. size a KV cache)
    def add(self, prompt_tokens: int, max_tokens: int) -> str: ...
    def step(self) -> None: ...
    def decoding(self, request_id: str) -> bool: ...  # has its prompt been computed?
    def busy(self) -> bool: ...


def drive_point(engine: Driver, point: Point) -> None:
    """Submit the point's requests and step the engine until they are all done."""
    if point.kind in ("prefill", "decode"):
        for _ in range(point.batch):
            engine.add(point.prompt, point.steps + 1)
    elif point.kind == "mixed":
        # Each running sequence must outlive all the arrivals: one token from its prefill, two steps per arrival.
        ids = [engine.add(point.prompt, 2 * len(point.new_prompts) + 2) for _ in range(point.batch)]
        while not all(engine.decoding(i) for i in ids):
            engine.step()
        for n in point.new_prompts:
            engine.add(n, 1)
            engine.step()  # running decodes + the whole new prompt
            engine.step()  # decodes alone again
    else:
        raise ValueError(f"point kind {point.kind!r}; allowed: prefill, decode, mixed")
    while engine.busy():
        engine.step()


CLEAN_PASS_RATIO = 1.25  # a pass within 25 % of the fastest one counts as undisturbed
CLEAN_PASSES = 3


def sweep_points(engine: Driver, points: list[Point], repeats: int, recorder: "StepRecorder",
                 log=print, max_repeats: int | None = None) -> None:
    """One warm-up pass over all points (rows kept as repeat -1, dropped by `frame`), then
    `repeats` passes, then more (up to `max_repeats`) while fewer than CLEAN_PASSES passes ran
    within CLEAN_PASS_RATIO of the fastest: on a machine shared with other work, a burst of
    load slows whole passes, and the fit takes each shape's fastest repeat (`step_shapes`).
    Whole passes, not back-to-back repeats of a point, so a burst hits different repeats of a
    shape at different times."""
    durations: list[float] = []
    rep = -1
    while True:
        gc.collect()  # a full collection between passes, so fewer fall inside measured steps
        t0 = time.time()
        for point in points:
            engine.prepare(point)
            recorder.context = {"point": point.label, "point_kind": point.kind, "batch_size": point.batch,
                                "prompt_tokens": point.prompt, "repeat": rep}
            drive_point(engine, point)
        took = time.time() - t0
        log(f"{'warm-up pass' if rep < 0 else f'pass {rep + 1}'}: {len(points)} points in {took:.1f} s "
            f"(load average {os.getloadavg()[0]:.2f})")
        if rep >= 0:
            durations.append(took)
        rep += 1
        clean = sum(d <= CLEAN_PASS_RATIO * min(durations) for d in durations) if durations else 0
        if rep >= repeats and (clean >= CLEAN_PASSES or rep >= (max_repeats or repeats)):
            break


@dataclass
class StepRecorder:
    """Collects step rows; `context` (point, repeat) is stamped on each. repeat -1 is warm-up."""

    context: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, seqs: list[tuple[int, int, int]], step_time_s: float, t_start_unix: float, **extra) -> None:
        if not seqs:
            return
        self.rows.append({**step_row(seqs), "step_time_s": step_time_s, **self.context,
                          "t_start_unix": t_start_unix, **extra})

    def frame(self) -> pd.DataFrame:
        """Measured rows (warm-up dropped), the fitter's columns first."""
        df = pd.DataFrame(self.rows)
        if df.empty:
            return df
        df = df[df["repeat"] >= 0].reset_index(drop=True)
        df.insert(0, "step", range(len(df)))
        first = ["phase", *FEATURES, "step_time_s"]
        # Past their resolution digits are noise that only fattens measurements.csv.
        df = df.round({"step_time_s": 9, "wall_time_s": 9, "cpu_time_s": 6, "t_start_unix": 4,
                       "vllm_iteration_ms": 4})
        return df[first + [c for c in df.columns if c not in first]]


SHAPE = ("phase", *FEATURES)
FIT_STATS = ("min", "median")


def step_shapes(measurements: pd.DataFrame, stat: str = "min") -> pd.DataFrame:
    """One row per distinct step shape (phase + the five features), its time the `stat` of its
    repeats; the rows a profile is fitted on.

    Why per shape: a held-out row is then a shape the fit never saw, not a repeat of a
    training row. Why the minimum by default: on a shared machine other processes preempt the
    engine's threads, which only ever adds time, and a burst can outlast several passes
    (seen here: a 3 ms decode step measured at 20-300 ms in 2 of 5 repeats); on a dedicated
    machine repeats agree within a few % and min and median differ by about that much.
    """
    if stat not in FIT_STATS:
        raise ValueError(f"stat {stat!r}; allowed: {list(FIT_STATS)}")
    agg = {"step_time_s": ("step_time_s", stat), "n_repeats": ("step_time_s", "size"),
           "min_s": ("step_time_s", "min"), "median_s": ("step_time_s", "median"), "max_s": ("step_time_s", "max")}
    for col in ("point", "batch_size", "prompt_tokens", "context_tokens"):
        if col in measurements.columns:
            agg[col] = (col, "first")
    return measurements.groupby(list(SHAPE), sort=False).agg(**agg).reset_index()


@dataclass(frozen=True)
class SweepResult:
    measurements: pd.DataFrame  # one row per measured step
    engine: dict[str, Any]  # what ran: engine, version, device, dtypes, block size, KV blocks, model config


# --------------------------------------------------------------------------- models

def model_config_from_catalog(name: str) -> dict[str, Any]:
    """A Hugging Face config.json for a catalog model (shape only: run it with dummy weights)."""
    from sim.catalog import resolve_model

    m = resolve_model(name, "--model")
    arch, mtype = "LlamaForCausalLM", "llama"
    if m.num_experts > 1:
        arch, mtype = "MixtralForCausalLM", "mixtral"
    elif m.name.startswith("qwen3"):
        arch, mtype = "Qwen3ForCausalLM", "qwen3"
    elif m.name.startswith("qwen2"):
        arch, mtype = "Qwen2ForCausalLM", "qwen2"
    cfg = {"architectures": [arch], "model_type": mtype, "hidden_size": m.hidden_size,
           "intermediate_size": m.ffn_size, "num_hidden_layers": m.num_layers,
           "num_attention_heads": m.num_attention_heads, "num_key_value_heads": m.num_kv_heads,
           "head_dim": m.head_dim, "vocab_size": m.vocab_size, "max_position_embeddings": m.max_context_tokens,
           "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
           "tie_word_embeddings": m.tied_embeddings, "torch_dtype": "bfloat16",
           "bos_token_id": 1, "eos_token_id": 2, "_servesim_source": f"catalog model {m.name}: {m.source}"}
    if m.num_experts > 1:
        cfg.update(num_local_experts=m.num_experts, num_experts_per_tok=m.experts_per_token)
    return cfg


def resolve_model_dir(model: str, work_dir: Path) -> tuple[Path, str]:
    """(folder with config.json, model name) for a folder path, a shipped test model
    (calibration/models/<name>) or a catalog model (its config.json is written into work_dir)."""
    p = Path(model)
    if (p / "config.json").is_file():
        return p.resolve(), p.resolve().name
    if (MODELS_DIR / model / "config.json").is_file():
        return (MODELS_DIR / model).resolve(), model
    try:
        cfg = model_config_from_catalog(model)
    except Exception as exc:
        shipped = sorted(d.name for d in MODELS_DIR.iterdir() if (d / "config.json").is_file())
        raise EngineError(f"--model {model!r}: not a folder with config.json, not a shipped test model "
                          f"({shipped}), and not a catalog model ({exc})") from None
    out = work_dir / "model" / model
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return out.resolve(), model


def device_name() -> str:
    """The accelerator as the driver names it, else the CPU model from /proc/cpuinfo. Needs torch."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Random sampling (not greedy): its per-sequence cost is part of every profile; what the server is sent
# when the profile is checked against it (calibration/vllm_server.py) must match.
SAMPLING_TEMPERATURE = 1.0

DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "fp8": "fp8", "fp8_e4m3": "fp8",
               "fp8_e5m2": "fp8"}


def short_dtype(name: str) -> str:
    name = str(name).replace("torch.", "")
    return DTYPE_SHORT.get(name, name)


# --------------------------------------------------------------------------- the subprocess

def cache_env(root: Path | None = None) -> dict[str, str]:
    """Environment for a vLLM process: no network, loopback only, caches and temp files under
    `root` (default ./.cache), values already set by the caller kept."""
    root = Path(root or os.environ.get("SERVESIM_CACHE_DIR", ".cache")).resolve()
    env = dict(os.environ)
    defaults = {"VLLM_CACHE_ROOT": root / "vllm", "TORCHINDUCTOR_CACHE_DIR": root / "inductor",
                "TMPDIR": root / "tmp", "VLLM_RPC_BASE_PATH": root / "rpc"}
    for key, path in defaults.items():
        if key not in env:
            path.mkdir(parents=True, exist_ok=True)
            env[key] = str(path)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_HOST_IP="127.0.0.1", VLLM_NO_USAGE_STATS="1",
               DO_NOT_TRACK="1", VLLM_ENABLE_V1_MULTIPROCESSING="0", PYTHONUNBUFFERED="1")
    return env


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def run_worker(cmd: list[str], log_path: Path, timeout_s: float, env: dict[str, str] | None = None) -> None:
    """Run `cmd` with stdout+stderr to `log_path`; EngineError on a non-zero exit or after
    `timeout_s` (its whole process group is terminated, then killed)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise EngineError(f"engine did not finish within {timeout_s:.0f} s and was stopped "
                              f"(log: {log_path}); last lines:\n{log_tail(log_path)}") from None
        except BaseException:  # Ctrl-C: take the engine down with us
            _stop_group(proc)
            raise
    if rc != 0:
        raise EngineError(f"engine exited with status {rc} (log: {log_path}); last lines:\n{log_tail(log_path)}")


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


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
        if not _cuda_available():
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


def serving_worker_cores(allowed: set[int] | None = None) -> list[int]:
    """The cores vLLM's CPU build gives a served single-rank model worker: its automatic binding
    (VLLM_CPU_OMP_THREADS_BIND=auto) keeps one core for the engine-core process, the highest, and
    binds the worker's OMP threads to the rest (on 2 cores: worker on core 0, engine core on core 1;
    see the server log's "OpenMP thread binding info"). SMT siblings are not told apart here."""
    cores = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    return cores[:-1] if len(cores) > 1 else cores


def cpu_worker_env(cores: list[int]) -> dict[str, str]:
    """The OpenMP settings vLLM's CPU build gives a served model worker on `cores` (its
    OMPProcessManager with GNU OpenMP): one thread per core, bound. The in-process sweep runs under
    them so that it times the engine as served, not a faster one with every core to itself."""
    ids = ",".join(str(c) for c in cores)
    return {"OMP_NUM_THREADS": str(len(cores)), "OMP_PLACES": "{" + ids + "}", "OMP_PROC_BIND": "true",
            "SERVESIM_CPU_WORKER_CORES": ids}


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


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
    kwargs = dict(model=str(model_dir), skip_tokenizer_init=True, enforce_eager=True, enable_prefix_caching=False,
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
            "enforce_eager": True, "prefix_caching": False, "sampling_temperature": SAMPLING_TEMPERATURE, "load_format": kwargs.get("load_format", "auto"),
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
