"""Measured vLLM serving runs (aiconfigurator-core's silicon_sample.csv) as servesim scenarios.

The CSV (shipped inside the `aiconfigurator-core` wheel, read in place, never copied) holds
end-to-end serving benchmarks on real GPUs: per row a model, GPU, backend and version,
precision, TP, fixed input/output lengths (ISL/OSL), the client concurrency, and the measured
TTFT and TPOT in ms. `read_rows` keeps every vLLM row that a SHIPPED profile covers (same GPU,
model, TP and weight dtype); `scenario_for` is the same closed loop in servesim: `concurrency`
clients with no think time, every prompt exactly ISL tokens, every output exactly OSL tokens,
on one replica with vLLM's default serving settings; `simulate_row` runs it.

Used by the engine-terms fit (calibration/engine_fit.py, on the training models) and by the
validation (benchmarks/validate_silicon.py, on the held-out ones).
"""
from __future__ import annotations

import importlib.metadata
import re
from collections import Counter
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from sim.catalog import resolve_model
from sim.cost_model import CostModel
from sim.step_features import price, step_features
from sim.metrics import latency_table, summarize
from sim.configio import ConfigError
from sim.scenario import scenario_from_dict
from sim.simulation import build_memory
from sim.simulation import run as simulate

from .profile import list_shipped_profiles, load_profile

PACKAGE = "aiconfigurator-core"
CSV_NAME = "silicon_sample.csv"

# aiconfigurator's system names -> servesim catalog GPUs (sim/catalog/gpus.yaml) that have profiles.
GPUS = {"h100_sxm": "h100-sxm", "a100_sxm": "a100-80gb-sxm", "h200_sxm": "h200-sxm", "l40s": "l40s",
        "b200_sxm": "b200-sxm", "b300_sxm": "b300-sxm"}
# Hugging Face model paths in the CSV -> catalog models (sim/catalog/models.yaml) that have profiles.
MODELS = {"Qwen/Qwen3-32B": "qwen3-32b", "meta-llama/Llama-3.1-70B": "llama-3.1-70b",
          "meta-llama/Llama-3.1-70B-Instruct": "llama-3.1-70b", "meta-llama/Llama-3.1-8B": "llama-3.1-8b",
          "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b", "nvidia/Llama-3.1-8B-Instruct-FP8": "llama-3.1-8b",
          "openai/gpt-oss-120b": "gpt-oss-120b", "Qwen/Qwen3-235B-A22B-FP8": "qwen3-235b-a22b",
          "MiniMaxAI/MiniMax-M2.5": "minimax-m2.5"}
# Models whose only checkpoint is 4-bit MXFP4 (the CSV labels gpt-oss's rows fp4/nvfp4; the served
# openai/gpt-oss-120b checkpoint is MXFP4 experts with bf16 attention).
MXFP4_MODELS = {"gpt-oss-120b"}

