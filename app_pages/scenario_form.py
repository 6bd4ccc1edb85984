"""The scenario editor: widgets that turn a loaded scenario mapping into an edited one.

`scenario_source()` picks a shipped or uploaded file; `edit_scenario(base)` draws one
widget per editable field (each followed by an error slot for that field) and returns
the edited mapping. Fields the form does not show (inline models, empirical lengths,
trace paths, ...) pass through from the file unchanged.
"""
from __future__ import annotations

import copy
import hashlib
from typing import Any

import pandas as pd
import streamlit as st

from app_pages import common as c
from sim.catalog import gpu_catalog, model_catalog
from sim.configio import ConfigError
from sim.scenario import DEFAULT_SCENARIO

KEY = "f."  # prefix of every form widget key: cleared when another file is loaded
POLICIES = ["continuous", "priority", "static", "fifo"]
WEIGHT_DTYPES = ["bf16", "fp16", "fp8", "int8", "int4"]
KV_DTYPES = ["bf16", "fp16", "fp8", "int8"]
TP_SIZES = [1, 2, 4, 8, 16]
ARRIVALS = {"poisson": "Poisson (rate)", "gamma": "Gamma (bursty rate)", "daily": "Daily volume (hourly shape)",
            "closed_loop": "Closed loop (fixed clients)", "trace": "Trace replay (from the file)"}
LENGTHS = {"lognormal": "lognormal", "uniform": "uniform", "constant": "constant", "empirical": "empirical (from the file)"}

# Relative traffic per clock hour (0..23); the daily arrival process normalises them.
DAILY_SHAPES: dict[str, list[float] | None] = {
    "flat": None,
    "business hours": [1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 10, 9, 10, 10, 9, 8, 6, 4, 3, 2, 2, 1, 1],
    "evening peak": [3, 2, 1, 1, 1, 1, 2, 3, 4, 4, 5, 5, 6, 5, 5, 5, 6, 7, 8, 10, 10, 9, 7, 5],
}


def k(path: str) -> str:
    return KEY + path


def _get(d: dict, path: str, default: Any = None) -> Any:
    node: Any = d
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _select(label: str, options: list, default: Any, path: str, fe: c.FieldErrors, fmt=None, **kw) -> Any:
    if default is not None and default not in options:
        options = [default] + list(options)  # keep the file's value, so the core names what is wrong with it
    index = options.index(default) if default in options else 0
    value = st.selectbox(label, options, index=index, key=k(path), format_func=fmt or str, **kw)
    fe.slot(path)
    return value


def _number(label: str, default: Any, path: str, fe: c.FieldErrors, **kw) -> Any:
    value = st.number_input(label, value=default, key=k(path), **kw)
    fe.slot(path)
    return value


# --- source ------------------------------------------------------------------------

def scenario_source(fe: c.FieldErrors) -> tuple[dict, str | None, str]:
    """(raw mapping, base folder for relative paths, label) of the shipped or uploaded scenario.

    Loading another file resets the form to that file's values.
    """
    names = c.shipped_scenario_names()
    col1, col2 = st.columns(2)
    pick = col1.selectbox("Shipped scenario", names, index=names.index(DEFAULT_SCENARIO), key="source.shipped")
    with col2:
        upload = st.file_uploader("…or upload a scenario (YAML)", type=["yaml", "yml"], key="source.upload")
        fe.slot("source")
    data, base_dir, label = None, str(c.shipped_dir()), pick
    if upload is not None:
        raw = upload.getvalue()
        try:
            data = c.parse_uploaded_yaml(raw, upload.name)
            base_dir, label = None, upload.name
            source_id = "upload:" + hashlib.sha1(raw).hexdigest()
        except ConfigError as exc:
            fe.slots["source"].error(f"{exc} — showing {pick} instead", icon=":material/error:")
    if data is None:
        data = c.load_shipped(pick)
        source_id = "shipped:" + pick
    if st.session_state.get("source.loaded") != source_id:
        for key in [key for key in st.session_state if str(key).startswith(KEY)]:
            del st.session_state[key]
        st.session_state["source.loaded"] = source_id
    return data, base_dir, label


# --- sections ----------------------------------------------------------------------

