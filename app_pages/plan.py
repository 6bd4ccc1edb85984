"""Plan page: the capacity question as a form, answered by `sim.plan.planner.plan` as a sentence, a table
and a chart."""
from __future__ import annotations

import copy
import datetime as dt
import inspect

import altair as alt
import pandas as pd
import streamlit as st
import yaml

from app_pages import common as c
from app_pages.display import fmt_ms, fmt_s, fmt_usd
from app_pages.profiles import matching_profile
from app_pages.progress import forget_stop, run_with_stop, stopped_notice
from app_pages.form_workload import DAILY_SHAPES
from sim.accuracy import held_out_summary
from sim.catalog import gpu_catalog, model_catalog, resolve_gpu, resolve_model
from sim.configio import ConfigError
from sim.plan.config import read_plan

PLAN_SCENARIO = "customer_support_1m_per_day.yaml"
UI_REQUESTS_PER_POINT = 1000  # the CLI's default is 3000; the UI trades some tail accuracy for speed
UI_MIN_DURATION_S = 120.0
FALLBACK_BASE = {  # used when the shipped planning scenario is absent
    "name": "capacity-plan", "seed": 11,
    "workload": {"arrival": {"kind": "daily", "queries_per_day": 1_000_000},
                 "prompt_tokens": {"kind": "lognormal", "mean": 350, "sigma": 0.9, "min": 32, "max": 6144},
                 "output_tokens": {"kind": "lognormal", "mean": 220, "sigma": 0.4, "min": 16, "max": 1024}},
    "model": "llama-3.1-8b", "hardware": {"gpu": "a100-80gb-sxm"},
    "serving": {"scheduler": {"policy": "continuous"}, "max_model_len": 8192},
    "slo": {"ttft_s": 2.0, "tpot_s": 0.1, "percentile": 99},
}

try:
    from sim.plan.planner import plan as _plan
except ImportError:  # the planner ships separately; the page says so instead of failing
    _plan = None


def base_scenario() -> tuple[dict, str]:
    try:
        return c.load_shipped(PLAN_SCENARIO), PLAN_SCENARIO
    except ConfigError:
        return copy.deepcopy(FALLBACK_BASE), "built-in defaults"


def reports_progress() -> bool:
    """Whether this planner can call back with (done, total) simulations."""
    return "on_progress" in inspect.signature(_plan).parameters


AUTO = "auto: a matching measured profile, else the roofline"
ROOFLINE = "roofline (analytic) for every candidate"
PLANS_KEPT = 8  # finished plans remembered per browser session


def kept_plan(planning_yaml: str, seed: int) -> dict | None:
    """The finished plan of (YAML, seed) if this browser session has it."""
    return st.session_state.get("plan.results", {}).get((planning_yaml, seed))


def planned(planning_yaml: str, seed: int, on_progress=None) -> dict:
    """plan() on a planning mapping (given as YAML), as plain data; remembered by (YAML, seed)
    for this browser session.

    Not st.cache_data: on a hit it replays the calls the function made on page elements, and
    the progress bar those calls drew into belongs to an earlier run (CacheReplayClosureError).
    """
    done = st.session_state.setdefault("plan.results", {})
    key = (planning_yaml, seed)
    if key not in done:
        kwargs = {"seed": seed}
        if on_progress is not None and reports_progress():
            kwargs["on_progress"] = on_progress
        p = _plan(yaml.safe_load(planning_yaml), **kwargs)
        done[key] = {"headline": p.headline(), "table": p.to_frame(), "pareto": p.pareto_frame(), "plan": p.to_dict()}
        for old in list(done)[:-PLANS_KEPT]:
            del done[old]
    return done[key]


