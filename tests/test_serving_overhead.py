"""What serving adds to a profile's step (sim/cost_model.ServingOverhead, calibration/serving.py)."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibration.profile import ProfileError, load_profile
from calibration.serving import SWEEP, SweepPoint, fit_serving, simulate_point, with_serving
from calibration.vllm_harness import cpu_worker_env, serving_worker_cores
from sim.cost_model import ProfileCostModel
from sim.serving_overhead import SERVING_TERMS, ServingOverhead
from sim.scenario import load_scenario
from sim.simulation import run
from sim.workload import Workload

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "cpu_vllm_tiny_llama.yaml"
COEFFS = {"overhead_s": 0.002, "per_seq_s": 1e-5, "weights_s": 1e-4, "per_token_s": 2e-5, "per_pair_s": 1e-8,
          "per_kv_token_s": 2e-7, "per_sample_s": 1e-4}


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def profile(scenario):
    return load_profile(scenario.cost_model.profile)


def test_terms_fold_into_the_step_formula():
    ov = ServingOverhead(compute_scale=1.5, step_overhead_s=0.001, per_seq_overhead_s=2e-4, host_per_seq_s=0.0,
                         response_latency_s=0.01)
    bare, served = ProfileCostModel(COEFFS), ProfileCostModel(COEFFS, ov)
    for feats in [(256, 1, 256 * 257 // 2, 256, 1), (8, 8, 800, 800, 8), (1000, 20, 10**5, 3000, 20)]:
        expect = 1.5 * bare.step_time_s(*feats) + 0.001 + 2e-4 * feats[4]
        assert served.step_time_s(*feats) == pytest.approx(expect, rel=1e-12)
    assert served.response_latency_s == 0.01 and bare.response_latency_s == 0.0
    assert served.measured_coefficients == bare.coefficients  # the measured curve is kept as measured


def test_overlapped_engine_time_shows_at_small_batches_and_hides_behind_large_ones():
    # vLLM's async scheduling: the engine's CPU time per step runs beside the kernels, so a step is the
    # longer of the two (+ the exposed part), not their sum. The additive form fails both checks below.
    terms = dict(compute_scale=1.2, step_overhead_s=0.004, per_seq_overhead_s=2e-5)
    over = ProfileCostModel(COEFFS, ServingOverhead(**terms, overlap=True, exposed_step_s=3e-4))
    add = ProfileCostModel(COEFFS, ServingOverhead(**terms))
    bare = ProfileCostModel(COEFFS)
    small, large = (2, 2, 200, 200, 2), (400, 400, 40000, 40000, 400)
    # small batch: kernels 1.2 x ~2.3 ms < engine 4.04 ms -> the engine's time (+ the exposed part) is the step
    assert 1.2 * bare.step_time_s(*small) < 0.004 + 2e-5 * 2
    assert over.step_time_s(*small) == pytest.approx(3e-4 + 0.004 + 2e-5 * 2, rel=1e-12)
    # large batch: kernels ~ 1.2 x 23 ms > engine 12 ms -> the kernels alone (+ the exposed part)
    assert 1.2 * bare.step_time_s(*large) > 0.004 + 2e-5 * 400
    assert over.step_time_s(*large) == pytest.approx(3e-4 + 1.2 * bare.step_time_s(*large), rel=1e-12)
    for f in (small, large):  # the additive form pays both, always more than the overlapped one here
        assert add.step_time_s(*f) > over.step_time_s(*f) + 2e-3
    n = np.array([1, 2, 400])
    assert over.decode_step_times_s(n, n * 100).tolist() == over.step_times_s(n, n, n * 100, n * 100, n).tolist()
    with pytest.raises(ValueError, match="overlap"):
        ServingOverhead(overlap="yes")
    with pytest.raises(ValueError, match="not a sum"):
        ServingOverhead(overlap=True).apply(COEFFS)


def test_host_floor_binds_only_at_large_batches():
    ov = ServingOverhead(host_per_seq_s=5e-4)
    served, bare = ProfileCostModel(COEFFS, ov), ProfileCostModel(COEFFS)
    small = (4, 4, 400, 400, 4)
    assert served.step_time_s(*small) == bare.step_time_s(*small)  # 2 ms floor < the model's step
    big = (200, 200, 20000, 20000, 200)
    assert bare.step_time_s(*big) < 0.1
    assert served.step_time_s(*big) == pytest.approx(0.1)  # 200 sequences x 0.5 ms of host time
    n = np.array([1, 50, 400])
    assert np.all(served.decode_step_times_s(n, n * 100) >= 5e-4 * n)


def _open_loop(n=60, rate=5.0, seed=3) -> Workload:
    rng = np.random.default_rng(seed)
    return Workload(arrival_s=np.cumsum(rng.exponential(1 / rate, n)), prompt_tokens=rng.integers(32, 400, n),
                    output_tokens=rng.integers(8, 80, n), priority=np.zeros(n, dtype=np.int64),
                    priority_names={0: "default"}, duration_s=float(n / rate))


def test_response_latency_moves_ttft_and_e2e_not_tpot(scenario, profile):
    wl = _open_loop()
    base = ServingOverhead(compute_scale=1.2, step_overhead_s=5e-4)
    a = run(scenario, workload=wl, cost_model=ProfileCostModel(profile.coefficients, base)).requests
    b = run(scenario, workload=wl, cost_model=ProfileCostModel(profile.coefficients,
                                                                replace(base, response_latency_s=0.02))).requests
    # Open loop: the engine's schedule does not depend on when clients read; every response is 20 ms later.
    np.testing.assert_allclose(b["first_token_s"] - a["first_token_s"], 0.02, atol=1e-12)
    np.testing.assert_allclose(b["finish_s"] - a["finish_s"], 0.02, atol=1e-12)


def test_closed_loop_clients_wait_for_the_response(scenario, profile):
    p = SweepPoint(concurrency=2, prompt_tokens=64, output_tokens=16, num_requests=20)
    fast = simulate_point(scenario, profile, p, ServingOverhead())
    slow = simulate_point(scenario, profile, p, ServingOverhead(response_latency_s=0.05))
    assert slow["ttft_s"] == pytest.approx(fast["ttft_s"] + 0.05, rel=0.05)
    assert slow["tpot_s"] > 0 and fast["tpot_s"] > 0


def test_fit_recovers_known_terms_from_simulated_measurements(scenario, profile):
    """Measurements made by the simulator with known terms (a host floor that binds at the top of
    the ladder included): the fit must find those terms again."""
    truth = ServingOverhead(compute_scale=1.0, step_overhead_s=0.0015, per_seq_overhead_s=0.0,
                            host_per_seq_s=6e-4, response_latency_s=0.004)
    points = [SWEEP[0], SWEEP[2], SWEEP[4], SWEEP[5], SWEEP[6]]  # c1, c4, c16, c32, c48
    rows = []
    for p in points:
        m = simulate_point(scenario, profile, p, truth)
        rows.append(pd.DataFrame({"point": p.label, "concurrency": p.concurrency, "prompt_tokens": p.prompt_tokens,
                                  "output_tokens": p.output_tokens, "request_id": range(p.num_requests),
                                  "ttft_s": m["ttft_s"], "tpot_s": m["tpot_s"], "e2e_s": m["e2e_s"]}))
    fitted, table = fit_serving(scenario, profile, pd.concat(rows, ignore_index=True))
    assert fitted.compute_scale == 1.0
    assert fitted.step_overhead_s == pytest.approx(0.0015, rel=0.1)
    assert fitted.host_per_seq_s == pytest.approx(6e-4, rel=0.05)
    assert fitted.response_latency_s == pytest.approx(0.004, rel=0.1)
    assert table["error_pct"].abs().max() < 2.0
    # Without the terms the same points are far off: the fit is doing the work.
    assert (table["profile_only"] < table["measured"]).all()


def _profile_copy(tmp_path: Path, profile, serving: dict | None) -> Path:
    folder = tmp_path / "p"
    shutil.copytree(profile.path, folder)
    data = json.loads((folder / "profile.json").read_text())
    data["serving"] = serving
    (folder / "profile.json").write_text(json.dumps(data))
    return folder


def test_malformed_serving_section_names_the_field(tmp_path, profile):
    good = {k: 0.0 for k in SERVING_TERMS} | {"compute_scale": 1.0, "provenance": {"source": "a test"}}
    for bad, field in [({**good, "host_per_seq_s": -1.0}, "serving.host_per_seq_s"),
                       ({k: v for k, v in good.items() if k != "response_latency_s"}, "serving.response_latency_s"),
                       ({**good, "compute_scale": 0.0}, "serving.compute_scale"),
                       ({**good, "provenance": {}}, "serving.provenance.source"),
                       ("fast", "serving")]:
        with pytest.raises(ProfileError, match=field.replace(".", r"\.")):
            load_profile(_profile_copy(tmp_path / field, profile, bad))
    assert load_profile(_profile_copy(tmp_path / "ok", profile, good)).serving_overhead == ServingOverhead()


def test_scenario_switch_and_report_name(tmp_path, scenario, profile):
    serving = {**{k: 0.0 for k in SERVING_TERMS}, "compute_scale": 2.0, "response_latency_s": 0.01,
               "provenance": {"source": "a test sweep"}}
    folder = _profile_copy(tmp_path, profile, serving)
    wl = _open_loop(30)
    on = replace(scenario, cost_model=replace(scenario.cost_model, profile=str(folder)))
    off = replace(on, cost_model=replace(on.cost_model, serving_overhead=False))
    r_on, r_off = run(on, workload=wl), run(off, workload=wl)
    assert "serving overhead (a test sweep)" in r_on.cost_model_name
    assert "serving overhead" not in r_off.cost_model_name
    ttft_on = (r_on.requests["first_token_s"] - r_on.requests["arrival_s"]).mean()
    ttft_off = (r_off.requests["first_token_s"] - r_off.requests["arrival_s"]).mean()
    assert ttft_on > ttft_off + 0.01


def test_with_serving_records_provenance_and_fit(profile):
    table = pd.DataFrame([{"point": "c1 p64 o32", "metric": "tpot_s", "measured": 0.005, "profile_only": 0.003,
                           "fitted": 0.0051, "error_pct": 2.0}])
    prof = with_serving(profile, ServingOverhead(compute_scale=1.1), table, {"startup_s": 30.0}, "servesim x")
    assert prof.serving["provenance"]["command"] == "servesim x"
    assert prof.serving["fit"]["per_metric"]["tpot_s"]["mape_pct"] == 2.0
    assert prof.serving_overhead.compute_scale == 1.1


def test_calibration_sweep_runs_where_a_served_worker_runs():
    # vLLM's automatic CPU binding: the highest core for the engine-core process, the rest for the worker.
    assert serving_worker_cores({0, 1}) == [0]
    assert serving_worker_cores({0, 1, 2, 3}) == [0, 1, 2]
    assert serving_worker_cores({5}) == [5]
    env = cpu_worker_env([0, 1, 2])
    assert env["OMP_NUM_THREADS"] == "3" and env["OMP_PLACES"] == "{0,1,2}" and env["OMP_PROC_BIND"] == "true"


def test_calibrate_serve_needs_a_profile(tmp_path, capsys):
    from calibration.cli import main

    rc = main(["serve", str(ROOT / "scenarios" / "chat_llama3_8b_a100.yaml"), "--out", str(tmp_path), "--refit"])
    assert rc == 2
    assert "cost_model.profile is not set" in capsys.readouterr().err


def test_calibrate_serve_without_vllm_says_what_to_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    from calibration.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    rc = main(["serve", str(SCENARIO), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'vllm'" in err and "not installed" in err and "install-vllm.sh" in err


def test_refit_without_a_sweep_names_the_missing_file(tmp_path, capsys, profile):
    from calibration.cli import main

    rc = main(["serve", str(SCENARIO), "--out", str(tmp_path / "p"), "--refit"])
    assert rc == 2
    assert "serving_measurements.csv is missing" in capsys.readouterr().err


def test_engine_defaults_leave_graphs_pool_and_scheduling_to_vllm(profile):
    """`calibrate serve --engine-defaults` serves as a deployment does: no --enforce-eager, no fixed KV pool,
    no synchronous scheduling; what both modes share (dummy weights, the scenario's limits) stays."""
    from calibration.vllm_server import server_args

    kw = dict(max_model_len=4096, max_num_seqs=256, max_num_batched_tokens=8192, block_size_tokens=16)
    calib = server_args(Path("/m"), profile, **kw)
    deployed = server_args(Path("/m"), profile, **kw, engine_defaults=True)
    for flag in ("--enforce-eager", "--no-async-scheduling", "--kv-cache-memory-bytes"):
        assert flag in calib and flag not in deployed
    assert set(deployed) < set(calib)
    for flag, value in (("--max-num-seqs", "256"), ("--max-num-batched-tokens", "8192"), ("--load-format", "dummy")):
        assert deployed[deployed.index(flag) + 1] == value
    assert "--enable-logging-iteration-details" not in deployed
    assert "--enable-logging-iteration-details" in server_args(Path("/m"), profile, **kw, log_steps=True)


def test_calibrate_serve_no_fit_writes_the_sweep_of_a_composed_profile(tmp_path, monkeypatch, capsys):
    """The lease's serve step: a shipped composed profile, engine defaults, measured and written, not fitted."""
    import importlib.util

    import calibration.serving as serving
    from calibration.cli import main

    (tmp_path / "s.yaml").write_text(
        "name: t\nseed: 1\nworkload:\n  arrival: {kind: poisson, rate_per_s: 1}\n  num_requests: 10\n"
        "  prompt_tokens: {kind: constant, value: 256}\n  output_tokens: {kind: constant, value: 64}\n"
        "model: llama-3.1-8b\nhardware: {gpu: h200-sxm}\nserving: {replicas: 1, tensor_parallel: 1, max_model_len: 4096}\n"
        "cost_model: {profile: h200-sxm_llama-3.1-8b_tp1_bf16}\n")
    seen = {}

    def fake_measure(scenario, profile, points, **kw):
        seen.update(kw, profile=profile.name, points=len(points))
        recs = pd.DataFrame({"request_id": [0, 1], "point": "c1 p64 o16", "concurrency": 1, "prompt_tokens": 64,
                             "output_tokens": 16, "ttft_s": 0.02, "tpot_s": 0.006, "e2e_s": 0.11, "error": ""})
        return recs, {"engine_defaults": kw["engine_defaults"]}

    def no_fit(*a, **k):
        raise AssertionError("--no-fit must not fit")

    monkeypatch.setattr(serving, "measure_sweep", fake_measure)
    monkeypatch.setattr(serving, "fit_serving", no_fit)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in ("vllm", "aiohttp") else real(name, *a))
    out = tmp_path / "served"
    assert main(["serve", str(tmp_path / "s.yaml"), "--engine-defaults", "--no-fit", "--sweep", "full+heldout",
                 "--log-steps", "--out", str(out)]) == 0
    assert seen["engine_defaults"] is True and seen["points"] == len(SWEEP) + 6  # the held-out sweep's six too
    assert seen["log_steps"] is True
    assert (out / "serving_measurements.csv").is_file()
    assert json.loads((out / "serving_run.json").read_text())["engine_defaults"] is True
    assert not (out / "profile.json").exists()
    assert "--refit" in capsys.readouterr().out


