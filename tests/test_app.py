"""The Streamlit UI (app.py), driven headless with streamlit.testing.v1.AppTest.

Each test sets inputs, presses the page's buttons and checks the rendered numbers against
the core called directly (the UI must show what `run`/`summarize` compute), and that bad
input shows the core's field-named message next to the widget that caused it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("streamlit", reason="the UI needs the [ui] extra: pip install 'servesim[ui]'")

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from app_pages.form_widgets import field_of  # noqa: E402
from sim.metrics import summarize  # noqa: E402
from sim.scenario import DEFAULT_SCENARIO, read_scenario_file, scenario_from_dict  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT_S = 120  # generous: CI machines are small and shared


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVESIM_PROFILES_DIR", str(tmp_path / "profiles"))
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    return at.run()


def go(at: AppTest, page: str) -> AppTest:
    return at.switch_page(f"app_pages/{page}.py").run()


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _walk(node, path=()):
    children = getattr(node, "children", None)
    if children:
        for i, child in children.items():
            yield from _walk(child, path + (i,))
    else:
        yield path, node


def fk(at: AppTest, key: str) -> str:
    """The widget key of a scenario-form field ("f.serving.replicas") or the uploader ("source.upload")
    in the form's current generation (loading a file starts a new one)."""
    if key == "source.upload":
        return f"source.upload{at.session_state['source']['upload_n']}"
    if key.startswith("f."):
        return f"f{at.session_state['form']['n']}.{key[2:]}"
    return key


