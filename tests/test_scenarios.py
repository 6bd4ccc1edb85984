"""Scenario files: validation messages, overrides, shipped files, CLI, golden numbers."""
import json
import os
from pathlib import Path

import pytest

from sim.cli import main
from sim.configio import ConfigError
from sim.metrics import summarize
from sim.scenario import apply_override, load_scenario, scenario_to_yaml, shipped_scenarios, scenario_from_dict
from sim.simulation import run

from conftest import BASE, make_scenario

GOLDEN = Path(__file__).parent / "golden" / "chat_llama3_8b_a100.json"
GOLDEN_KEYS = ("requests_finished", "request_throughput_per_s", "output_token_throughput_per_s", "ttft_s_p50",
               "ttft_s_p99", "tpot_s_mean", "tpot_s_p99", "e2e_s_p99", "itl_s_p50", "kv_blocks_per_replica",
               "cost_usd_per_1m_output_tokens", "cost_usd_per_1k_requests")


@pytest.mark.parametrize("patch, field, allowed", [
    ({"serving": {"tensor_parallel": 3}}, "serving.tensor_parallel", "allowed 1, 2, 4, 8, 16"),
    ({"model": "qwen2.5-7b", "serving": {"tensor_parallel": 8}}, "serving.tensor_parallel", "must divide"),
    ({"serving": {"scheduler": {"policy": "static"},
                  "speculative": {"draft_model": "llama-3.2-1b"}}}, "serving.speculative", "continuous or priority"),
    ({"serving": {"scheduler": {"max_num_seqs": 512, "max_num_batched_tokens": 256}}},
     "serving.scheduler.max_num_batched_tokens", "max_num_seqs"),
    ({"serving": {"replicas": 0}}, "serving.replicas", "1 <= x <= 4,096"),
    ({"serving": {"scheduler": {"policy": "lifo"}}}, "serving.scheduler.policy", "'fifo'"),
    ({"serving": {"quantization": {"weights": "int3"}}}, "serving.quantization.weights", "'int4'"),
    ({"serving": {"bogus": 1}}, "serving.bogus", "allowed keys"),
    ({"workload": {"arrival": {"rate_per_s": -2.0}}}, "workload.arrival.rate_per_s", "-2.0"),
    ({"model": "llama-9"}, "model", "catalog models"),
    ({"hardware": {"gpu": "v100"}}, "hardware.gpu", "catalog GPUs"),
    ({"serving": {"replicas": "two"}}, "serving.replicas", "integer"),
    ({"serving": {"speculative": {"draft_model": "qwen2.5-0.5b"}}}, "serving.speculative.draft_model", "vocabulary"),
    ({"slo": {"ttft_s": 0}}, "slo.ttft_s", "0 < x"),
    ({"serving": {"max_model_len": 1000}}, "max_model_len", "prompt_tokens.max"),
])
def test_validation_names_field_value_and_allowed(patch, field, allowed):
    with pytest.raises(ConfigError) as err:
        make_scenario(patch)
    msg = str(err.value)
    assert field in msg and allowed in msg


def test_fp8_weights_on_a100_is_an_error_naming_the_gpu():
    sc = make_scenario({"serving": {"quantization": {"weights": "fp8"}}})
    with pytest.raises(ConfigError, match="a100-80gb-sxm has no fp8"):
        run(sc)


def test_model_that_does_not_fit_says_needed_vs_available():
    sc = make_scenario({"model": "llama-3.1-70b"})
    with pytest.raises(ConfigError) as err:
        run(sc)
    msg = str(err.value)
    assert "needs" in msg and "GiB" in msg and "usable" in msg and "tensor_parallel: 2" in msg


def test_quantization_changes_kv_capacity_and_speed():
    base = run(make_scenario())
    q = run(make_scenario({"serving": {"quantization": {"weights": "int4", "kv_cache": "fp8"}}}))
    assert q.memory.num_kv_blocks > 2 * base.memory.num_kv_blocks * 0.95  # fp8 KV halves bytes per token
    assert summarize(q)["tpot_s_mean"] < summarize(base)["tpot_s_mean"]  # less weight streaming per step


