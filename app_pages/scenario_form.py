"""The scenario editor: widgets that turn a loaded scenario mapping into an edited one.

`scenario_source()` (scenario_source.py) picks a shipped or uploaded file; `edit_scenario(base)`
draws one widget per editable field (form_widgets.py; each followed by an error slot for that
field), section by section (the workload's in form_workload.py), and returns the edited mapping.
Fields the form does not show (inline models, empirical lengths, trace paths, ...) pass through
from the file unchanged.
"""
from __future__ import annotations

import copy
from typing import Any, get_args

import streamlit as st

from app_pages import common as c
from app_pages import form_widgets as fw
from app_pages.form_workload import workload_section
from app_pages.profiles import available_profiles
from sim.catalog import gpu_catalog, model_catalog
from sim.quantization import KvDtype, WeightDtype

POLICIES = ["continuous", "priority", "static", "fifo"]
WEIGHT_DTYPES = list(get_args(WeightDtype))  # the formats the core's validation accepts, in its order
KV_DTYPES = list(get_args(KvDtype))
TP_SIZES = [1, 2, 4, 8, 16]


def _catalog_select(label: str, catalog: dict, current, path: str, fe: c.FieldErrors):
    """A catalog name picker; an inline mapping from the file stays selectable as itself."""
    names = sorted(catalog)
    inline = "(inline, from the file)"
    if isinstance(current, dict):
        names = [inline] + names
    chosen = fw.select(label, names, inline if isinstance(current, dict) else str(current).lower(), path, fe)
    return current if chosen == inline else chosen


def _int_or_raw(raw: Any) -> Any:
    n = fw.as_number(raw, int)
    return raw if n is None else n


def _model_and_hardware(base: dict, data: dict, fe: c.FieldErrors) -> None:
    data["model"] = _catalog_select("Model", model_catalog(), base.get("model", "llama-3.1-8b"), "model", fe)
    hw = base.get("hardware")
    hw = dict(hw) if isinstance(hw, dict) else {}
    hw["gpu"] = _catalog_select("GPU", gpu_catalog(), hw.get("gpu", "a100-80gb-sxm"), "hardware.gpu", fe)
    fe.slot("hardware")
    serving = data["serving"]
    cols = st.columns(2)
    with cols[0]:
        serving["replicas"] = fw.number("Replicas", serving.get("replicas", 1), "serving.replicas", fe, cast=int,
                                        slot=False, step=1)
    with cols[1]:
        serving["tensor_parallel"] = fw.select("GPUs per replica (TP)", TP_SIZES,
                                               _int_or_raw(serving.get("tensor_parallel", 1)),
                                               "serving.tensor_parallel", fe, slot=False)
    fe.slot("serving.replicas")
    fe.slot("serving.tensor_parallel")
    data["hardware"] = hw


def _scheduler(data: dict, fe: c.FieldErrors) -> None:
    serving = data["serving"]
    sched = serving.get("scheduler")
    sched = dict(sched) if isinstance(sched, dict) else {}
    p = "serving.scheduler."
    cols = st.columns(2)
    with cols[0]:
        sched["policy"] = fw.select("Scheduler", POLICIES, sched.get("policy", "continuous"), p + "policy", fe,
                                    slot=False,
                                    help="continuous: vLLM-style iteration-level batching; priority: the same "
                                         "ordered by class level; static: fixed batches; fifo: one request at a time")
    with cols[1]:
        serving["router"] = fw.select("Router", ["least_outstanding", "round_robin"],
                                      serving.get("router", "least_outstanding"), "serving.router", fe, slot=False)
    fe.slot(p + "policy")
    fe.slot("serving.router")
    policy = sched["policy"]
    if policy in ("continuous", "priority"):
        cols = st.columns(3)
        with cols[0]:
            sched["max_num_seqs"] = fw.number("Max sequences per step", sched.get("max_num_seqs", 256),
                                              p + "max_num_seqs", fe, cast=int, slot=False, step=16,
                                              help="At most this many requests in one batch step (vLLM max_num_seqs).")
        with cols[1]:
            sched["max_num_batched_tokens"] = fw.number("Token budget per step",
                                                        sched.get("max_num_batched_tokens", 8192),
                                                        p + "max_num_batched_tokens", fe, cast=int, slot=False,
                                                        step=512,
                                                        help="Token budget: at most this many new tokens (prefill "
                                                             "chunks plus one per decoding request) in one step "
                                                             "(vLLM max_num_batched_tokens).")
        with cols[2]:
            sched["chunked_prefill"] = fw.checkbox("Chunked prefill", bool(sched.get("chunked_prefill", True)),
                                                   p + "chunked_prefill")
        for name in ("max_num_seqs", "max_num_batched_tokens", "chunked_prefill"):
            fe.slot(p + name)
    elif policy == "static":
        cols = st.columns(2)
        with cols[0]:
            sched["batch_size"] = fw.number("Batch size", sched.get("batch_size", 8), p + "batch_size", fe, cast=int,
                                            slot=False, step=1)
        with cols[1]:
            sched["batch_timeout_s"] = fw.number("Batch timeout (s)", sched.get("batch_timeout_s", 0.05),
                                                 p + "batch_timeout_s", fe, slot=False, step=0.05)
        fe.slot(p + "batch_size")
        fe.slot(p + "batch_timeout_s")
    fe.slot("serving.scheduler")
    serving["scheduler"] = sched
    serving["max_model_len"] = fw.number("Max model length (tokens; empty = model context, at most 8192)",
                                         serving.get("max_model_len"), "serving.max_model_len", fe, cast=int, step=1024)
    if serving["max_model_len"] is None:
        serving.pop("max_model_len")


