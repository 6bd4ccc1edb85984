"""A calibration sweep: drive a grid of batch compositions through an engine, one row per step.

A sweep runs a grid of *points* (a batch composition to drive through the engine) and
records every engine step it causes as one row: the five step features of
sim/cost_model.py (computed by `sim.step_features.step_features` from what the engine actually scheduled),
the step's phase and its wall time. The first pass over the grid is warm-up (the first run
of a new shape is 5-19 % slower) and is discarded; the next passes are the repeats, and a
profile is fitted on each step shape's fastest repeat (`step_shapes`, `sweep_points`).

The engine is anything with the `Driver` protocol: vLLM (calibration/vllm_harness.py) or the
torch Llama (calibration/torch_harness.py). Nothing here imports either.
"""
from __future__ import annotations

import gc
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from sim.step_features import step_features

FEATURES = ("new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs")


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


# --------------------------------------------------------------------------- what ran

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


DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "fp8": "fp8", "fp8_e4m3": "fp8",
               "fp8_e5m2": "fp8"}


def short_dtype(name: str) -> str:
    name = str(name).replace("torch.", "")
    return DTYPE_SHORT.get(name, name)
