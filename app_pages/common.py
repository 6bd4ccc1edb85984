"""What the UI pages share: loading and checking scenarios, field-level errors, cards and charts.

No simulation logic lives here: a page builds a scenario dict, `check` turns it into a
`Scenario` with the core's own validation, and app_pages/runs.py runs it as the CLI does.
"""
from __future__ import annotations

import base64
import copy
import json
import math
import os
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
import yaml

from sim.configio import ConfigError, load_yaml
from sim.scenario import Scenario, read_scenario_file, scenario_from_dict, scenario_to_yaml, shipped_scenarios

UI_MAX_REQUESTS = 2000  # default request count in the UI: a run takes well under a second
PROFILES_DIR_ENV = "SERVESIM_PROFILES_DIR"  # where the Calibrate page saves profiles (default ./profiles)
CHART_POINTS = 400  # points per series in line charts: enough to look smooth, small to send


# --- scenarios ---------------------------------------------------------------

def shipped_dir() -> Path:
    return Path(str(resources.files("scenarios")))


def load_shipped(name: str) -> dict:
    """The raw mapping of a shipped scenario (a fresh copy the page may edit)."""
    return copy.deepcopy(read_scenario_file(shipped_dir() / name))


def parse_uploaded_yaml(data: bytes, filename: str) -> dict:
    # The CLI's loader: UTF-8, one line per error, no duplicate keys, aliases bounded (an uploaded
    # "billion laughs" must not take the server down).
    parsed = load_yaml(data, filename)
    if not isinstance(parsed, dict):
        raise ConfigError(f"{filename}: expected a mapping at the top level (workload:, model:, ...)")
    return parsed


def preflight(scenario: Scenario) -> tuple[Any, str]:
    """The core's load-time checks that need the catalog numbers (quantization support,
    memory fit, profile match), run without simulating. Returns the memory plan and the
    cost model the run will use ("auto: profile NAME …", "roofline", …)."""
    from sim.cost_select import select_cost_model
    from sim.simulation import build_memory

    choice = select_cost_model(scenario)
    return build_memory(scenario, choice.num_kv_blocks), choice.label or choice.name


def check(data: dict, base_dir: str | None) -> tuple[Scenario, Any, str]:
    """(Scenario, memory plan, cost model label) for a scenario mapping; ConfigError names the field on failure."""
    scenario = scenario_from_dict(data, base_dir=Path(base_dir) if base_dir else None)
    return scenario, *preflight(scenario)


def scenario_yaml(scenario: Scenario) -> str:
    return scenario_to_yaml(scenario)


def yaml_to_dict(text: str) -> dict:
    return yaml.safe_load(text)


def scenario_from_dict_yaml(text: str, base_dir: str | None) -> Scenario:
    return scenario_from_dict(yaml.safe_load(text), base_dir=Path(base_dir) if base_dir else None)


def variant_yaml(base: dict, base_dir: str | None, overrides: list[str]) -> str:
    """The YAML of `base` with `--set`-style overrides applied (validated)."""
    return scenario_yaml(scenario_from_dict(base, overrides, base_dir=Path(base_dir) if base_dir else None))


# --- widgets that outlive a visit to another page ----------------------------------

def sticky(widget, label: str, *, key: str, **kw) -> Any:
    """`widget(label, key=key, **kw)`, starting from the user's last value when the page was left.

    Streamlit drops a widget's state when a run does not draw it (another page is showing),
    so without this a form comes back at its defaults. The last values live under the plain
    session key "sticky" and seed the widget only when it is new (its key is absent).
    """
    saved = st.session_state.setdefault("sticky", {})
    if key not in st.session_state and key in saved:
        value = saved[key]
        options = list(kw.get("options", []))
        if widget in (st.selectbox, st.radio):
            if value in options:
                kw["index"] = options.index(value)
        elif widget is st.multiselect:
            kw["default"] = [v for v in value if v in options]
        else:
            kw["value"] = value
    value = widget(label, key=key, **kw)
    saved[key] = value
    return value


# --- the page's inputs in its URL (shareable) ---------------------------------------

def encode_link(obj: Any) -> str:
    """JSON-able data as a short URL-safe token (JSON, zlib, base64url)."""
    raw = zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 9)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_link(token: str) -> Any:
    """The data of `encode_link`; ValueError for a token that is not one."""
    try:
        return json.loads(zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"not a servesim link ({exc})") from None


def set_link(name: str, obj: Any) -> None:
    """Put `obj` in the page's URL as ?name=..., so the address bar always holds what is on screen."""
    token = encode_link(obj)
    if st.query_params.get(name) != token:
        st.query_params[name] = token


def linked(name: str) -> Any | None:
    """The data in the URL's ?name=... when this session opens the page from a link (once), else None."""
    seen = st.session_state.setdefault("link.read", set())
    if name in seen:  # later runs: the URL holds what this session put there
        return None
    seen.add(name)
    token = st.query_params.get(name)
    if token is None:
        return None
    try:
        return decode_link(token)
    except ValueError:
        st.warning(f"The link's `{name}=` part is not a servesim link; starting from the defaults.")
        return None


# --- errors next to the field that caused them --------------------------------

