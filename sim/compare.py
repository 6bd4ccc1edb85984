"""`servesim compare REAL.json [SCENARIO]`: a real `vllm bench serve` result against servesim's prediction.

The workload is rebuilt from the result file (see `workload_from_result`), the scenario supplies
the model, GPU and engine, and both sides are reduced to vLLM's own statistics
(sim/vllm_bench.py), so every row compares like with like:

    error % = (predicted - real) / real x 100
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .configio import ConfigError, short_path, short_repr
from .rng import stream
from .traces import vllm_result_requests
from .vllm_bench import PERCENTILE_METRICS, percentile_key
from .workload import MAX_REQUESTS, Workload, _renewal_arrivals

MAX_RESULT_BYTES = 2_000_000_000


def load_bench_result(path: str | Path) -> dict[str, Any]:
    """A `vllm bench serve --save-result` file (the last record of an --append-result file)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"REAL: cannot read {short_path(path)}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(raw) > MAX_RESULT_BYTES:
        raise ConfigError(f"REAL: {short_path(path)} is over {MAX_RESULT_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"REAL: {short_path(path)} is not UTF-8 JSON") from None

    def strict(s: str) -> Any:
        return json.loads(s, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    try:
        doc = strict(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]  # --append-result: one record a line
        try:
            doc = strict(lines[-1]) if len(lines) > 1 else None
        except ValueError:
            doc = None
        if doc is None:
            raise ConfigError(f"REAL: {short_path(path)} is not a JSON result of `vllm bench serve "
                              f"--save-result`") from None
    if not isinstance(doc, dict) or not ("completed" in doc or "start_times" in doc):
        raise ConfigError(f"REAL: {short_path(path)}: expected the JSON object `vllm bench serve --save-result` "
                          f"writes (keys completed, duration, mean_ttft_ms, ...)")
    return doc


def _count(doc: dict, key: str, lo: int, hi: int) -> int:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi \
            or v != int(v):
        raise ConfigError(f"REAL.{key}: got {short_repr(v)}; expected a whole number in {lo:,}..{hi:,}")
    return int(v)


def _rate(doc: dict) -> float:
    """request_rate: a positive number, or inf ("inf" as vLLM writes it)."""
    v = doc.get("request_rate", "inf")
    if v in ("inf", None) or (isinstance(v, float) and math.isinf(v)):
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1e6:
        raise ConfigError(f"REAL.request_rate: got {short_repr(v)}; expected a rate in req/s or \"inf\"")
    return float(v)


def _detailed(doc: dict) -> bool:
    return all(isinstance(doc.get(k), list) for k in ("start_times", "input_lens", "output_lens"))


def workload_from_result(doc: dict, seed: int) -> tuple[Workload, list[str]]:
    """The requests the real benchmark sent, and notes on what was assumed.

    Detailed file (`--save-detailed`): each successful request's prompt and output length, sent
    at its recorded start time (relative to the first), or, when the benchmark ran a closed loop
    (`max_concurrency` with request_rate inf), through that many clients in the recorded order.
    Summary only: `completed` requests of the mean lengths (total tokens / completed), sent at
    `request_rate` with vLLM's gamma gaps (shape = burstiness), all at once when the rate is inf,
    or through `max_concurrency` clients.
    """
    notes: list[str] = []
    rate = _rate(doc)
    conc = doc.get("max_concurrency")
    if conc is not None:
        conc = _count(doc, "max_concurrency", 1, 1_000_000)
    closed = conc is not None and math.isinf(rate)
    if _detailed(doc):
        start, prompt, output, failed = vllm_result_requests(doc, "REAL.", ConfigError)
        if failed:
            notes.append(f"{failed} failed request(s) in the real run left out")
        order = np.argsort(start, kind="stable")
        arrival = start[order] - start.min()
        prompt, output = prompt[order], output[order]
        notes.append(f"workload: {len(prompt)} requests with the recorded lengths"
                     + (f", through {conc} clients (closed loop, as the benchmark's max_concurrency)" if closed
                        else ", sent at the recorded start times"))
    else:
        n = _count(doc, "completed", 1, MAX_REQUESTS)
        total_in = _count(doc, "total_input_tokens", 1, 2**53)
        total_out = _count(doc, "total_output_tokens", 1, 2**53)
        p_len, o_len = max(1, round(total_in / n)), max(1, round(total_out / n))
        prompt, output = np.full(n, p_len, dtype=np.int64), np.full(n, o_len, dtype=np.int64)
        notes.append(f"workload: no per-request data (run vllm bench serve with --save-detailed for a replay); "
                     f"{n} requests of the mean lengths {p_len} in / {o_len} out tokens")
        if closed or math.isinf(rate):
            arrival = np.zeros(n)
            if not closed:
                notes.append("request_rate inf: every request sent at t = 0")
        else:
            b = doc.get("burstiness", 1.0)
            if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b <= 1e4:
                raise ConfigError(f"REAL.burstiness: got {short_repr(b)}; expected a positive number")
            arrival = _renewal_arrivals(stream(seed, "arrivals"), rate, 1.0 / math.sqrt(b), n, None)
            notes.append(f"arrivals: {rate:g} req/s, gamma gaps with burstiness {b:g} (seed {seed})")
            if conc is not None:
                notes.append(f"max_concurrency {conc} at a finite rate: the client-side cap is not simulated")
    n = len(prompt)
    priority = np.zeros(n, dtype=np.int64)
    if closed:
        wl = Workload(arrival_s=np.full(n, np.nan), prompt_tokens=prompt, output_tokens=output, priority=priority,
                      priority_names={0: "default"}, duration_s=math.inf, concurrency=conc, notes=list(notes))
    else:
        wl = Workload(arrival_s=arrival, prompt_tokens=prompt, output_tokens=output, priority=priority,
                      priority_names={0: "default"}, duration_s=float(arrival[-1]), notes=list(notes))
    return wl, notes


def _percentiles_in(doc: dict) -> tuple[float, ...]:
    """The percentiles the real file reports (p99_ttft_ms -> 99.0), 99 when none."""
    found = set()
    for key in doc:
        for m in PERCENTILE_METRICS:
            suffix = f"_{m}_ms"
            if key.startswith("p") and key.endswith(suffix):
                try:
                    found.add(float(key[1:-len(suffix)]))
                except ValueError:
                    pass
    return tuple(sorted(found)) or (99.0,)


def comparison_rows(real: dict, predicted: dict, percentiles: tuple[float, ...]) -> list[dict[str, Any]]:
    """One row per statistic both documents have: name, real, predicted, error_pct."""
    keys = ["completed", "duration", "request_throughput", "output_throughput", "total_token_throughput"]
    for m in PERCENTILE_METRICS:
        keys += [f"mean_{m}_ms", f"median_{m}_ms"] + [percentile_key(p, m) for p in percentiles if p != 50]
    rows = []
    for k in keys:
        r, p = real.get(k), predicted.get(k)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (r, p)):
            continue
        err = (p - r) / r * 100.0 if r else math.nan
        rows.append({"metric": k, "real": float(r), "predicted": float(p), "error_pct": err})
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    width = max([len(r["metric"]) for r in rows] + [6])
    lines = [f"{'metric':<{width}}  {'real':>12}  {'predicted':>12}  {'error':>8}"]
    for r in rows:
        err = "—" if not math.isfinite(r["error_pct"]) else f"{r['error_pct']:+.1f}%"
        lines.append(f"{r['metric']:<{width}}  {r['real']:>12,.2f}  {r['predicted']:>12,.2f}  {err:>8}")
    return "\n".join(lines)


def compare(real_path: str | Path, scenario, seed: int | None = None, version: str = "unknown"
            ) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """(rows, the predicted vLLM-format document, notes) for a real result and a Scenario."""
    from .simulation import run
    from .vllm_bench import bench_result

    real = load_bench_result(real_path)
    seed = scenario.seed if seed is None else seed
    workload, notes = workload_from_result(real, seed)
    model_id = real.get("model_id")
    name = scenario.model_spec.name
    if isinstance(model_id, str) and name != "inline" and model_id.rstrip("/").split("/")[-1].lower() != name.lower():
        notes.append(f"the real run served {short_repr(model_id)}; the scenario simulates {scenario.model_spec.name}")
    results = run(scenario, seed=seed, workload=workload)
    percentiles = _percentiles_in(real)
    metrics = tuple(m for m in PERCENTILE_METRICS if f"mean_{m}_ms" in real) or ("ttft", "tpot", "itl")
    traffic = (real.get("request_rate", "inf"), real.get("burstiness", 1.0), workload.concurrency)
    predicted = bench_result(results, percentiles, metrics, version=version, traffic=traffic)
    if not results.stable:
        notes.append(f"the simulated run was {results.status}")
    return comparison_rows(real, predicted, percentiles), predicted, notes