def ranked_table(table: pd.DataFrame, pct: float, cost_models: dict[str, str]) -> pd.DataFrame:
    """The plan's ranked table as shown: the answer's columns first, units in the names,
    separators in the numbers, "—" where a candidate has no value (it is not feasible)."""
    def whole(v):
        return "—" if pd.isna(v) else f"{int(v):,}"

    return pd.DataFrame({
        "#": table["rank"].map(whole), "candidate": table["name"],
        "$/month autoscaled": table["usd_per_month_autoscaled"].map(lambda v: fmt_usd(v, 0)),
        "$/month fixed": table["usd_per_month_fixed"].map(lambda v: fmt_usd(v, 0)),
        "$/1k queries": table["usd_per_1k_queries_autoscaled"].map(lambda v: fmt_usd(v, 4)),
        "GPUs at peak": table["gpus_peak"].map(whole),
        "why not / binding SLO": [m if ok else r for ok, r, m in zip(table["feasible"], table["reason"],
                                                                     table["margin"])],
        f"P{pct:g} TTFT": table["ttft_s"].map(fmt_s), f"P{pct:g} TPOT": table["tpot_s"].map(fmt_ms),
        "replicas by hour (0–23)": table["hourly_replicas"].fillna(""),
        "cost model": table["name"].map(lambda n: cost_models.get(n, "")),
    })


def cost_chart(feasible: pd.DataFrame) -> alt.Chart:
    """$/month of each feasible candidate, cheapest first: the autoscaled fleet beside the fixed (peak) one."""
    fleets = {"usd_per_month_autoscaled": "autoscaled", "usd_per_month_fixed": "fixed (peak) fleet"}
    df = feasible.melt(id_vars=["name"], value_vars=list(fleets), var_name="fleet", value_name="usd_per_month")
    df["fleet"] = df["fleet"].map(fleets)
    return alt.Chart(df).mark_bar().encode(
        y=alt.Y("name:N", title=None, sort=list(feasible["name"]), axis=alt.Axis(labelLimit=300)),
        yOffset=alt.YOffset("fleet:N", sort=list(fleets.values())),
        x=alt.X("usd_per_month:Q", title="$ / month", axis=alt.Axis(format="$,.0f")),
        color=alt.Color("fleet:N", title=None, sort=list(fleets.values()), legend=alt.Legend(orient="bottom")),
        tooltip=["name", "fleet", alt.Tooltip("usd_per_month:Q", title="$/month", format="$,.0f")],
    ).properties(height=44 * len(feasible) + 50, title="Cost per month, cheapest first")


def answer_report(result: dict, ranked: pd.DataFrame, job: dict) -> str:
    """One page to pass on: the answer, then every assumption behind it (traffic, SLO, prices and
    their sources, cost models, seed, search) and the ranked table."""
    p = result["plan"]
    planning = yaml.safe_load(job["yaml"])
    hw = planning.get("hardware") or {}
    gpus = sorted({cand["gpu"] for cand in planning["plan"]["candidates"]})
    prices = [f"- {g}: ${resolve_gpu(g, 'gpu').price_usd_per_gpu_hour:,.2f}/GPU-hour "
              f"({resolve_gpu(g, 'gpu').price_source})" for g in gpus]
    discount = hw.get("price_discount") or 0
    def cell(v) -> str:
        return str(v).replace("|", "/")
    rows = ["| " + " | ".join(ranked.columns) + " |", "|" + "---|" * len(ranked.columns)]
    rows += ["| " + " | ".join(cell(v) for v in r) + " |" for r in ranked.itertuples(index=False)]
    return "\n".join([
        f"# Capacity plan ({dt.date.today().isoformat()}, servesim)", "", result["headline"], "",
        "## Assumptions", "",
        f"- Traffic: {p['queries_per_day']:,.0f} queries/day, peak {max(p['hourly_rate_per_s']):.2f} req/s at hour "
        f"{p['peak_hour']:02d}; mean prompt {p['mean_prompt_tokens']:,.0f} tokens, mean output "
        f"{p['mean_output_tokens']:,.0f} tokens",
        f"- SLO: {p['slo']}",
        f"- Autoscaling margin: {p['scale_up_margin']:g} "
        f"(each hour sized for its rate × {1 + p['scale_up_margin']:g})",
        "- Cost model per candidate: " + "; ".join(f"{n}: {m}" for n, m in job.get("cost_models", {}).items()),
        *[f"- Accuracy, {n}: {a}" for n, a in zip(result["table"]["name"], result["table"]["cost_model_accuracy"])
          if a],
        f"- Prices (on-demand list, discount {discount:g}):", *[f"  {line}" for line in prices],
        f"- Seed {p['seed']}; {planning['plan']['requests_per_point']:,} requests per simulated point; "
        f"{p['points_simulated']} simulations ({p['backend']})",
        "- Reproduce: save the planning scenario (YAML) from the page and run `servesim plan plan.yaml`", "",
        "## Candidates, ranked", "", *rows, ""])


