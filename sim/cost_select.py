"""Which cost model a scenario gets, with which engine terms, and why.

`cost_model: auto` (the default) takes the shipped profile named
`<gpu>_<model>_tp<TP>_<weight dtype>` when there is one, and the roofline otherwise.
A profile composed from kernel tables (provenance `lower_bound: true`, no `serving` section of
its own) gets the engine's own time for the scenario's `engine:` version
(sim/engine_terms.py); a profile measured against the real server keeps its own
serving terms. Every choice is spelled out in the description the report and planner print,
and every knob that cannot act is an error (ConfigError), never ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .accuracy import composed_profile_accuracy, measured_profile_accuracy, roofline_accuracy
from .configio import ConfigError
from .cost_model import CostModel, RooflineCostModel, RooflineParams
from .scenario import ENGINE_KNOBS, ROOFLINE_ONLY_KNOBS, Scenario


ROOFLINE_OWN_SETTINGS = "roofline with settings of the scenario's own (cost_model), so its check does not apply"
LOWER_BOUND_ACCURACY = ("kernels only, no engine time: a lower bound on the step (docs/validation_gpu.md: kernels "
                        "alone vs measured vLLM runs)")


@dataclass(frozen=True)
class CostChoice:
    cost: CostModel
    name: str  # what the report prints: kind, profile, engine terms, and why
    num_kv_blocks: int | None  # a profile's measured KV block count
    kind: str  # "profile" or "roofline"
    notes: list[str] = field(default_factory=list)  # warnings the run carries (e.g. a stand-in engine version)
    label: str = ""  # the short form for tables: "auto: profile NAME + vllm 0.12.0 engine terms", "roofline", ...
    profile: str | None = None  # the profile's name or path as given (None: the roofline)
    accuracy: str = ""  # how far predictions priced like this were from measured runs (sim/accuracy.py)


def auto_profile_name(scenario: Scenario) -> str | None:
    """The shipped profile that matches the scenario's GPU, model, TP, expert split and weight dtype, if any.

    Profiles are named `<gpu>_<model>_tp<TP>[_ep<TP>]_<weight dtype>[_kv<kv dtype>]`: `_ep` marks whole
    experts per GPU (serving.expert_parallel), `_kv` the KV dtype the kernels were priced with where a
    setup ships more than one. The name without `_kv` wins, then the scenario's KV dtype, then any
    other (whose step prices attention with another KV dtype: _check_profile warns)."""
    from .profile import list_shipped_profiles

    gpu, model = scenario.gpu_spec, scenario.model_spec
    if gpu.name == "inline" or model.name == "inline":
        return None
    s = scenario.serving
    base = _expected_name(scenario).lower()
    shipped = set(list_shipped_profiles())
    for name in (base, f"{base}_kv{s.quantization.kv_cache}"):
        if name in shipped:
            return name
    return next((n for n in sorted(shipped) if n.startswith(base + "_kv")), None)


def _expected_name(scenario: Scenario) -> str:
    s = scenario.serving
    ep = f"_ep{s.tensor_parallel}" if s.expert_parallel else ""
    return (f"{scenario.gpu_spec.name}_{scenario.model_spec.name}_tp{s.tensor_parallel}{ep}_"
            f"{s.quantization.weights}")


def _check_profile(prof, scenario: Scenario, how: str) -> list[str]:
    s = scenario.serving
    model, gpu = scenario.model_spec, scenario.gpu_spec
    if prof.tensor_parallel != s.tensor_parallel:
        raise ConfigError(f"cost_model.profile: {prof.name} was measured at tensor_parallel "
                          f"{prof.tensor_parallel}, the scenario uses {s.tensor_parallel}")
    if prof.model.lower() != model.name.lower() and model.name != "inline":
        raise ConfigError(f"cost_model.profile: {prof.name} was measured for model {prof.model!r}, "
                          f"the scenario serves {model.name!r}")
    if prof.gpu is not None and gpu.name != "inline" and prof.gpu.lower() != gpu.name.lower():
        raise ConfigError(f"cost_model.profile: {prof.name} was measured on {prof.gpu!r}, "
                          f"the scenario runs on {gpu.name!r}")
    width = {"fp16": "bf16"}.get  # the same 16-bit width and tensor cores: one measurement prices both
    if width(prof.weight_dtype, prof.weight_dtype) != width(s.quantization.weights, s.quantization.weights):
        raise ConfigError(f"cost_model.profile: {prof.name} was measured with {prof.weight_dtype} weights, the "
                          f"scenario quantizes them to {s.quantization.weights} (serving.quantization.weights); "
                          f"use a {s.quantization.weights} profile or kind: roofline")
    moe = prof.provenance.get("moe") or {}
    split = "ep" if s.expert_parallel else "tp"
    if moe.get("parallel", split) != split:
        raise ConfigError(f"cost_model.profile: {prof.name} prices experts split by {moe['parallel']!r}, the scenario "
                          f"has serving.expert_parallel: {str(s.expert_parallel).lower()} ({split!r}); set "
                          f"serving.expert_parallel: {str(moe['parallel'] == 'ep').lower()} or pick another profile")
    notes = []
    if prof.provenance.get("engine") == "torch":
        notes.append(f"WARNING: cost model {how} {prof.name} was measured with servesim's eager PyTorch model "
                     "(calibrate run --engine torch: no CUDA graphs, unfused kernels), not vLLM: its steps are "
                     "slower than vLLM's, most at small batches on a GPU (Llama-3.1-8B on an H200: 18 ms per "
                     "decode step where the graph-replayed kernels take 7 ms; docs/gpu_h200.md)")
    if width(prof.kv_dtype, prof.kv_dtype) != width(s.quantization.kv_cache, s.quantization.kv_cache):
        notes.append(f"WARNING: cost model {how} {prof.name} prices attention with a {prof.kv_dtype} KV cache; the "
                     f"scenario's is {s.quantization.kv_cache} (serving.quantization.kv_cache): KV capacity follows "
                     f"the scenario, step time the profile (decode attention reads "
                     f"{'half' if prof.kv_dtype in ('fp8', 'int8') else 'twice'} the KV bytes the scenario's would)")
    return notes


def _profile_choice(scenario: Scenario, name: str, how: str) -> CostChoice:
    from .engine_terms import engine_terms
    from .profile import load_profile

    cm = scenario.cost_model
    base = Path(scenario.base_dir) if scenario.base_dir else None
    prof = load_profile(name, base_dir=base)
    notes = _check_profile(prof, scenario, how)
    blocks = prof.num_kv_blocks
    if blocks is not None and prof.block_size_tokens != scenario.serving.block_size_tokens:
        # The engine allocated a KV pool of blocks x block size tokens; keep its size in tokens
        # when the scenario pages it in other blocks (counting blocks would cut or blow it up).
        blocks = blocks * prof.block_size_tokens // scenario.serving.block_size_tokens
    roof = cm.set_knobs(ROOFLINE_ONLY_KNOBS)
    if roof:
        knob = next(iter(roof))
        raise ConfigError(f"cost_model.{knob}: {roof[knob]!r} applies to the roofline only, and cost_model {how} "
                          f"{prof.name}, where it would change nothing; remove it, or set cost_model.kind: roofline")
    desc = f"{how} {prof.name} ({prof.provenance.get('source')})"
    label = f"{how} {prof.name}"
    knobs = cm.set_knobs(ENGINE_KNOBS)
    lower_bound = bool(prof.provenance.get("lower_bound"))
    if not cm.serving_overhead:
        return CostChoice(prof.cost_model(serving=False), desc + "; bare engine step (serving_overhead: false)",
                          blocks, "profile", notes, label + " (bare)", name,
                          accuracy=(LOWER_BOUND_ACCURACY if lower_bound else measured_profile_accuracy(prof.fit)))
    if prof.serving is not None:  # measured against the real server: its own terms
        overhead = prof.serving_overhead
        desc += f" + serving overhead ({prof.serving['provenance']['source']})"
        label += " + serving overhead"
        accuracy = measured_profile_accuracy(prof.fit, prof.serving)
    elif lower_bound:  # kernels only: add the engine's time for this version
        eng = scenario.engine
        terms = engine_terms(eng.name, eng.version, gpu=prof.gpu)
        if terms is None:
            overhead = None
            notes.append(f"WARNING: no engine terms for {eng.name}; {prof.name} is a lower bound (kernels only)")
            accuracy = LOWER_BOUND_ACCURACY
        else:
            overhead = terms.overhead
            desc += f" + {terms.label} ({terms.provenance['source']})"
            label += f" + {terms.label}"
            if terms.note:
                notes.append(terms.note)
            accuracy = composed_profile_accuracy(prof.gpu, prof.model, prof.weight_dtype)
    else:
        overhead = None
        accuracy = measured_profile_accuracy(prof.fit)
    if knobs:
        accuracy = ("engine terms set in the scenario (cost_model), so the check of the fitted ones does not apply; "
                    f"with the fitted ones: {accuracy}")
        from sim.cost_model import ServingOverhead

        overhead = replace(overhead or ServingOverhead(), **knobs)
        desc += " with " + ", ".join(f"{k} = {v:g} (cost_model)" for k, v in knobs.items())
    from sim.cost_model import ProfileCostModel

    return CostChoice(ProfileCostModel(prof.coefficients, overhead), desc, blocks, "profile", notes,
                      label, name, accuracy=accuracy)


def roofline_defaults(scenario: Scenario) -> RooflineParams:
    """RooflineParams() with the fixed per-step and per-sequence cost re-derived for the scenario's
    engine version where the engine terms carry them, and that version's API-server delays (response
    latency, request jitter: the server's, however its steps are priced)."""
    from .engine_terms import engine_terms

    terms = engine_terms(scenario.engine.name, scenario.engine.version)
    p = RooflineParams()
    if terms is not None and terms.roofline_step_overhead_s is not None:
        p = replace(p, step_overhead_s=terms.roofline_step_overhead_s,
                    per_seq_overhead_s=terms.roofline_per_seq_overhead_s or 0.0)
    if terms is not None:
        p = replace(p, response_latency_s=terms.overhead.response_latency_s,
                    request_jitter_s=terms.overhead.request_jitter_s)
    return p


