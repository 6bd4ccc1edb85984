"""The UI's long-run controls and cost-model default, driven headless with AppTest: a run shows
its progress and a Stop button, Stop leaves a "stopped" notice and no numbers, and the scenario
form starts from the CLI's cost model (auto) and names the one a run used."""
from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

pytest.importorskip("streamlit", reason="the UI needs the [ui] extra: pip install 'servesim[ui]'")

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from sim.quantization import KvDtype, WeightDtype  # noqa: E402
from sim.scenario import load_scenario  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT_S = 120


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVESIM_PROFILES_DIR", str(tmp_path / "profiles"))
    monkeypatch.chdir(tmp_path)
    return AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()


def fk(at: AppTest, key: str) -> str:
    return f"f{at.session_state['form']['n']}.{key}"


def ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def progress_texts(at: AppTest) -> list[str]:
    return [e.proto.text for e in at.get("progress")]


def test_a_run_reports_progress_and_stop_ends_it_with_a_notice(app, monkeypatch):
    import sim.simulation

    calls = []
    real_run = sim.simulation.run

    def interrupted(scenario, seed=None, on_progress=None, **kw):
        # What a click on Stop does to a running script in the browser: Streamlit ends the script at its
        # next page update. st.stop() ends it the same way (a Streamlit control exception, not an error).
        calls.append(on_progress)
        on_progress(1200, 20000)
        st.stop()

    monkeypatch.setattr(sim.simulation, "run", interrupted)
    app.button(key="run").click().run()
    ok(app)
    assert calls and calls[0] is not None, "the Scenario page ran without a progress callback"
    assert progress_texts(app) == ["Simulating: 1,200 of 20,000 requests finished"]
    assert not app.metric
    app.button(key="scenario.stop").click().run()
    ok(app)
    assert len(calls) == 1, "Stop started the run again"
    assert "scenario.run" not in app.session_state
    notice = [w.value for w in app.warning]
    assert any(w.startswith("Stopped after 1,200 of 20,000 requests finished. No results") for w in notice), notice
    assert not app.metric and not progress_texts(app)
    assert not [b for b in app.button if b.key == "scenario.stop"]
    # Run again (a real run now): the notice goes, the numbers come, the bar and Stop are gone.
    monkeypatch.setattr(sim.simulation, "run", real_run)
    app.button(key="run").click().run()
    ok(app)
    assert not [w for w in app.warning if w.value.startswith("Stopped")]
    assert app.metric and not progress_texts(app)
    assert not [b for b in app.button if b.key == "scenario.stop"]


def test_a_finished_run_is_kept_for_the_session(app, monkeypatch):
    import sim.simulation

    calls = []
    real_run = sim.simulation.run
    monkeypatch.setattr(sim.simulation, "run", lambda *a, **k: calls.append(1) or real_run(*a, **k))
    app.button(key="run").click().run()
    app.radio(key="chart.cdf_metric").set_value("E2E").run()
    app.button(key="run").click().run()  # the same inputs: the kept run, no new simulation
    ok(app)
    assert len(calls) == 1
    app.number_input(key=fk(app, "workload.num_requests")).set_value(300).run()
    app.button(key="run").click().run()
    ok(app)
    assert len(calls) == 2


def test_the_form_defaults_to_the_clis_auto_cost_model_and_names_the_one_used(app):
    from app_pages.scenario_form import AUTO_COST, ROOFLINE_COST
    from sim.metrics import summarize
    from sim.simulation import run

    # The default scenario's file asks for auto ({kind: auto}): the form keeps the file's choice.
    assert app.selectbox(key=fk(app, "cost_model")).value == AUTO_COST
    # priority_mixed.yaml names no cost model: the CLI's default (auto) finds the A100 8B profile.
    app.selectbox(key="source.shipped").set_value("priority_mixed.yaml").run()
    ok(app)
    assert app.selectbox(key=fk(app, "cost_model")).value == AUTO_COST
    assert any("cost model: auto: profile a100-80gb-sxm_llama-3.1-8b_tp1_bf16" in m.value for m in app.caption)
    app.button(key="run").click().run()
    ok(app)
    cli = run(load_scenario("priority_mixed.yaml", ["workload.num_requests=2000"]))
    assert cli.cost_model_name.startswith("auto: profile a100-80gb-sxm_llama-3.1-8b_tp1_bf16")
    assert any(f"cost model: {cli.cost_model_name}" in m.value for m in app.caption)
    from app_pages.display import fmt_s

    assert {m.label: m.value for m in app.metric}["TTFT p99"] == fmt_s(summarize(cli)["ttft_s_p99"])
    # Roofline picked by hand: the caption says so.
    app.selectbox(key=fk(app, "cost_model")).set_value(ROOFLINE_COST).run()
    assert any("cost model: roofline" in m.value for m in app.caption)


def test_dtype_lists_are_the_cores(app):
    weights = app.selectbox(key=fk(app, "serving.quantization.weights"))
    assert list(weights.options) == list(get_args(WeightDtype)) and {"fp4", "mxfp4"} <= set(weights.options)
    assert list(app.selectbox(key=fk(app, "serving.quantization.kv_cache")).options) == list(get_args(KvDtype))
    weights.set_value("fp4").run()  # an A100 runs NVFP4 weight-only (at the bf16 rate): a valid scenario
    ok(app)
    assert not app.button(key="run").disabled, [e.value for e in app.error]


def test_the_plan_page_reports_progress_and_stops(app, monkeypatch):
    pytest.importorskip("sim.plan.planner")
    calls = []

    def interrupted(source, *a, on_progress=None, **kw):
        calls.append(on_progress)
        on_progress(3, 14)
        st.stop()

    monkeypatch.setattr("sim.plan.planner.plan", interrupted)  # the page imports it on each run
    app.switch_page("app_pages/plan.py").run()
    app.number_input(key="plan.rpp").set_value(200).run()
    app.button(key="plan.run").click().run()
    ok(app)
    assert calls and calls[0] is not None
    assert progress_texts(app) == ["Planning (the total grows as the searches go): 3 of 14 simulations"]
    app.button(key="plan.stop").click().run()
    ok(app)
    assert len(calls) == 1 and "plan.job" not in app.session_state
    assert any(w.value.startswith("Stopped after 3 of 14 simulations. No results") for w in app.warning)
    assert not app.dataframe
