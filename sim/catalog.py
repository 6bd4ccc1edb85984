"""GPU and model catalogs: plain data files (sim/catalog/*.yaml), each number with its source.

A scenario names a catalog entry (``gpu: a100-80gb-sxm``) or defines one inline
with the same keys. Adding a GPU or a model is a data edit, not a code edit.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from .configio import ConfigError, build, load_yaml, require

GIB = 1024**3
# How a model normalises its queries and keys before RoPE: not at all; per head over head_dim (Qwen3's
# q_norm/k_norm); or over all heads of q (and of k) together (MiniMax-M2's qk_norm_type per_layer), which
# under tensor parallelism sums squares across the TP group (one all-reduce per layer).
QK_NORMS = ("none", "per_head", "across_heads")


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. Rates are dense (no structured sparsity), per GPU."""

    name: str
    memory_bytes: int
    hbm_bandwidth_bytes_per_s: float
    bf16_tflops: float  # dense bf16/fp16 tensor-core rate, 1e12 FLOP/s
    fp8_tflops: float | None  # None: the GPU has no fp8 tensor cores
    int8_tops: float | None  # None: no int8 tensor cores
    interconnect: str  # e.g. "NVLink 3 (600 GB/s bidirectional)", "PCIe Gen4 x16"
    interconnect_bw_bytes_per_s: float  # per-GPU, one direction: what a ring all-reduce sees
    price_usd_per_gpu_hour: float  # on-demand list price
    price_source: str  # provider, instance type, date seen
    spec_source: str  # datasheet the hardware numbers come from
    notes: str = ""
    fp4_tflops: float | None = None  # dense fp4 (NVFP4/MXFP4) tensor-core rate; None: no fp4 tensor cores

    def validate(self, path: str) -> None:
        require(self.memory_bytes > 0, f"{path}.memory_bytes", self.memory_bytes, "must be > 0")
        require(self.hbm_bandwidth_bytes_per_s > 0, f"{path}.hbm_bandwidth_bytes_per_s",
                self.hbm_bandwidth_bytes_per_s, "must be > 0")
        require(self.bf16_tflops > 0, f"{path}.bf16_tflops", self.bf16_tflops, "must be > 0")
        require(self.interconnect_bw_bytes_per_s > 0, f"{path}.interconnect_bw_bytes_per_s",
                self.interconnect_bw_bytes_per_s, "must be > 0")
        require(self.price_usd_per_gpu_hour >= 0, f"{path}.price_usd_per_gpu_hour",
                self.price_usd_per_gpu_hour, "must be >= 0")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shape. MoE models set num_experts > 1 (ffn_size is then ONE
    expert's intermediate size; every layer routes each token to experts_per_token of them).
    Models that alternate sliding-window and full attention (gpt-oss) set sliding_window_tokens
    and num_sliding_layers: those layers keep at most the window's KV per sequence."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_size: int  # intermediate size of one (expert) MLP; gated (SwiGLU): 3 matrices
    vocab_size: int
    num_params: int  # published total parameter count
    max_context_tokens: int
    tied_embeddings: bool = False
    num_experts: int = 1
    experts_per_token: int = 1
    sliding_window_tokens: int = 0  # window of the sliding-window layers (0: none)
    num_sliding_layers: int = 0  # how many of num_layers use it
    unquantized_params: int = 0  # params a quantised checkpoint keeps in 16 bit besides embeddings (e.g. attention)
    qk_norm: str = "none"  # RMSNorm of q and k before RoPE, one of QK_NORMS
    rotary_dim: int = 0  # channels of each head that RoPE rotates (0: all head_dim of them)
    source: str = ""

    def validate(self, path: str) -> None:
        for field in ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim",
                      "ffn_size", "vocab_size", "num_params", "max_context_tokens", "num_experts",
                      "experts_per_token"):
            value = getattr(self, field)
            require(value > 0, f"{path}.{field}", value, "must be a positive integer")
        require(self.num_attention_heads % self.num_kv_heads == 0, f"{path}.num_kv_heads", self.num_kv_heads,
                f"must divide num_attention_heads ({self.num_attention_heads})")
        require(self.experts_per_token <= self.num_experts, f"{path}.experts_per_token",
                self.experts_per_token, f"must be <= num_experts ({self.num_experts})")
        require(0 <= self.num_sliding_layers < self.num_layers, f"{path}.num_sliding_layers",
                self.num_sliding_layers, f"must be in [0, num_layers ({self.num_layers}))")
        require((self.sliding_window_tokens > 0) == (self.num_sliding_layers > 0), f"{path}.sliding_window_tokens",
                self.sliding_window_tokens, "must be > 0 exactly when num_sliding_layers > 0")
        require(0 <= self.unquantized_params < self.num_params, f"{path}.unquantized_params",
                self.unquantized_params, f"must be in [0, num_params ({self.num_params}))")
        require(self.qk_norm in QK_NORMS, f"{path}.qk_norm", self.qk_norm, f"must be one of {list(QK_NORMS)}")
        require(0 <= self.rotary_dim <= self.head_dim, f"{path}.rotary_dim", self.rotary_dim,
                f"must be in [0, head_dim ({self.head_dim})] (0: all of head_dim)")

    # Parameter counts derived from the shape (used for FLOPs; num_params for memory).
    @property
    def attention_params_per_layer(self) -> int:
        q_and_o = 2 * self.hidden_size * self.num_attention_heads * self.head_dim
        k_and_v = 2 * self.hidden_size * self.num_kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def expert_params(self) -> int:
        """Parameters of one gated MLP (gate, up, down)."""
        return 3 * self.hidden_size * self.ffn_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def derived_num_params(self) -> int:
        """Total parameters from the shape (norms and router neglected, < 0.1 %)."""
        per_layer = self.attention_params_per_layer + self.num_experts * self.expert_params
        return self.num_layers * per_layer + self.embedding_params

    @property
    def active_linear_params(self) -> int:
        """Matmul parameters one token passes through, excluding the LM head and embedding."""
        per_layer = self.attention_params_per_layer + self.experts_per_token * self.expert_params
        return self.num_layers * per_layer

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def active_params(self) -> int:
        """Parameters one token passes through (attention, experts_per_token experts, LM head), as model cards
        count "active" (the input embedding is a lookup, not a matmul)."""
        return self.active_linear_params + self.lm_head_params

    @property
    def num_full_attention_layers(self) -> int:
        """Layers whose KV grows with the context (the rest keep a sliding window)."""
        return self.num_layers - self.num_sliding_layers