def error_next_to(at: AppTest, key: str) -> str:
    """The error shown directly under the widget with `key` (same container, next element);
    for a widget in a row of columns, under the row, in the column's place among the row's errors."""
    key = fk(at, key)
    nodes = dict(_walk(at._tree))
    where = next(p for p, n in nodes.items() if getattr(n, "key", None) == key)
    below = nodes.get(where[:-1] + (where[-1] + 1,))
    if (below is None or type(below).__name__ != "Error") and len(where) >= 3:
        row, column = where[:-2], where[-2]
        below = nodes.get(row[:-1] + (row[-1] + 1 + column,))
    assert below is not None and type(below).__name__ == "Error", f"no error under {key}"
    return below.value


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    """The (first) dataframe on the page that has `column`."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def expected_summary(overrides=(), name=DEFAULT_SCENARIO) -> dict:
    """What the CLI computes for the shipped scenario as the UI runs it by default (2000 requests)."""
    from app_pages.common import UI_MAX_REQUESTS, shipped_dir
    from sim.simulation import run

    data = read_scenario_file(name)
    n = min(data["workload"].get("num_requests") or UI_MAX_REQUESTS, UI_MAX_REQUESTS)
    scenario = scenario_from_dict(data, [f"workload.num_requests={n}", *overrides], base_dir=shipped_dir())
    return summarize(run(scenario))


# --- Scenario page --------------------------------------------------------------------

def test_scenario_default_run_shows_the_cli_numbers(app):
    from app_pages.display import fmt_ms, fmt_num, fmt_s, fmt_usd

    ok(app)
    assert app.button(key="run").disabled is False
    app.button(key="run").click().run()
    ok(app)
    shown = metrics(app)
    s = expected_summary()
    assert shown["TTFT p50"] == fmt_s(s["ttft_s_p50"])
    assert shown["TTFT p99"] == fmt_s(s["ttft_s_p99"])
    assert shown["TPOT p99"] == fmt_ms(s["tpot_s_p99"])
    assert shown["E2E p99"] == fmt_s(s["e2e_s_p99"])
    assert shown["Throughput (req/s)"] == fmt_num(s["request_throughput_per_s"], 2)
    assert shown["Output tokens/s"] == fmt_num(s["output_token_throughput_per_s"], 0)
    assert shown["Goodput (req/s)"] == fmt_num(s["goodput_per_s"], 2)
    assert shown["$ / 1M output tokens"] == fmt_usd(s["cost_usd_per_1m_output_tokens"], 3)
    assert shown["$ / month"] == fmt_usd(s["cost_usd_per_month"], 0)
    assert any("Stable" in m.value for m in app.success)
    assert f"Accuracy: {s['cost_model_accuracy']}" in [c.value for c in app.caption] and s["cost_model_accuracy"]
    assert {b.label for b in app.get("download_button")} >= {"Per-request results (CSV)", "Summary (CSV)",
                                                             "Scenario (YAML)"}


def test_chart_controls_reuse_the_cached_run(app, monkeypatch):
    import sim.simulation

    calls = []
    real_run = sim.simulation.run
    monkeypatch.setattr(sim.simulation, "run", lambda *a, **k: calls.append(1) or real_run(*a, **k))
    st.cache_data.clear()
    app.button(key="run").click().run()
    assert len(calls) == 1
    app.radio(key="chart.cdf_metric").set_value("E2E").run()
    app.checkbox(key="chart.cdf_log").check().run()
    ok(app)
    assert len(calls) == 1, "moving a chart control re-ran the simulation"


def test_editing_the_form_changes_the_run(app):
    app.number_input(key=fk(app, "f.serving.replicas")).set_value(1).run()
    app.number_input(key=fk(app, "f.workload.num_requests")).set_value(300).run()
    app.number_input(key=fk(app, "f.workload.arrival.rate_per_s")).set_value(4.0).run()
    app.button(key="run").click().run()
    ok(app)
    s = expected_summary(["serving.replicas=1", "workload.num_requests=300", "workload.arrival.rate_per_s=4.0"])
    from app_pages.display import fmt_s, fmt_usd

    assert metrics(app)["TTFT p99"] == fmt_s(s["ttft_s_p99"])
    assert metrics(app)["$ / month"] == fmt_usd(s["cost_usd_per_month"], 0)
    # Switching the policy swaps the scheduler knobs shown.
    app.selectbox(key=fk(app, "f.serving.scheduler.policy")).set_value("static").run()
    fields = {field_of(w.key) for w in app.number_input if w.key.startswith("f")}
    assert "serving.scheduler.batch_size" in fields and "serving.scheduler.max_num_seqs" not in fields


@pytest.mark.parametrize("key, value, field", [
    ("f.workload.arrival.rate_per_s", 0.0, "workload.arrival.rate_per_s: got 0.0; allowed 0 < x"),
    ("f.workload.num_requests", 0, "workload.num_requests: got 0; allowed 1 <= x"),
    ("f.serving.scheduler.max_num_batched_tokens", 64, "serving.scheduler.max_num_batched_tokens: got 64"),
    ("f.workload.prompt_tokens.max", 8, "workload.prompt_tokens.max: got 8; must be >= min (16)"),
    ("f.serving.max_model_len", 1000, "workload.prompt_tokens.max + workload.output_tokens.max"),
])
def test_bad_number_shows_the_core_message_next_to_it(app, key, value, field):
    app.number_input(key=fk(app, key)).set_value(value).run()
    ok(app)
    target = "f.workload.prompt_tokens.max" if "prompt_tokens.max +" in field else key
    assert field in error_next_to(app, target)
    assert app.button(key="run").disabled


def test_bad_choices_show_errors_next_to_the_field(app):
    app.selectbox(key=fk(app, "f.serving.quantization.weights")).set_value("fp8").run()  # A100: no fp8 tensor cores
    ok(app)
    assert "a100-80gb-sxm has no fp8 tensor cores" in error_next_to(app, "f.serving.quantization.weights")
    app.selectbox(key=fk(app, "f.serving.quantization.weights")).set_value("int4").run()
    assert not app.error
    app.checkbox(key=fk(app, "f.serving.speculative.on")).check().run()
    app.selectbox(key=fk(app, "f.serving.scheduler.policy")).set_value("fifo").run()
    ok(app)
    errors = [e.value for e in app.error]
    assert any(e.startswith("serving.speculative: ") and "needs scheduler policy continuous" in e for e in errors)
    assert app.button(key="run").disabled


def test_upload_a_scenario_and_a_broken_one(app):
    data = read_scenario_file("static_batching.yaml")
    data["serving"]["replicas"] = 3
    data["workload"]["num_requests"] = 200
    app.file_uploader(key=fk(app, "source.upload")).upload("mine.yaml", yaml.safe_dump(data).encode()).run()
    ok(app)
    assert app.number_input(key=fk(app, "f.serving.replicas")).value == 3
    assert app.selectbox(key=fk(app, "f.serving.scheduler.policy")).value == "static"
    app.button(key="run").click().run()
    ok(app)
    assert metrics(app)["$ / month"] == "$11,213"  # 3 A100-80GB x $5.12/h x 730 h
    app.file_uploader(key=fk(app, "source.upload")).upload("bad.yaml", b"workload: [unclosed").run()
    ok(app)
    assert "bad.yaml: not valid YAML" in error_next_to(app, "source.upload")


def test_uploaded_file_with_a_bad_field(app):
    data = read_scenario_file(DEFAULT_SCENARIO)
    data["serving"]["router"] = "random"
    app.file_uploader(key=fk(app, "source.upload")).upload("typo.yaml", yaml.safe_dump(data).encode()).run()
    ok(app)
    assert "serving.router: got 'random'" in error_next_to(app, "f.serving.router")


# --- Compare page ---------------------------------------------------------------------

def test_compare_side_by_side_and_load_sweep(app):
    go(app, "compare")
    ok(app)
    app.number_input(key="cmp.n").set_value(300).run()
    app.button(key="cmp.run").click().run()
    ok(app)
    table = app.dataframe[0].value.set_index("variant")
    assert {"fifo", "static", "continuous", "priority"} <= set(table.index)
    assert any("speculative" in v for v in table.index) and any("fp8 KV" in v for v in table.index)
    # The table holds what the core computes for that variant.
    s = expected_summary(["workload.num_requests=300", "serving.scheduler.policy=continuous"])
    assert table.loc["continuous", "TTFT p99 (s)"] == pytest.approx(s["ttft_s_p99"])
    assert table.loc["continuous", "TTFT p99 (s)"] < table.loc["fifo", "TTFT p99 (s)"]
    assert not table.loc["fifo", "stable"]

    app.number_input(key="cmp.points").set_value(3).run()
    app.multiselect(key="cmp.policies").set_value(["fifo", "continuous"]).run()
    app.checkbox(key="cmp.quant").uncheck().run()
    app.checkbox(key="cmp.spec").uncheck().run()
    app.button(key="cmp.sweep").click().run()
    ok(app)
    sat = app.dataframe[-1].value.set_index("variant")
    assert list(sat.index) == ["fifo", "continuous"]
    assert sat.loc["fifo", "saturates"].startswith("below")  # one request at a time: 3 req/s is too much
    assert sat.loc["continuous", "highest stable load"] > sat.loc["fifo", "first unstable load"]


def test_compare_uses_the_edited_scenario_and_reports_bad_input(app):
    app.number_input(key=fk(app, "f.serving.replicas")).set_value(1).run()
    go(app, "compare")
    assert app.radio(key="cmp.source").value == "the scenario on the Scenario page"
    app.number_input(key="cmp.n").set_value(0).run()
    ok(app)
    assert "workload.num_requests: got 0; allowed 1 <= x" in error_next_to(app, "cmp.n")
    app.number_input(key="cmp.n").set_value(200).run()
    app.multiselect(key="cmp.policies").set_value([]).run()
    app.checkbox(key="cmp.quant").uncheck().run()
    app.checkbox(key="cmp.spec").uncheck().run()
    assert "Pick at least one" in error_next_to(app, "cmp.spec")
    assert app.button(key="cmp.run").disabled


# --- Calibrate page -------------------------------------------------------------------

def synthetic_measurements(n_per_phase: int = 40, seed: int = 0) -> pd.DataFrame:
    """Steps priced by the roofline for Llama-3.1-8B on an A100, with 2 % noise: a stand-in for a GPU run."""
    from sim.catalog import resolve_gpu, resolve_model
    from sim.cost_model import RooflineCostModel

    cost = RooflineCostModel(resolve_model("llama-3.1-8b", "m"), resolve_gpu("a100-80gb-sxm", "g"), tp=1,
                             weight_dtype="bf16", kv_dtype="bf16")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_per_phase):
        L = int(rng.integers(16, 4096))
        rows.append(("prefill", L, 1, L * (L + 1) // 2, L, 1))
        B, ctx = int(rng.integers(1, 256)), int(rng.integers(16, 2048))
        rows.append(("decode", B, B, B * (ctx + 1), B * (ctx + 1), B))
        L, B = int(rng.integers(64, 2048)), int(rng.integers(1, 128))
        rows.append(("mixed", L + B, B + 1, L * (L + 1) // 2 + B * (ctx + 1), L + B * (ctx + 1), B + 1))
    df = pd.DataFrame(rows, columns=["phase", "new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs"])
    t = cost.step_times_s(*(df[c].to_numpy() for c in df.columns[1:]))
    df["step_time_s"] = t * (1 + 0.02 * rng.standard_normal(len(df)))
    return df


def test_calibrate_fit_save_and_use_the_profile(app, tmp_path):
    pytest.importorskip("calibration.fit")
    go(app, "calibrate")
    ok(app)
    csv = synthetic_measurements().to_csv(index=False).encode()
    app.file_uploader(key="cal.upload").upload("a100_run.csv", csv, "text/csv").run()
    ok(app)
    coeffs = frame_with(app, "coefficient")
    assert set(coeffs["coefficient"]) >= {"overhead_s", "weights_s", "per_token_s"}
    assert "held-out error" in app.code[0].value
    button(app, "Save profile").click().run()  # no source yet
    assert "provenance.source: empty" in app.error[0].value
    next(w for w in app.text_input if w.key.startswith("cal.src.")).input("synthetic roofline steps + 2 % noise (test)")
    next(w for w in app.selectbox if w.key.startswith("cal.gpu.")).set_value("a100-80gb-sxm")
    button(app, "Save profile").click().run()
    ok(app)
    assert any("Saved to" in s.value for s in app.success)
    saved = tmp_path / "profiles" / "a100_run"
    assert (saved / "profile.json").is_file() and (saved / "measurements.csv").is_file()
    app.run()
    provenance = frame_with(app, "profile")
    row = provenance[provenance["profile"] == "a100_run (saved)"].iloc[0]
    assert row["source"].startswith("synthetic roofline") and row["gpu"] == "a100-80gb-sxm"

    go(app, "scenario")
    app.selectbox(key=fk(app, "f.cost_model")).set_value("a100_run (saved)").run()
    app.number_input(key=fk(app, "f.workload.num_requests")).set_value(200).run()
    app.button(key="run").click().run()
    ok(app)
    assert "profile a100_run" in " ".join(c.value for c in app.caption)


def test_calibrate_rejects_a_bad_file(app):
    go(app, "calibrate")
    bad = synthetic_measurements().drop(columns=["attn_pairs"]).to_csv(index=False).encode()
    app.file_uploader(key="cal.upload").upload("short.csv", bad, "text/csv").run()
    ok(app)
    assert "lacks column(s) ['attn_pairs']" in error_next_to(app, "cal.upload")


def test_a_profile_from_another_model_is_refused_next_to_the_cost_model(app, tmp_path):
    """Only matching profiles are offered; a file naming another model's profile gets the core's message."""
    from calibration.profile import PROFILE_FILE, Profile, save_profile
    from sim.cost_model import PROFILE_COEFFICIENTS

    folder = tmp_path / "profiles" / "other"
    save_profile(Profile(name="other", coefficients={k: 1e-4 for k in PROFILE_COEFFICIENTS}, model="llama-3.1-70b",
                         device="test", gpu=None, tensor_parallel=1, weight_dtype="bf16", kv_dtype="bf16",
                         block_size_tokens=16, num_kv_blocks=None, provenance={"source": "test"}), folder)
    app.run()
    assert "other (saved)" not in app.selectbox(key=fk(app, "f.cost_model")).options
    data = read_scenario_file(DEFAULT_SCENARIO)
    data["cost_model"] = {"profile": str(folder)}
    app.file_uploader(key=fk(app, "source.upload")).upload("prof.yaml", yaml.safe_dump(data).encode()).run()
    ok(app)
    assert (folder / PROFILE_FILE).is_file()
    assert "was measured for model 'llama-3.1-70b'" in error_next_to(app, "f.cost_model")


# --- Plan page --------------------------------------------------------------------------

def test_plan_answers_in_a_sentence_with_a_ranked_table(app):
    pytest.importorskip("sim.plan.planner")
    from sim.plan.planner import plan

    go(app, "plan")
    ok(app)
    app.number_input(key="plan.qpd").set_value(200_000.0).run()
    app.multiselect(key="plan.gpus").set_value(["a100-80gb-sxm", "l4"]).run()
    app.number_input(key="plan.rpp").set_value(200).run()
    app.button(key="plan.run").click().run()
    ok(app)
    headline = app.success[0].value
    table = app.dataframe[0].value
    assert set(table["candidate"]) == {"a100-80gb-sxm", "l4"}
    best = table.iloc[0]
    assert headline.startswith(f"Cheapest: {best['candidate']} — {best['GPUs at peak']} × ")
    assert f"{best['$/month autoscaled']}/month" in headline and "per 1k queries" in headline
    # The same answer as the planner called directly with the form's inputs.
    from app_pages.plan import base_scenario

    base, _ = base_scenario()
    base["workload"]["arrival"]["queries_per_day"] = 200_000.0
    base["slo"] = {"percentile": 99.0, **{k: v for k, v in base["slo"].items() if k in ("ttft_s", "tpot_s")}}
    # "auto" cost model: each candidate priced by the shipped profile measured for it, else the roofline.
    from app_pages.profiles import matching_profile

    candidates, used = [], {}
    for gpu in ("a100-80gb-sxm", "l4"):
        cand = {"name": gpu, "model": "llama-3.1-8b", "gpu": gpu, "tensor_parallel": 1, "weights": "bf16"}
        profile = matching_profile("llama-3.1-8b", gpu, 1, "bf16", "bf16")
        if profile:
            cand["set"] = [f"cost_model={{kind: profile, profile: {profile}}}"]
        used[gpu] = f"profile {profile}" if profile else "roofline"
        candidates.append(cand)
    assert used["a100-80gb-sxm"].startswith("profile a100-80gb-sxm_llama-3.1-8b_tp1")
    assert dict(zip(table["candidate"], table["cost model"])) == used
    expected = plan(base, config={**(base.get("plan") or {}), "requests_per_point": 200, "min_duration_s": 120.0,
                                  "candidates": candidates})
    assert headline == expected.headline()
    cheapest = next(c for c in expected.candidates if c.feasible)
    assert f"Accuracy ({cheapest.name}): {cheapest.cost_model_accuracy}" in [c.value for c in app.caption]


def test_plan_bad_input_is_shown_next_to_the_field(app):
    pytest.importorskip("sim.plan.planner")
    go(app, "plan")
    app.number_input(key="plan.qpd").set_value(0.0).run()
    ok(app)
    assert "workload.arrival.queries_per_day: got 0.0; allowed 0 < x" in error_next_to(app, "plan.qpd")
    assert app.button(key="plan.run").disabled
    app.number_input(key="plan.qpd").set_value(1000.0).run()
    app.multiselect(key="plan.gpus").set_value([]).run()
    assert "plan.candidates: none" in error_next_to(app, "plan.quants")
    app.multiselect(key="plan.gpus").set_value(["l4"]).run()
    app.number_input(key="plan.prompt").set_value(0.0).run()
    assert "workload.prompt_tokens.mean: got 0.0; allowed 0 < x" in error_next_to(app, "plan.prompt")


def test_priority_mix_flows_through_and_bad_shares_are_named(app):
    app.selectbox(key="source.shipped").set_value("priority_mixed.yaml").run()
    assert app.selectbox(key=fk(app, "f.serving.scheduler.policy")).value == "priority"
    app.number_input(key=fk(app, "f.workload.num_requests")).set_value(400).run()
    app.button(key="run").click().run()
    ok(app)
    classes = frame_with(app, "class")
    assert set(classes["class"]) == {"interactive", "batch"}
    assert "TTFT p99 (s)" in classes.columns
    assert classes["requests"].sum() == 400
    data = read_scenario_file("priority_mixed.yaml")
    data["workload"]["priorities"][0]["share"] = 0.5
    app.file_uploader(key=fk(app, "source.upload")).upload("mix.yaml", yaml.safe_dump(data).encode()).run()
    ok(app)
    assert any(e.value.startswith("workload.priorities: got [0.5, 0.7]; shares must sum to 1") for e in app.error)
    assert app.button(key="run").disabled


def test_pages_degrade_without_the_planner_and_the_fitter(app, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sim.plan.planner", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "calibration.fit", None)
    go(app, "plan")
    ok(app)
    assert "capacity planner (sim/plan/) is not part of this checkout" in app.warning[0].value
    go(app, "calibrate")
    csv = synthetic_measurements(10).to_csv(index=False).encode()
    app.file_uploader(key="cal.upload").upload("m.csv", csv, "text/csv").run()
    ok(app)
    assert any("fitter (calibration/fit.py) is not installed" in w.value for w in app.warning)


def test_calibrate_lists_each_coefficient_with_its_unit(app):
    """A mixture of experts' profile: every coefficient is seconds of something except
    expert_pick_fraction, k / E, which the table must not present as seconds."""
    from app_pages.profiles import COEFFICIENT_UNITS
    from calibration.profile import load_profile
    from sim.cost_model import EXPERT_COEFFICIENTS, PROFILE_COEFFICIENTS

    assert set(COEFFICIENT_UNITS) == set(PROFILE_COEFFICIENTS + EXPERT_COEFFICIENTS)  # a new one needs its unit
    moe = "h100-sxm_gpt-oss-120b_tp2_mxfp4"
    go(app, "calibrate")
    app.radio(key="cal.source").set_value("a profile's measurements").run()
    app.selectbox(key="cal.profile").set_value(moe).run()
    ok(app)
    table = frame_with(app, "unit")
    units = dict(zip(table["coefficient"], table["unit"]))
    values = dict(zip(table["coefficient"], table["value"]))
    assert set(units) == set(PROFILE_COEFFICIENTS + EXPERT_COEFFICIENTS)
    assert units["expert_pick_fraction"].startswith("fraction, not seconds")
    assert all(units[name].startswith("s ") for name in PROFILE_COEFFICIENTS + ("experts_s",))
    assert values == load_profile(moe).coefficients
