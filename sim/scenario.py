"""Scenario files (YAML): read, override, build and write back a `Scenario`.

`load_scenario(path, overrides)` reads a file with the safe loader, applies
``--set a.b.c=value`` overrides, and builds the frozen `Scenario` (its sections are in
sim/scenario_config.py, re-exported here); every problem is one ConfigError naming the field.
Nothing here simulates.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from .configio import ConfigError, build, is_file, load_yaml, merge_mappings, set_path, short_path, to_dict
from .scenario_config import (  # noqa: F401 (the sections, re-exported: callers import them from here)
    ENGINE_KNOBS, ROOFLINE_ONLY_KNOBS, CostModelConfig, EngineConfig, HardwareConfig, QuantizationConfig, Scenario,
    SchedulerConfig, SchedulerName, ServingConfig, SimConfig, SloConfig)

DEFAULT_SCENARIO = "chat_llama3_8b_a100.yaml"


def _parse_value(text: str, key: str) -> Any:
    """`--set` values are YAML scalars or flow collections: 4, 0.5, true, null, fp8, [1, 2], {a: 1}."""
    return load_yaml(text, f"--set {key}")


def apply_override(data: dict, assignment: str) -> dict:
    """Apply one ``dotted.path=value`` to a nested dict (copying what it touches)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected path.to.key=value")
    key, text = assignment.split("=", 1)
    key = key.strip()
    if not all(key.split(".")):
        raise ConfigError(f"--set {assignment!r}: empty key segment in {key!r}")
    return set_path(data, key, _parse_value(text, key), label=f"--set {key}")


def patch_scenario(base: dict, patch: dict) -> dict:
    """A scenario mapping with `patch` merged in section by section (how tests and benchmarks build
    variants of one base); a distribution or arrival process given with its `kind` replaces the old
    one whole, since its other fields belong to that kind."""
    return merge_mappings(base, patch, lambda _key, value: "kind" in value)


def _with_engine_args(data: dict, vllm_args: str | None) -> dict:
    """`data` with its `engine_args:` (vLLM's names, sim/vllm_args.py) mapped onto scenario fields,
    then `vllm_args` (a `vllm serve` command line) applied over them, as --set is over the file."""
    from .vllm_args import engine_args_to_scenario, merge_engine_args, parse_vllm_args, with_vllm_default_limits

    data = dict(data)
    engine = data.pop("engine_args", None)
    if engine is not None:
        data = merge_engine_args(data, engine_args_to_scenario(engine))
    if vllm_args:
        fields = engine_args_to_scenario(parse_vllm_args(vllm_args), "--vllm-args")
        # A speculative section names one method; its fields replace the file's, never mix with them.
        data = merge_mappings(data, fields, lambda key, _value: key == "speculative")
    return with_vllm_default_limits(data)


COST_MODEL_SHORTHANDS = ("auto", "roofline")  # `cost_model: <kind>` for the kinds that need nothing else


def scenario_from_dict(data: dict, overrides: tuple[str, ...] | list[str] = (), base_dir: Path | None = None,
                       vllm_args: str | None = None) -> Scenario:
    from .hf_config import resolve_model_reference

    for assignment in overrides:
        data = apply_override(data, assignment)
    if isinstance(data, dict) and ("engine_args" in data or vllm_args):
        data = _with_engine_args(data, vllm_args)
    if isinstance(data, dict) and isinstance(data.get("model"), str):
        data = {**data, "model": resolve_model_reference(data["model"], base_dir)}
    if isinstance(data, dict) and isinstance(data.get("cost_model"), str):
        kind = data["cost_model"]
        if kind not in COST_MODEL_SHORTHANDS:
            raise ConfigError(f"cost_model: got {kind!r}; allowed: {', '.join(COST_MODEL_SHORTHANDS)} (short for "
                              f"{{kind: ...}}), or a mapping such as {{profile: NAME_OR_PATH}}")
        data = {**data, "cost_model": {"kind": kind}}  # `cost_model: auto` = {kind: auto}
    spec = data.get("serving", {}).get("speculative") if isinstance(data, dict) and isinstance(
        data.get("serving"), dict) else None
    if isinstance(spec, dict) and isinstance(spec.get("draft_model"), str):  # a draft as a config.json too
        draft = resolve_model_reference(spec["draft_model"], base_dir)
        data = {**data, "serving": {**data["serving"], "speculative": {**spec, "draft_model": draft}}}
    if "base_dir" in data:
        # Set by the loader from the file's folder, never by the file: a key that re-roots every
        # relative path is a surprise, not a feature.
        raise ConfigError("base_dir: unknown key; relative paths (profiles, traces) resolve against the "
                          "scenario file's folder")
    if base_dir is not None:
        data = {**data, "base_dir": str(base_dir)}
    return build(Scenario, data, "")


def _find_scenario_file(path: str | Path) -> Path:
    """The file `path` names, or the shipped scenario of that name; ConfigError if neither exists."""
    p = Path(path)
    if is_file(p):
        return p
    shipped = Path(str(resources.files("scenarios").joinpath(str(path))))
    if is_file(shipped):
        return shipped
    raise ConfigError(f"scenario: no file {short_path(path)}; shipped scenarios: {shipped_scenarios()}")


def read_scenario_file(path: str | Path) -> dict:
    """The raw mapping of a scenario file (YAML, safe loader)."""
    p = _find_scenario_file(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{short_path(p)}: cannot read: {exc.strerror}") from None
    data = load_yaml(raw, str(p))
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level (workload:, model:, ...)")
    return data


def load_scenario(path: str | Path, overrides: tuple[str, ...] | list[str] = (),
                  vllm_args: str | None = None) -> Scenario:
    data = read_scenario_file(path)
    data.pop("plan", None)  # a planning file's section for `servesim plan` (sim/plan/config.py); a run ignores it
    p = Path(path)
    base = p.parent if is_file(p) else Path(str(resources.files("scenarios")))
    try:
        return scenario_from_dict(data, overrides, base_dir=base.resolve(), vllm_args=vllm_args)
    except ConfigError as exc:
        raise ConfigError(f"{short_path(path)}: {exc}", field=exc.field) from None


def shipped_scenarios() -> list[str]:
    root = Path(str(resources.files("scenarios")))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


def scenario_to_dict(scenario: Scenario) -> dict:
    """The resolved scenario as a plain mapping (every field, defaults filled in), loadable again."""
    d = to_dict(scenario)
    d.pop("base_dir", None)
    return d


def scenario_to_yaml(scenario: Scenario) -> str:
    import yaml

    return yaml.safe_dump(scenario_to_dict(scenario), sort_keys=False)
