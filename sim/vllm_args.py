"""vLLM's engine vocabulary: a scenario's `engine_args:` and `servesim run --vllm-args "..."`.

Both name engine settings as `vllm serve` does (`max_num_seqs`, `--kv-cache-dtype fp8`, ...).
`engine_args_to_scenario` maps them onto servesim's scenario fields; a setting servesim cannot
honour is refused by name (a knob that silently does nothing would mislead), and flags that only
change how the server talks to the network or logs (host, port, API key, ...) are accepted and
have no effect on a simulation.

    vLLM engine arg          servesim field
    model                    model (catalog name, or a folder / config.json of a Hugging Face model)
    max_num_seqs             serving.scheduler.max_num_seqs
    max_num_batched_tokens   serving.scheduler.max_num_batched_tokens
    enable_chunked_prefill   serving.scheduler.chunked_prefill
    block_size               serving.block_size_tokens
    kv_cache_dtype           serving.quantization.kv_cache   (auto = the weights' dtype; fp8, fp8_e4m3, fp8_e5m2 -> fp8)
    dtype                    serving.quantization.weights    (auto/bfloat16 -> bf16, float16/half -> fp16)
    quantization             serving.quantization.weights    (fp8 methods -> fp8, AWQ/GPTQ 4-bit -> int4, ...)
    tensor_parallel_size     serving.tensor_parallel
    enable_expert_parallel   serving.expert_parallel          (MoE: whole experts per GPU)
    gpu_memory_utilization   serving.gpu_memory_utilization
    max_model_len            serving.max_model_len
    num_gpu_blocks_override  serving.num_kv_blocks
    speculative_config       serving.speculative  (method draft_model/eagle/eagle3/mtp/ngram, model,
                                                   num_speculative_tokens, synthetic acceptance; plus
                                                   servesim's acceptance keys, docs/speculative.md)

A scenario that speaks vLLM gets vLLM's defaults where vLLM has them: `max_num_seqs` and
`max_num_batched_tokens` not set anywhere take the OpenAI server's per-GPU defaults
(vllm/engine/arg_utils.py, `get_batch_defaults`): 1024 / 16384 on GPUs with >= 160 GiB,
1024 / 8192 on other GPUs with >= 70 GiB except the A100, 256 / 2048 elsewhere.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import PurePath
from typing import Any, Callable

from .configio import ConfigError, short_repr

GIB = 1024**3

_KV_DTYPES = {"auto": None, "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
              "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8"}
_DTYPES = {"auto": "bf16", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}
# vLLM quantization methods by the weight format servesim prices them as.
_QUANTIZATION = {"fp8": "fp8", "fbgemm_fp8": "fp8", "modelopt": "fp8", "fp8_per_tensor": "fp8",
                 "fp8_per_block": "fp8", "fp8_per_channel": "fp8",
                 "awq": "int4", "auto_awq": "int4", "awq_marlin": "int4", "gptq": "int4", "auto_gptq": "int4",
                 "gptq_marlin": "int4", "moe_wna16": "int4",
                 "experts_int8": "int8", "int8_per_channel_weight_only": "int8"}
# Flags of `vllm serve` that change nothing a simulation models (networking, logging, names, files).
_NO_EFFECT = {"host", "port", "api_key", "served_model_name", "uvicorn_log_level", "disable_log_requests",
              "enable_log_requests", "disable_log_stats", "trust_remote_code", "download_dir", "tokenizer",
              "revision", "tokenizer_revision", "code_revision", "chat_template", "response_role",
              "allowed_origins", "ssl_keyfile", "ssl_certfile", "root_path", "middleware", "seed",
              "load_format", "disable_uvicorn_access_log", "disable_fastapi_docs", "skip_tokenizer_init",
              "tokenizer_mode", "generation_config", "hf_token", "config_format", "max_log_len"}
_FLAG_ALIASES = {"tp": "tensor_parallel_size", "q": "quantization", "pp": "pipeline_parallel_size"}
_BOOL_FLAGS = {"enable_chunked_prefill", "enable_expert_parallel", "enable_prefix_caching", "enforce_eager", "trust_remote_code",
               "disable_log_requests", "enable_log_requests", "disable_log_stats", "skip_tokenizer_init",
               "disable_uvicorn_access_log", "disable_fastapi_docs"}
# Known to vLLM, but not modelled (yet): refused by name so a production command line is not misread.
_UNSUPPORTED = {
    "enable_prefix_caching": "prefix caching is not modelled yet; pass --no-enable-prefix-caching "
                             "(or enable_prefix_caching: false) to simulate without it",
    "enforce_eager": "servesim prices steps with CUDA graphs; eager mode is not modelled",
    "pipeline_parallel_size": "pipeline parallelism is not modelled; use tensor_parallel_size",
    "data_parallel_size": "set serving.replicas for data-parallel copies",
    "cpu_offload_gb": "CPU offload is not modelled",
    "swap_space": "servesim preempts by recompute, as vLLM v1 does; swap is not modelled",
    "scheduling_policy": "set serving.scheduler.policy (continuous = fcfs, priority)",
}


def _int(value: Any, label: str) -> int:
    """An integer; text may use vLLM's human-readable suffixes (8k = 8,000, 8K = 8,192; k/m/g/t decimal,
    K/M/G/T binary and whole numbers only, as vllm/utils/argparse_utils.py `human_readable_int`)."""
    if isinstance(value, bool):
        raise ConfigError(f"{label}: got {short_repr(value)}; expected an integer")
    if isinstance(value, str):
        text = value.strip()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmgtKMGT])", text)
        if m:
            number, suffix = m.groups()
            if suffix.islower():
                return int(float(number) * 10 ** (3 * "kmgt".index(suffix) + 3))
            if "." not in number:
                return int(number) * 2 ** (10 * "KMGT".index(suffix) + 10)
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{label}: got {short_repr(value)}; expected an integer "
                              f"(8k = 8,000 and 8K = 8,192 as vLLM reads them)") from None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise ConfigError(f"{label}: got {short_repr(value)}; expected an integer")
    return value


def _float(value: Any, label: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{label}: got {short_repr(value)}; expected a number") from None


def _bool(value: Any, label: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"{label}: got {short_repr(value)}; expected true or false")


def _choice(table: dict[str, str | None], what: str) -> Callable[[Any, str], str | None]:
    def convert(value: Any, label: str) -> str | None:
        key = str(value).strip().lower()
        if key not in table:
            raise ConfigError(f"{label}: got {short_repr(value)}; servesim models {what}: "
                              f"{', '.join(sorted(table))}")
        return table[key]
    return convert


def _synthetic_rates(length: float, k: int) -> list[float]:
    """vLLM's `synthetic_acceptance_length` as per-position rates: its minimum-variance schedule
    (every step accepts floor(L-1) or ceil(L-1) drafts), as config/speculative.py resolves it."""
    drafts = length - 1.0
    full = int(drafts)
    return ([1.0] * full + [drafts - full] + [0.0] * k)[:k]


def _speculative(value: Any, label: str) -> dict[str, Any]:
    from .speculative import ACCEPTANCE_KEYS, method_from_vllm

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"{label}: got {short_repr(value)}; expected a JSON object such as "
                              '{"model": "llama-3.2-1b", "num_speculative_tokens": 4}') from None
    if not isinstance(value, dict):
        raise ConfigError(f"{label}: got {short_repr(value)}; expected a mapping")
    vllm_keys = {"model", "method", "num_speculative_tokens", "prompt_lookup_max", "prompt_lookup_min",
                 "rejection_sample_method", "synthetic_acceptance_rates", "synthetic_acceptance_length"}
    allowed = vllm_keys | set(ACCEPTANCE_KEYS) | {"draft_layers"}
    unknown = sorted(set(value) - allowed, key=str)
    if unknown:
        raise ConfigError(f"{label}.{unknown[0]}: not modelled; servesim reads {sorted(allowed)}")
    model = value.get("model")
    method = value.get("method")
    if method is None:  # vLLM detects EAGLE heads by name, else takes a separate draft model
        name = str(model or "").lower()
        method = "eagle3" if "eagle3" in name else "eagle" if "eagle" in name else "draft_model"
    method = method_from_vllm(method, f"{label}.method")
    out: dict[str, Any] = {"method": method}
    if method == "draft_model":
        if model is None:
            raise ConfigError(f"{label}.model: missing; name the draft model (catalog name, hub id or a "
                              f"config.json folder)")
        out["draft_model"] = model
    # eagle / eagle3: `model` names the head's checkpoint; servesim prices a head of the target's shape
    # (draft_layers decoder layers). ngram: prompt_lookup_* change what is proposed, which the
    # acceptance numbers describe, not what a step costs.
    if "num_speculative_tokens" in value:
        out["num_speculative_tokens"] = _int(value["num_speculative_tokens"], f"{label}.num_speculative_tokens")
    if "draft_layers" in value:
        out["draft_layers"] = _int(value["draft_layers"], f"{label}.draft_layers")
    for key in ("acceptance_rate", "draft_acceptance_rate", "mean_acceptance_length"):
        if key in value:
            out[key] = _float(value[key], f"{label}.{key}")
    if "per_position_acceptance_rates" in value:
        out["per_position_acceptance_rates"] = value["per_position_acceptance_rates"]
    # vLLM's synthetic rejection sampler draws acceptance from given rates: the same description.
    synthetic = value.get("rejection_sample_method", "standard")
    if synthetic not in ("standard", "synthetic"):
        raise ConfigError(f"{label}.rejection_sample_method: got {short_repr(synthetic)}; servesim models "
                          f"standard and synthetic")
    for key in ("synthetic_acceptance_rates", "synthetic_acceptance_length"):
        if key in value and synthetic != "synthetic":
            raise ConfigError(f"{label}.{key}: vLLM reads it only with rejection_sample_method synthetic")
    if "synthetic_acceptance_rates" in value:
        out["per_position_acceptance_rates"] = value["synthetic_acceptance_rates"]
    if "synthetic_acceptance_length" in value:
        k = out.get("num_speculative_tokens", 4)
        length = _float(value["synthetic_acceptance_length"], f"{label}.synthetic_acceptance_length")
        if not 1.0 <= length <= k + 1:
            raise ConfigError(f"{label}.synthetic_acceptance_length: got {length}; allowed 1 .. {k + 1}")
        out["per_position_acceptance_rates"] = _synthetic_rates(length, k)
    return out


# name -> (scenario path, converter)
_MAP: dict[str, tuple[tuple[str, ...], Callable[[Any, str], Any]]] = {
    "model": (("model",), lambda v, n: str(v)),
    "max_num_seqs": (("serving", "scheduler", "max_num_seqs"), _int),
    "max_num_batched_tokens": (("serving", "scheduler", "max_num_batched_tokens"), _int),
    "enable_chunked_prefill": (("serving", "scheduler", "chunked_prefill"), _bool),
    "block_size": (("serving", "block_size_tokens"), _int),
    "kv_cache_dtype": (("serving", "quantization", "kv_cache"), _choice(_KV_DTYPES, "KV cache dtypes")),
    "dtype": (("serving", "quantization", "weights"), _choice(_DTYPES, "model dtypes")),
    "quantization": (("serving", "quantization", "weights"), _choice(_QUANTIZATION, "quantization methods")),
    "tensor_parallel_size": (("serving", "tensor_parallel"), _int),
    "enable_expert_parallel": (("serving", "expert_parallel"), _bool),
    "gpu_memory_utilization": (("serving", "gpu_memory_utilization"), _float),
    "max_model_len": (("serving", "max_model_len"), _int),
    "num_gpu_blocks_override": (("serving", "num_kv_blocks"), _int),
    "speculative_config": (("serving", "speculative"), _speculative),
}
SUPPORTED = tuple(sorted(_MAP))


def parse_vllm_args(command_line: str) -> dict[str, Any]:
    """A `vllm serve` command line (or only its flags) as an engine_args mapping of raw values.

    Accepts `vllm serve MODEL ...`, `python -m vllm.entrypoints.openai.api_server ...` or bare
    flags; `--flag value`, `--flag=value`, boolean `--flag` / `--no-flag`, and `-tp`/`-q`."""
    try:
        words = shlex.split(command_line)
    except ValueError as exc:
        raise ConfigError(f"--vllm-args: cannot split the command line ({exc})") from None
    # Drop leading environment assignments and the program: [VAR=x] vllm serve /
    # python -m vllm.entrypoints.openai.api_server (a path to either is fine too).
    while words and not words[0].startswith("-") and (
            re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0])
            or PurePath(words[0]).name in ("vllm", "serve", "python", "python3")):
        words.pop(0)
    if words[:2] and words[0] == "-m":
        words = words[2:]
    args: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-"):
            if "model" in args:
                raise ConfigError(f"--vllm-args: unexpected word {short_repr(word)} (a value without a --flag?)")
            args["model"] = word
            continue
        flag, eq, inline = word.lstrip("-").partition("=")
        name = _FLAG_ALIASES.get(flag, flag.replace("-", "_"))
        if name.startswith("no_") and name[3:] in _BOOL_FLAGS:
            if eq:
                raise ConfigError(f"--vllm-args: {word} takes no value")
            args[name[3:]] = False
            continue
        if name in _BOOL_FLAGS:
            if eq:
                args[name] = inline
            elif i < len(words) and words[i].lower() in ("true", "false"):
                args[name] = words[i]
                i += 1
            else:
                args[name] = True
            continue
        if eq:
            args[name] = inline
        elif i < len(words) and not (words[i].startswith("--") or words[i] in ("-tp", "-q", "-pp")):
            args[name] = words[i]
            i += 1
        else:
            raise ConfigError(f"--vllm-args: {word} needs a value")
    for name in args:
        known = name in _MAP or name in _NO_EFFECT or name in _UNSUPPORTED
        if not known:
            raise ConfigError(f"--vllm-args: --{name.replace('_', '-')}: unknown or not modelled; servesim reads "
                              f"{', '.join('--' + n.replace('_', '-') for n in SUPPORTED)}")
    return args


def engine_args_to_scenario(engine_args: Any, where: str = "engine_args") -> dict[str, Any]:
    """The scenario fields (a nested dict) that `engine_args` (vLLM's names) set."""
    if not isinstance(engine_args, dict):
        raise ConfigError(f"{where}: got {short_repr(engine_args)}; expected a mapping of vLLM engine args")
    out: dict[str, Any] = {}
    quant = engine_args.get("quantization")
    for raw_name, value in engine_args.items():
        name = str(raw_name).replace("-", "_")
        if name in _NO_EFFECT:
            continue
        if name in _UNSUPPORTED:
            if name == "enable_prefix_caching" and not _bool(value, f"{where}.{name}"):
                continue  # off is what servesim simulates
            label = f"{where}.{name}" if where == "engine_args" else f"{where} --{name.replace('_', '-')}"
            raise ConfigError(f"{label}: not supported: {_UNSUPPORTED[name]}")
        if name not in _MAP:
            raise ConfigError(f"{where}.{name}: unknown or not modelled; servesim reads {', '.join(SUPPORTED)}")
        if name == "dtype" and quant is not None:
            continue  # the quantization method sets the weight format
        path, convert = _MAP[name]
        label = f"{where}.{name}" if where == "engine_args" else f"{where} --{name.replace('_', '-')}"
        converted = convert(value, label)
        if name == "kv_cache_dtype" and converted is None:
            continue  # auto: the KV cache follows the weights' dtype below
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = converted
    q = out.get("serving", {}).get("quantization", {})
    dtype_named = "dtype" in engine_args or "kv_cache_dtype" in engine_args
    if "kv_cache" not in q and dtype_named and q.get("weights") in ("bf16", "fp16"):
        q["kv_cache"] = q["weights"]  # vLLM's kv_cache_dtype auto = the model dtype
    return out


def merge_engine_args(data: dict[str, Any], engine: dict[str, Any], where: str = "engine_args") -> dict[str, Any]:
    """`data` with the fields `engine` sets; a field also set directly to another value is an error."""

    def merge(base: dict, add: dict, path: str) -> dict:
        merged = dict(base)
        for key, value in add.items():
            sub = f"{path}.{key}" if path else key
            if isinstance(value, dict) and key != "speculative" and isinstance(merged.get(key), dict):
                merged[key] = merge(merged[key], value, sub)
            elif key in merged and merged[key] is not None and merged[key] != value:
                raise ConfigError(f"{sub}: set to {short_repr(merged[key])} and, through {where}, to "
                                  f"{short_repr(value)}; set it in one place")
            else:
                merged[key] = value
        return merged

    return merge(data, engine, "")


def vllm_default_limits(memory_bytes: int, gpu_name: str) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) `vllm serve` picks for a GPU when not told."""
    if memory_bytes >= 160 * GIB:
        return 1024, 16384
    if memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower():
        return 1024, 8192
    return 256, 2048


def with_vllm_default_limits(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with vLLM's per-GPU scheduler limits wherever the scenario leaves them unset."""
    from .catalog import resolve_gpu

    serving = data.get("serving") if isinstance(data.get("serving"), dict) else {}
    sched = serving.get("scheduler") if isinstance(serving.get("scheduler"), dict) else {}
    if "max_num_seqs" in sched and "max_num_batched_tokens" in sched:
        return data
    hardware = data.get("hardware") if isinstance(data.get("hardware"), dict) else {}
    gpu = resolve_gpu(hardware.get("gpu", "a100-80gb-sxm"), "hardware.gpu")
    seqs, tokens = vllm_default_limits(gpu.memory_bytes, gpu.name)
    sched = {"max_num_seqs": seqs, "max_num_batched_tokens": tokens, **sched}
    if sched.get("chunked_prefill") is False:
        # Without chunked prefill every prompt must fit one step (vLLM raises the budget to max_model_len).
        max_len = serving.get("max_model_len")
        if isinstance(max_len, int) and "max_num_batched_tokens" not in (serving.get("scheduler") or {}):
            sched["max_num_batched_tokens"] = max(tokens, max_len)
    return {**data, "serving": {**serving, "scheduler": sched}}