st.title("Plan")
st.caption("How many GPUs, of which kind, and what it costs: each candidate's fleet is found by simulating the "
           "peak hour until the SLO holds, then hour by hour for autoscaling (the same `plan` as "
           "`servesim plan FILE`).")

if _plan is None:
    st.warning("The capacity planner (sim/plan/) is not part of this checkout yet, so this page cannot "
               "answer; the Scenario and Compare pages work without it.")
    st.stop()

fe = c.FieldErrors()
shared = c.linked("p")
if isinstance(shared, dict):  # opened from a shared link: its values seed the form
    st.session_state.setdefault("sticky", {}).update({k: v for k, v in shared.items() if k.startswith("plan.")})
base, base_label = base_scenario()
w = base["workload"]
arr = w["arrival"]
st.caption(f"Starting from {base_label}.")

form_col, out_col = st.columns([2, 3], gap="large")
with form_col:
    with st.container(border=True):
        st.subheader("Traffic")
        qpd = c.sticky(st.number_input, "Queries per day", value=float(arr.get("queries_per_day") or 1_000_000),
                       step=100_000.0, format="%.0f", key="plan.qpd")
        fe.slot("workload.arrival.queries_per_day")
        shapes = (["from the file"] if arr.get("hourly_weights") else []) + list(DAILY_SHAPES)
        shape = c.sticky(st.selectbox, "Daily shape", options=shapes, key="plan.shape")
        fe.slot("workload.arrival.hourly_weights")
        weights = arr.get("hourly_weights") if shape == "from the file" else DAILY_SHAPES[shape]
        curve = pd.DataFrame({"hour": range(24), "pct": [100 * x / sum(weights) for x in weights] if weights
                              else [100 / 24] * 24})
        st.altair_chart(alt.Chart(curve).mark_bar().encode(x=alt.X("hour:O"), y=alt.Y("pct:Q", title="% of day"))
                        .properties(height=150), width="stretch")
        cols = st.columns(2)
        with cols[0]:
            prompt_mean = c.sticky(st.number_input, "Mean prompt tokens",
                                   value=float(w["prompt_tokens"].get("mean", 350)), step=50.0, format="%.0f",
                                   key="plan.prompt")
            fe.slot("workload.prompt_tokens")
        with cols[1]:
            output_mean = c.sticky(st.number_input, "Mean output tokens",
                                   value=float(w["output_tokens"].get("mean", 220)), step=50.0, format="%.0f",
                                   key="plan.output")
            fe.slot("workload.output_tokens")
    with st.container(border=True):
        st.subheader("SLO")
        slo = base.get("slo") or {}
        cols = st.columns(3)
        with cols[0]:
            pct = c.sticky(st.selectbox, "Percentile", options=[99.0, 95.0, 90.0, 50.0], key="plan.pct",
                           index=[99.0, 95.0, 90.0, 50.0].index(float(slo.get("percentile", 99))))
            fe.slot("slo.percentile")
        with cols[1]:
            ttft = c.sticky(st.number_input, "TTFT bound (s)", value=slo.get("ttft_s"), step=0.1, key="plan.ttft",
                            help="Empty: no bound")
            fe.slot("slo.ttft_s")
        with cols[2]:
            tpot = c.sticky(st.number_input, "TPOT bound (s)", value=slo.get("tpot_s"), step=0.01,
                            key="plan.tpot", help="Empty: no bound")
            fe.slot("slo.tpot_s")
        fe.slot("slo")
    with st.container(border=True):
        st.subheader("Candidates")
        models = sorted(model_catalog())
        model = c.sticky(st.selectbox, "Model", options=models, index=models.index(base.get("model", "llama-3.1-8b")),
                         key="plan.model")
        fe.slot("model")
        gpus = c.sticky(st.multiselect, "Candidate GPUs", options=sorted(gpu_catalog()),
                        default=["a100-80gb-sxm", "h100-sxm", "l40s"], key="plan.gpus")
        cols = st.columns(2)
        with cols[0]:
            tps = c.sticky(st.multiselect, "GPUs per replica (TP)", options=[1, 2, 4, 8], default=[1], key="plan.tps")
        with cols[1]:
            quants = c.sticky(st.multiselect, "Weights", options=["bf16", "fp8", "int8", "int4"], default=["bf16"],
                              key="plan.quants", help="fp8 and int8 candidates are made only on GPUs with those "
                                                      "tensor cores")
            fe.slot("plan.candidates")
        cost_choice = c.sticky(st.selectbox, "Cost model", options=[AUTO, ROOFLINE], key="plan.cost_model",
                               help="auto: each candidate is priced by the shipped profile measured for its GPU, "
                                    "model, TP and dtypes (Calibrate page), else by the roofline; the table says "
                                    "which, and the answer's accuracy line how far such predictions were from "
                                    f"measured vLLM runs ({held_out_summary() or 'no check on record'}).")
    with st.expander("Search settings"):
        cols = st.columns(3)
        with cols[0]:
            rpp = c.sticky(st.number_input, "Requests per simulated point", value=UI_REQUESTS_PER_POINT, step=500,
                           key="plan.rpp", help="Requests in each simulation of a (candidate, replicas) point; "
                                                "more gives steadier tail percentiles and takes longer.")
        with cols[1]:
            margin = c.sticky(st.number_input, "Autoscaling margin", value=0.2, step=0.05, key="plan.margin",
                              help="Head-room of the autoscaled fleet: each hour gets the replicas for "
                                   "(1 + margin) × that hour's rate, so it absorbs growth before it scales up.")
        with cols[2]:
            discount = c.sticky(st.number_input, "Price discount (0.6 = spot)", value=0.0, step=0.1,
                                key="plan.discount")
        fe.slot("plan.requests_per_point")
        fe.slot("plan.scale_up_margin")
        fe.slot("hardware.price_discount")
        fe.slot("plan")

