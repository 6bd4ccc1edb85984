"""The scenario form's workload section: arrivals (rate, burstiness, a day's volume and shape,
closed loop, trace replay), prompt and output length distributions, the priority mix."""
from __future__ import annotations

import copy
from typing import Any

import pandas as pd
import streamlit as st

from app_pages import common as c
from app_pages import form_widgets as fw

ARRIVALS = {"poisson": "Poisson (rate)", "gamma": "Gamma (bursty rate)", "daily": "Daily volume (hourly shape)",
            "closed_loop": "Closed loop (fixed clients)", "trace": "Trace replay (from the file)"}
LENGTHS = {"lognormal": "lognormal", "uniform": "uniform", "constant": "constant", "empirical": "empirical (from the file)"}

# Relative traffic per clock hour (0..23); the daily arrival process normalises them.
DAILY_SHAPES: dict[str, list[float] | None] = {
    "flat": None,
    "business hours": [1, 1, 1, 1, 1, 2, 3, 5, 8, 10, 10, 10, 9, 10, 10, 9, 8, 6, 4, 3, 2, 2, 1, 1],
    "evening peak": [3, 2, 1, 1, 1, 1, 2, 3, 4, 4, 5, 5, 6, 5, 5, 5, 6, 7, 8, 10, 10, 9, 7, 5],
}


