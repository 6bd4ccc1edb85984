"""Each run says how far predictions priced like it were from measured serving runs (sim/accuracy.py), from
calibration/profiles/validation_accuracy.json, which must hold the figures docs/validation_gpu.md shows."""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest

from sim.accuracy import _read, accuracy_path, composed_profile_accuracy, measured_profile_accuracy, setup_key
from sim.cost_model import RooflineCostModel, RooflineParams
from sim.cost_select import LOWER_BOUND_ACCURACY, ROOFLINE_OWN_SETTINGS, select_cost_model
from sim.metrics import summarize
from sim.report import format_summary
from sim.scenario import load_scenario
from sim.simulation import run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
DOC = ROOT / "docs" / "validation_gpu.md"
BASE = ["workload.num_requests=40", "cost_model.kind=auto", "serving.max_model_len=8192"]


def scen(*overrides: str):
    return load_scenario("chat_llama3_8b_a100.yaml", [*BASE, *overrides])


def record() -> dict:
    return json.loads(accuracy_path().read_text())


def _table(title: str) -> list[list[str]]:
    """The rows of the markdown table that follows `title` in docs/validation_gpu.md."""
    lines = DOC.read_text().splitlines()
    i = lines.index(title) + 2  # title, blank, header
    out = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        out.append([c.strip() for c in ln.strip("|").split("|")])
    return out


def test_the_record_holds_the_docs_held_out_figures():
    rec = record()
    by_setup = _table("By GPU, model and dtype:")
    assert len(by_setup) == len(rec["held_out"]["by_setup"]) >= 5
    for gpu, model, dtype, rows, ttft_abs, ttft_signed, tpot_abs, tpot_signed, _ in by_setup:
        f = rec["held_out"]["by_setup"][setup_key(gpu, model, dtype)]
        assert f["rows"] == int(rows)
        assert (f["ttft_mdape"], f["ttft_signed"], f["tpot_mdape"], f["tpot_signed"]) == pytest.approx(
            (float(ttft_abs), float(ttft_signed), float(tpot_abs), float(tpot_signed)), abs=0.051)
    by_gpu = _table("By GPU:")
    assert sorted(rec["held_out"]["by_gpu"]) == sorted(r[0] for r in by_gpu)
    for gpu, rows, *_ in by_gpu:
        assert rec["held_out"]["by_gpu"][gpu]["rows"] == int(rows)
    head = re.search(r"On the \*\*(\d+) held-out rows\*\*.*?TPOT ([\d.]+) %.*?TTFT ([\d.]+) %", DOC.read_text())
    a = rec["held_out"]["all"]
    assert (a["rows"], a["tpot_mdape"], a["ttft_mdape"]) == (int(head[1]), float(head[2]), float(head[3]))
    assert set(rec["train_models"]).isdisjoint({k.split("|")[1] for k in rec["held_out"]["by_setup"]})
    # The roofline's check: the doc's sensitivity line for it, on the same held-out rows.
    line = next(ln for ln in DOC.read_text().splitlines() if ln.startswith("| the roofline instead of the profile"))
    rows, ttft_abs, ttft_signed, tpot_abs, tpot_signed = line.strip("|").split("|")[1:6]
    r = rec["roofline"]["held_out"]["all"]
    assert r["rows"] == int(rows) == a["rows"]
    assert (r["ttft_mdape"], r["ttft_signed"], r["tpot_mdape"], r["tpot_signed"]) == pytest.approx(
        (float(ttft_abs), float(ttft_signed), float(tpot_abs), float(tpot_signed)), abs=0.051)


def test_a_held_out_setup_quotes_its_own_check():
    c = select_cost_model(scen("model=llama-3.1-70b", "hardware.gpu=h200-sxm", "serving.tensor_parallel=2",
                               "serving.quantization.weights=fp8"))
    f = record()["held_out"]["by_setup"]["h200-sxm|llama-3.1-70b|fp8"]
    assert c.accuracy.startswith(f"held-out check on {f['rows']} measured vLLM runs of llama-3.1-70b fp8 on h200-sxm")
    assert f"TPOT {f['tpot_mdape']:.1f} %" in c.accuracy and f"TTFT {f['ttft_mdape']:.1f} %" in c.accuracy
    assert f"{f['tpot_p90_abs']:.0f} %" in c.accuracy and "docs/validation_gpu.md" in c.accuracy


def test_the_roofline_quotes_its_own_held_out_check():
    s = scen("model=llama-3.1-70b", "hardware.gpu=h200-sxm", "serving.tensor_parallel=2",
             "serving.quantization.weights=fp8", "cost_model.kind=roofline")
    f = record()["roofline"]["held_out"]["by_setup"]["h200-sxm|llama-3.1-70b|fp8"]
    acc = select_cost_model(s).accuracy
    assert acc.startswith(f"roofline: held-out check on {f['rows']} measured vLLM runs of llama-3.1-70b fp8")
    assert f"TPOT {f['tpot_mdape']:.1f} %" in acc and f"TTFT {f['ttft_mdape']:.1f} %" in acc


def test_a_training_setup_is_called_in_sample_and_gets_the_gpus_held_out_figure():
    c = select_cost_model(scen("model=qwen3-32b", "hardware.gpu=h100-sxm", "serving.tensor_parallel=2"))
    rec = record()
    assert c.accuracy.startswith("in-sample only")
    assert f"TPOT {rec['held_out']['by_gpu']['h100-sxm']['tpot_mdape']:.1f} %" in c.accuracy