c.set_link("p", {k: v for k, v in st.session_state["sticky"].items() if k.startswith("plan.")})
model_spec = resolve_model(model, "model")
candidates = []
cost_models: dict[str, str] = {}  # candidate name -> the cost model that prices it
base_kv = ((base.get("serving") or {}).get("quantization") or {}).get("kv_cache", "bf16")
for gpu in gpus:
    spec = resolve_gpu(gpu, "gpu")
    for tp in tps:
        if model_spec.num_attention_heads % tp:
            continue
        for q in quants:
            if (q == "fp8" and not spec.fp8_tflops) or (q == "int8" and not spec.int8_tops):
                continue
            name = f"{gpu}" + (f"-tp{tp}" if tp > 1 else "") + (f"-{q}" if q != "bf16" else "")
            cand = {"name": name, "model": model, "gpu": gpu, "tensor_parallel": tp, "weights": q}
            if q != "bf16":
                cand["kv_cache"] = "fp8" if spec.fp8_tflops else "int8"
            profile = None
            if cost_choice == AUTO:
                profile = matching_profile(model, gpu, tp, q, cand.get("kv_cache", base_kv))
            if profile is not None:
                cand["set"] = [f"cost_model={{kind: profile, profile: {profile}}}"]
            cost_models[name] = f"profile {profile}" if profile else "roofline"
            candidates.append(cand)