def _quant_and_spec(data: dict, fe: c.FieldErrors) -> None:
    serving = data["serving"]
    q = serving.get("quantization")
    q = dict(q) if isinstance(q, dict) else {}
    cols = st.columns(2)
    with cols[0]:
        q["weights"] = fw.select("Weights", WEIGHT_DTYPES, q.get("weights", "bf16"), "serving.quantization.weights", fe,
                                 slot=False)
    with cols[1]:
        q["kv_cache"] = fw.select("KV cache", KV_DTYPES, q.get("kv_cache", "bf16"), "serving.quantization.kv_cache", fe,
                                  slot=False)
    fe.slot("serving.quantization.weights")
    fe.slot("serving.quantization.kv_cache")
    fe.slot("serving.quantization")
    serving["quantization"] = q
    spec = serving.get("speculative") or None
    on = fw.checkbox("Speculative decoding", spec is not None, "serving.speculative.on")
    if on:
        spec = dict(spec) if isinstance(spec, dict) else {"draft_model": "llama-3.2-1b", "num_speculative_tokens": 4,
                                                          "acceptance_rate": 0.7}
        cols = st.columns(3)
        p = "serving.speculative."
        drafts = sorted(model_catalog())
        with cols[0]:
            draft = spec.get("draft_model", "llama-3.2-1b")
            if spec.get("method", "draft_model") != "draft_model":
                st.caption(f"Method {spec['method']} from the file (no separate draft model).")
            elif isinstance(draft, dict):
                st.caption("Inline draft model from the file.")
            else:
                spec["draft_model"] = fw.select("Draft model", drafts, str(draft).lower(), p + "draft_model", fe,
                                                slot=False)
        with cols[1]:
            spec["num_speculative_tokens"] = fw.number("Draft tokens k", spec.get("num_speculative_tokens", 4),
                                                       p + "num_speculative_tokens", fe, cast=int, slot=False, step=1)
        with cols[2]:
            # vLLM's own acceptance numbers (docs/speculative.md) are kept as the file gives them.
            vllm_terms = [k for k in ("draft_acceptance_rate", "mean_acceptance_length",
                                      "per_position_acceptance_rates") if k in spec]
            if vllm_terms:
                st.caption(f"Acceptance from the file: {vllm_terms[0]} = {spec[vllm_terms[0]]}")
            else:
                spec["acceptance_rate"] = fw.number("Acceptance rate", spec.get("acceptance_rate", 0.7),
                                                    p + "acceptance_rate", fe, slot=False, step=0.05)
        for name in ("draft_model", "num_speculative_tokens", "acceptance_rate", "draft_acceptance_rate",
                     "mean_acceptance_length", "per_position_acceptance_rates", "method", "draft_layers"):
            fe.slot(p + name)
        serving["speculative"] = spec
    else:
        serving.pop("speculative", None)
    fe.slot("serving.speculative")


AUTO_COST = "auto: the measured profile for this GPU, model, TP and weights, else the roofline"
ROOFLINE_COST = "roofline (analytic, from catalog numbers)"


