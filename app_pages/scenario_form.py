"""The scenario editor: widgets that turn a loaded scenario mapping into an edited one.

`scenario_source()` picks a shipped or uploaded file; `edit_scenario(base)` draws one
widget per editable field (each followed by an error slot for that field) and returns
the edited mapping. Fields the form does not show (inline models, empirical lengths,
trace paths, ...) pass through from the file unchanged.
"""
from __future__ import annotations

import copy
import hashlib
import math
from typing import Any, get_args

import pandas as pd
import streamlit as st

from app_pages import common as c
from sim.catalog import gpu_catalog, model_catalog
from sim.configio import ConfigError
from sim.quantization import KvDtype, WeightDtype
from sim.scenario import DEFAULT_SCENARIO

POLICIES = ["continuous", "priority", "static", "fifo"]
WEIGHT_DTYPES = list(get_args(WeightDtype))  # the formats the core's validation accepts, in its order
KV_DTYPES = list(get_args(KvDtype))
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

# Session state of the form (plain keys, so they outlive a visit to another page):
#   "form": {"n": generation, "values": {field path: last value}, "start": {field path: editor start data}}
#   "source": {"pick": shipped name, "upload_n": uploader generation, "loaded": {"id", "data", "base_dir", "label"}}
# Widget keys carry the generation ("f3.serving.replicas"). Loading another file starts a new
# generation: new keys are new widgets in the browser too, so none keeps the previous file's
# value (deleting a key from st.session_state resets the server side only).


def _form() -> dict:
    return st.session_state.setdefault("form", {"n": 0, "values": {}, "start": {}})


def k(path: str) -> str:
    """The widget key of a scenario field in the current form generation."""
    return f"f{_form()['n']}.{path}"


def field_of(key: str) -> str:
    """The scenario field a form widget key edits ("f3.serving.replicas" -> "serving.replicas")."""
    return key.split(".", 1)[1]


def _start(path: str, default: Any) -> Any:
    """The value a widget starts from: the user's last value for `path` when the widget is new
    on this visit (the page was left and Streamlit dropped the widget), else `default`."""
    values = _form()["values"]
    return values[path] if k(path) not in st.session_state and path in values else default


def _keep(path: str, value: Any) -> Any:
    _form()["values"][path] = value
    return value