def _load(filename: str) -> dict[str, dict[str, Any]]:
    text = resources.files("sim").joinpath("catalog", filename).read_text()
    return load_yaml(text, f"sim/catalog/{filename}") or {}  # the scenario files' loader: libyaml's parser


@lru_cache(maxsize=None)
def gpu_catalog() -> dict[str, GpuSpec]:
    """All catalog GPUs by lower-case name. Cached: the files are package data and never change."""
    return {name: build(GpuSpec, {"name": name, **entry}, f"gpus.yaml:{name}") for name, entry in _load("gpus.yaml").items()}


@lru_cache(maxsize=None)
def model_catalog() -> dict[str, ModelSpec]:
    return {name: build(ModelSpec, {"name": name, **entry}, f"models.yaml:{name}")
            for name, entry in _load("models.yaml").items()}


def _resolve(value: str | dict, path: str, cls: type, catalog: dict, noun: str):
    """A catalog name (case-insensitive) or an inline mapping with `cls`'s keys."""
    if isinstance(value, dict):
        return build(cls, {"name": "inline", **value}, path)
    key = str(value).lower()
    if key not in catalog:
        raise ConfigError(f"{path}: unknown {noun} {value!r}; catalog {noun}s: {sorted(catalog)} "
                          f"(or give an inline mapping with {cls.__name__}'s keys)")
    return catalog[key]


def resolve_gpu(value: str | dict, path: str) -> GpuSpec:
    return _resolve(value, path, GpuSpec, gpu_catalog(), "GPU")


def resolve_model(value: str | dict, path: str) -> ModelSpec:
    return _resolve(value, path, ModelSpec, model_catalog(), "model")
