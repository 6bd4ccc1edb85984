"""Compare page: one workload under several schedulers and options, and load sweeps showing saturation."""
from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app_pages import common as c
from app_pages.charts import LATENCY_METRICS, cdf_chart
from app_pages.display import summary_columns, summary_row
from app_pages.runs import simulate
from sim.catalog import model_catalog, resolve_gpu, resolve_model
from sim.configio import ConfigError
from sim.scenario import DEFAULT_SCENARIO

POLICIES = ["fifo", "static", "continuous", "priority"]
METRICS = {"TTFT p99 (s)": "TTFT p99 (s)", "TPOT p99 (ms)": "TPOT p99 (ms)", "E2E p99 (s)": "E2E p99 (s)",
           "throughput (req/s)": "throughput (req/s)", "goodput (req/s)": "goodput (req/s)",
           "$/1M tokens": "$/1M tokens"}


def draft_for(model, tp: int) -> str | None:
    """The smallest catalog model that can draft for `model` (same vocabulary, heads split by tp)."""
    target = resolve_model(model, "model")
    fits = [m for m in model_catalog().values() if m.vocab_size == target.vocab_size and m.name != target.name
            and m.num_params < target.num_params and m.num_attention_heads % tp == 0]
    return min(fits, key=lambda m: m.num_params).name if fits else None


def quantized_overrides(data: dict) -> list[str]:
    """Weights in the fastest format the GPU's tensor cores take, KV cache in fp8."""
    gpu = resolve_gpu((data.get("hardware") or {}).get("gpu", "a100-80gb-sxm"), "hardware.gpu")
    weights = "fp8" if gpu.fp8_tflops else ("int8" if gpu.int8_tops else "int4")
    return [f"serving.quantization.weights={weights}", "serving.quantization.kv_cache=fp8"]


def variants(data: dict, policies: list[str], flip_quant: bool, flip_spec: bool) -> dict[str, list[str]]:
    """Variant label -> `--set` overrides on the base scenario."""
    serving = data.get("serving") or {}
    spec = serving.get("speculative")
    out: dict[str, list[str]] = {}
    for policy in policies:
        sets = [f"serving.scheduler.policy={policy}"]
        if spec and policy in ("fifo", "static"):
            sets.append("serving.speculative=null")  # speculative decoding needs iteration-level batching
        out[policy] = sets
    quant = serving.get("quantization") or {}
    batching = ["serving.scheduler.policy=continuous"]
    if flip_quant:
        if quant.get("weights", "bf16") in ("bf16", "fp16") and quant.get("kv_cache", "bf16") in ("bf16", "fp16"):
            sets = quantized_overrides(data)
            out["continuous + " + sets[0].split("=")[1] + " weights, fp8 KV"] = batching + sets
        else:
            out["continuous, bf16 (no quantization)"] = batching + ["serving.quantization.weights=bf16",
                                                                    "serving.quantization.kv_cache=bf16"]
    if flip_spec:
        if spec:
            out["continuous, no speculative decoding"] = batching + ["serving.speculative=null"]
        else:
            draft = draft_for(data.get("model", "llama-3.1-8b"), int(serving.get("tensor_parallel", 1)))
            if draft is not None:
                out[f"continuous + speculative ({draft}, k=4)"] = batching + [
                    f"serving.speculative={{draft_model: {draft}, num_speculative_tokens: 4, acceptance_rate: 0.7}}"]
    return out


def load_knob(data: dict) -> tuple[str, float, str] | None:
    """(override path, base value, axis label) of the knob that scales offered load."""
    arr = (data.get("workload") or {}).get("arrival") or {}
    kind = arr.get("kind")
    if kind in ("poisson", "gamma"):
        return "workload.arrival.rate_per_s", float(arr["rate_per_s"]), "offered load (req/s)"
    if kind == "daily":
        return "workload.arrival.queries_per_day", float(arr["queries_per_day"]), "offered load (req/s)"
    if kind == "closed_loop":
        return "workload.arrival.concurrency", float(arr["concurrency"]), "concurrent clients"
    return None


def variant_chart(table: pd.DataFrame, column: str, title: str, log: bool) -> alt.Chart:
    """One mark per variant: bars from zero on a linear axis, dots on a log axis."""
    shown = table[np.isfinite(table[column].astype(float))]
    if log:
        shown = shown[shown[column] > 0]
    base = alt.Chart(shown).encode(
        x=alt.X(f"{column}:Q", title=title + (" — log scale" if log else ""),
                scale=alt.Scale(type="log") if log else alt.Scale(zero=True)),
        y=alt.Y("variant:N", title=None, sort=None, axis=alt.Axis(labelLimit=300)),
        color=alt.Color("stable:N", title="stable", scale=alt.Scale(domain=[True, False],
                                                                    range=["#4c78a8", "#e45756"])),
        tooltip=["variant", alt.Tooltip(f"{column}:Q", format=",.3f")])
    mark = base.mark_point(filled=True, size=140, opacity=1) if log else base.mark_bar()
    return mark.properties(height=40 * len(table) + 40)


