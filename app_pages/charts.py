"""The UI's charts (Altair): latency CDFs, each replica's queue, batch and KV use over time, and
how busy each replica was. Series are thinned to CHART_POINTS points before they are sent."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

CHART_POINTS = 400  # points per series in line charts: enough to look smooth, small to send


LATENCY_METRICS = {"TTFT": "ttft_s", "TPOT": "tpot_s", "E2E": "e2e_s", "queueing": "queue_s"}


def cdf_frame(values: pd.Series | np.ndarray, points: int = CHART_POINTS) -> pd.DataFrame:
    """An empirical CDF thinned to `points` quantiles (exact at the ends)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return pd.DataFrame({"value": [], "fraction": []})
    q = np.linspace(0.0, 1.0, min(points, len(v)))
    return pd.DataFrame({"value": np.quantile(v, q), "fraction": q})


def cdf_chart(series: dict[str, pd.Series], metric_label: str, log_x: bool, slo_s: float | None = None,
              percentile: float = 99.0) -> alt.Chart:
    """Overlaid latency CDFs, one line per entry of `series` (seconds in, shown in seconds).

    Dotted: the p50 and the SLO percentile; dashed red: the SLO bound, if set. A line that
    crosses the percentile left of the bound meets the SLO.
    """
    frames = [cdf_frame(v).assign(series=name) for name, v in series.items()]
    df = pd.concat(frames, ignore_index=True)
    if log_x:
        df = df[df["value"] > 0]
    scale = alt.Scale(type="log") if log_x else alt.Scale(zero=True)
    lines = alt.Chart(df).mark_line(interpolate="step-after").encode(
        x=alt.X("value:Q", title=f"{metric_label} (s)", scale=scale),
        y=alt.Y("fraction:Q", title="fraction of requests", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom", columns=2, labelLimit=400)),
        tooltip=["series", alt.Tooltip("value:Q", format=".3f"), alt.Tooltip("fraction:Q", format=".2f")],
    )
    marks = pd.DataFrame({"fraction": [0.5, percentile / 100], "label": ["p50", f"p{percentile:g}"]})
    layers = [lines,
              alt.Chart(marks).mark_rule(strokeDash=[2, 3], color="gray").encode(y="fraction:Q"),
              alt.Chart(marks).mark_text(align="left", dx=4, dy=-6, color="gray").encode(
                  y="fraction:Q", x=alt.value(0), text="label:N")]
    if slo_s is not None:
        bound = pd.DataFrame({"value": [slo_s], "label": [f"SLO {slo_s:g} s"]})
        layers += [alt.Chart(bound).mark_rule(strokeDash=[6, 4], color="#e45756").encode(x="value:Q"),
                   alt.Chart(bound).mark_text(align="left", dx=4, y=8, color="#e45756").encode(
                       x="value:Q", text="label:N")]
    return alt.layer(*layers).properties(height=300)


def sample_timeseries(ts: pd.DataFrame, num_kv_blocks: int, points: int = CHART_POINTS) -> pd.DataFrame:
    """Each replica's state (queue, batch, KV %) at `points` evenly spaced times.

    The engine records the state whenever it changes, so the value at time t is the last
    record at or before t; sampling that way keeps the chart exact at the sample times.
    """
    if ts.empty:
        return pd.DataFrame(columns=["replica", "time_s", "waiting", "running", "kv_used_pct"])
    grid = np.linspace(float(ts["time_s"].min()), float(ts["time_s"].max()), points)
    out = []
    for replica, g in ts.groupby("replica", sort=True):
        t = g["time_s"].to_numpy()
        idx = np.clip(np.searchsorted(t, grid, side="right") - 1, 0, len(t) - 1)
        out.append(pd.DataFrame({"replica": f"replica {replica}", "time_s": grid,
                                 "waiting": g["waiting"].to_numpy()[idx], "running": g["running"].to_numpy()[idx],
                                 "kv_used_pct": 100.0 * g["kv_blocks_used"].to_numpy()[idx] / max(num_kv_blocks, 1)}))
    return pd.concat(out, ignore_index=True)


TIMESERIES = {"queue length (waiting requests)": "waiting", "batch size (running requests)": "running",
              "KV cache used (%)": "kv_used_pct"}


def timeseries_chart(sampled: pd.DataFrame, column: str, title: str) -> alt.Chart:
    return alt.Chart(sampled).mark_line(interpolate="step-after").encode(
        x=alt.X("time_s:Q", title="simulated time (s)"),
        y=alt.Y(f"{column}:Q", title=title),
        color=alt.Color("replica:N", title=None),
    ).properties(height=220)


def utilisation_chart(busy: list[float]) -> alt.Chart:
    df = pd.DataFrame({"replica": [f"replica {i}" for i in range(len(busy))],
                       "busy_pct": [100.0 * b for b in busy]})
    return alt.Chart(df).mark_bar().encode(
        x=alt.X("replica:N", title=None, sort=None),
        y=alt.Y("busy_pct:Q", title="stepping (% of the run)", scale=alt.Scale(domain=[0, 100])),
        tooltip=["replica", alt.Tooltip("busy_pct:Q", format=".1f")],
    ).properties(height=220)