def test_calibrate_run_cuda_graphs_reaches_the_engine_settings(tmp_path, monkeypatch):
    """`calibrate run --cuda-graphs` measures vLLM as served (compiled, CUDA graphs): the flag must reach the
    worker's settings (where enforce_eager is set from it), and the default stays eager."""
    import calibration.cli as cli
    from calibration.engine_process import EngineError

    seen = []

    def fake(model_dir, grid, out, *, settings, **kw):
        seen.append(settings)
        raise EngineError("stop here")  # the command's own error path: nothing is measured or fitted

    monkeypatch.setattr(cli, "measure_vllm", fake)
    for extra in ([], ["--cuda-graphs"]):
        rc = cli.main(["run", "--model", "tiny-llama", "--dummy-weights", "--grid", "smoke",
                       "--out", str(tmp_path / f"p{len(extra)}"), *extra])
        assert rc == 2
    assert [s.cuda_graphs for s in seen] == [False, True]


def test_calibrate_run_cuda_graphs_with_the_torch_engine_is_refused(tmp_path, capsys):
    from calibration.cli import main

    rc = main(["run", "--model", "tiny-llama", "--engine", "torch", "--cuda-graphs", "--out", str(tmp_path / "p")])
    assert rc == 2
    assert "--cuda-graphs applies to --engine vllm" in capsys.readouterr().err