planning = copy.deepcopy(base)
planning["model"] = model
planning["workload"]["arrival"] = {"kind": "daily", "queries_per_day": qpd,
                                   **({"hourly_weights": [float(x) for x in weights]} if weights else {})}
planning["workload"]["prompt_tokens"]["mean"] = prompt_mean
planning["workload"]["output_tokens"]["mean"] = output_mean
planning["slo"] = {"percentile": pct, **({"ttft_s": ttft} if ttft is not None else {}),
                   **({"tpot_s": tpot} if tpot is not None else {})}
planning.setdefault("hardware", {})["price_discount"] = discount
planning["plan"] = {**(base.get("plan") or {}), "candidates": candidates, "requests_per_point": rpp,
                    "min_duration_s": UI_MIN_DURATION_S, "max_requests_per_point": max(rpp, 30000),
                    "scale_up_margin": margin}
planning.pop("base_dir", None)

valid = True
if not candidates:
    fe.slots["plan.candidates"].error("plan.candidates: none; pick at least one GPU, TP size and weight format "
                                      "that fit this model", icon=":material/error:")
    valid = False
else:
    try:  # the scenario part and the search settings checked now; each candidate is checked when planned
        c.check({k: v for k, v in planning.items() if k != "plan"}, None)
        read_plan(planning)
    except ConfigError as exc:
        fe.show(exc)
        valid = False

