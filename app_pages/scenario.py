"""Scenario page: load and edit one scenario, run it, see its headline numbers and charts."""
from __future__ import annotations

import pandas as pd
import streamlit as st
import yaml

from app_pages import common as c
from app_pages import runs
from app_pages.charts import (LATENCY_METRICS, TIMESERIES, cdf_chart,
                              sample_timeseries, timeseries_chart, utilisation_chart)
from app_pages.display import HELP, headline_cards, readable_frame
from app_pages.progress import forget_stop, run_with_stop, stopped_notice
from app_pages.scenario_form import edit_scenario
from app_pages.scenario_source import scenario_source
from sim.catalog import GIB
from sim.configio import ConfigError

st.title("Scenario")
st.caption("Pick or upload a scenario, edit it, run it. The form builds the same scenario file the CLI reads "
           "(`servesim run FILE`); download it below.")

fe = c.FieldErrors()
base, base_dir, label = scenario_source(fe)
form_col, out_col = st.columns([2, 3], gap="large")
with form_col:
    data = edit_scenario(base, fe)

scenario = memory = cost_label = None
try:
    scenario, memory, cost_label = c.check(data, base_dir)
except ConfigError as exc:
    with out_col:
        fe.fallback = fe.fallback or st.empty()
    fe.show(exc)

if scenario is not None:
    # The Compare page starts from whatever is valid here.
    st.session_state["scenario.current"] = {"data": data, "base_dir": base_dir, "label": label}
    c.set_link("s", {"d": data, "shipped": base_dir == str(c.shipped_dir())})  # the URL is a link to this