def test_setups_without_measured_runs_say_so():
    a100 = select_cost_model(scen()).accuracy  # Llama-3.1-8B on an A100: a profile, no measured runs
    assert a100.startswith("no measured vLLM runs on a100-80gb-sxm")
    assert f"TPOT {record()['held_out']['all']['tpot_mdape']:.1f} %" in a100
    b200_8b = select_cost_model(scen("hardware.gpu=b200-sxm")).accuracy  # a GPU with runs, not of this model
    assert b200_8b.startswith("no measured runs of llama-3.1-8b bf16 on b200-sxm; held-out models on b200-sxm")
    roof = select_cost_model(scen("cost_model.kind=roofline")).accuracy
    assert roof.startswith("roofline: no measured vLLM runs on a100-80gb-sxm")
    assert select_cost_model(scen("cost_model.kind=roofline", "cost_model.compute_efficiency=0.5")).accuracy \
        == ROOFLINE_OWN_SETTINGS
    assert select_cost_model(scen("cost_model.serving_overhead=false")).accuracy == LOWER_BOUND_ACCURACY
    own = select_cost_model(scen("cost_model.step_overhead_s=0.004")).accuracy
    assert own.startswith("engine terms set in the scenario") and "no measured vLLM runs on a100" in own


def test_the_report_and_summary_carry_it_and_a_callers_cost_model_does_not():
    s = scen("model=llama-3.1-70b", "hardware.gpu=h100-sxm", "serving.tensor_parallel=2",
             "serving.quantization.weights=fp8")
    res = run(s)
    summ = summarize(res)
    assert summ["cost_model_accuracy"] == select_cost_model(s).accuracy != ""
    assert f"  accuracy: {summ['cost_model_accuracy']}" in format_summary(res, summ).splitlines()
    own = run(s, cost_model=RooflineCostModel(s.model_spec, s.gpu_spec, tp=2, weight_dtype="fp8",
                                              kv_dtype="bf16", params=RooflineParams()))
    assert summarize(own)["cost_model_accuracy"] == ""
    assert "accuracy:" not in format_summary(own, summarize(own))


def test_a_missing_or_broken_record_is_said_not_raised(tmp_path):
    assert composed_profile_accuracy("h100-sxm", "x", "bf16", tmp_path / "none.json").startswith("no measured check")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _read.cache_clear()
    assert composed_profile_accuracy("h100-sxm", "x", "bf16", bad).startswith("no measured check")


def test_a_measured_profile_quotes_its_own_fit():
    text = measured_profile_accuracy({"overall": {"mape_pct": 4.24, "n": 38}})
    assert "4.2 %" in text and "38 measured steps" in text
    assert "without a recorded fit error" in measured_profile_accuracy({})
    serving = {"fit": {"per_metric": {"tpot_s": {"mape_pct": 5.75}, "ttft_s": {"mape_pct": 14.17}},
                       "points": [{"point": "c1"}, {"point": "c1"}, {"point": "c8"}]}}
    both = measured_profile_accuracy({"overall": {"mape_pct": 4.24, "n": 38}}, serving)
    assert "fitted on 2 sweep points" in both and "TPOT 5.8 %, TTFT 14.2 %" in both and "in-sample" in both


def test_the_writer_applies_the_docs_screens():
    from silicon_accuracy import accuracy_record

    rng = np.random.default_rng(0)
    n = 40
    res = pd.DataFrame({
        "id": [f"r{i}" for i in range(n)], "gpu": ["h100-sxm"] * n, "model": ["llama-3.1-70b"] * 20 + ["qwen3-32b"] * 20,
        "dtype": ["fp8"] * 20 + ["bf16"] * 20, "split": ["held-out"] * 20 + ["train"] * 20,
        "concurrency_recorded": [True] * n, "implausible": [False] * n,
        "tpot_err_pct": rng.normal(5, 3, n), "ttft_err_pct": rng.normal(-10, 5, n)})
    res.loc[0, ["implausible", "tpot_err_pct"]] = [True, 900.0]  # screened: in no figure
    res.loc[1, ["concurrency_recorded", "tpot_err_pct"]] = [False, -900.0]
    rec = accuracy_record(res, "test")
    kept = res.iloc[2:20]
    f = rec["held_out"]["by_setup"]["h100-sxm|llama-3.1-70b|fp8"]
    assert f["rows"] == 18 == rec["held_out"]["all"]["rows"]
    assert f["tpot_mdape"] == round(float(kept["tpot_err_pct"].abs().median()), 1)
    assert f["tpot_signed"] == round(float(kept["tpot_err_pct"].median()), 1)
    assert rec["train_in_sample"]["by_setup"]["h100-sxm|qwen3-32b|bf16"]["rows"] == 20
    assert "roofline" not in rec
    # The roofline variant's rows: the main run's screens apply row by row (here row 0 is flagged in the main
    # run only), and its own errors are summarised.
    roof = res.assign(implausible=False, tpot_err_pct=res["tpot_err_pct"] * 2)
    r = accuracy_record(res, "test", roofline=roof)["roofline"]["held_out"]["all"]
    assert r["rows"] == 18 and r["tpot_signed"] == round(float((kept["tpot_err_pct"] * 2).median()), 1)


def test_the_wheel_ships_the_records_the_simulator_reads():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["calibration"]
    for name in ("engine_terms.json", "validation_accuracy.json"):
        rel = f"profiles/{name}"
        assert (ROOT / "calibration" / rel).is_file()
        # setuptools' globs: '*' stays within one folder (fnmatch's would not)
        assert any(PurePosixPath(rel).match(g) and len(PurePosixPath(g).parts) == 2 for g in globs), (rel, globs)


def test_the_held_out_summary_quotes_the_record():
    from sim.accuracy import held_out_summary

    rec = record()
    text = held_out_summary()
    assert f"the profiles TPOT {rec['held_out']['all']['tpot_mdape']:.0f} %" in text
    assert f"the roofline TPOT {rec['roofline']['held_out']['all']['tpot_mdape']:.0f} %" in text
