"""The engine fit's cross-validation (calibration/engine_cv.py) on a synthetic surrogate: folds leave
one training model out, a fold's fit never sees the scored model's rows, and the structures recover
known terms where they can."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from calibration import engine_cv as cv
from calibration.silicon import Row

MODELS = ("m-a", "m-b", "m-c")
GPUS = ("h100-sxm", "h200-sxm")
JITTERS = len(cv.JITTER_GRID_MS)


def _basis(step_ms=1.5, per_seq_us=40.0, factor=None, n_per=12, seed=0) -> cv.Basis:
    """Rows whose TPOT = factor[model, GPU] * kernels + step + per_seq * batch exactly, TTFT = its
    prefill + 30 ms; every model on both GPUs, one vLLM version."""
    factor = factor or {}
    rng = np.random.default_rng(seed)
    rows, kern, batch = [], [], []
    for m in MODELS:
        for g in GPUS:
            for k in range(n_per):
                rows.append(Row(id=f"{m}-{g}-{k}", model=m, gpu=g, dtype="bf16", tp=1, isl=1024, osl=128,
                                concurrency=int(rng.integers(1, 64)), concurrency_recorded=True, ttft_ms=0.0,
                                tpot_ms=0.0, backend_version="0.12.0"))
                kern.append(rng.uniform(5, 30))
                batch.append(rows[-1].concurrency)
    kern, batch = np.array(kern), np.array(batch, float)
    f = np.array([factor.get((r.model, r.gpu), 1.0) for r in rows])
    tpot = f * kern + step_ms + per_seq_us * 1e-3 * batch
    prefill = kern * 8
    ttft = f * prefill + 30.0
    d_tpot = np.c_[kern, np.ones(len(rows)), 1e-3 * batch]
    d_ttft = np.c_[prefill, np.zeros(len(rows)), np.zeros(len(rows))]
    return cv.Basis(rows=rows, tpot=tpot, ttft=ttft, tpot0=kern, d_tpot=d_tpot,
                    ttft0=np.repeat(prefill[:, None], JITTERS, axis=1), d_ttft=d_ttft, lone=prefill)


def test_folds_leave_one_training_model_out_and_never_fit_its_rows():
    B = _basis()
    folds = cv.folds(B.rows, MODELS)
    assert [m for m, _, _ in folds] == list(MODELS)
    for model, fit_idx, test_idx in folds:
        assert {B.rows[i].model for i in test_idx} == {model}
        assert model not in {B.rows[i].model for i in fit_idx}
        assert sorted(fit_idx + test_idx) == list(range(len(B.rows)))


def test_a_folds_terms_do_not_move_when_the_scored_models_measurements_change():
    # Poison the scored model's measured times: the fold's fit must not see them.
    B = _basis()
    model, fit_idx, test_idx = cv.folds(B.rows, MODELS)[1]
    st = cv.STRUCTURES[0]
    t = cv.fit_structure(B, fit_idx, st)
    B.tpot[test_idx] *= 3.0
    B.ttft[test_idx] *= 5.0
    t2 = cv.fit_structure(B, fit_idx, st)
    assert t.step_ms == t2.step_ms and t.scale == t2.scale and t.latency_ms == t2.latency_ms


def test_structures_recover_known_terms_and_cv_scores_them():
    B = _basis()
    for st in (cv.Structure("today"), cv.Structure("none", factor="none"), cv.Structure("shared", step="shared")):
        t = cv.fit_structure(B, list(range(len(B.rows))), st)
        assert abs(t.step_ms["0.12.0"] - 1.5) < 0.05, (st, t.step_ms)
        assert abs(t.per_seq_us["*"] - 40.0) < 2.0, (st, t.per_seq_us)
        assert all(abs(s - 1.0) < 0.01 for s in t.scale.values()), (st, t.scale)
        assert abs(t.latency_ms - 30.0) < 1.0
    table = cv.cross_validate(B, cv.STRUCTURES[:2], MODELS)
    assert all(r["tpot_mdape"] < 1.0 and r["rows"] == len(B.rows) for r in table)
    assert set(table[0]["folds"]) == set(MODELS)


def test_a_model_whose_factor_sits_at_a_bound_is_dropped_only_where_asked():
    # m-a on h200 runs at a quarter of its profile: its factor hits the lower bound (0.5).
    B = _basis(factor={("m-a", "h200-sxm"): 0.25})
    idx = list(range(len(B.rows)))
    today = cv.fit_structure(B, idx, cv.Structure("today"))
    assert abs(today.pair_factor["m-a on h200-sxm"] - cv.SCALE_BOUNDS[0]) < 1e-6
    dropped = cv.fit_structure(B, idx, cv.Structure("drop", drop_bound=True))
    assert "m-a on h200-sxm" not in dropped.pair_factor
    assert abs(dropped.step_ms["0.12.0"] - 1.5) < 0.05


def test_choose_prefers_lower_tpot_then_ttft_within_half_a_point():
    table = [{"structure": "a", "tpot_mdape": 10.0, "ttft_mdape": 30.0},
             {"structure": "b", "tpot_mdape": 10.4, "ttft_mdape": 20.0},
             {"structure": "c", "tpot_mdape": 9.0, "ttft_mdape": 40.0}]
    assert cv.choose(table)["structure"] == "c"
    table[2]["tpot_mdape"] = 10.2
    assert cv.choose(table)["structure"] == "b"


def test_a_post_hoc_candidate_must_clear_the_bar_to_be_chosen():
    # "p" was proposed after held-out results were seen (Structure.post_hoc): the plain rule would take it
    # (lowest TPOT), the bar does not until it beats the others' choice ("a") by POST_HOC_BAR_PCT of TPOT.
    def spec(post_hoc=""):
        return {"post_hoc": post_hoc}
    table = [{"structure": "a", "tpot_mdape": 6.4, "ttft_mdape": 19.0, "spec": spec()},
             {"structure": "b", "tpot_mdape": 8.0, "ttft_mdape": 15.0, "spec": spec()},
             {"structure": "p", "tpot_mdape": 6.1, "ttft_mdape": 18.2, "spec": spec("after the lease")}]
    assert cv.choose(table)["structure"] == "a"
    assert cv.choose([dict(r, spec={}) for r in table])["structure"] == "p"  # without the mark: the plain rule
    table[2]["tpot_mdape"] = 6.4 - cv.POST_HOC_BAR_PCT
    assert cv.choose(table)["structure"] == "p"
    table[2]["ttft_mdape"] = 19.0 + cv.POST_HOC_BAR_PCT + 0.1  # TTFT worse by more than the bar: not adopted
    assert cv.choose(table)["structure"] == "a"


def test_the_shipped_post_hoc_candidates_say_when_and_the_record_applies_the_bar():
    import json

    marked = [st for st in cv.STRUCTURES if st.post_hoc]
    assert {st.name[:2] for st in marked} >= {"o5", "o6"} and all("20" in st.post_hoc for st in marked)
    rec = json.loads(cv.CV_PATH.read_text())
    by_name = {r["structure"]: r for r in rec["table"]}
    assert {st.name for st in cv.STRUCTURES} == set(by_name)  # the record was written with today's candidates
    chosen = by_name[rec["chosen"]]
    assert not chosen["spec"]["post_hoc"] or chosen["tpot_mdape"] <= min(
        r["tpot_mdape"] for r in rec["table"] if not r["spec"]["post_hoc"]) - cv.POST_HOC_BAR_PCT


def test_a_gpu_factor_from_one_training_model_is_not_kept_with_min_models_two():
    # Fitted on m-a and m-b on h100 and m-c alone on h200, each at its own factor: with min_models_per_gpu=2
    # the h200 factor (m-c's own error) is not kept as h200's; h100's, measured by two models, is.
    B = _basis(factor={("m-a", "h100-sxm"): 1.10, ("m-b", "h100-sxm"): 1.20, ("m-c", "h200-sxm"): 1.40})
    idx = [i for i, r in enumerate(B.rows) if (r.gpu == "h100-sxm") != (r.model == "m-c")]
    assert {B.rows[i].model for i in idx if B.rows[i].gpu == "h200-sxm"} == {"m-c"}
    one = cv.fit_structure(B, idx, cv.Structure("one"))
    two = cv.fit_structure(B, idx, cv.Structure("two", min_models_per_gpu=2))
    assert abs(one.scale["h200-sxm"] - 1.40) < 0.02
    assert "h200-sxm" not in two.scale and abs(two.scale["h100-sxm"] - one.scale["h100-sxm"]) < 1e-12
    assert two.scale["*"] == one.scale["*"]


def test_the_fit_uses_the_structure_its_cross_validation_chose():
    import json

    from calibration import engine_fit

    rec = json.loads(cv.CV_PATH.read_text())
    assert rec["chosen"] == engine_fit.STRUCTURE
    assert rec["chosen"] == cv.choose(rec["table"])["structure"]
    assert rec["training_models"] == list(engine_fit.TRAIN_MODELS)
    spec = next(cv.Structure(**r["spec"]) for r in rec["table"] if r["structure"] == rec["chosen"])
    assert spec.step == "shared" and spec.drop_bound == engine_fit.DROP_AT_BOUND
    assert spec.overlap == engine_fit.OVERLAP and not spec.exposed


def test_the_no_engine_time_candidate_adds_nothing_per_step_and_scores_its_miss():
    # k0 (kernels alone for TPOT, stage 2 as usual): no step, no per-sequence time, factor 1. On rows
    # with 1.5 ms + 40 us/seq of engine time it must miss TPOT low; on rows with none, it is exact.
    k0 = next(st for st in cv.STRUCTURES if st.step == "none")
    B = _basis()
    t = cv.fit_structure(B, list(range(len(B.rows))), k0)
    assert t.step_ms == {"0.12.0": 0.0} and t.per_seq_us["*"] == 0.0 and t.scale == {"*": 1.0}
    assert abs(t.latency_ms - 30.0) < 1.0
    miss = cv.cross_validate(B, [k0], MODELS)[0]
    assert miss["tpot_mdape"] > 5.0
    exact = cv.cross_validate(_basis(step_ms=0.0, per_seq_us=0.0), [k0], MODELS)[0]
    assert exact["tpot_mdape"] < 1e-6


def _basis_of(step_ms: float, per_seq_us: float, overlapped, versions=("0.12.0",), seed=1) -> cv.Basis:
    """_basis's rows, each model's rows spread over `versions`; TPOT = max(kernels, engine) on the rows
    where overlapped(version) holds and kernels + engine elsewhere; the kernel step is the row's kernels."""
    B = _basis(step_ms=0.0, per_seq_us=0.0, seed=seed)
    rows = [replace(r, backend_version=versions[k % len(versions)]) for k, r in enumerate(B.rows)]
    engine = step_ms + per_seq_us * B.d_tpot[:, 2]
    ov = np.array([overlapped(r.backend_version) for r in rows])
    tpot = np.where(ov, np.maximum(B.tpot0, engine), B.tpot0 + engine)
    return replace(B, rows=rows, tpot=tpot, k_step=B.tpot0.copy())


