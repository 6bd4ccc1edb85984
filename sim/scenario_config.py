"""The typed sections of a scenario (workload, model, hardware and prices, serving config, cost
model, engine, SLOs) and the checks each runs at load. Frozen dataclasses; nothing here reads a file
or simulates (sim/scenario.py loads them)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from .catalog import GIB, GpuSpec, ModelSpec, resolve_gpu, resolve_model
from .configio import MAX_SEED, require, require_range
from .cost_model import RooflineParams
from .quantization import KvDtype, WeightDtype
from .speculative import Drafter, SpeculativeConfig, check_speculative, drafter_for
from .workload_config import WorkloadConfig

SchedulerName = Literal["fifo", "static", "continuous", "priority"]

# Upper bounds on counts and sizes: far beyond any real deployment, low enough that a typo
# (an extra three zeros) gets a message instead of exhausting memory.
MAX_REPLICAS = 4096
MAX_NUM_SEQS = 65_536  # vLLM's default on big GPUs is 1024
MAX_BATCHED_TOKENS = 10_000_000
MAX_CONTEXT_TOKENS = 10_000_000
MAX_KV_BLOCKS = 1_000_000_000
MAX_SECONDS = 366 * 86_400.0  # a year of simulated time
MAX_STEP_COST_S = 10.0  # any per-step or per-sequence time
MAX_PRICE_USD_PER_GPU_HOUR = 1_000.0


@dataclass(frozen=True)
class SchedulerConfig:
    """Scheduling policy and its knobs (vLLM's names where vLLM has the knob)."""

    policy: SchedulerName = "continuous"
    max_num_seqs: int = 256  # continuous/priority: sequences in one step
    max_num_batched_tokens: int = 8192  # continuous/priority: token budget of one step
    chunked_prefill: bool = True  # continuous/priority: split long prompts across steps
    batch_size: int = 8  # static: requests per batch
    batch_timeout_s: float = 0.05  # static: wait this long for a full batch

    def validate(self, path: str) -> None:
        require_range(self.max_num_seqs, f"{path}.max_num_seqs", 1, MAX_NUM_SEQS, "sequences")
        require_range(self.max_num_batched_tokens, f"{path}.max_num_batched_tokens", 1, MAX_BATCHED_TOKENS, "tokens")
        require_range(self.batch_size, f"{path}.batch_size", 1, MAX_NUM_SEQS, "requests")
        require(self.max_num_batched_tokens >= self.max_num_seqs, f"{path}.max_num_batched_tokens",
                self.max_num_batched_tokens, f"must be >= max_num_seqs ({self.max_num_seqs}), as vLLM requires")
        require_range(self.batch_timeout_s, f"{path}.batch_timeout_s", 0.0, 3600.0, "s")


@dataclass(frozen=True)
class QuantizationConfig:
    weights: WeightDtype = "bf16"
    kv_cache: KvDtype = "bf16"


@dataclass(frozen=True)
class ServingConfig:
    replicas: int = 1
    tensor_parallel: int = 1
    router: Literal["round_robin", "least_outstanding"] = "least_outstanding"
    scheduler: SchedulerConfig = SchedulerConfig()
    quantization: QuantizationConfig = QuantizationConfig()
    speculative: SpeculativeConfig | None = None
    block_size_tokens: int = 16
    gpu_memory_utilization: float | None = None  # None: the engine version's default (0.9; 0.92 from vLLM 0.20)
    max_model_len: int | None = None  # default: the model's context, capped at 8192 tokens
    overhead_gib: float = 1.0  # non-torch memory per GPU vLLM subtracts: workspaces, CUDA graphs (NCCL: memory.py)
    num_kv_blocks: int | None = None  # override the memory estimate with a measured block count
    enable_prefix_caching: bool = False  # reuse cached prompt blocks across requests, as vLLM does (sim/prefix_cache.py)
    expert_parallel: bool = False  # MoE: whole experts per GPU (vLLM --enable-expert-parallel), not sliced by TP

    def validate(self, path: str) -> None:
        require_range(self.replicas, f"{path}.replicas", 1, MAX_REPLICAS, "replicas")
        if self.enable_prefix_caching:
            require(self.speculative is None, f"{path}.enable_prefix_caching", True,
                    "not modelled together with speculative decoding; turn one off")
            require(self.scheduler.policy in ("continuous", "priority"), f"{path}.enable_prefix_caching", True,
                    f"needs scheduler policy continuous or priority (got {self.scheduler.policy!r})")
        require(self.tensor_parallel in (1, 2, 4, 8, 16), f"{path}.tensor_parallel", self.tensor_parallel,
                "allowed 1, 2, 4, 8, 16")
        require(self.block_size_tokens in (1, 8, 16, 32, 64, 128), f"{path}.block_size_tokens",
                self.block_size_tokens, "allowed 1, 8, 16, 32, 64, 128")
        require(self.gpu_memory_utilization is None or 0.05 <= self.gpu_memory_utilization <= 1.0,
                f"{path}.gpu_memory_utilization", self.gpu_memory_utilization,
                "allowed 0.05 .. 1.0, or null (the engine version's default)")
        require_range(self.max_model_len, f"{path}.max_model_len", 2, MAX_CONTEXT_TOKENS, "tokens")
        require_range(self.overhead_gib, f"{path}.overhead_gib", 0.0, 1024.0, "GiB")
        require_range(self.num_kv_blocks, f"{path}.num_kv_blocks", 1, MAX_KV_BLOCKS, "blocks")


# Knobs of the analytic roofline alone: with a profile they would change nothing, so they are an error there.
ROOFLINE_ONLY_KNOBS = ("compute_efficiency", "attention_efficiency", "memory_efficiency", "allreduce_latency_s")
# Knobs of the engine's own time: the roofline's fixed costs, or a profile's engine terms (replacing them).
ENGINE_KNOBS = ("step_overhead_s", "per_seq_overhead_s")


@dataclass(frozen=True)
class CostModelConfig:
    """`kind: auto` (default: the shipped profile that matches GPU, model, TP and weight dtype, with
    the engine's terms; the roofline where none does), `roofline` (analytic, from catalog numbers)
    or `profile: NAME|PATH` (fitted on measurements). A knob left null takes its default; a knob
    set where it cannot act is an error (sim/cost_select.py), never ignored."""

    kind: Literal["auto", "roofline", "profile"] = "auto"  # a `profile`, when given, is used whatever the kind
    profile: str | None = None
    serving_overhead: bool = True  # a profile's engine/serving terms (its `serving` section or the engine's)
    compute_efficiency: float | None = None  # roofline only; default RooflineParams.compute_efficiency
    attention_efficiency: float | None = None  # roofline only
    memory_efficiency: float | None = None  # roofline only
    step_overhead_s: float | None = None  # roofline: its fixed per-step cost; profile: replaces the engine's
    per_seq_overhead_s: float | None = None  # roofline: per sequence; profile: replaces the engine's
    allreduce_latency_s: float | None = None  # roofline only

    @property
    def uses_profile(self) -> bool:
        return self.profile is not None

    def validate(self, path: str) -> None:
        require(self.kind != "profile" or bool(self.profile), f"{path}.profile", self.profile,
                "kind: profile needs a profile name or folder")
        for name in ("compute_efficiency", "attention_efficiency", "memory_efficiency"):
            value = getattr(self, name)
            require(value is None or 0 < value <= 1, f"{path}.{name}", value, "allowed 0 < x <= 1")
        for name in ("step_overhead_s", "per_seq_overhead_s", "allreduce_latency_s"):
            require_range(getattr(self, name), f"{path}.{name}", 0.0, MAX_STEP_COST_S, "s")
        if self.profile is not None:
            for name in ROOFLINE_ONLY_KNOBS:
                require(getattr(self, name) is None, f"{path}.{name}", getattr(self, name),
                        f"applies to the roofline only; with profile {self.profile!r} it would change nothing "
                        "(remove it, or use kind: roofline)")
            for name in ENGINE_KNOBS:
                require(getattr(self, name) is None or self.serving_overhead, f"{path}.{name}",
                        getattr(self, name), "needs serving_overhead: true (it replaces the engine's own term)")

    def set_knobs(self, names: tuple[str, ...]) -> dict[str, float]:
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def roofline_params(self, defaults: RooflineParams = RooflineParams()) -> RooflineParams:
        """The roofline's parameters: the knobs set here, `defaults` for the rest."""
        names = tuple(f.name for f in dataclasses.fields(RooflineParams) if hasattr(self, f.name))
        return dataclasses.replace(defaults, **self.set_knobs(names))


@dataclass(frozen=True)
class EngineConfig:
    """The serving engine and its release: the engine's own time per step differs between releases
    by milliseconds, so a profile's engine terms are looked up by version
    (calibration/profiles/engine_terms.json; null: the version with the most data)."""

    name: Literal["vllm"] = "vllm"
    version: str | None = None
    # vLLM's async scheduling (its default from 0.14) schedules step N+1 while step N runs, so a request that
    # reaches the engine during step N is first admitted in step N+2, not N+1 (vllm/v1/engine/core.py,
    # step_with_batch_queue: a batch queue of two). True: model that one-step lag (continuous and priority
    # schedulers). Off by default until the engine terms are fitted with it (docs/gpu_vllm_h200.md, section 4).
    async_admission_lag: bool = False
    # The API server hands requests to the engine one at a time: a request that finds it idle reaches the
    # engine after this long, alone; requests that arrive while it is busy wait, take this long each, and
    # reach the engine together once it has none left (an asyncio server prepares every request it has
    # before any is sent on). So the first of a burst (a closed loop's wave) gets a step of its own and the
    # rest follow later, as vLLM's step log shows on a real server (docs/step_sequence_cpu.md). 0: requests
    # reach the engine when the client sends them (plus the cost model's request jitter). Off by default:
    # no engine terms are fitted with it.
    api_server_per_request_s: float = 0.0

    def validate(self, path: str) -> None:
        require(self.version is None or self.version.strip() != "", f"{path}.version", self.version,
                "must be a release such as '0.12.0', or null")
        require_range(self.api_server_per_request_s, f"{path}.api_server_per_request_s", 0.0, 1.0, "s")


@dataclass(frozen=True)
class SloConfig:
    """Service-level objectives; None disables a bound. Goodput counts requests meeting all bounds."""

    ttft_s: float | None = None  # per-request bound on time to first token
    tpot_s: float | None = None  # per-request bound on time per output token
    e2e_s: float | None = None  # per-request bound on end-to-end latency
    percentile: float = 99.0  # the headline percentile the planner checks against the bounds

    def validate(self, path: str) -> None:
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            require_range(getattr(self, name), f"{path}.{name}", 0.0, 86_400.0, "s, or null", lo_open=True)
        require(0 < self.percentile < 100, f"{path}.percentile", self.percentile, "allowed 0 < p < 100")


@dataclass(frozen=True)
class HardwareConfig:
    gpu: str | dict[str, Any] = "a100-80gb-sxm"
    price_usd_per_gpu_hour: float | None = None  # override the catalog's on-demand price
    price_discount: float = 0.0  # e.g. 0.6 for spot, 0.3 for a reservation; applied to the price

    def validate(self, path: str) -> None:
        require_range(self.price_usd_per_gpu_hour, f"{path}.price_usd_per_gpu_hour", 0.0,
                      MAX_PRICE_USD_PER_GPU_HOUR, "USD per GPU-hour")
        require(0 <= self.price_discount < 1, f"{path}.price_discount", self.price_discount, "allowed 0 <= d < 1")


@dataclass(frozen=True)
class SimConfig:
    max_queue_requests: int | None = None  # abort as unstable beyond this backlog (default: derived)
    max_sim_time_s: float | None = None  # hard stop on simulated time (default: arrival window x 20 + 1 h)
    record_timeseries: bool = True

    def validate(self, path: str) -> None:
        require_range(self.max_queue_requests, f"{path}.max_queue_requests", 1, 100_000_000, "requests")
        require_range(self.max_sim_time_s, f"{path}.max_sim_time_s", 0.0, MAX_SECONDS, "s", lo_open=True)


@dataclass(frozen=True)
class Scenario:
    workload: WorkloadConfig
    model: str | dict[str, Any] = "llama-3.1-8b"
    hardware: HardwareConfig = HardwareConfig()
    serving: ServingConfig = ServingConfig()
    cost_model: CostModelConfig = CostModelConfig()
    engine: EngineConfig = EngineConfig()
    slo: SloConfig = SloConfig()
    sim: SimConfig = SimConfig()
    seed: int = 0
    name: str = "scenario"
    description: str = ""
    base_dir: str | None = field(default=None, compare=False)  # folder relative paths resolve against

    def validate(self, path: str) -> None:
        require_range(self.seed, "seed", 0, MAX_SEED)
        model = self.model_spec
        self.gpu_spec  # resolve now: an unknown GPU name fails at load
        tp = self.serving.tensor_parallel
        divisors = [d for d in (1, 2, 4, 8, 16) if model.num_attention_heads % d == 0]
        require(model.num_attention_heads % tp == 0, "serving.tensor_parallel", tp,
                f"must divide {model.name}'s {model.num_attention_heads} attention heads: allowed {divisors}")
        require(not self.serving.expert_parallel or model.is_moe, "serving.expert_parallel", True,
                f"applies to mixtures of experts only; {model.name} is dense (allowed false)")
        policy = self.serving.scheduler.policy
        require(not self.engine.async_admission_lag or policy in ("continuous", "priority"),
                "engine.async_admission_lag", True,
                f"models vLLM's continuous batching; scheduler policy {policy!r} takes whole batches "
                "(allowed with continuous or priority)")
        spec = self.serving.speculative
        if spec is not None:
            check_speculative(spec, model, tp, self.serving.scheduler.policy, "serving.speculative", self.drafter)
        max_len = self.max_model_len
        require(max_len <= model.max_context_tokens, "serving.max_model_len", max_len,
                f"must be <= {model.name}'s context ({model.max_context_tokens})")
        w = self.workload
        if w.prompt_tokens is not None and w.output_tokens is not None:
            longest = w.prompt_tokens.upper_bound + w.output_tokens.upper_bound
            require(longest <= max_len, "workload.prompt_tokens.max + workload.output_tokens.max", longest,
                    f"must be <= serving.max_model_len ({max_len}); raise max_model_len or clip the lengths")
        sched = self.serving.scheduler
        if sched.policy in ("continuous", "priority") and not sched.chunked_prefill:
            require(sched.max_num_batched_tokens >= max_len, "serving.scheduler.max_num_batched_tokens",
                    sched.max_num_batched_tokens,
                    f"without chunked prefill must be >= max_model_len ({max_len}) so every prompt fits a step")

    @property
    def model_spec(self) -> ModelSpec:
        return resolve_model(self.model, "model")

    @property
    def gpu_spec(self) -> GpuSpec:
        return resolve_gpu(self.hardware.gpu, "hardware.gpu")

    @property
    def drafter(self) -> Drafter | None:
        """The speculative proposer on the GPU (a draft model or a head); None without one or for n-gram."""
        spec = self.serving.speculative
        return None if spec is None else drafter_for(spec, self.model_spec, "serving.speculative")

    @property
    def draft_spec(self) -> ModelSpec | None:
        drafter = self.drafter
        return None if drafter is None else drafter.spec

    @property
    def max_model_len(self) -> int:
        if self.serving.max_model_len is not None:
            return self.serving.max_model_len
        return min(self.model_spec.max_context_tokens, 8192)

    @property
    def gpu_memory_utilization(self) -> float:
        """serving.gpu_memory_utilization, or the default of the scenario's engine version when unset."""
        if self.serving.gpu_memory_utilization is not None:
            return self.serving.gpu_memory_utilization
        from .engine_terms import gpu_memory_utilization_default

        return gpu_memory_utilization_default(self.engine.name, self.engine.version)

    @property
    def price_usd_per_gpu_hour(self) -> float:
        base = self.hardware.price_usd_per_gpu_hour
        if base is None:
            base = self.gpu_spec.price_usd_per_gpu_hour
        return base * (1.0 - self.hardware.price_discount)

    @property
    def num_gpus(self) -> int:
        return self.serving.replicas * self.serving.tensor_parallel

    @property
    def overhead_bytes(self) -> int:
        return int(self.serving.overhead_gib * GIB)