def _as_number(raw: Any, cast: type) -> int | float | None:
    """`raw` as an int or float if it is one (an int field takes only whole numbers), else None."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return None
    if cast is int:
        return int(raw) if float(raw).is_integer() else None
    return float(raw)


def _num(d: Any, name: str) -> float | None:
    """d[name] if `d` is a mapping holding a number there, else None."""
    return _as_number(d.get(name), float) if isinstance(d, dict) else None


def _get(d: dict, path: str, default: Any = None) -> Any:
    node: Any = d
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return default if node is None else node


def _select(label: str, options: list, default: Any, path: str, fe: c.FieldErrors, fmt=None, slot: bool = True,
            **kw) -> Any:
    if default is not None and default not in options:
        options = [default] + list(options)  # keep the file's value, so the core names what is wrong with it
    start = _start(path, default)
    start = start if start in options else default
    index = options.index(start) if start in options else 0
    value = st.selectbox(label, options, index=index, key=k(path), format_func=fmt or str, **kw)
    if slot:
        fe.slot(path)
    return _keep(path, value)


def _number(label: str, raw: Any, path: str, fe: c.FieldErrors, cast: type = float, slot: bool = True,
            **kw) -> Any:
    """A number input for `path` starting from the file's `raw` value.

    No min/max bounds: a bound makes Streamlit refuse the file's value with a traceback, or
    keep the previous value while showing the typed one. Any number goes to the core, whose
    validation names what is wrong under the field. A value that is not a number of the right
    kind shows as empty and passes through unchanged, so the core names it too.
    """
    value = _as_number(raw, cast)
    if cast is int and "step" in kw:
        kw["step"] = int(kw["step"])
    got = st.number_input(label, value=_start(path, value), key=k(path), **kw)
    if slot:
        fe.slot(path)
    _keep(path, got)
    if got is None and raw is not None and value is None:
        return raw
    return got


def _checkbox(label: str, default: bool, path: str, **kw) -> bool:
    return _keep(path, st.checkbox(label, value=_start(path, default), key=k(path), **kw))


# --- source ------------------------------------------------------------------------

def _source_state() -> dict:
    return st.session_state.setdefault("source", {"pick": DEFAULT_SCENARIO, "upload_n": 0, "loaded": None})


def upload_key() -> str:
    return f"source.upload{_source_state()['upload_n']}"


def scenario_source(fe: c.FieldErrors) -> tuple[dict, str | None, str]:
    """(raw mapping, base folder for relative paths, label) of the shipped or uploaded scenario.

    The last action wins: picking a shipped scenario replaces an uploaded one (and clears the
    uploader), uploading replaces the shipped one. What is loaded stays loaded across pages.
    Loading another file resets the form to that file's values.
    """
    src = _source_state()
    names = c.shipped_scenario_names()
    shared = c.linked("s")
    if isinstance(shared, dict) and isinstance(shared.get("d"), dict):  # opened from a shared link
        src["loaded"] = {"id": "link:" + hashlib.sha1(repr(shared).encode()).hexdigest(), "data": shared["d"],
                         "base_dir": str(c.shipped_dir()) if shared.get("shipped") else None,
                         "label": "the scenario in the link"}
    col1, col2 = st.columns(2)
    pick = col1.selectbox("Shipped scenario", names, index=names.index(src["pick"]) if src["pick"] in names else 0,
                          key="source.shipped")
    if pick != src["pick"] or src["loaded"] is None:
        src["pick"] = pick
        if src["loaded"] is not None:
            src["upload_n"] += 1  # a fresh uploader: the shipped pick replaces the uploaded file
        src["loaded"] = {"id": "shipped:" + pick, "data": None, "base_dir": str(c.shipped_dir()), "label": pick}
    key = upload_key()
    on_page = key in st.session_state  # the uploader was drawn in the previous run (not another page's)
    with col2:
        upload = st.file_uploader("…or upload a scenario (YAML)", type=["yaml", "yml"], key=key)
        fe.slot("source")
    # The uploader held a file in the previous run and holds none now: the user removed it. After a
    # visit to another page it starts empty, and the uploaded file stays loaded.
    removed = upload is None and on_page and src.get("uploader_had_file", False)
    src["uploader_had_file"] = upload is not None
    loaded = src["loaded"]
    if upload is not None:
        raw = upload.getvalue()
        source_id = "upload:" + hashlib.sha1(raw).hexdigest()
        if source_id != loaded["id"]:
            try:
                data = c.parse_uploaded_yaml(raw, upload.name)
                loaded = {"id": source_id, "data": data, "base_dir": None, "label": upload.name}
            except ConfigError as exc:
                fe.slots["source"].error(f"{exc} — showing {loaded['label']} instead", icon=":material/error:")
    elif loaded["id"].startswith("upload:"):
        if removed:
            loaded = {"id": "shipped:" + pick, "data": None, "base_dir": str(c.shipped_dir()), "label": pick}
        else:
            col2.caption(f"Using the uploaded **{loaded['label']}**.")
    if loaded["id"] != (_form().get("source_id")):
        form = _form()
        st.session_state["form"] = {"n": form["n"] + 1, "values": {}, "start": {}, "source_id": loaded["id"]}
    src["loaded"] = loaded
    data = loaded["data"] if loaded["data"] is not None else c.load_shipped(pick)
    return copy.deepcopy(data), loaded["base_dir"], loaded["label"]


# --- sections ----------------------------------------------------------------------

def _arrival(base: dict, fe: c.FieldErrors) -> dict:
    arr = _get(base, "workload.arrival", {})
    arr = arr if isinstance(arr, dict) else {}
    kinds = [x for x in ARRIVALS if x != "trace" or arr.get("kind") == "trace"]
    kind = _select("Arrivals", kinds, arr.get("kind", "poisson"), "workload.arrival.kind", fe, fmt=ARRIVALS.get)
    out: dict[str, Any] = {"kind": kind}
    p = "workload.arrival."
    rate, qpd = _num(arr, "rate_per_s"), _num(arr, "queries_per_day")
    default_rate = rate if rate is not None else (qpd / 86400 if qpd is not None else 4.0)
    if kind in ("poisson", "gamma"):
        out["rate_per_s"] = _number("Request rate (req/s)", arr.get("rate_per_s", default_rate), p + "rate_per_s", fe,
                                    step=0.5)
    if kind == "gamma":
        out["cv"] = _number("Burstiness (coefficient of variation; 1 = Poisson)", arr.get("cv", 2.0), p + "cv", fe,
                            step=0.25, help="Spread of the gaps between arrivals relative to their mean: 1 is "
                                            "Poisson, above 1 arrivals come in bursts, below 1 more evenly.")
    if kind == "daily":
        out["queries_per_day"] = _number("Queries per day", arr.get("queries_per_day", round(default_rate * 86400)),
                                         p + "queries_per_day", fe, step=10000.0, format="%.0f")
        from_file = arr.get("hourly_weights")
        shapes = list(DAILY_SHAPES) + (["from the file"] if from_file else [])
        shape = _select("Daily shape", shapes, "from the file" if from_file else "flat", p + "hourly_weights", fe)
        weights = from_file if shape == "from the file" else DAILY_SHAPES[shape]
        if weights is not None:
            out["hourly_weights"] = weights
        numeric = (isinstance(weights, list) and len(weights) == 24 and
                   all(_as_number(w, float) is not None for w in weights) and sum(weights) > 0)
        peak = int(max(range(24), key=lambda h: weights[h])) if numeric else 0
        hours = arr.get("hours") or [peak]
        if isinstance(hours, list) and hours and all(_as_number(h, int) is not None and 0 <= h <= 23 for h in hours):
            span = (int(min(hours)), int(max(hours)))
        else:
            out["hours"] = hours  # not hours of the day: the core names what is wrong
            span = (peak, peak)
        lo, hi = _keep(p + "hours", st.slider("Hours of the day to simulate", 0, 23, _start(p + "hours", span),
                                              key=k(p + "hours")))
        fe.slot(p + "hours")
        out.setdefault("hours", list(range(lo, hi + 1)))
        share = (weights[lo] / sum(weights)) if numeric else 1 / 24
        if isinstance(out["queries_per_day"], (int, float)):
            st.caption(f"Offered rate in hour {lo}: {out['queries_per_day'] * share / 3600:,.2f} req/s. "
                       "The run stops at the request count below, so it covers the start of that hour.")
    if kind == "closed_loop":
        out["concurrency"] = _number("Concurrent clients", arr.get("concurrency", 16), p + "concurrency", fe,
                                     cast=int, step=1)
        out["think_time_s"] = _number("Think time between requests (s)", arr.get("think_time_s", 0.0),
                                      p + "think_time_s", fe, step=0.5)
    if kind == "trace":
        out["path"] = arr.get("path")
        out["time_scale"] = _number("Time scale (0.5 = twice as fast)", arr.get("time_scale", 1.0),
                                    p + "time_scale", fe, step=0.1)
        st.caption(f"Replays `{arr.get('path')}` (prompt and output lengths come from the trace).")
        fe.slot(p + "path")
    fe.slot("workload.arrival")
    return out


def _length(label: str, path: str, base: Any, fe: c.FieldErrors) -> dict:
    """The editor of one length distribution: the kind, then its numbers on one row.

    The error slots of the row's fields sit under the whole row (a message in a quarter-width
    column wraps a letter per line), in the row's order.
    """
    base = base if isinstance(base, dict) else {"kind": "lognormal", "mean": 256, "sigma": 0.6, "min": 1, "max": 1024}
    kinds = [x for x in LENGTHS if x != "empirical" or base.get("kind") == "empirical"]
    kind = _select(f"{label} tokens", kinds, base.get("kind"), path + ".kind", fe, fmt=LENGTHS.get)
    mean, value, lo, hi = (_num(base, name) for name in ("mean", "value", "min", "max"))
    mean = mean or value or ((lo or 1) + (hi or 1)) / 2
    if kind == "constant":
        return {"kind": kind, "value": _number("tokens", base.get("value", round(mean)), path + ".value", fe,
                                               cast=int, step=1)}
    if kind == "empirical":
        values = base.get("values")
        st.caption(f"{len(values) if isinstance(values, list) else 0} lengths from the file.")
        return dict(base)
    fields = ["min", "max"] + (["mean", "sigma"] if kind == "lognormal" else [])
    cols = st.columns(len(fields))
    out: dict[str, Any] = {"kind": kind}
    with cols[0]:
        out["min"] = _number("min", base.get("min", 1), path + ".min", fe, cast=int, slot=False, step=1)
    with cols[1]:
        out["max"] = _number("max", base.get("max", max(int(2 * mean), 1)), path + ".max", fe, cast=int, slot=False,
                             step=64)
    if kind == "lognormal":
        with cols[2]:
            out["mean"] = _number("mean", base.get("mean", mean), path + ".mean", fe, slot=False, step=16.0,
                                  format="%.0f")
        with cols[3]:
            out["sigma"] = _number("sigma", base.get("sigma", 0.6), path + ".sigma", fe, slot=False, step=0.1)
    for name in fields:
        fe.slot(f"{path}.{name}")
    return out


def _priorities(base: dict, fe: c.FieldErrors) -> list[dict] | Any:
    path = "workload.priorities"
    rows = _get(base, path, [])
    if not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        st.caption("The file's priority mix is not a list of classes; the error below says why.")
        fe.slot(path)
        return rows
    form = _form()
    if k(path) not in st.session_state:  # a new editor: start from the user's last rows, else the file's
        form["start"][path] = form["values"].get(path, rows)
    df = pd.DataFrame(form["start"][path], columns=["name", "share", "level"])
    try:
        df = df.astype({"name": str, "share": float, "level": int})
    except (TypeError, ValueError):
        pass  # not numbers: shown as the file has them, and the core names the bad entry
    edited = st.data_editor(df, num_rows="dynamic", key=k(path), width="stretch",
                            column_config={"name": st.column_config.TextColumn(),
                                           "share": st.column_config.NumberColumn(format="%.2f"),
                                           "level": st.column_config.NumberColumn(help="0 is the most urgent")})
    fe.slot(path)
    out = []
    for row in edited.to_dict("records"):
        if pd.isna(row.get("name")) and pd.isna(row.get("share")):
            continue  # an empty row the editor added
        out.append({"name": "" if pd.isna(row.get("name")) else str(row["name"]),
                    "share": row["share"] if pd.notna(row.get("share")) else 0.0,
                    "level": row["level"] if pd.notna(row.get("level")) else 0})
    out = [{key: (v.item() if hasattr(v, "item") else v) for key, v in row.items()} for row in out]
    return _keep(path, out)


def _workload(base: dict, fe: c.FieldErrors) -> dict:
    w = base.get("workload")
    w = copy.deepcopy(w) if isinstance(w, dict) else {}
    out = dict(w)
    out["arrival"] = _arrival(base, fe)
    from_file = w.get("num_requests")
    n_file = _as_number(from_file, int)
    default_n = min(n_file, c.UI_MAX_REQUESTS) if n_file else c.UI_MAX_REQUESTS
    out["num_requests"] = _number("Requests to simulate", from_file if from_file is not None and n_file is None
                                  else default_n, "workload.num_requests", fe, cast=int, step=100)
    if n_file and isinstance(out["num_requests"], int) and n_file > out["num_requests"]:
        st.caption(f"The file asks for {n_file:,} requests; the UI simulates {out['num_requests']:,} "
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


def _int_or_raw(raw: Any) -> Any:
    n = _as_number(raw, int)
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
        serving["replicas"] = _number("Replicas", serving.get("replicas", 1), "serving.replicas", fe, cast=int,
                                      slot=False, step=1)
    with cols[1]:
        serving["tensor_parallel"] = _select("GPUs per replica (TP)", TP_SIZES,
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
        sched["policy"] = _select("Scheduler", POLICIES, sched.get("policy", "continuous"), p + "policy", fe,
                                  slot=False,
                                  help="continuous: vLLM-style iteration-level batching; priority: the same ordered by "
                                       "class level; static: fixed batches; fifo: one request at a time")
    with cols[1]:
        serving["router"] = _select("Router", ["least_outstanding", "round_robin"],
                                    serving.get("router", "least_outstanding"), "serving.router", fe, slot=False)
    fe.slot(p + "policy")
    fe.slot("serving.router")
    policy = sched["policy"]
    if policy in ("continuous", "priority"):
        cols = st.columns(3)
        with cols[0]:
            sched["max_num_seqs"] = _number("Max sequences per step", sched.get("max_num_seqs", 256),
                                            p + "max_num_seqs", fe, cast=int, slot=False, step=16,
                                            help="At most this many requests in one batch step (vLLM max_num_seqs).")
        with cols[1]:
            sched["max_num_batched_tokens"] = _number("Token budget per step",
                                                      sched.get("max_num_batched_tokens", 8192),
                                                      p + "max_num_batched_tokens", fe, cast=int, slot=False, step=512,
                                                      help="Token budget: at most this many new tokens (prefill "
                                                           "chunks plus one per decoding request) in one step "
                                                           "(vLLM max_num_batched_tokens).")
        with cols[2]:
            sched["chunked_prefill"] = _checkbox("Chunked prefill", bool(sched.get("chunked_prefill", True)),
                                                 p + "chunked_prefill")
        for name in ("max_num_seqs", "max_num_batched_tokens", "chunked_prefill"):
            fe.slot(p + name)
    elif policy == "static":
        cols = st.columns(2)
        with cols[0]:
            sched["batch_size"] = _number("Batch size", sched.get("batch_size", 8), p + "batch_size", fe, cast=int,
                                          slot=False, step=1)
        with cols[1]:
            sched["batch_timeout_s"] = _number("Batch timeout (s)", sched.get("batch_timeout_s", 0.05),
                                               p + "batch_timeout_s", fe, slot=False, step=0.05)
        fe.slot(p + "batch_size")
        fe.slot(p + "batch_timeout_s")
    fe.slot("serving.scheduler")
    serving["scheduler"] = sched
    serving["max_model_len"] = _number("Max model length (tokens; empty = model context, at most 8192)",
                                       serving.get("max_model_len"), "serving.max_model_len", fe, cast=int, step=1024)
    if serving["max_model_len"] is None:
        serving.pop("max_model_len")


def _quant_and_spec(data: dict, fe: c.FieldErrors) -> None:
    serving = data["serving"]
    q = serving.get("quantization")
    q = dict(q) if isinstance(q, dict) else {}
    cols = st.columns(2)
    with cols[0]:
        q["weights"] = _select("Weights", WEIGHT_DTYPES, q.get("weights", "bf16"), "serving.quantization.weights", fe,
                               slot=False)
    with cols[1]:
        q["kv_cache"] = _select("KV cache", KV_DTYPES, q.get("kv_cache", "bf16"), "serving.quantization.kv_cache", fe,
                                slot=False)
    fe.slot("serving.quantization.weights")
    fe.slot("serving.quantization.kv_cache")
    fe.slot("serving.quantization")
    serving["quantization"] = q
    spec = serving.get("speculative") or None
    on = _checkbox("Speculative decoding", spec is not None, "serving.speculative.on")
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
                spec["draft_model"] = _select("Draft model", drafts, str(draft).lower(), p + "draft_model", fe,
                                              slot=False)
        with cols[1]:
            spec["num_speculative_tokens"] = _number("Draft tokens k", spec.get("num_speculative_tokens", 4),
                                                     p + "num_speculative_tokens", fe, cast=int, slot=False, step=1)
        with cols[2]:
            # vLLM's own acceptance numbers (docs/speculative.md) are kept as the file gives them.
            vllm_terms = [k for k in ("draft_acceptance_rate", "mean_acceptance_length",
                                      "per_position_acceptance_rates") if k in spec]
            if vllm_terms:
                st.caption(f"Acceptance from the file: {vllm_terms[0]} = {spec[vllm_terms[0]]}")
            else:
                spec["acceptance_rate"] = _number("Acceptance rate", spec.get("acceptance_rate", 0.7),
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
    profiles = c.available_profiles(model if isinstance(model, str) else None,
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
    chosen = _select("Cost model", options, default, "cost_model", fe,
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
            value = _number(label, slo.get(name), f"slo.{name}", fe, slot=False, step=0.05, help="Empty: no bound")
        if value is None:
            slo.pop(name, None)
        else:
            slo[name] = value
    for name, _label in names:
        fe.slot(f"slo.{name}")
    fe.slot("slo")
    data["slo"] = slo
    data["seed"] = _number("Seed", base.get("seed", 0), "seed", fe, cast=int, step=1)


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
    _keep_malformed(base, data)
    return data