def test_override_paths_and_values():
    d = apply_override({"serving": {"replicas": 1}}, "serving.replicas=4")
    assert d["serving"]["replicas"] == 4
    d = apply_override(d, "serving.quantization.kv_cache=fp8")
    assert d["serving"]["quantization"] == {"kv_cache": "fp8"}
    with pytest.raises(ConfigError, match="expected path.to.key=value"):
        apply_override(d, "serving.replicas")


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match="workloads: unknown key"):
        scenario_from_dict({**BASE, "workloads": {}})


def test_yaml_round_trip(tmp_path):
    sc = make_scenario()
    f = tmp_path / "s.yaml"
    f.write_text(scenario_to_yaml(sc))
    again = load_scenario(f)
    assert again == sc


def test_safe_loader_refuses_python_tags(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("workload: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_scenario(f)


def test_every_shipped_scenario_loads():
    names = shipped_scenarios()
    assert "chat_llama3_8b_a100.yaml" in names
    for name in names:
        load_scenario(name)


def test_cli_run_json_and_out(tmp_path, capsys):
    out = tmp_path / "r.csv"
    rc = main(["run", "--set", "workload.num_requests=300", "--json", "--out", str(out)])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests_finished"] == 300
    assert out.read_text().startswith("request_id,")


def test_cli_bad_input_is_one_line_no_traceback(capsys):
    rc = main(["run", "--set", "serving.tensor_parallel=5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "serving.tensor_parallel: got 5" in err and "Traceback" not in err


def test_cli_unstable_exit_code(capsys):
    rc = main(["run", "--set", "workload.arrival.rate_per_s=200", "--set", "serving.replicas=1",
               "--set", "workload.num_requests=20000"])
    assert rc == 3
    assert "unstable" in capsys.readouterr().out


def test_golden_headline_numbers_of_the_default_scenario():
    """The shipped default scenario's headline numbers. A deliberate model change updates them:
    SERVESIM_UPDATE_GOLDEN=1 pytest tests/test_scenarios.py -k golden"""
    s = summarize(run(load_scenario("chat_llama3_8b_a100.yaml")))
    got = {k: s[k] for k in GOLDEN_KEYS}
    if os.environ.get("SERVESIM_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=2) + "\n")
    want = json.loads(GOLDEN.read_text())
    for k in GOLDEN_KEYS:
        assert got[k] == pytest.approx(want[k], rel=1e-6), k


def test_cost_model_kind_alone_may_be_written_as_a_word():
    for kind in ("auto", "roofline"):
        s = load_scenario("chat_llama3_8b_a100.yaml", ["workload.num_requests=50", f"cost_model={kind}"])
        assert s.cost_model.kind == kind and not s.cost_model.uses_profile
    with pytest.raises(ConfigError, match="cost_model: got 'fast'; allowed: auto, roofline"):
        load_scenario("chat_llama3_8b_a100.yaml", ["cost_model=fast"])


def test_profile_is_selected_by_name_and_must_match_model_gpu_and_tp():
    base = load_scenario("chat_llama3_8b_a100.yaml", ["workload.num_requests=200"])
    assert not base.cost_model.uses_profile
    good = load_scenario("chat_llama3_8b_a100.yaml", ["workload.num_requests=200",
                                                      "cost_model.profile=a100-80gb-sxm_llama-3.1-8b_tp1_bf16"])
    res = run(good)
    assert res.cost_model_name.startswith("profile a100-80gb-sxm_llama-3.1-8b_tp1_bf16 (aiconfigurator-core")
    # The default scenario's `auto` finds the same profile (with the same engine terms); the roofline differs.
    assert summarize(res)["tpot_s_mean"] == summarize(run(base))["tpot_s_mean"]
    roofline = load_scenario("chat_llama3_8b_a100.yaml", ["workload.num_requests=200", "cost_model.kind=roofline"])
    assert summarize(res)["tpot_s_mean"] != summarize(run(roofline))["tpot_s_mean"]
    for profile, words in (("h100-sxm_llama-3.1-8b_tp1_bf16", "measured on 'h100-sxm'"),
                           ("a100-80gb-sxm_llama-3.1-8b_tp2_bf16", "tensor_parallel 2"),
                           ("a100-80gb-sxm_qwen3-32b_tp1_bf16", "for model 'qwen3-32b'"),
                           ("no-such-profile", "shipped profiles")):
        sc = load_scenario("chat_llama3_8b_a100.yaml", [f"cost_model.profile={profile}"])
        with pytest.raises(ConfigError, match=words):
            run(sc)