with out_col:
    cols = st.columns([1, 1, 2])
    run_clicked = cols[0].button("Run simulation", type="primary", disabled=scenario is None, key="run")
    if scenario is not None:
        edited_yaml = yaml.safe_dump(data, sort_keys=False)
        cols[1].download_button("Scenario (YAML)", edited_yaml, file_name=f"{scenario.name}.yaml",
                                mime="application/x-yaml", key="download.scenario")
        cols[2].caption(f"{scenario.num_gpus} × {scenario.gpu_spec.name} · {scenario.model_spec.name} · "
                        f"KV cache {memory.num_kv_blocks:,} blocks = {memory.kv_capacity_tokens:,} tokens per replica · "
                        f"weights {memory.weights_bytes / GIB:.1f} GiB per GPU · cost model: {cost_label}")
    else:
        cols[2].error("Fix the highlighted field to run.", icon=":material/error:")
    run_error = st.empty()

    if run_clicked and scenario is not None:
        st.session_state["scenario.run"] = {"yaml": c.scenario_yaml(scenario), "base_dir": base_dir,
                                            "seed": scenario.seed}
        forget_stop("scenario")
    job = st.session_state.get("scenario.run")
    out = None
    if job is not None:
        try:
            out = runs.kept_run(job) or run_with_stop(
                "scenario", "scenario.run", "Simulating", "requests finished",
                lambda on_progress: runs.run_and_keep(job, on_progress))
        except ConfigError as exc:
            if fe.show(exc) is None:
                run_error.error(str(exc), icon=":material/error:")
            st.session_state.pop("scenario.run", None)

    if out is None:
        if not stopped_notice("scenario", "Press **Run simulation** to run it again, or simulate fewer requests."):
            st.info("Press **Run simulation** to see latency, throughput and cost.")
    else:
        s = out["summary"]
        if scenario is None or c.scenario_yaml(scenario) != job["yaml"]:
            st.warning("These results are for the inputs of the last run, not the form as it is now: "
                       + ("press **Run simulation** to update." if scenario is not None else "fix the form and run."),
                       icon=":material/history:")
        if out["stable"]:
            st.success(f"Stable: {s['requests_finished']:,} of {s['requests_total']:,} requests finished "
                       f"in {s['duration_s']:,.1f} s of simulated time (offered {s['offered_rate_per_s']:.2f} req/s).")
        else:
            st.warning(f"{out['status']}. The latency percentiles describe a queue that kept growing: "
                       "add replicas or lower the rate.")
        baseline = st.session_state.get("scenario.baseline")
        same = baseline is not None and baseline["yaml"] == job["yaml"]
        cols = st.columns([3, 1])
        if baseline is not None and not same:
            cols[0].caption(f"Changes are against the pinned baseline: **{baseline['label']}**.")
        if same:
            if cols[1].button("Unpin baseline", key="baseline.unpin"):
                st.session_state.pop("scenario.baseline")
                st.rerun()
        elif cols[1].button("Pin as baseline", key="baseline.pin",
                            help="Keep this run's numbers; later runs show their change from it on each card."):
            st.session_state["scenario.baseline"] = {"yaml": job["yaml"], "summary": s,
                                                     "label": f"{label} ({s['num_gpus']} GPUs)"}
            st.rerun()
        headline_cards(s, None if same or baseline is None else baseline["summary"])
        st.caption(f"{s['num_gpus']} GPUs × ${s['price_usd_per_gpu_hour']:.2f}/h = ${s['cost_usd_per_hour']:.2f}/h · "
                   f"cost model: {s['cost_model']} · preemptions: {s['preemptions']} · "
                   f"simulated in {s['wall_s']:.2f} s")
        if s.get("cost_model_accuracy"):
            st.caption(f"Accuracy: {s['cost_model_accuracy']}")
        for note in out["notes"]:
            st.caption(f"Note: {note}")

        lat_tab, time_tab, util_tab, class_tab = st.tabs(["Latency", "Over time", "Utilisation", "Per class"])
        with lat_tab:
            cols = st.columns([3, 1])
            metric = cols[0].radio("Latency", list(LATENCY_METRICS), horizontal=True, key="chart.cdf_metric",
                                   help=" · ".join(f"{m}: {HELP[m]}" for m in LATENCY_METRICS))
            log_x = cols[1].checkbox("log scale", key="chart.cdf_log")
            column = LATENCY_METRICS[metric]
            slo = yaml.safe_load(job["yaml"]).get("slo") or {}
            st.altair_chart(cdf_chart({metric: out["latency"][column]}, metric, log_x, slo.get(column),
                                      float(slo.get("percentile") or 99)), width="stretch")
            table = pd.DataFrame({name: [s.get(f"{col}_p{p}", float("nan")) for p in (50, 90, 95, 99)]
                                  for name, col in (("TTFT (s)", "ttft_s"), ("TPOT (s)", "tpot_s"),
                                                    ("ITL (s)", "itl_s"), ("E2E (s)", "e2e_s"),
                                                    ("queueing (s)", "queue_s"))},
                                 index=["p50", "p90", "p95", "p99"])
            st.dataframe(table.style.format("{:.4f}"), width="stretch")
        with time_tab:
            sampled = sample_timeseries(out["timeseries"], out["num_kv_blocks"])
            for title, column in TIMESERIES.items():
                st.altair_chart(timeseries_chart(sampled, column, title), width="stretch")
        with util_tab:
            cols = st.columns(3)
            cols[0].metric("Replica stepping (mean)", f"{s['gpu_busy_fraction_mean'] * 100:.1f} %",
                           help=HELP["stepping"])
            cols[1].metric("KV cache used (mean)", f"{s['kv_utilisation_mean'] * 100:.1f} %")
            cols[2].metric("KV cache used (peak)", f"{s['kv_utilisation_peak'] * 100:.1f} %")
            st.altair_chart(utilisation_chart(s["gpu_busy_fraction_by_replica"]), width="stretch")
        with class_tab:
            if len(out["by_class"]) > 1:
                classes, formats = readable_frame(out["by_class"])
                st.dataframe(classes, width="stretch", hide_index=True, column_config=formats)
            else:
                st.caption("One traffic class; add a priority mix to the workload to compare classes.")
        cols = st.columns(2)
        cols[0].download_button("Per-request results (CSV)", out["requests"].to_csv(index=False),
                                file_name="requests.csv", mime="text/csv", key="download.requests")
        summary = {k: (v if not isinstance(v, list) else str(v)) for k, v in s.items()}
        cols[1].download_button("Summary (CSV)", pd.DataFrame([summary]).to_csv(index=False),
                                file_name="summary.csv", mime="text/csv", key="download.summary")