def test_overlap_candidates_recover_overlapped_terms_and_the_cv_tells_max_from_sum():
    o1 = next(st for st in cv.STRUCTURES if st.overlap == "all" and not st.exposed)
    o2 = next(st for st in cv.STRUCTURES if st.overlap == "async_default" and not st.exposed)
    c1 = next(st for st in cv.STRUCTURES if st.name.startswith("c1"))
    # Engine 8 ms + 100 us/seq (8.1 .. 14.4 ms) against kernels of 5 .. 30 ms: both sides of the max bind.
    over = _basis_of(8.0, 100.0, lambda v: True)
    t = cv.fit_structure(over, list(range(len(over.rows))), o1)
    assert t.overlap == "all" and abs(t.step_ms["0.12.0"] - 8.0) < 0.2 and abs(t.per_seq_us["*"] - 100.0) < 5.0
    table = {r["structure"]: r for r in cv.cross_validate(over, [c1, o1], MODELS)}
    assert table[o1.name]["tpot_mdape"] < 0.5 < table[c1.name]["tpot_mdape"]
    # The same engine added, not overlapped: the sum wins.
    add = _basis_of(8.0, 100.0, lambda v: False)
    table = {r["structure"]: r for r in cv.cross_validate(add, [c1, o1], MODELS)}
    assert table[c1.name]["tpot_mdape"] < 0.5 < table[o1.name]["tpot_mdape"]
    # Overlapped on the versions where vLLM schedules async by default only (0.18.0, not 0.12.0): o2 is exact.
    mixed = _basis_of(8.0, 100.0, lambda v: v == "0.18.0", versions=("0.12.0", "0.18.0"))
    table = {r["structure"]: r for r in cv.cross_validate(mixed, [c1, o1, o2], MODELS)}
    assert table[o2.name]["tpot_mdape"] < 0.5
    assert table[o2.name]["tpot_mdape"] < min(table[c1.name]["tpot_mdape"], table[o1.name]["tpot_mdape"])


