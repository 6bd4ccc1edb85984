"""The model a calibration measures, as a folder with a Hugging Face config.json: a folder given by
path, a shipped test model (calibration/models/<name>), or a catalog model written out as one (shape
only: it runs with dummy weights)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .engine_process import EngineError

MODELS_DIR = Path(__file__).parent / "models"


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