st.title("Compare")
st.caption("The same workload under different schedulers and options, side by side; then throughput and "
           "latency against offered load, to see where each saturates.")

fe = c.FieldErrors()
current = st.session_state.get("scenario.current")
sources = (["the scenario on the Scenario page"] if current else []) + ["a shipped scenario"]
cols = st.columns([1, 1, 1])
with cols[0]:
    source = c.sticky(st.radio, "Start from", options=sources, key="cmp.source")
if source == "a shipped scenario":
    names = c.shipped_scenario_names()
    with cols[1]:
        pick = c.sticky(st.selectbox, "Shipped scenario", options=names, index=names.index(DEFAULT_SCENARIO),
                        key="cmp.shipped")
    base, base_dir, label = c.load_shipped(pick), str(c.shipped_dir()), pick
else:
    base, base_dir, label = current["data"], current["base_dir"], current["label"]
    cols[1].caption(f"Edited scenario from **{label}**.")
n_default = min(int((base.get("workload") or {}).get("num_requests") or 1000), 1000)
with cols[2]:
    n_requests = c.sticky(st.number_input, "Requests per run", value=n_default, step=100, key="cmp.n")
    fe.slot("workload.num_requests")

cols = st.columns([2, 1, 1])
with cols[0]:
    policies = c.sticky(st.multiselect, "Schedulers", options=POLICIES, default=POLICIES, key="cmp.policies")
with cols[1]:
    flip_quant = c.sticky(st.checkbox, "with/without quantization", value=True, key="cmp.quant")
with cols[2]:
    flip_spec = c.sticky(st.checkbox, "with/without speculative decoding", value=True, key="cmp.spec")
    fe.slot("variants")
if not (base.get("workload") or {}).get("priorities") and "priority" in policies:
    st.caption("This workload has one traffic class, so priority orders like continuous; "
               "the priority_mixed.yaml scenario has two.")

base = {**base, "workload": {**(base.get("workload") or {}), "num_requests": int(n_requests)}}
runs: dict[str, str] = {}
errors: dict[str, str] = {}
for name, sets in variants(base, policies, flip_quant, flip_spec).items():
    try:
        yaml_text = c.variant_yaml(base, base_dir, sets)
        c.preflight(c.scenario_from_dict_yaml(yaml_text, base_dir))
        runs[name] = yaml_text
    except ConfigError as exc:
        errors[name] = str(exc)
if not runs and not errors:
    fe.slots["variants"].error("Pick at least one scheduler or option to compare.", icon=":material/error:")
for name, message in errors.items():
    if message.startswith("workload.num_requests"):
        fe.show(ConfigError(message))
        break
    st.warning(f"{name}: skipped — {message}", icon=":material/error:")

seed = int(base.get("seed", 0))
tab_side, tab_load = st.tabs(["Side by side", "Offered load sweep"])

with tab_side:
    if st.button("Run comparison", type="primary", disabled=not runs, key="cmp.run"):
        st.session_state["cmp.jobs"] = {"runs": runs, "base_dir": base_dir, "seed": seed}
    jobs = st.session_state.get("cmp.jobs")
    if jobs is None:
        st.info("Press **Run comparison** to simulate each variant.")
    else:
        outs = {}
        bar = st.progress(0.0, text="Simulating…")
        for i, (name, yaml_text) in enumerate(jobs["runs"].items()):
            bar.progress(i / len(jobs["runs"]), text=f"Simulating {name} ({i + 1}/{len(jobs['runs'])})")
            outs[name] = simulate(yaml_text, jobs["base_dir"], jobs["seed"])
        bar.empty()
        table = pd.DataFrame([summary_row(name, o["summary"]) for name, o in outs.items()])
        shown = table.dropna(axis="columns", how="all")  # goodput without an SLO: a column of blanks
        st.dataframe(shown, hide_index=True, width="stretch", column_config=summary_columns(shown))
        if "goodput (req/s)" not in shown.columns:
            st.caption("No goodput column: the scenario sets no SLO (set one on the Scenario page).")
        unstable = [name for name, o in outs.items() if not o["stable"]]
        if unstable:
            st.warning("Unstable (the queue kept growing; latencies are lower bounds): " + ", ".join(unstable))
        cols = st.columns(2)
        with cols[0]:
            metric = c.sticky(st.selectbox, "Bar chart", options=list(METRICS), key="cmp.bar_metric")
            log = c.sticky(st.checkbox, "log scale", value=False, key="cmp.bar_log",
                           help="Latencies can differ by orders of magnitude between schedulers. On a log "
                                "scale each variant is a dot: a bar from zero has no length on a log axis.")
            st.altair_chart(variant_chart(table, METRICS[metric], metric, log), width="stretch")
        with cols[1]:
            lat = st.selectbox("Latency CDF", list(LATENCY_METRICS), key="cmp.cdf_metric")
            column = LATENCY_METRICS[lat]
            slo = base.get("slo") if isinstance(base.get("slo"), dict) else {}
            st.altair_chart(cdf_chart({name: o["latency"][column] for name, o in outs.items()}, lat, True,
                                      slo.get(column), float(slo.get("percentile") or 99)), width="stretch")
        st.download_button("Comparison (CSV)", table.to_csv(index=False), file_name="comparison.csv",
                           mime="text/csv", key="cmp.download")