def _cost_model(base: dict, data: dict, fe: c.FieldErrors) -> dict:
    """The cost model picker: auto (the core's default, as `servesim run` does), the roofline, or
    one of the profiles measured for this model and TP; the file's choice is the default."""
    cm = base.get("cost_model")
    cm = dict(cm) if isinstance(cm, dict) else {}
    model = data.get("model")
    tp = data["serving"].get("tensor_parallel")
    profiles = available_profiles(model if isinstance(model, str) else None,
                                  tp if isinstance(tp, int) else None)
    current = cm.get("profile")
    options = [AUTO_COST, ROOFLINE_COST] + list(profiles)
    if current and current not in profiles.values():
        profiles[f"{current} (from the file)"] = current
        options.append(f"{current} (from the file)")
    if current:
        default = next(label for label, value in profiles.items() if value == current)
    else:
        default = ROOFLINE_COST if cm.get("kind") == "roofline" else AUTO_COST
    chosen = fw.select("Cost model", options, default, "cost_model", fe,
                       help="auto: the shipped profile measured for this GPU, model, TP and weight format, with the "
                            "engine's own step terms, else the roofline (what `servesim run` does by default). "
                            "Profiles are fitted on measured steps (Calibrate page); the roofline needs no "
                            "measurements. Listed: the profiles measured for this model and TP size. The line "
                            "beside Run names the one a run uses.")
    if chosen in (AUTO_COST, ROOFLINE_COST):
        cm.pop("profile", None)
        cm["kind"] = "auto" if chosen == AUTO_COST else "roofline"
    else:
        cm = {"kind": "profile", "profile": profiles[chosen]}
    return cm


def _cost_and_slo(base: dict, data: dict, fe: c.FieldErrors) -> None:
    data["cost_model"] = _cost_model(base, data, fe)
    slo = base.get("slo")
    slo = dict(slo) if isinstance(slo, dict) else {}
    names = (("ttft_s", "SLO: TTFT (s)"), ("tpot_s", "SLO: TPOT (s)"), ("e2e_s", "SLO: E2E (s)"))
    for col, (name, label) in zip(st.columns(3), names):
        with col:
            value = fw.number(label, slo.get(name), f"slo.{name}", fe, slot=False, step=0.05, help="Empty: no bound")
        if value is None:
            slo.pop(name, None)
        else:
            slo[name] = value
    for name, _label in names:
        fe.slot(f"slo.{name}")
    fe.slot("slo")
    data["slo"] = slo
    data["seed"] = fw.number("Seed", base.get("seed", 0), "seed", fe, cast=int, step=1)


# Sections the form edits field by field. One that is not a mapping in the file goes to the core as
# the file has it (the form's defaults would answer another question), so the core names it.
SECTIONS = ["workload", "workload.arrival", "workload.prompt_tokens", "workload.output_tokens", "hardware", "serving",
            "serving.scheduler", "serving.quantization", "serving.speculative", "cost_model", "slo"]
_ABSENT = object()


def _keep_malformed(base: dict, data: dict) -> None:
    for path in SECTIONS:
        node: Any = base
        for part in path.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is _ABSENT or node is None or node is False or isinstance(node, dict):
            continue
        target = data
        *parents, leaf = path.split(".")
        for part in parents:
            target = target.setdefault(part, {}) if isinstance(target.get(part), dict) else target
        target[leaf] = node


def edit_scenario(base: dict, fe: c.FieldErrors) -> dict:
    """Draw the editor for `base` and return the edited mapping (not yet validated)."""
    data = copy.deepcopy(base)
    serving = data.get("serving")
    data["serving"] = dict(serving) if isinstance(serving, dict) else {}
    with st.container(border=True):
        st.subheader("Workload")
        data["workload"] = workload_section(base, fe)
    with st.container(border=True):
        st.subheader("Model and hardware")
        _model_and_hardware(base, data, fe)
    with st.container(border=True):
        st.subheader("Scheduler")
        _scheduler(data, fe)
    with st.container(border=True):
        st.subheader("Quantization and speculative decoding")
        _quant_and_spec(data, fe)
    with st.container(border=True):
        st.subheader("Cost model, SLO, seed")
        _cost_and_slo(base, data, fe)
    fe.slot("serving")
    _keep_malformed(base, data)
    return data