def error_field(message: str) -> str:
    """The field path a ConfigError message starts with ("serving.tensor_parallel: got 3; ...")."""
    head = message.split(":", 1)[0].strip()
    return head.split(" ")[0]


class FieldErrors:
    """Placeholders under input widgets, keyed by the scenario field they edit.

    A page registers a slot right after each widget (`slot(path)`); after building the
    scenario it hands the ConfigError to `show`, which writes it under the widget whose
    path is the longest prefix of the error's field (else under `fallback`).
    """

    def __init__(self) -> None:
        self.slots: dict[str, Any] = {}
        self.fallback: Any = None

    def slot(self, path: str) -> None:
        self.slots[path] = st.empty()

    def general(self) -> None:
        self.fallback = st.empty()

    def where(self, message: str, field: str | None = None) -> str | None:
        """The registered widget path for an error on `field` (default: the path the message starts with)."""
        field = error_field(field or message)
        matches = [p for p in self.slots if field == p or field.startswith(p + ".")]
        return max(matches, key=len) if matches else None

    def show(self, exc: Exception) -> str | None:
        """Write the error next to its field; return that field path (None: shown in the fallback)."""
        message = str(exc)
        path = self.where(message, getattr(exc, "field", None))  # ConfigError carries its dotted path
        target = self.slots[path] if path else (self.fallback or st.empty())
        target.error(message, icon=":material/error:")
        return path


# --- formatting ----------------------------------------------------------------

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


# --- charts ------------------------------------------------------------------------

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


# --- profiles ----------------------------------------------------------------------

def profiles_dir() -> Path:
    """Folder the Calibrate page saves profiles to (env SERVESIM_PROFILES_DIR, default ./profiles)."""
    return Path(os.environ.get(PROFILES_DIR_ENV) or "profiles").resolve()


def available_profiles(model: str | None = None, tensor_parallel: int | None = None) -> dict[str, str]:
    """Label -> what to put in `cost_model.profile`: shipped names, then saved folders (absolute paths).

    With `model` / `tensor_parallel`, only the profiles measured for them (the ones a scenario can use).
    """
    from calibration.profile import PROFILE_FILE, ProfileError, list_shipped_profiles, load_profile

    out = {name: name for name in list_shipped_profiles()}
    root = profiles_dir()
    if root.is_dir():
        for f in sorted(root.glob(f"*/{PROFILE_FILE}")):
            out[f"{f.parent.name} (saved)"] = str(f.parent)
    if model is None and tensor_parallel is None:
        return out
    keep = {}
    for label, ref in out.items():
        try:
            p = load_profile(ref)
        except ProfileError:
            continue
        if (model is None or p.model.lower() == model.lower()) and \
                (tensor_parallel is None or p.tensor_parallel == tensor_parallel):
            keep[label] = ref
    return keep


@st.cache_data(show_spinner=False)
def shipped_profile_index() -> list[dict[str, Any]]:
    """What each shipped profile was measured for: name, model, gpu, TP, weight and KV dtypes."""
    from calibration.profile import ProfileError, list_shipped_profiles, load_profile

    out = []
    for name in list_shipped_profiles():
        try:
            p = load_profile(name)
        except ProfileError:
            continue
        out.append({"name": name, "model": p.model.lower(), "gpu": (p.gpu or "").lower(), "tp": p.tensor_parallel,
                    "weights": p.weight_dtype, "kv": p.kv_dtype})
    return out


def matching_profile(model: str, gpu: str, tp: int, weights: str, kv: str) -> str | None:
    """The shipped profile measured for exactly this model, GPU, TP and dtypes (fp16 counts as bf16), if any."""
    width = {"fp16": "bf16"}
    want = (model.lower(), gpu.lower(), tp, width.get(weights, weights), width.get(kv, kv))
    for p in shipped_profile_index():
        if (p["model"], p["gpu"], p["tp"], width.get(p["weights"], p["weights"]), width.get(p["kv"], p["kv"])) == want:
            return p["name"]
    return None


@st.cache_data(show_spinner=False, max_entries=16)
def cached_fit(measurements_csv: str, stat: str = "min") -> dict[str, Any]:
    """What `servesim calibrate fit` does, on a measurements table (given as CSV text), as plain data:
    one row per distinct step shape (its `stat` time over the repeats), then fit_profile."""
    import io

    from calibration.fit import fit_profile, format_report
    from calibration.vllm_harness import step_shapes

    measured = pd.read_csv(io.StringIO(measurements_csv))
    shapes = step_shapes(measured, stat)
    result = fit_profile(shapes)
    report = result.report if isinstance(result.report, dict) else {}
    pred = result.predictions
    fitted_on = (f"the {stat} step time of each distinct step shape (phase + the five features) over its repeats: "
                 f"{len(shapes)} shapes from {len(measured)} measured steps; held-out rows are shapes the fit "
                 "did not see")
    return {"coefficients": {k: float(v) for k, v in result.coefficients.items()}, "text": format_report(result),
            "predictions": pd.DataFrame({"phase": pred["phase"].astype(str), "step_time_s": pred["step_time_s"],
                                         "predicted_s": pred["predicted_s"]}),
            "fit": {**report, "stat": stat, "fitted_on": fitted_on}, "shapes": len(shapes), "steps": len(measured)}


def shipped_scenario_names() -> list[str]:
    return shipped_scenarios()