def test_async_scheduling_is_vllms_default_from_0_14():
    from sim.engine_terms import async_scheduling_default

    assert [async_scheduling_default("vllm", v) for v in ("0.11.2", "0.12.0", "0.13.0", "0.14.0", "0.19.0")] == \
        [False, False, False, True, True]
    assert async_scheduling_default("vllm", "nightly-5b8c30d62b754b57") is True
    assert async_scheduling_default("vllm", "not recorded") is None and async_scheduling_default("sglang", "0.5") is None


def _basis_with_prompt_latency(per_token_us: float) -> cv.Basis:
    """_basis's rows over four prompt lengths; measured TTFT = prefill + 30 ms + per_token_us x ISL."""
    B = _basis(seed=2)
    isl = np.array([(128, 1024, 4096, 8192)[k % 4] for k in range(len(B.rows))])
    rows = [replace(r, isl=int(n)) for r, n in zip(B.rows, isl)]
    return replace(B, rows=rows, ttft=B.ttft + per_token_us * 1e-3 * isl)


def test_the_prompt_token_latency_candidate_changes_ttft_only_and_the_cv_scores_it():
    t1 = next(st for st in cv.STRUCTURES if st.latency_per_token)
    o2 = next(st for st in cv.STRUCTURES if st.name.startswith("o2"))
    assert replace(t1, name=o2.name, latency_per_token=False) == o2  # o2 with the per-token term, nothing else
    B = _basis_with_prompt_latency(3.0)  # 3 us a token: 25 ms on an 8192-token prompt
    t = cv.fit_structure(B, list(range(len(B.rows))), t1)
    assert abs(t.latency_per_token_us - 3.0) < 0.1 and abs(t.latency_ms - 30.0) < 1.0
    assert cv.fit_structure(B, list(range(len(B.rows))), o2).latency_per_token_us == 0.0
    table = {r["structure"]: r for r in cv.cross_validate(B, [o2, t1], MODELS)}
    assert table[t1.name]["tpot_mdape"] == table[o2.name]["tpot_mdape"]  # stage 1 is the same: TTFT decides
    assert table[t1.name]["ttft_mdape"] < 0.5 < table[o2.name]["ttft_mdape"]
    assert cv.choose(list(table.values()))["structure"] == t1.name
    # Without a per-token latency in the measurements it fits none.
    t0 = cv.fit_structure(_basis_with_prompt_latency(0.0), list(range(len(B.rows))), t1)
    assert t0.latency_per_token_us < 0.1 and abs(t0.latency_ms - 30.0) < 1.0


def test_the_admission_lag_experiment_turns_the_lag_on_for_async_versions_only():
    # benchmarks/admission_lag_cv.py: the CV's basis with engine.async_admission_lag on where vLLM schedules
    # async by default (>= 0.14), every other row (and every other field) as calibration.silicon builds it.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "admission_lag_cv.py"
    spec = importlib.util.spec_from_file_location("admission_lag_cv", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    build = mod.with_lag(lambda d: d)
    for version, lag in (("0.19.0", True), ("nightly-5b8c30d62b754b57", True), ("0.12.0", None), ("", None)):
        d = {"name": "r", "engine": {"name": "vllm", "version": version}, "seed": 3}
        out = build(d)
        assert out["engine"].get("async_admission_lag") == lag, version
        assert {k: v for k, v in out.items() if k != "engine"} == {"name": "r", "seed": 3}
        assert "async_admission_lag" not in d["engine"]  # the caller's mapping is not changed
