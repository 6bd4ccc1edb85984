"""How the UI shows numbers: units and dashes for missing values, the headline metric cards,
comparison-table rows and column formats, readable column headings."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st


def _bad(v: Any) -> bool:
    return v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v)))


def fmt_s(v: Any) -> str:
    if _bad(v):
        return "—"
    return f"{v * 1e3:,.0f} ms" if v < 1 else f"{v:,.2f} s"


def fmt_ms(v: Any) -> str:
    return "—" if _bad(v) else f"{v * 1e3:,.1f} ms"


def fmt_num(v: Any, digits: int) -> str:
    return "—" if _bad(v) else f"{v:,.{digits}f}"


def fmt_usd(v: Any, digits: int = 2) -> str:
    return "—" if _bad(v) else f"${v:,.{digits}f}"


HELP = {  # what each number means, shown beside it
    "TTFT": "Time to first token: from a request's arrival to its first output token (queueing and prefill).",
    "TPOT": "Time per output token after the first: (end-to-end − TTFT) / (output tokens − 1), per request.",
    "ITL": "Inter-token latency: the gap between two consecutive output tokens, over all tokens of all requests.",
    "E2E": "End to end: from a request's arrival to its last output token.",
    "queueing": "Time from arrival until the request is first scheduled.",
    "throughput": "Finished requests per second of simulated time.",
    "output": "Output tokens generated per second of simulated time, all replicas together.",
    "goodput": "Requests per second that met every SLO bound set (TTFT, TPOT, E2E); needs an SLO.",
    "slo": "Share of finished requests meeting every SLO bound.",
    "cost_tokens": "Fleet cost per hour divided by output tokens per hour at this throughput.",
    "cost_month": "GPUs × price per GPU-hour × 730 hours, for a fleet running all month.",
    "stepping": "Share of simulated time a replica spent executing batch steps (its engine was not idle). "
                "Not the GPU's compute utilisation: a step may use only part of the compute or memory bandwidth.",
}


LOWER_IS_BETTER = {"TTFT", "TPOT", "E2E", "cost_tokens", "cost_month"}


def _delta(now: Any, then: Any) -> str | None:
    if _bad(now) or _bad(then) or then == 0:
        return None
    return f"{(now - then) / abs(then) * 100:+.1f} %"


def headline_cards(s: dict[str, Any], baseline: dict[str, Any] | None = None) -> None:
    """The headline numbers of one run as metric cards (three rows of four), each with its meaning;
    with a `baseline` summary, each card also shows the change from it."""
    rows = [
        [("TTFT p50", fmt_s, "ttft_s_p50", "TTFT"), ("TTFT p99", fmt_s, "ttft_s_p99", "TTFT"),
         ("TPOT p50", fmt_ms, "tpot_s_p50", "TPOT"), ("TPOT p99", fmt_ms, "tpot_s_p99", "TPOT")],
        [("E2E p50", fmt_s, "e2e_s_p50", "E2E"), ("E2E p99", fmt_s, "e2e_s_p99", "E2E"),
         ("Throughput (req/s)", lambda v: fmt_num(v, 2), "request_throughput_per_s", "throughput"),
         ("Output tokens/s", lambda v: fmt_num(v, 0), "output_token_throughput_per_s", "output")],
        [("Goodput (req/s)", lambda v: fmt_num(v, 2) if v is not None else "no SLO", "goodput_per_s", "goodput"),
         ("SLO met", lambda v: "—" if v is None else f"{v * 100:.1f} %", "slo_attained_fraction", "slo"),
         ("$ / 1M output tokens", lambda v: fmt_usd(v, 3), "cost_usd_per_1m_output_tokens", "cost_tokens"),
         ("$ / month", lambda v: fmt_usd(v, 0), "cost_usd_per_month", "cost_month")],
    ]
    for row in rows:
        for col, (label, fmt, key, meaning) in zip(st.columns(len(row)), row):
            delta = _delta(s.get(key), baseline.get(key)) if baseline else None
            col.metric(label, fmt(s.get(key)), delta=delta, help=HELP[meaning],
                       delta_color="inverse" if meaning in LOWER_IS_BETTER else "normal")


def summary_row(label: str, s: dict[str, Any]) -> dict[str, Any]:
    """One comparison-table row: the headline numbers in display units."""
    return {"variant": label, "stable": bool(s["stable"]),
            "TTFT p50 (s)": s["ttft_s_p50"], "TTFT p99 (s)": s["ttft_s_p99"],
            "TPOT p99 (ms)": s["tpot_s_p99"] * 1e3, "E2E p99 (s)": s["e2e_s_p99"],
            "throughput (req/s)": s["request_throughput_per_s"],
            "output (tok/s)": s["output_token_throughput_per_s"],
            "goodput (req/s)": s.get("goodput_per_s", math.nan),
            "$/1M tokens": s["cost_usd_per_1m_output_tokens"], "$/month": s["cost_usd_per_month"]}


METRIC_LABELS = {"ttft_s": "TTFT", "tpot_s": "TPOT", "e2e_s": "E2E", "itl_s": "ITL", "queue_s": "queueing"}


def readable(column: str) -> str:
    """A results column as a heading: "ttft_s_p99" -> "TTFT p99 (s)", "priority_class" -> "class"."""
    for prefix, label in METRIC_LABELS.items():
        if column.startswith(prefix + "_"):
            return f"{label} {column[len(prefix) + 1:]} (s)"
    return {"priority_class": "class"}.get(column, column.replace("_", " "))


def readable_frame(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`df` with readable headings, and column formats with thousands separators."""
    out = df.rename(columns=readable)
    return out, {col: st.column_config.NumberColumn(col, format="localized")
                 for col in out.columns if pd.api.types.is_numeric_dtype(out[col])}


def summary_columns(table: pd.DataFrame) -> dict[str, Any]:
    """Column formats for a table of summary_row()s: separators, units, money as money."""
    cfg: dict[str, Any] = {"variant": st.column_config.TextColumn("variant", width="large")}
    for col in table.columns:
        if col.startswith("$"):
            cfg[col] = st.column_config.NumberColumn(col, format="dollar")
        elif col not in ("variant", "stable"):
            cfg[col] = st.column_config.NumberColumn(col, format="localized")
    return cfg
