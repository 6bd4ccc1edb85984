"""The engine-terms fit's machinery (calibration/engine_fit.py) on synthetic data: the grouped
linearised least squares recovers known terms, and thinning keeps every setup's range."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.engine_fit import linearised_fit, thin
from calibration.silicon import Row


def test_grouped_fit_recovers_per_version_steps_shared_per_seq_and_per_model_factors():
    # TPOT = factor[model] * kernels + step[version] + per_seq * batch: the fit's model, with one
    # simulation per group of parameters (each row depends on one step and one factor only).
    rng = np.random.default_rng(0)
    n = 60
    version, model = rng.integers(0, 3, n), rng.integers(0, 2, n)
    kernels, batch = rng.uniform(5, 30, n), rng.integers(1, 256, n).astype(float)
    truth = np.r_[1.0, 2.5, 0.4, 40.0, 1.2, 0.9]  # steps ms x3, per-seq us, factors x2
    calls = []

    def tpot(x):
        calls.append(1)
        return x[4 + model] * kernels + x[version] + x[3] * 1e-3 * batch

    depends = np.zeros((n, 6))
    depends[np.arange(n), version] = 1
    depends[:, 3] = 1
    depends[np.arange(n), 4 + model] = 1
    x = linearised_fit(tpot, tpot(truth), x0=np.r_[1.0, 1.0, 1.0, 20.0, 1.0, 1.0], h=np.r_[0.5, 0.5, 0.5, 10.0, 0.05, 0.05],
                       lower=np.r_[0, 0, 0, 0, 0.5, 0.5], upper=np.r_[20, 20, 20, 500, 2.5, 2.5],
                       groups=[[0, 1, 2], [3], [4, 5]], depends=depends)
    assert np.allclose(x, truth, rtol=1e-3, atol=1e-3), x
    assert len(calls) == 2 * 4 + 1  # two iterations of (base + 3 groups), and the truth itself


def _row(i: int, conc: int, model: str = "qwen3-32b", isl: int = 1024) -> Row:
    return Row(id=f"r{i}", model=model, gpu="h100-sxm", dtype="bf16", tp=8, isl=isl, osl=1024, concurrency=conc,
               concurrency_recorded=True, ttft_ms=100.0, tpot_ms=10.0, backend_version="0.12.0")


def test_thin_keeps_each_setups_extremes_and_caps_its_rows():
    ladder = [_row(i, c) for i, c in enumerate((1, 2, 4, 8, 16, 32, 64, 128, 256))]
    other = [_row(100 + i, c, isl=8192) for i, c in enumerate((4, 16))]
    kept = thin(ladder + other, per_setup=4)
    conc = sorted(r.concurrency for r in kept if r.isl == 1024)
    assert len(conc) == 4 and conc[0] == 1 and conc[-1] == 256
    assert sorted(r.concurrency for r in kept if r.isl == 8192) == [4, 16]


def _terms_file(tmp_path, by_gpu, name="terms.json", **extra):
    import json

    entry = {"compute_scale": 1.05, "step_overhead_s": 0.001, "per_seq_overhead_s": 2e-5, "response_latency_s": 0.01,
             "request_jitter_s": 0.005, "provenance": {"source": "test"}, **extra}
    path = tmp_path / name  # a new name per content: the reader caches by path
    path.write_text(json.dumps({"engines": {"vllm": {"default_version": "0.12.0", "versions": {"0.12.0": entry},
                                                     "compute_scale_by_gpu": by_gpu}}}))
    return path


def test_engine_terms_take_the_kernel_factor_of_the_profiles_gpu(tmp_path):
    import pytest

    from sim.engine_terms import engine_terms
    from sim.configio import ConfigError

    path = _terms_file(tmp_path, {"b200-sxm": 0.9})
    assert engine_terms("vllm", "0.12.0", path=path, gpu="b200-sxm").overhead.compute_scale == 0.9
    # A GPU without training rows gets the version's (the median over the training models).
    assert engine_terms("vllm", "0.12.0", path=path, gpu="l40s").overhead.compute_scale == 1.05
    assert engine_terms("vllm", path=path).overhead.compute_scale == 1.05
    with pytest.raises(ConfigError, match="compute_scale_by_gpu.h100-sxm"):
        engine_terms("vllm", path=_terms_file(tmp_path, {"h100-sxm": -1}, "bad.json"))


def test_engine_terms_carry_the_overlap_flag_and_refuse_a_malformed_one(tmp_path):
    import pytest

    from sim.configio import ConfigError
    from sim.engine_terms import engine_terms

    assert engine_terms("vllm", path=_terms_file(tmp_path, {})).overhead.overlap is False  # absent: additive
    ov = engine_terms("vllm", path=_terms_file(tmp_path, {}, "o.json", overlap=True, exposed_step_s=3e-4)).overhead
    assert ov.overlap is True and ov.exposed_step_s == 3e-4
    with pytest.raises(ConfigError, match="versions.0.12.0.overlap"):
        engine_terms("vllm", path=_terms_file(tmp_path, {}, "bad_o.json", overlap="yes"))
    with pytest.raises(ConfigError, match="versions.0.12.0.exposed_step_s"):
        engine_terms("vllm", path=_terms_file(tmp_path, {}, "bad_e.json", exposed_step_s=-1))


def test_kept_factors_are_per_gpu_medians_without_factors_at_their_bounds():
    from calibration.engine_fit import SCALE_BOUNDS, kept_factors

    by_gpu, elsewhere = kept_factors({("a", "h200-sxm"): SCALE_BOUNDS[0], ("b", "h200-sxm"): 1.16,
                                      ("b", "h100-sxm"): 1.10, ("c", "h100-sxm"): 1.20, ("b", "b200-sxm"): 1.0})
    assert by_gpu == pytest.approx({"h200-sxm": 1.16, "h100-sxm": 1.15, "b200-sxm": 1.0})  # the factor at its bound is no estimate
    assert abs(elsewhere - 1.13) < 1e-12  # the median of the four free factors
    only_bound, _ = kept_factors({("a", "l40s"): SCALE_BOUNDS[1]})
    assert only_bound == {"l40s": SCALE_BOUNDS[1]}
    by_gpu2, elsewhere2 = kept_factors({("a", "h200-sxm"): SCALE_BOUNDS[0], ("b", "h200-sxm"): 1.16,
                                        ("b", "h100-sxm"): 1.10, ("c", "h100-sxm"): 1.20, ("b", "b200-sxm"): 1.0},
                                       min_models=2)  # one free factor on h200 and b200: theirs is not kept
    assert by_gpu2 == pytest.approx({"h100-sxm": 1.15}) and elsewhere2 == elsewhere


def test_stage1_shares_one_step_and_drops_a_pair_whose_factor_sits_at_a_bound(monkeypatch):
    # Three (model, GPU) pairs; the third runs at a quarter of its profile (factor 0.25, below the
    # bound 0.5). Fitted with it, the shared step and per-seq bend to absorb it; dropped, they are exact.
    # (Dropping is a structure cross-validation may choose, DROP_AT_BOUND; today's fit does not.)
    from calibration import engine_fit
    from calibration.engine_fit import SCALE_BOUNDS, stage1_solve

    monkeypatch.setattr(engine_fit, "DROP_AT_BOUND", True)

    rng = np.random.default_rng(1)
    n = 90
    pair = np.repeat([0, 1, 2], n // 3)
    kernels, batch = rng.uniform(5, 30, n), rng.integers(1, 256, n).astype(float)
    factor = np.array([1.1, 0.9, 0.25])
    measured = factor[pair] * kernels + 1.5 + 40e-3 * batch
    x0 = np.r_[1.0, 20.0, 1.0, 1.0, 1.0]
    f0 = kernels + 1.0 + 20e-3 * batch
    J = np.c_[np.ones(n), 1e-3 * batch, kernels * (pair == 0), kernels * (pair == 1), kernels * (pair == 2)]
    lower, upper = np.r_[0, 0, [SCALE_BOUNDS[0]] * 3], np.r_[20, 500, [SCALE_BOUNDS[1]] * 3]
    x = stage1_solve(f0, J, x0, measured, lower, upper, np.r_[0.5, 10, 0.05, 0.05, 0.05], pair)
    assert np.allclose(x[:4], [1.5, 40.0, 1.1, 0.9], rtol=1e-3), x
    assert abs(x[4] - SCALE_BOUNDS[0]) < 1e-6
    # Kept in the fit (today's structure), the pair at its bound bends the shared step and per-seq time.
    monkeypatch.setattr(engine_fit, "DROP_AT_BOUND", False)
    kept = stage1_solve(f0, J, x0, measured, lower, upper, np.r_[0.5, 10, 0.05, 0.05, 0.05], pair)
    assert not np.allclose(kept[:2], [1.5, 40.0], rtol=1e-2), kept


def test_overlapped_stage1_takes_the_max_on_overlapped_rows_and_the_sum_elsewhere():
    # Two pairs; the first's rows run on a version that overlaps (the engine hides behind long kernels),
    # the second's add it. Engine 6 ms + 80 us/seq against kernels of 3 .. 30 ms: both sides of the max bind.
    from calibration.engine_fit import SCALE_BOUNDS, stage1_solve
    from calibration.engine_overlap import solve_stage1

    rng = np.random.default_rng(2)
    n = 120
    pair = np.repeat([0, 1], n // 2)
    kernels, batch = rng.uniform(3, 30, n), rng.integers(1, 128, n).astype(float)
    factor = np.array([1.2, 0.9])
    overlapped = pair == 0
    engine = 6.0 + 80e-3 * batch
    measured = np.where(overlapped, np.maximum(factor[pair] * kernels, engine), factor[pair] * kernels + engine)
    x0 = np.r_[1.0, 20.0, 1.0, 1.0]
    f0 = kernels + 1.0 + 20e-3 * batch  # the ADDITIVE simulation at x0, linearised
    J = np.c_[np.ones(n), 1e-3 * batch, kernels * (pair == 0), kernels * (pair == 1)]
    lower, upper = np.r_[0, 0, [SCALE_BOUNDS[0]] * 2], np.r_[20, 500, [SCALE_BOUNDS[1]] * 2]
    h = np.r_[0.5, 10, 0.05, 0.05]
    x = solve_stage1(f0, J, x0, measured, lower, upper, h, pair, overlapped, kernels)
    assert np.allclose(x, [6.0, 80.0, 1.2, 0.9], rtol=1e-3), x
    # The additive solve on the same rows cannot fit them.
    add = stage1_solve(f0, J, x0, measured, lower, upper, h, pair)
    assert not np.allclose(add, [6.0, 80.0, 1.2, 0.9], rtol=1e-2), add


def test_engine_terms_overlap_a_version_without_data_as_that_vllm_does_by_default(tmp_path):
    import pytest

    from sim.configio import ConfigError
    from sim.engine_terms import engine_terms

    def write(name, rule):
        import json
        entry = {"compute_scale": 1.0, "step_overhead_s": 0.0, "per_seq_overhead_s": 6e-5, "response_latency_s": 0.01,
                 "request_jitter_s": 0.02, "provenance": {"source": "test"}}
        path = tmp_path / name
        path.write_text(json.dumps({"engines": {"vllm": {
            "default_version": "0.12.0", "overlap_rule": rule,
            "versions": {"0.12.0": {**entry, "overlap": False}, "0.19.0": {**entry, "overlap": True}}}}}))
        return path

    path = write("t.json", "async_default")
    got = {v: engine_terms("vllm", v, path=path) for v in ("0.12.0", "0.13.0", "0.14.0", "0.19.0", "0.20.0")}
    assert {v: t.overhead.overlap for v, t in got.items()} == \
        {"0.12.0": False, "0.13.0": False, "0.14.0": True, "0.19.0": True, "0.20.0": True}
    assert got["0.14.0"].version == "0.12.0" and got["0.14.0"].note  # 0.12's terms, 0.14's own overlap
    assert engine_terms("vllm", path=path).overhead.overlap is False  # the default version's flag
    assert engine_terms("vllm", "0.14.0", path=write("n.json", "none")).overhead.overlap is False
    with pytest.raises(ConfigError, match="overlap_rule"):
        engine_terms("vllm", path=write("bad.json", "sometimes"))


def test_the_default_version_is_the_newest_release_not_the_one_with_most_rows():
    """A scenario naming no vLLM version is served by the release one installs today: the newest
    numbered release with data (a nightly only when nothing else exists), whatever the row counts."""
    import json
    from pathlib import Path

    from sim.engine_terms import engine_terms, newest_release, terms_path
    assert newest_release({"0.12.0": 88, "0.19.0": 83, "0.9.2": 400, "nightly-abc": 69}) == "0.19.0"
    assert newest_release(["0.18.0", "0.18.1", "0.2.0"]) == "0.18.1"
    assert newest_release(["nightly-abc"]) == "nightly-abc"
    shipped = engine_terms("vllm", None)
    versions = json.loads(Path(terms_path()).read_text())["engines"]["vllm"]["versions"]
    assert shipped.version == newest_release(versions) and shipped.note == ""