# vLLM's defaults for the OpenAI API server on a >= 70 GiB GPU that is not an A100 (H100/H200):
# vllm/engine/arg_utils.py (`UsageContext.OPENAI_API_SERVER`: 8192 batched tokens, 1024 sequences;
# A100s get 2048 / 256, PR #17885). Block size 16 and gpu_memory_utilization 0.9 are vLLM's
# CUDA defaults; chunked prefill is always on in vLLM v1.
VLLM_H100_SERVER = {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
VLLM_A100_SERVER = {"max_num_batched_tokens": 2048, "max_num_seqs": 256}
BLOCK_SIZE_TOKENS = 16
GPU_MEMORY_UTILIZATION = 0.9
# vLLM's default --kv-cache-dtype is "auto" (the model dtype, bf16 for these checkpoints) even when
# the weights are quantised to fp8; the CSV has no KV-dtype column, so the default is assumed.
DEFAULT_KV_DTYPE = "bf16"
# Except for NVIDIA's modelopt checkpoints, whose hf_quant_config declares kv_cache_quant_algo FP8, which
# "auto" resolves to (vllm/utils/torch_utils.py resolve_kv_cache_dtype_string): rows naming one
# (nvidia/...-FP8), and fp4 rows (NVFP4 exists only as nvidia/...-NVFP4 checkpoints).
CHECKPOINT_FP8_KV_PREFIX = "nvidia/"

MIN_REQUESTS, MAX_REQUESTS, WAVES = 100, 2000, 10  # requests = clamp(WAVES * concurrency, MIN, MAX)
# How the rows were measured: `vllm bench serve --max-concurrency C --num-prompts N` at an infinite request rate
# creates all N request tasks at once behind a semaphore of C (vllm/benchmarks/serve.py, benchmark(); warm-up
# requests, if any, are gathered before the main run starts), so its first C requests reach an idle server
# together, a burst whose prompts queue for the prefill budget; and its mean TTFT is over all N requests, that
# first wave included (calculate_metrics). Later requests go out as earlier ones finish, out of phase. The CSV
# does not record N; N = 10 x C (prompts per client) is the benchmark convention assumed here
# (docs/ttft_gpu.md: on the training rows 8, 10 and 12 score alike; the measured means imply a median of 7,
# interquartile 4 .. 11).
BENCH_PROMPTS_PER_CLIENT = 10
KV_BOUND_PEAK = 0.98  # a prediction whose peak KV-block use reaches this is KV-bound (requests wait for memory)


@dataclass(frozen=True)
class Row:
    """One measured run that a shipped profile covers (times in ms, as the CSV gives them)."""

    id: str
    model: str  # catalog name
    gpu: str  # catalog name
    dtype: str  # weight dtype: bf16 | fp8 | fp4 | mxfp4
    tp: int
    isl: int
    osl: int
    concurrency: int
    concurrency_recorded: bool  # False: taken from batch_size (the source string has no silicon_concurrency)
    ttft_ms: float
    tpot_ms: float
    backend_version: str
    expert_parallel: bool = False  # MoE: whole experts per GPU (moe_ep_size = TP), not split by TP
    kv_dtype: str = DEFAULT_KV_DTYPE  # the KV dtype vLLM's "auto" picks for the row's checkpoint

    @property
    def profile(self) -> str:
        """The shipped profile of this GPU, model, TP (and expert split) and weight dtype: the one named
        exactly so, else the one that adds the checkpoint's KV dtype (`_kv<dtype>`)."""
        base = f"{self.gpu}_{self.model}_tp{self.tp}{f'_ep{self.tp}' if self.expert_parallel else ''}_{self.dtype}"
        shipped = set(list_shipped_profiles())
        if base in shipped:
            return base
        return next((n for n in sorted(shipped) if n.startswith(base + "_kv")), base)

    @property
    def setup(self) -> str:
        mark = "" if self.concurrency_recorded else "†"
        return f"{self.model} {self.dtype} TP{self.tp} {self.isl}/{self.osl} c{self.concurrency}{mark}"


# --------------------------------------------------------------------------- the data

def silicon_csv() -> Path:
    """The CSV inside the installed aiconfigurator-core package (ImportError if not installed)."""
    return Path(str(resources.files("aiconfigurator_core").joinpath("systems", CSV_NAME)))


def package_version() -> str:
    return importlib.metadata.version(PACKAGE)


def _concurrency(row: pd.Series) -> tuple[int | None, bool]:
    """Client concurrency: `silicon_concurrency=N` in the source string, else the row's batch_size.

    Where both exist they agree for every row we keep (per-replica batch = clients, one replica);
    rows without the field (Dynamo runs) fall back to batch_size, marked as assumed."""
    m = re.search(r"silicon_concurrency=(\d+)", str(row["silicon_data_source"]))
    if m:
        return int(m.group(1)), True
    b = row["batch_size"]
    return (int(b), False) if pd.notna(b) and b >= 1 else (None, False)


def _dtype(row: pd.Series, model: str | None = None) -> str | None:
    """Weight dtype with a shipped profile: fp8 (fp8 GEMMs), fp4 (NVFP4; MXFP4 for gpt-oss, whose
    checkpoint is MXFP4 whatever the CSV says) or bf16 (no precision recorded: the unquantised Hugging
    Face checkpoint served as is). int4 has no profiles."""
    p, g = row["precision"], row["gemm_quant_mode"]
    if pd.isna(p) and pd.isna(g):
        return "bf16"
    if p == "fp8" and g == "fp8":
        return "fp8"
    if p == "fp4" and g == "nvfp4":
        return "mxfp4" if model in MXFP4_MODELS else "fp4"
    return None


def _expert_split(row: pd.Series, tp: int) -> bool | None:
    """Whether a MoE row places whole experts per GPU (moe_ep_size = TP: True), splits them by TP
    (moe_tp_size = TP: False), or (None) splits them some other way than the attention's TP group."""
    mtp, mep = row["moe_tp_size"], row["moe_ep_size"]
    if pd.isna(mtp) or pd.isna(mep) or (mtp in (0, 1) and mep in (0, 1)) or (mtp == tp and mep == 1):
        return False
    if mtp == 1 and mep == tp:
        return True
    return None


def read_rows(path: Path | None = None) -> tuple[list[Row], pd.DataFrame]:
    """The rows a shipped profile covers, and a table of the rest: reason, rows, what they were.

    Each row is tested in order (backend, mode, GPU, model, dtype, parallelism, profile,
    concurrency); it is counted under the first test it fails."""
    df = pd.read_csv(path or silicon_csv())
    shipped = set(list_shipped_profiles())
    keep: list[Row] = []
    skipped: Counter = Counter()
    examples: dict[str, set] = {}

    def skip(reason: str, what: str) -> None:
        skipped[reason] += 1
        examples.setdefault(reason, set()).add(what)

    for _, r in df.iterrows():
        if r["backend"] != "vllm":
            skip("backend is not vLLM", str(r["backend"]))
            continue
        if r["mode"] != "agg":
            skip("disaggregated prefill/decode (servesim simulates aggregated replicas)", str(r["model_path"]))
            continue
        gpu = GPUS.get(r["system"])
        if gpu is None:
            skip("GPU without a shipped profile", str(r["system"]))
            continue
        model = MODELS.get(r["model_path"])
        if model is None:
            skip("model without a shipped profile", str(r["model_path"]))
            continue
        dtype = _dtype(r, model)
        if dtype is None:
            skip("precision without a shipped profile", f"{r['precision']}/{r['gemm_quant_mode']}")
            continue
        pp = r["pp_size"]
        dp = r["attention_dp_size"]
        if pd.isna(r["tp_size"]) or (pd.notna(pp) and pp != 1) or (pd.notna(dp) and dp != 1):
            skip("pipeline or attention-data parallelism", f"pp {pp} dp {dp}")
            continue
        tp = int(r["tp_size"])
        ep = _expert_split(r, tp) if resolve_model(model, "model").is_moe else False
        if ep is None:
            skip("experts split differently from the TP group (attention data parallel)",
                 f"tp {tp} moe_tp {r['moe_tp_size']:g} moe_ep {r['moe_ep_size']:g}")
            continue
        kv = "fp8" if dtype == "fp4" or str(r["model_path"]).startswith(CHECKPOINT_FP8_KV_PREFIX) else DEFAULT_KV_DTYPE
        probe = Row(id=str(r["id"]), model=model, gpu=gpu, dtype=dtype, tp=tp, isl=int(r["isl"]), osl=int(r["osl"]),
                    concurrency=1, concurrency_recorded=True, ttft_ms=0.0, tpot_ms=0.0, backend_version="not recorded",
                    expert_parallel=ep, kv_dtype=kv)
        name = probe.profile
        if name not in shipped:
            skip("no shipped profile for this GPU/model/TP/dtype", name)
            continue
        conc, recorded = _concurrency(r)
        if conc is None:
            skip("concurrency not recorded", str(r["id"]))
            continue
        try:
            build_memory(scenario_for(probe))
        except ConfigError:
            # vLLM would refuse to start with these defaults too (one max_model_len sequence's KV does not
            # fit): the run must have set a smaller --max-model-len or another KV dtype; the CSV does not say.
            skip("does not fit at vLLM's defaults (max_model_len = the model's context)", name)
            continue
        version = r["backend_version"]
        keep.append(replace(probe, concurrency=conc, concurrency_recorded=recorded,
                            ttft_ms=float(r["silicon_ttft_ms"]), tpot_ms=float(r["silicon_tpot_ms"]),
                            backend_version="not recorded" if pd.isna(version) else str(version)))
    skipped_table = pd.DataFrame([{"reason": k, "rows": v, "examples": ", ".join(sorted(examples[k])[:8])
                                   + (" ..." if len(examples[k]) > 8 else "")}
                                  for k, v in skipped.most_common()])
    keep.sort(key=lambda x: (x.model, x.dtype, x.tp, x.isl, x.osl, x.concurrency))
    return keep, skipped_table


# --------------------------------------------------------------------------- one row

def num_requests(concurrency: int) -> int:
    return int(min(max(WAVES * concurrency, MIN_REQUESTS), MAX_REQUESTS))


def _lengths(tokens: int, spread: float) -> dict:
    """`constant` at `tokens`, or `uniform` over tokens * (1 -+ spread) (same mean)."""
    if spread <= 0:
        return {"kind": "constant", "value": tokens}
    return {"kind": "uniform", "min": max(1, round(tokens * (1 - spread))), "max": round(tokens * (1 + spread))}


def engine_version(row: Row) -> str | None:
    """The row's vLLM release, None where the CSV does not record it (the engine terms' default)."""
    return None if row.backend_version == "not recorded" else row.backend_version


def scenario_for(row: Row, kv_dtype: str | None = None, requests: int | None = None, spread: float = 0.0,
                 engine_terms: bool = True, seed: int = 0, lockstep: bool = False,
                 num_kv_blocks: int | None = None):
    """The servesim scenario of one measured row (vLLM's defaults where the CSV is silent), priced by
    the row's profile with the engine terms of the row's vLLM version (`engine_terms` False: the
    profile's kernels alone). `spread` > 0 draws lengths uniformly within +-spread of ISL/OSL.
    The clients start out of phase (closed_loop's default start spread); `lockstep`: all at t = 0.
    `num_kv_blocks` replaces the memory plan's block count (what-if: the capacity a row would need)."""
    model = resolve_model(row.model, "model")
    server = VLLM_A100_SERVER if row.gpu.startswith("a100") else VLLM_H100_SERVER
    return scenario_from_dict({
        "name": row.id,
        "seed": seed,  # random: the requests' client -> engine delays (and the variant's lengths)
        "workload": {"arrival": {"kind": "closed_loop", "concurrency": row.concurrency, "think_time_s": 0.0,
                                 "start_spread_s": 0.0 if lockstep else None},
                     "num_requests": requests or num_requests(row.concurrency),
                     "prompt_tokens": _lengths(row.isl, spread), "output_tokens": _lengths(row.osl, spread)},
        "model": row.model,
        "hardware": {"gpu": row.gpu},
        "serving": {"replicas": 1, "tensor_parallel": row.tp,
                    "scheduler": {"policy": "continuous", "chunked_prefill": True,
                                  "max_num_seqs": max(server["max_num_seqs"], row.concurrency),
                                  "max_num_batched_tokens": server["max_num_batched_tokens"]},
                    "quantization": {"weights": row.dtype, "kv_cache": kv_dtype or row.kv_dtype},
                    "expert_parallel": row.expert_parallel,
                    "block_size_tokens": BLOCK_SIZE_TOKENS, "gpu_memory_utilization": GPU_MEMORY_UTILIZATION,
                    "max_model_len": model.max_context_tokens,  # vLLM's default: the model's context
                    **({"num_kv_blocks": int(num_kv_blocks)} if num_kv_blocks is not None else {})},
        "cost_model": {"profile": row.profile, "serving_overhead": engine_terms},
        "engine": {"name": "vllm", "version": engine_version(row)},
        "sim": {"record_timeseries": True},
    })


def in_decode(concurrency: int, osl: int, ttft_ms: float, tpot_ms: float) -> float:
    """Mean number of requests between their first and last token in a closed loop of `concurrency`
    clients with no think time, from its mean TTFT and TPOT (Little's law).

    Each client cycles through TTFT, then (OSL - 1) x TPOT of decoding, then sends again; so the share
    of clients decoding at any moment is the decode share of that cycle. Applies to the measurement
    and the prediction alike, so the two compare like for like. A request preempted after its first
    token still counts (it is between its first and last token): under preemption this exceeds the
    running batch. Far below `concurrency` with a long TTFT: requests waited before their first token."""
    dec = (osl - 1) * tpot_ms
    return concurrency * dec / (ttft_ms + dec) if ttft_ms + dec > 0 else float("nan")


def steady_occupancy(res, first_steady_id: int) -> dict[str, float]:
    """Time-weighted mean running and waiting sequences and KV-block share of a run's recorded
    timeseries, from the first steady-state request's arrival to the end (one replica)."""
    ts = res.timeseries
    req = res.requests
    start = float(req.loc[req["request_id"] >= first_steady_id, "arrival_s"].min()) if len(req) > first_steady_id \
        else 0.0
    t = ts["time_s"].to_numpy()
    if len(t) < 2:
        return {"pred_running_mean": float("nan"), "pred_waiting_mean": float("nan"), "pred_kv_used_mean": float("nan")}
    dt = np.diff(t, append=t[-1])  # each sample holds until the next
    keep = (t >= start) & (dt > 0)
    if not keep.any():
        keep = dt > 0
    w = dt[keep]

    def mean(col: str) -> float:
        return float((ts[col].to_numpy()[keep] * w).sum() / w.sum())

    return {"pred_running_mean": mean("running"), "pred_waiting_mean": mean("waiting"),
            "pred_kv_used_mean": mean("kv_blocks_used") / max(res.memory.num_kv_blocks, 1)}


def first_wave_ttft_ms(row: Row, kv_dtype: str | None = None, spread: float = 0.0, engine_terms: bool = True,
                       cost_model: CostModel | None = None, seed: int = 0, num_kv_blocks: int | None = None) -> float:
    """Mean TTFT (ms) of the benchmark's first wave: `concurrency` requests sent together to an idle
    server (BENCH_PROMPTS_PER_CLIENT), simulated with a second wave behind it so that the engine is as
    busy as in the run (a request that finishes early is followed by its client's next one)."""
    res = simulate(scenario_for(row, kv_dtype, 2 * row.concurrency, spread, engine_terms, seed, True, num_kv_blocks),
                   cost_model=cost_model)
    lat = latency_table(res.requests)
    return 1e3 * float(lat.loc[lat["request_id"] < row.concurrency, "ttft_s"].mean())


def bench_mean_ttft_ms(first_wave_ms: float, steady_ms: float, prompts_per_client: float) -> float:
    """The benchmark's mean TTFT over N = prompts_per_client x C requests: the first C from the burst to an
    idle server, the other N - C in steady state (BENCH_PROMPTS_PER_CLIENT)."""
    if prompts_per_client < 1:
        raise ValueError(f"prompts_per_client must be >= 1, got {prompts_per_client!r}")
    return (first_wave_ms + (prompts_per_client - 1) * steady_ms) / prompts_per_client


def simulate_row(row: Row, kv_dtype: str | None = None, requests: int | None = None,
                 spread: float = 0.0, engine_terms: bool = True, cost_model: CostModel | None = None,
                 seed: int = 0, lockstep: bool = False, num_kv_blocks: int | None = None,
                 first_wave: bool = True) -> dict:
    """Predicted TTFT/TPOT (ms) of one row: steady state (the first wave of `concurrency`
    requests, all sent at t=0, is warm-up and left out) and over all requests. `cost_model`
    replaces the scenario's (a fit trying candidate engine terms); `num_kv_blocks` the block count.
    `pred_ttft_ms` is the benchmark's mean as it was measured (`first_wave`: the first wave's burst
    to an idle server counted as one request in BENCH_PROMPTS_PER_CLIENT, bench_mean_ttft_ms; False:
    the steady state alone, `pred_ttft_steady_ms`, as before). TPOT and the rest are the steady state's."""
    res = simulate(scenario_for(row, kv_dtype, requests, spread, engine_terms, seed, lockstep, num_kv_blocks),
                   cost_model=cost_model)
    lat = latency_table(res.requests)
    steady = lat[lat["request_id"] >= row.concurrency]
    if steady.empty:
        steady = lat
    s = summarize(res)
    steady_ttft_ms, tpot_ms = 1e3 * float(steady["ttft_s"].mean()), 1e3 * float(steady["tpot_s"].mean())
    wave_ms = first_wave_ttft_ms(row, kv_dtype, spread, engine_terms, cost_model, seed, num_kv_blocks) \
        if first_wave else float("nan")
    ttft_ms = bench_mean_ttft_ms(wave_ms, steady_ttft_ms, BENCH_PROMPTS_PER_CLIENT) if first_wave else steady_ttft_ms
    return {"pred_ttft_ms": ttft_ms, "pred_ttft_steady_ms": steady_ttft_ms, "pred_ttft_first_wave_ms": wave_ms,
            "pred_ttft_p50_ms": 1e3 * float(steady["ttft_s"].median()),
            "pred_tpot_ms": tpot_ms,
            "pred_ttft_all_ms": 1e3 * float(lat["ttft_s"].mean()),
            "pred_tpot_all_ms": 1e3 * float(lat["tpot_s"].mean()),
            "pred_output_tok_per_s": float(s["output_token_throughput_per_s"]),
            "kv_peak": float(s["kv_utilisation_peak"]), "kv_capacity_tokens": int(res.memory.kv_capacity_tokens),
            "preemptions": int(s["preemptions"]), "requests": len(res.requests), "status": res.status,
            "kv_blocks": int(res.memory.num_kv_blocks),
            "pred_in_decode": in_decode(row.concurrency, row.osl, steady_ttft_ms, tpot_ms),
            **steady_occupancy(res, row.concurrency)}


def lone_prefill_ms(row: Row) -> float:
    """The profile's time for one step that prefills a single ISL-token prompt and nothing else (ms)."""
    cost = load_profile(row.profile).cost_model()
    return 1e3 * price(cost, step_features(np.array([row.isl]), np.array([0]), np.array([1])))