def select_cost_model(scenario: Scenario) -> CostChoice:
    cm = scenario.cost_model
    if cm.uses_profile:
        return _profile_choice(scenario, cm.profile, "profile")
    if cm.kind == "auto":
        name = auto_profile_name(scenario)
        if name is not None:
            return _profile_choice(scenario, name, "auto: profile")
    s = scenario.serving
    defaults = roofline_defaults(scenario)
    params = cm.roofline_params(defaults)
    accuracy = (roofline_accuracy(scenario.gpu_spec.name, scenario.model_spec.name, s.quantization.weights)
                if params == defaults else ROOFLINE_OWN_SETTINGS)
    cost = RooflineCostModel(scenario.model_spec, scenario.gpu_spec, tp=s.tensor_parallel,
                             weight_dtype=s.quantization.weights, kv_dtype=s.quantization.kv_cache, params=params)
    if cm.kind == "auto":
        why = f"auto: roofline (no shipped profile {_expected_name(scenario)})"
    else:
        why = "roofline"
    server = (f"; API server: response latency {params.response_latency_s * 1e3:.1f} ms, request jitter "
              f"{params.request_jitter_s * 1e3:.1f} ms ({scenario.engine.name} engine terms)"
              if params.response_latency_s or params.request_jitter_s else "")
    return CostChoice(cost, f"{why}; fixed step cost {params.step_overhead_s * 1e3:.2f} ms + "
                            f"{params.per_seq_overhead_s * 1e6:.0f} us/sequence{server}", None, "roofline",
                      label="auto: roofline" if cm.kind == "auto" else "roofline", accuracy=accuracy)
