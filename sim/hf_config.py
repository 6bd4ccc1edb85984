"""`model:` given as a Hugging Face model: a config.json (or its folder), or a hub id such as
`meta-llama/Llama-3.1-8B-Instruct` that names a catalog model.

A config.json is read into a ModelSpec mapping (the catalog's own keys, see
sim/catalog/models.yaml for the correspondence). Its parameter count is derived from the
shape: config.json does not state it (norms and biases, < 0.1 %, are neglected).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .catalog import ModelSpec, model_catalog
from .configio import ConfigError, build, short_path, short_repr

MAX_CONFIG_BYTES = 10_000_000


def _as_file(value: str, base_dir: Path | None) -> Path | None:
    """The config.json `value` names (a file or a folder holding one), or None when it names no path."""
    p = Path(value).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    try:
        if p.is_dir():
            p = p / "config.json"
        return p if p.is_file() else None
    except (OSError, ValueError):
        return None


# Architectures whose attention normalises q and k per head (RMSNorm over head_dim) before RoPE.
_PER_HEAD_QK_NORM = ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM")


def _qk_norm(cfg: dict[str, Any]) -> str:
    """The q/k RMSNorm a config implies (catalog QK_NORMS): an explicit `use_qk_norm` with its
    `qk_norm_type` (MiniMax-M2: per_layer = over all heads together), else the architecture's own."""
    if cfg.get("use_qk_norm"):
        return "across_heads" if cfg.get("qk_norm_type") == "per_layer" else "per_head"
    return "per_head" if any(a in _PER_HEAD_QK_NORM for a in cfg.get("architectures") or ()) else "none"


def _rotary_dim(cfg: dict[str, Any], head_dim: int) -> int:
    """Channels of a head that RoPE rotates (0: all of them): `rotary_dim`, or `partial_rotary_factor`."""
    if cfg.get("rotary_dim"):
        return min(int(cfg["rotary_dim"]), head_dim)
    factor = cfg.get("partial_rotary_factor")
    return int(head_dim * float(factor)) if factor and float(factor) < 1 else 0


def spec_from_hf_config(config: dict[str, Any], name: str, path: str = "model") -> dict[str, Any]:
    """A ModelSpec mapping from a Hugging Face config.json dict (Llama-like and Mixtral/Qwen-MoE keys)."""
    cfg = dict(config.get("text_config") or {}, **{k: v for k, v in config.items() if k != "text_config"})

    def need(*keys: str) -> Any:
        for k in keys:
            if cfg.get(k) is not None:
                return cfg[k]
        raise ConfigError(f"{path}: the config.json has no {keys[0]!r}; servesim needs the model's shape "
                          f"(num_hidden_layers, hidden_size, num_attention_heads, intermediate_size, vocab_size)")

    heads = int(need("num_attention_heads", "n_head"))
    hidden = int(need("hidden_size", "n_embd", "d_model"))
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 1)
    ffn = int(cfg.get("moe_intermediate_size") if experts > 1 and cfg.get("moe_intermediate_size")
              else need("intermediate_size", "ffn_dim", "n_inner"))
    spec = {
        "name": name,
        "num_layers": int(need("num_hidden_layers", "n_layer", "num_layers")),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_kv_heads": int(cfg.get("num_key_value_heads") or heads),
        "head_dim": int(cfg.get("head_dim") or hidden // heads),
        "ffn_size": ffn,
        "vocab_size": int(need("vocab_size")),
        "max_context_tokens": int(cfg.get("max_position_embeddings") or 8192),
        "tied_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "num_experts": experts,
        "experts_per_token": int(cfg.get("num_experts_per_tok") or 1),
        "qk_norm": _qk_norm(cfg),
        "rotary_dim": _rotary_dim(cfg, int(cfg.get("head_dim") or hidden // heads)),
        "num_params": 1,  # replaced by the shape's count below
        "source": f"config.json of {name}; num_params derived from the shape",
    }
    try:
        spec["num_params"] = build(ModelSpec, spec, path).derived_num_params
    except ConfigError as exc:
        raise ConfigError(f"{path}: the config.json gives an unusable shape: {exc}") from None
    return spec


def catalog_name_for_hub_id(value: str) -> str | None:
    """The catalog model a hub id names (`meta-llama/Llama-3.1-8B-Instruct` -> llama-3.1-8b), or None."""
    base = value.rstrip("/").split("/")[-1].lower()
    base = re.sub(r"^meta-", "", base)
    best = None
    for key in model_catalog():
        if base == key or base.startswith(key + "-"):
            best = key if best is None or len(key) > len(best) else best
    return best


def resolve_model_reference(value: Any, base_dir: Path | None) -> Any:
    """`model:` as the catalog understands it: config.json paths read into a mapping, hub ids of
    catalog models mapped to the catalog name; anything else is returned unchanged."""
    if not isinstance(value, str) or value.lower() in model_catalog():
        return value
    file = _as_file(value, base_dir)
    if file is not None:
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"model: cannot read {short_path(file)}: {exc.strerror}") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"model: {short_path(file)} is over {MAX_CONFIG_BYTES:,} bytes; not a config.json")
        try:
            config = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"model: {short_path(file)} is not a JSON config.json ({type(exc).__name__})") from None
        if not isinstance(config, dict):
            raise ConfigError(f"model: {short_path(file)}: expected a JSON object, got {short_repr(config)}")
        name = file.parent.name if file.name == "config.json" else file.stem
        return spec_from_hf_config(config, name or "model")
    if "/" in value:
        name = catalog_name_for_hub_id(value)
        if name is not None:
            return name
        raise ConfigError(f"model: got {short_repr(value)}; not a catalog model and no config.json there "
                          f"(catalog models: {sorted(model_catalog())}; or give a folder with config.json)")
    return value