def _arrival(base: dict, fe: c.FieldErrors) -> dict:
    arr = _get(base, "workload.arrival", {}) or {}
    kinds = [x for x in ARRIVALS if x != "trace" or arr.get("kind") == "trace"]
    kind = _select("Arrivals", kinds, arr.get("kind", "poisson"), "workload.arrival.kind", fe, fmt=ARRIVALS.get)
    out: dict[str, Any] = {"kind": kind}
    p = "workload.arrival."
    default_rate = float(arr.get("rate_per_s") or (arr.get("queries_per_day") or 86400 * 4) / 86400)
    if kind in ("poisson", "gamma"):
        out["rate_per_s"] = _number("Request rate (req/s)", default_rate, p + "rate_per_s", fe, min_value=0.0, step=0.5)
    if kind == "gamma":
        out["cv"] = _number("Burstiness (coefficient of variation; 1 = Poisson)", float(arr.get("cv") or 2.0),
                            p + "cv", fe, min_value=0.0, step=0.25)
    if kind == "daily":
        qpd = float(arr.get("queries_per_day") or round(default_rate * 86400))
        out["queries_per_day"] = _number("Queries per day", qpd, p + "queries_per_day", fe, min_value=0.0, step=10000.0,
                                         format="%.0f")
        shapes = list(DAILY_SHAPES) + (["from the file"] if arr.get("hourly_weights") else [])
        shape = _select("Daily shape", shapes, "from the file" if arr.get("hourly_weights") else "flat",
                        p + "hourly_weights", fe)
        weights = arr.get("hourly_weights") if shape == "from the file" else DAILY_SHAPES[shape]
        if weights is not None:
            out["hourly_weights"] = [float(w) for w in weights]
        peak = int(max(range(24), key=lambda h: weights[h])) if weights else 0
        hours = arr.get("hours") or [peak]
        lo, hi = st.slider("Hours of the day to simulate", 0, 23, (int(min(hours)), int(max(hours))), key=k(p + "hours"))
        fe.slot(p + "hours")
        out["hours"] = list(range(lo, hi + 1))
        share = (weights[lo] / sum(weights)) if weights else 1 / 24
        st.caption(f"Offered rate in hour {lo}: {out['queries_per_day'] * share / 3600:,.2f} req/s. "
                   "The run stops at the request count below, so it covers the start of that hour.")
    if kind == "closed_loop":
        out["concurrency"] = _number("Concurrent clients", int(arr.get("concurrency") or 16), p + "concurrency", fe,
                                     min_value=0, step=1)
        out["think_time_s"] = _number("Think time between requests (s)", float(arr.get("think_time_s") or 0.0),
                                      p + "think_time_s", fe, min_value=0.0, step=0.5)
    if kind == "trace":
        out["path"] = arr.get("path")
        out["time_scale"] = _number("Time scale (0.5 = twice as fast)", float(arr.get("time_scale", 1.0)),
                                    p + "time_scale", fe, min_value=0.0, step=0.1)
        st.caption(f"Replays `{arr.get('path')}` (prompt and output lengths come from the trace).")
        fe.slot(p + "path")
    fe.slot("workload.arrival")
    return out


def _length(label: str, path: str, base: dict | None, fe: c.FieldErrors) -> dict:
    base = base or {"kind": "lognormal", "mean": 256, "sigma": 0.6, "min": 1, "max": 1024}
    kinds = [x for x in LENGTHS if x != "empirical" or base.get("kind") == "empirical"]
    kind = _select(f"{label} tokens", kinds, base.get("kind"), path + ".kind", fe, fmt=LENGTHS.get)
    mean = float(base.get("mean") or base.get("value") or ((base.get("min") or 1) + (base.get("max") or 1)) / 2)
    hi = int(base.get("max") or max(int(2 * mean), 1))
    lo = int(base.get("min") or 1)
    if kind == "constant":
        return {"kind": kind, "value": _number("tokens", int(base.get("value") or round(mean)),
                                               path + ".value", fe, min_value=0, step=1)}
    if kind == "empirical":
        st.caption(f"{len(base.get('values') or [])} lengths from the file.")
        return dict(base)
    cols = st.columns(4 if kind == "lognormal" else 2)
    out: dict[str, Any] = {"kind": kind}
    if kind == "lognormal":
        with cols[2]:
            out["mean"] = _number("mean", mean, path + ".mean", fe, min_value=0.0, step=16.0, format="%.0f")
        with cols[3]:
            out["sigma"] = _number("sigma", float(base.get("sigma") or 0.6), path + ".sigma", fe,
                                   min_value=0.0, step=0.1)
    with cols[0]:
        out["min"] = _number("min", lo, path + ".min", fe, min_value=0, step=1)
    with cols[1]:
        out["max"] = _number("max", hi, path + ".max", fe, min_value=0, step=64)
    return out


def _priorities(base: dict, fe: c.FieldErrors) -> list[dict]:
    rows = _get(base, "workload.priorities", []) or []
    df = pd.DataFrame(rows, columns=["name", "share", "level"]).astype({"name": str, "share": float, "level": int})
    edited = st.data_editor(df, num_rows="dynamic", key=k("workload.priorities"), width="stretch",
                            column_config={"share": st.column_config.NumberColumn(format="%.2f"),
                                           "level": st.column_config.NumberColumn(help="0 is the most urgent")})
    fe.slot("workload.priorities")
    out = []
    for row in edited.to_dict("records"):
        if pd.isna(row.get("name")) and pd.isna(row.get("share")):
            continue  # an empty row the editor added
        out.append({"name": "" if pd.isna(row.get("name")) else str(row["name"]),
                    "share": float(row["share"]) if pd.notna(row.get("share")) else 0.0,
                    "level": int(row["level"]) if pd.notna(row.get("level")) else 0})
    return out