with tab_load:
    knob = load_knob(base)
    if knob is None:
        st.info("Load sweeps scale the arrival rate, daily volume or client count; this workload replays a trace.")
    else:
        path, value, axis = knob
        cols = st.columns(3)
        lo, hi = cols[0].slider("Load range (× the scenario's)", 0.1, 4.0, (0.25, 2.0), step=0.05, key="cmp.range")
        points = cols[1].number_input("Points", value=6, min_value=2, max_value=20, step=1, key="cmp.points")
        cols[2].caption(f"Scales `{path}` (now {value:g}) for each variant above.")
        factors = np.geomspace(lo, hi, int(points))
        if st.button("Run load sweep", type="primary", disabled=not runs, key="cmp.sweep"):
            st.session_state["cmp.sweep_jobs"] = {"path": path, "value": value, "factors": list(factors),
                                                  "runs": runs, "base_dir": base_dir, "seed": seed,
                                                  "closed": path.endswith("concurrency")}
        job = st.session_state.get("cmp.sweep_jobs")
        if job is None:
            st.info("Press **Run load sweep**: each variant runs at every load point (cached, so reruns are instant).")
        else:
            rows = []
            total = len(job["runs"]) * len(job["factors"])
            bar = st.progress(0.0, text="Sweeping…")
            done = 0
            for name, yaml_text in job["runs"].items():
                variant = c.yaml_to_dict(yaml_text)
                for f in job["factors"]:
                    load = max(1, round(job["value"] * f)) if job["closed"] else job["value"] * f
                    bar.progress(done / total, text=f"{name} at {load:.3g} ({done + 1}/{total})")
                    done += 1
                    try:
                        sweep_yaml = c.variant_yaml(variant, job["base_dir"], [f"{job['path']}={load}"])
                        s = simulate(sweep_yaml, job["base_dir"], job["seed"])["summary"]
                    except ConfigError as exc:
                        st.warning(f"{name} at {load:.3g}: {exc}")
                        continue
                    x = float(load) if job["closed"] else s["offered_rate_per_s"]
                    rows.append({"variant": name, "load": x, "throughput (req/s)": s["request_throughput_per_s"],
                                 "TTFT p99 (s)": s["ttft_s_p99"], "E2E p99 (s)": s["e2e_s_p99"],
                                 "stable": bool(s["stable"])})
            bar.empty()
            df = pd.DataFrame(rows)
            x = alt.X("load:Q", title=axis)
            base_chart = alt.Chart(df).encode(x=x, color=alt.Color("variant:N", title=None))
            marks = alt.Chart(df).mark_point(filled=True, size=60).encode(
                x=x, color=alt.Color("variant:N", title=None),
                shape=alt.Shape("stable:N", scale=alt.Scale(domain=[True, False], range=["circle", "cross"])))
            cols = st.columns(2)
            with cols[0]:
                thr = base_chart.mark_line().encode(y=alt.Y("throughput (req/s):Q"))
                layers = [thr, marks.encode(y="throughput (req/s):Q")]
                if not job["closed"]:
                    ref = pd.DataFrame({"load": [df["load"].min(), df["load"].max()]})
                    layers.append(alt.Chart(ref).mark_line(strokeDash=[4, 4], color="gray").encode(
                        x="load:Q", y=alt.Y("load:Q", title="throughput (req/s)")))
                st.altair_chart(alt.layer(*layers).properties(height=320, title="Throughput vs offered load "
                                                                               "(dashed: all served)"),
                                width="stretch")
            with cols[1]:
                lat_y = alt.Y("TTFT p99 (s):Q", scale=alt.Scale(type="log"))
                st.altair_chart(alt.layer(base_chart.mark_line().encode(y=lat_y), marks.encode(y=lat_y))
                                .properties(height=320, title="P99 TTFT vs offered load (× = unstable)"),
                                width="stretch")
            sat = []
            for name, g in df.groupby("variant", sort=False):
                g = g.sort_values("load")
                stable, unstable = g[g["stable"]], g[~g["stable"]]
                first_bad = unstable["load"].min() if len(unstable) else math.nan
                last_ok = stable[stable["load"] < first_bad]["load"].max() if len(unstable) else stable["load"].max()
                sat.append({"variant": name, "highest stable load": last_ok, "first unstable load": first_bad,
                            "saturates": "not in this range" if math.isnan(first_bad) else
                            f"between {last_ok:.3g} and {first_bad:.3g}" if not math.isnan(last_ok) else
                            f"below {first_bad:.3g}"})
            st.dataframe(pd.DataFrame(sat), hide_index=True, width="stretch")
            st.download_button("Sweep (CSV)", df.to_csv(index=False), file_name="load_sweep.csv", mime="text/csv",
                               key="cmp.sweep_download")