def _arrival(base: dict, fe: c.FieldErrors) -> dict:
    arr = fw.get_path(base, "workload.arrival", {})
    arr = arr if isinstance(arr, dict) else {}
    kinds = [x for x in ARRIVALS if x != "trace" or arr.get("kind") == "trace"]
    kind = fw.select("Arrivals", kinds, arr.get("kind", "poisson"), "workload.arrival.kind", fe, fmt=ARRIVALS.get)
    out: dict[str, Any] = {"kind": kind}
    p = "workload.arrival."
    rate, qpd = fw.number_at(arr, "rate_per_s"), fw.number_at(arr, "queries_per_day")
    default_rate = rate if rate is not None else (qpd / 86400 if qpd is not None else 4.0)
    if kind in ("poisson", "gamma"):
        out["rate_per_s"] = fw.number("Request rate (req/s)", arr.get("rate_per_s", default_rate), p + "rate_per_s", fe,
                                      step=0.5)
    if kind == "gamma":
        out["cv"] = fw.number("Burstiness (coefficient of variation; 1 = Poisson)", arr.get("cv", 2.0), p + "cv", fe,
                              step=0.25, help="Spread of the gaps between arrivals relative to their mean: 1 is "
                                              "Poisson, above 1 arrivals come in bursts, below 1 more evenly.")
    if kind == "daily":
        out["queries_per_day"] = fw.number("Queries per day", arr.get("queries_per_day", round(default_rate * 86400)),
                                           p + "queries_per_day", fe, step=10000.0, format="%.0f")
        from_file = arr.get("hourly_weights")
        shapes = list(DAILY_SHAPES) + (["from the file"] if from_file else [])
        shape = fw.select("Daily shape", shapes, "from the file" if from_file else "flat", p + "hourly_weights", fe)
        weights = from_file if shape == "from the file" else DAILY_SHAPES[shape]
        if weights is not None:
            out["hourly_weights"] = weights
        numeric = (isinstance(weights, list) and len(weights) == 24 and
                   all(fw.as_number(w, float) is not None for w in weights) and sum(weights) > 0)
        peak = int(max(range(24), key=lambda h: weights[h])) if numeric else 0
        hours = arr.get("hours") or [peak]
        if isinstance(hours, list) and hours and all(fw.as_number(h, int) is not None and 0 <= h <= 23 for h in hours):
            span = (int(min(hours)), int(max(hours)))
        else:
            out["hours"] = hours  # not hours of the day: the core names what is wrong
            span = (peak, peak)
        lo, hi = fw.keep(p + "hours", st.slider("Hours of the day to simulate", 0, 23,
                                                fw.start_value(p + "hours", span), key=fw.k(p + "hours")))
        fe.slot(p + "hours")
        out.setdefault("hours", list(range(lo, hi + 1)))
        share = (weights[lo] / sum(weights)) if numeric else 1 / 24
        if isinstance(out["queries_per_day"], (int, float)):
            st.caption(f"Offered rate in hour {lo}: {out['queries_per_day'] * share / 3600:,.2f} req/s. "
                       "The run stops at the request count below, so it covers the start of that hour.")
    if kind == "closed_loop":
        out["concurrency"] = fw.number("Concurrent clients", arr.get("concurrency", 16), p + "concurrency", fe,
                                       cast=int, step=1)
        out["think_time_s"] = fw.number("Think time between requests (s)", arr.get("think_time_s", 0.0),
                                        p + "think_time_s", fe, step=0.5)
    if kind == "trace":
        out["path"] = arr.get("path")
        out["time_scale"] = fw.number("Time scale (0.5 = twice as fast)", arr.get("time_scale", 1.0),
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
    kind = fw.select(f"{label} tokens", kinds, base.get("kind"), path + ".kind", fe, fmt=LENGTHS.get)
    mean, value, lo, hi = (fw.number_at(base, name) for name in ("mean", "value", "min", "max"))
    mean = mean or value or ((lo or 1) + (hi or 1)) / 2
    if kind == "constant":
        return {"kind": kind, "value": fw.number("tokens", base.get("value", round(mean)), path + ".value", fe,
                                                 cast=int, step=1)}
    if kind == "empirical":
        values = base.get("values")
        st.caption(f"{len(values) if isinstance(values, list) else 0} lengths from the file.")
        return dict(base)
    fields = ["min", "max"] + (["mean", "sigma"] if kind == "lognormal" else [])
    cols = st.columns(len(fields))
    out: dict[str, Any] = {"kind": kind}
    with cols[0]:
        out["min"] = fw.number("min", base.get("min", 1), path + ".min", fe, cast=int, slot=False, step=1)
    with cols[1]:
        out["max"] = fw.number("max", base.get("max", max(int(2 * mean), 1)), path + ".max", fe, cast=int, slot=False,
                               step=64)
    if kind == "lognormal":
        with cols[2]:
            out["mean"] = fw.number("mean", base.get("mean", mean), path + ".mean", fe, slot=False, step=16.0,
                                    format="%.0f")
        with cols[3]:
            out["sigma"] = fw.number("sigma", base.get("sigma", 0.6), path + ".sigma", fe, slot=False, step=0.1)
    for name in fields:
        fe.slot(f"{path}.{name}")
    return out


def _priorities(base: dict, fe: c.FieldErrors) -> list[dict] | Any:
    path = "workload.priorities"
    rows = fw.get_path(base, path, [])
    if not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        st.caption("The file's priority mix is not a list of classes; the error below says why.")
        fe.slot(path)
        return rows
    form = fw.form_state()
    if fw.k(path) not in st.session_state:  # a new editor: start from the user's last rows, else the file's
        form["start"][path] = form["values"].get(path, rows)
    df = pd.DataFrame(form["start"][path], columns=["name", "share", "level"])
    try:
        df = df.astype({"name": str, "share": float, "level": int})
    except (TypeError, ValueError):
        pass  # not numbers: shown as the file has them, and the core names the bad entry
    edited = st.data_editor(df, num_rows="dynamic", key=fw.k(path), width="stretch",
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
    return fw.keep(path, out)


def workload_section(base: dict, fe: c.FieldErrors) -> dict:
    w = base.get("workload")
    w = copy.deepcopy(w) if isinstance(w, dict) else {}
    out = dict(w)
    out["arrival"] = _arrival(base, fe)
    from_file = w.get("num_requests")
    n_file = fw.as_number(from_file, int)
    default_n = min(n_file, c.UI_MAX_REQUESTS) if n_file else c.UI_MAX_REQUESTS
    out["num_requests"] = fw.number("Requests to simulate", from_file if from_file is not None and n_file is None
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