def _workload(base: dict, fe: c.FieldErrors) -> dict:
    w = copy.deepcopy(base.get("workload") or {})
    out = dict(w)
    out["arrival"] = _arrival(base, fe)
    from_file = w.get("num_requests")
    default_n = min(int(from_file), c.UI_MAX_REQUESTS) if from_file else c.UI_MAX_REQUESTS
    if out["arrival"]["kind"] == "trace" and not from_file:
        default_n = c.UI_MAX_REQUESTS
    out["num_requests"] = _number("Requests to simulate", default_n, "workload.num_requests", fe, min_value=0, step=100)
    if from_file and from_file > out["num_requests"]:
        st.caption(f"The file asks for {from_file:,} requests; the UI simulates {out['num_requests']:,} "
                   "so a run takes about a second (raise it here, or use the CLI for the full run).")
    if out["arrival"]["kind"] == "trace":
        out.pop("prompt_tokens", None)
        out.pop("output_tokens", None)
    else:
        out["prompt_tokens"] = _length("Prompt", "workload.prompt_tokens", w.get("prompt_tokens"), fe)
        fe.slot("workload.prompt_tokens")
        out["output_tokens"] = _length("Output", "workload.output_tokens", w.get("output_tokens"), fe)
        fe.slot("workload.output_tokens")
    st.markdown("**Priority mix** (optional; shares sum to 1, level 0 is most urgent)")
    priorities = _priorities(base, fe)
    if priorities:
        out["priorities"] = priorities
    else:
        out.pop("priorities", None)
    fe.slot("workload")
    return out


def _catalog_select(label: str, catalog: dict, current, path: str, fe: c.FieldErrors):
    """A catalog name picker; an inline mapping from the file stays selectable as itself."""
    names = sorted(catalog)
    inline = "(inline, from the file)"
    if isinstance(current, dict):
        names = [inline] + names
    chosen = _select(label, names, inline if isinstance(current, dict) else str(current).lower(), path, fe)
    return current if chosen == inline else chosen


def _model_and_hardware(base: dict, data: dict, fe: c.FieldErrors) -> None:
    data["model"] = _catalog_select("Model", model_catalog(), base.get("model", "llama-3.1-8b"), "model", fe)
    hw = dict(base.get("hardware") or {})
    hw["gpu"] = _catalog_select("GPU", gpu_catalog(), hw.get("gpu", "a100-80gb-sxm"), "hardware.gpu", fe)
    serving = data["serving"]
    cols = st.columns(2)
    with cols[0]:
        serving["replicas"] = _number("Replicas", int(serving.get("replicas", 1)), "serving.replicas", fe,
                                      min_value=0, step=1)
    with cols[1]:
        serving["tensor_parallel"] = _select("GPUs per replica (TP)", TP_SIZES, int(serving.get("tensor_parallel", 1)),
                                             "serving.tensor_parallel", fe)
    data["hardware"] = hw


def _scheduler(data: dict, fe: c.FieldErrors) -> None:
    serving = data["serving"]
    sched = dict(serving.get("scheduler") or {})
    p = "serving.scheduler."
    cols = st.columns(2)
    with cols[0]:
        sched["policy"] = _select("Scheduler", POLICIES, sched.get("policy", "continuous"), p + "policy", fe,
                                  help="continuous: vLLM-style iteration-level batching; priority: the same ordered by "
                                       "class level; static: fixed batches; fifo: one request at a time")
    with cols[1]:
        serving["router"] = _select("Router", ["least_outstanding", "round_robin"],
                                    serving.get("router", "least_outstanding"), "serving.router", fe)
    policy = sched["policy"]
    if policy in ("continuous", "priority"):
        cols = st.columns(3)
        with cols[0]:
            sched["max_num_seqs"] = _number("Max sequences per step", int(sched.get("max_num_seqs", 256)),
                                            p + "max_num_seqs", fe, min_value=0, step=16)
        with cols[1]:
            sched["max_num_batched_tokens"] = _number("Token budget per step", int(sched.get("max_num_batched_tokens", 8192)),
                                                      p + "max_num_batched_tokens", fe, min_value=0, step=512)
        with cols[2]:
            sched["chunked_prefill"] = st.checkbox("Chunked prefill", value=bool(sched.get("chunked_prefill", True)),
                                                   key=k(p + "chunked_prefill"))
            fe.slot(p + "chunked_prefill")
    elif policy == "static":
        cols = st.columns(2)
        with cols[0]:
            sched["batch_size"] = _number("Batch size", int(sched.get("batch_size", 8)), p + "batch_size", fe,
                                          min_value=0, step=1)
        with cols[1]:
            sched["batch_timeout_s"] = _number("Batch timeout (s)", float(sched.get("batch_timeout_s", 0.05)),
                                               p + "batch_timeout_s", fe, min_value=0.0, step=0.05)
    fe.slot("serving.scheduler")
    serving["scheduler"] = sched
    max_len = serving.get("max_model_len")
    serving["max_model_len"] = _number("Max model length (tokens; empty = model context, at most 8192)",
                                       None if max_len is None else int(max_len), "serving.max_model_len", fe,
                                       min_value=0, step=1024)
    if serving["max_model_len"] is None:
        serving.pop("max_model_len")