with out_col:
    cols = st.columns([1, 3])
    clicked = cols[0].button("Plan", type="primary", disabled=not valid, key="plan.run")
    cols[1].caption(f"{len(candidates)} candidate(s) × peak-hour and hourly searches; a few seconds to a minute.")
    planning_yaml = yaml.safe_dump(planning, sort_keys=False)
    if valid:
        st.download_button("Planning scenario (YAML)", planning_yaml, file_name="plan.yaml",
                           mime="application/x-yaml", key="plan.download")
    if clicked and valid:
        st.session_state["plan.job"] = {"yaml": planning_yaml, "seed": int(planning.get("seed", 0)),
                                        "cost_models": cost_models}
        forget_stop("plan")
    job = st.session_state.get("plan.job")
    result = None
    if job is not None:
        try:
            result = kept_plan(job["yaml"], job["seed"]) or run_with_stop(
                "plan", "plan.job", "Planning (the total grows as the searches go)", "simulations",
                lambda on_progress: planned(job["yaml"], job["seed"], on_progress=on_progress))
        except ConfigError as exc:
            if fe.show(exc) is None:
                st.error(str(exc), icon=":material/error:")
            st.session_state.pop("plan.job", None)
    if result is None:
        if not stopped_notice("plan", "Press **Plan** to plan again, or simulate fewer requests per point."):
            st.info("Fill in the traffic, SLO and candidates, then press **Plan**.")
    else:
        if job["yaml"] != planning_yaml:
            st.caption("The form has changed since this plan; press Plan to update.")
        table = result["table"]
        best = table[table["feasible"]]
        (st.success if len(best) else st.error)(result["headline"])
        if len(best) and best["cost_model_accuracy"].iloc[0]:
            st.caption(f"Accuracy ({best['name'].iloc[0]}): {best['cost_model_accuracy'].iloc[0]}")
        baseline = st.session_state.get("plan.baseline")
        cheapest = float(best["usd_per_month_autoscaled"].iloc[0]) if len(best) else None
        cols = st.columns([3, 1])
        if baseline is not None and baseline["yaml"] != job["yaml"]:
            change = ""
            if cheapest is not None and baseline["usd_per_month"]:
                diff = cheapest - baseline["usd_per_month"]
                change = f" This answer: {'+' if diff >= 0 else '−'}{fmt_usd(abs(diff), 0)}/month " \
                         f"({diff / baseline['usd_per_month'] * 100:+.1f} %)."
            cols[0].info(f"Baseline: {baseline['headline']}{change}", icon=":material/push_pin:")
        if baseline is not None and baseline["yaml"] == job["yaml"]:
            if cols[1].button("Unpin baseline", key="plan.unpin"):
                st.session_state.pop("plan.baseline")
                st.rerun()
        elif cols[1].button("Pin as baseline", key="plan.pin",
                            help="Keep this answer; the next plans show theirs against it (8B vs 70B, on-demand "
                                 "vs spot, P99 vs P95)."):
            st.session_state["plan.baseline"] = {"yaml": job["yaml"], "headline": result["headline"],
                                                 "usd_per_month": cheapest}
            st.rerun()
        p = result["plan"]
        st.caption(f"{p['queries_per_day']:,.0f} queries/day, peak {max(p['hourly_rate_per_s']):.2f} req/s at hour "
                   f"{p['peak_hour']:02d}; SLO {p['slo']}; {p['points_simulated']} simulations in {p['wall_s']:.1f} s "
                   f"({p['backend']}).")
        if len(best):
            st.altair_chart(cost_chart(best), width="stretch")
        st.dataframe(ranked_table(table, pct, job.get("cost_models", {})), hide_index=True, width="stretch",
                     column_config={"candidate": st.column_config.TextColumn(width="medium"),
                                    "why not / binding SLO": st.column_config.TextColumn(width="large")})
        if len(best):
            chosen = best.assign(gpus=best["gpus_peak"]).melt(
                id_vars=["name", "gpus"], value_vars=["usd_per_month_fixed", "usd_per_month_autoscaled"],
                var_name="fleet", value_name="usd_per_month")
            chosen["fleet"] = chosen["fleet"].map({"usd_per_month_fixed": "fixed (peak) fleet",
                                                   "usd_per_month_autoscaled": "autoscaled"})
            layers = [alt.Chart(chosen).mark_point(filled=True, size=120).encode(
                x=alt.X("gpus:Q", title="GPUs at peak", axis=alt.Axis(tickMinStep=1)), y=alt.Y("usd_per_month:Q", title="$ / month"),
                color=alt.Color("name:N", title="candidate"), shape=alt.Shape("fleet:N", title=None),
                tooltip=["name", "fleet", "gpus", alt.Tooltip("usd_per_month:Q", format="$,.0f")])]
            pareto = result["pareto"]
            if len(pareto):
                layers.append(alt.Chart(pareto).mark_line(strokeDash=[4, 4], color="gray").encode(
                    x="gpus:Q", y="usd_per_month_fixed:Q"))
            st.altair_chart(alt.layer(*layers).properties(height=320, title="Cost vs GPUs (dashed: Pareto front "
                                                                            "of cost and latency)"), width="stretch")
            first = best.iloc[0]
            hourly = pd.DataFrame({"hour": range(24), "replicas": [int(x) for x in first["hourly_replicas"].split(",")]})
            st.altair_chart(alt.Chart(hourly).mark_bar().encode(x=alt.X("hour:O"), y=alt.Y("replicas:Q")).properties(
                height=160, title=f"Autoscaled replicas by hour: {first['name']}"), width="stretch")
        cols = st.columns(2)
        cols[0].download_button("Plan (CSV)", table.to_csv(index=False), file_name="plan.csv", mime="text/csv",
                                key="plan.csv")
        cols[1].download_button("The answer and its assumptions (Markdown)",
                                answer_report(result, ranked_table(table, pct, job.get("cost_models", {})), job),
                                file_name="plan.md", mime="text/markdown", key="plan.report")