def _quant_and_spec(data: dict, fe: c.FieldErrors) -> None:
    serving = data["serving"]
    q = dict(serving.get("quantization") or {})
    cols = st.columns(2)
    with cols[0]:
        q["weights"] = _select("Weights", WEIGHT_DTYPES, q.get("weights", "bf16"), "serving.quantization.weights", fe)
    with cols[1]:
        q["kv_cache"] = _select("KV cache", KV_DTYPES, q.get("kv_cache", "bf16"), "serving.quantization.kv_cache", fe)
    serving["quantization"] = q
    spec = serving.get("speculative") or None
    on = st.checkbox("Speculative decoding", value=spec is not None, key=k("serving.speculative.on"))
    if on:
        spec = dict(spec or {"draft_model": "llama-3.2-1b", "num_speculative_tokens": 4, "acceptance_rate": 0.7})
        cols = st.columns(3)
        p = "serving.speculative."
        drafts = sorted(model_catalog())
        with cols[0]:
            draft = spec.get("draft_model")
            if isinstance(draft, dict):
                st.caption("Inline draft model from the file.")
            else:
                spec["draft_model"] = _select("Draft model", drafts, str(draft).lower(), p + "draft_model", fe)
        with cols[1]:
            spec["num_speculative_tokens"] = _number("Draft tokens k", int(spec.get("num_speculative_tokens", 4)),
                                                     p + "num_speculative_tokens", fe, min_value=0, step=1)
        with cols[2]:
            spec["acceptance_rate"] = _number("Acceptance rate", float(spec.get("acceptance_rate", 0.7)),
                                              p + "acceptance_rate", fe, min_value=0.0, max_value=1.0, step=0.05)
        serving["speculative"] = spec
    else:
        serving.pop("speculative", None)
    fe.slot("serving.speculative")


def _cost_and_slo(base: dict, data: dict, fe: c.FieldErrors) -> None:
    cm = dict(base.get("cost_model") or {"kind": "roofline"})
    model = data.get("model")
    profiles = c.available_profiles(model if isinstance(model, str) else None,
                                    int(data["serving"].get("tensor_parallel", 1)))
    current = cm.get("profile")
    options = ["roofline (analytic, from catalog numbers)"] + list(profiles)
    if current and current not in profiles.values():
        profiles[f"{current} (from the file)"] = current
        options.append(f"{current} (from the file)")
    default = next((label for label, value in profiles.items() if value == current), options[0])
    chosen = _select("Cost model", options, default, "cost_model", fe,
                     help="Profiles are fitted on measured steps (Calibrate page); the roofline needs no "
                          "measurements. Listed: the profiles measured for this model and TP size.")
    if chosen == options[0]:
        cm.pop("profile", None)
        cm["kind"] = "roofline"
    else:
        cm = {"kind": "profile", "profile": profiles[chosen]}
    data["cost_model"] = cm
    slo = dict(base.get("slo") or {})
    cols = st.columns(3)
    for col, (name, label) in zip(cols, (("ttft_s", "SLO: TTFT (s)"), ("tpot_s", "SLO: TPOT (s)"), ("e2e_s", "SLO: E2E (s)"))):
        with col:
            value = _number(label, None if slo.get(name) is None else float(slo[name]), f"slo.{name}", fe,
                            min_value=0.0, step=0.05, help="Empty: no bound")
        if value is None:
            slo.pop(name, None)
        else:
            slo[name] = value
    data["slo"] = slo
    data["seed"] = _number("Seed", int(base.get("seed", 0)), "seed", fe, min_value=0, step=1)


def edit_scenario(base: dict, fe: c.FieldErrors) -> dict:
    """Draw the editor for `base` and return the edited mapping (not yet validated)."""
    data = copy.deepcopy(base)
    data["serving"] = dict(data.get("serving") or {})
    with st.container(border=True):
        st.subheader("Workload")
        data["workload"] = _workload(base, fe)
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
    return data
