"""Hostile input, each case from the fuzzing report (issue 14): one line naming the field and exit 2,
or a clear answer; never a traceback, a hang or a silent nonsense result."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sim.cli import main
from sim.configio import ConfigError, load_yaml
from sim.scenario import load_scenario, read_scenario_file, scenario_from_dict
from sim.simulation import run

SMALL = {"workload": {"arrival": {"kind": "poisson", "rate_per_s": 2.0}, "num_requests": 20,
                      "prompt_tokens": {"kind": "constant", "value": 100},
                      "output_tokens": {"kind": "constant", "value": 20}}}


def write(tmp_path: Path, data, name="s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("servesim"), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ---- 1. closed loop: the issue's own example --------------------------------------------------

@pytest.mark.parametrize("seed", [1189, 20010, 30108])
def test_closed_loop_four_clients_no_think_time_lognormal(seed):
    sc = scenario_from_dict({"workload": {
        "arrival": {"kind": "closed_loop", "concurrency": 4, "think_time_s": 0}, "num_requests": 200,
        "prompt_tokens": {"kind": "lognormal", "mean": 400, "sigma": 1.0, "max": 4000},
        "output_tokens": {"kind": "lognormal", "mean": 150, "sigma": 1.0, "max": 2000}}})
    res = run(sc, seed=seed)
    assert res.stable and res.requests["finish_s"].notna().all()


@pytest.mark.parametrize("policy", ["static", "continuous"])
@pytest.mark.parametrize("seed", [1, 3, 4])
def test_closed_loop_with_as_many_clients_as_requests_and_fast_replies(policy, seed):
    # Clients start spread over one expected request; short requests finish before the last client
    # starts, and their clients' follow-ups take the last requests: the late clients have none left
    # (this crashed with an IndexError before).
    sc = scenario_from_dict({"serving": {"max_model_len": 2048, "scheduler": {"policy": policy, "batch_size": 1}},
                             "workload": {"arrival": {"kind": "closed_loop", "concurrency": 9, "think_time_s": 0},
                                          "num_requests": 9,
                                          "prompt_tokens": {"kind": "lognormal", "mean": 50, "sigma": 2.0, "max": 1000},
                                          "output_tokens": {"kind": "lognormal", "mean": 5, "sigma": 2.0, "max": 100}}})
    res = run(sc, seed=seed)
    assert res.stable and len(res.requests) == 9 and res.requests["finish_s"].notna().all()


# ---- 2. infinite and huge numbers ---------------------------------------------------------------

@pytest.mark.parametrize("dotted, value", [
    ("workload.arrival.rate_per_s", math.inf), ("hardware.price_usd_per_gpu_hour", math.inf),
    ("workload.duration_s", math.inf), ("workload.duration_s", 1e300), ("serving.replicas", 1_000_000),
    ("workload.prompt_tokens.value", 2**63), ("serving.scheduler.batch_timeout_s", math.inf),
    ("slo.ttft_s", math.inf), ("cost_model.step_overhead_s", math.nan),
])
def test_infinite_or_huge_values_are_refused_with_the_range(dotted, value):
    import copy
    data = copy.deepcopy(SMALL)
    node = data
    *head, last = dotted.split(".")
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ConfigError) as e:
        scenario_from_dict(data)
    assert last in str(e.value) and "\n" not in str(e.value)


def test_yaml_inf_in_a_file_gives_exit_2(tmp_path, capsys):
    p = write(tmp_path, "workload:\n  arrival: {kind: poisson, rate_per_s: .inf}\n  num_requests: 10\n"
                        "  prompt_tokens: {kind: constant, value: 10}\n  output_tokens: {kind: constant, value: 5}\n")
    rc, out, err = cli(capsys, "run", str(p))
    assert rc == 2 and out == ""
    one_line_error(err, "workload.arrival.rate_per_s", "finite")


def test_huge_priority_level_and_lognormal_sigma_are_bounded():
    data = {**SMALL, "workload": {**SMALL["workload"], "priorities": [
        {"name": "a", "share": 0.5, "level": 0}, {"name": "b", "share": 0.5, "level": 100_000_000}]}}
    with pytest.raises(ConfigError, match=r"priorities\[1\]\.level: got 100000000; allowed 0 <= x <= 1,000,000"):
        scenario_from_dict(data)
    data = {**SMALL, "workload": {**SMALL["workload"],
                                  "prompt_tokens": {"kind": "lognormal", "mean": 10, "sigma": 1e6, "max": 100}}}
    with pytest.raises(ConfigError, match="prompt_tokens.sigma"):
        scenario_from_dict(data)


def test_arrivals_that_would_make_too_many_requests_are_refused_before_drawing():
    data = {**SMALL, "workload": {**SMALL["workload"], "num_requests": None, "duration_s": 3e7,
                                  "arrival": {"kind": "poisson", "rate_per_s": 1e5}}}
    with pytest.raises(ConfigError, match="would make about 3e\\+12 requests"):
        scenario_from_dict(data)


# ---- 3. a YAML alias bomb -------------------------------------------------------------------------

def alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"workload: *a{levels}")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_once(tmp_path):
    p = write(tmp_path, alias_bomb(9))  # 9**10 values expanded: it used to hang, then MemoryError
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(p)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    one_line_error(proc.stderr, "expands to more than")
    assert len(proc.stderr) < 500  # a hang would have hit the subprocess timeout


def test_shared_aliases_of_modest_size_still_load():
    doc = load_yaml("base: &b {kind: constant, value: 10}\nprompt: *b\noutput: *b\n", "x.yaml")
    assert doc["prompt"] == doc["output"] == {"kind": "constant", "value": 10}


def test_an_error_message_never_prints_an_unbounded_value():
    big = [list(range(1000))] * 1000
    with pytest.raises(ConfigError) as e:
        scenario_from_dict({**SMALL, "serving": {"replicas": big}})
    assert len(str(e.value)) < 300


# ---- 4. tracebacks that became one line, exit 2 -------------------------------------------------------

def test_non_utf8_scenario(tmp_path, capsys):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    rc, _, err = cli(capsys, "run", str(p))
    assert rc == 2
    one_line_error(err, "not UTF-8")


def test_deeply_nested_yaml(tmp_path, capsys):
    p = write(tmp_path, "workload: " + "[" * 5000 + "]" * 5000 + "\n")
    rc, _, err = cli(capsys, "run", str(p))
    assert rc == 2
    one_line_error(err, "nested")


def test_yaml_syntax_errors_are_one_line(tmp_path, capsys):
    p = write(tmp_path, "workload:\n  arrival: {kind: poisson\n  num_requests: 3\n")
    rc, _, err = cli(capsys, "run", str(p))
    assert rc == 2
    one_line_error(err, "not valid YAML at line")


def test_unparsable_set_value(capsys):
    rc, _, err = cli(capsys, "run", "--set", "serving.replicas={[", "--set", "workload.num_requests=10")
    assert rc == 2
    one_line_error(err, "--set serving.replicas")


@pytest.mark.parametrize("seed", ["-1", "4294967296", "abc"])
def test_bad_seed(capsys, seed):
    with pytest.raises(SystemExit) as e:
        main(["run", "--seed", seed])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "--seed")


def test_bad_seed_in_the_file(tmp_path, capsys):
    rc, _, err = cli(capsys, "run", str(write(tmp_path, {**SMALL, "seed": -3})))
    assert rc == 2
    one_line_error(err, "seed: got -3")


def test_overlong_path(capsys):
    rc, _, err = cli(capsys, "run", "x" * 5000 + ".yaml")
    assert rc == 2
    one_line_error(err, "no file")
    assert len(err) < 2000


def test_argparse_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--no-such-flag"])
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, "unrecognized arguments")


@pytest.mark.parametrize("out, needle", [("nowhere/r.csv", "does not exist"), ("r.txt", "allowed: a path ending in")])
def test_bad_out_is_refused_before_simulating(tmp_path, capsys, monkeypatch, out, needle):
    import sim.simulation
    monkeypatch.setattr(sim.simulation, "run", lambda *a, **k: pytest.fail("simulated before checking --out"))
    rc, _, err = cli(capsys, "run", "--out", str(tmp_path / out))
    assert rc == 2
    one_line_error(err, "--out", needle)


def test_out_does_not_overwrite_or_follow_links_without_being_told(tmp_path, capsys):
    scenario = str(write(tmp_path, SMALL))
    existing = tmp_path / "r.csv"
    existing.write_text("keep me\n")
    rc, _, err = cli(capsys, "run", scenario, "--out", str(existing))
    assert rc == 2 and existing.read_text() == "keep me\n"
    one_line_error(err, "exists; pass --force")
    rc, _, _ = cli(capsys, "run", scenario, "--out", str(existing), "--force")
    assert rc == 0 and existing.read_text().startswith("request_id")
    target = tmp_path / "elsewhere.csv"
    target.write_text("not yours\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    rc, _, err = cli(capsys, "run", scenario, "--out", str(link), "--force")
    assert rc == 2 and target.read_text() == "not yours\n"
    one_line_error(err, "symbolic link")


def test_version_and_a_closed_pipe():
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("servesim ")
    # `servesim run | head -1`: the reader leaves early; no BrokenPipe traceback.
    cmd = f"{sys.executable} -m sim.cli run --set workload.num_requests=50 --json | head -c 10"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


# ---- traces ---------------------------------------------------------------------------------------------

def trace_scenario(tmp_path: Path, csv_text: str) -> Path:
    (tmp_path / "t.csv").write_text(csv_text)
    return write(tmp_path, {"workload": {"arrival": {"kind": "trace", "path": "t.csv"}}})


def test_azure_trace_with_mixed_time_zones_is_read_in_utc(tmp_path):
    p = trace_scenario(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                 "2023-11-16 18:00:00+00:00,100,10\n2023-11-16 19:00:01+01:00,100,10\n"
                                 "2023-11-16 18:00:02,100,10\n")
    res = run(load_scenario(p))
    assert sorted(res.requests["arrival_s"].round(6)) == [0.0, 1.0, 2.0]


def test_trace_token_counts_beyond_int64_name_the_line_and_value(tmp_path, capsys):
    p = trace_scenario(tmp_path, "timestamp,prompt_tokens,output_tokens\n0,100,10\n1,9223372036854775808,10\n")
    rc, _, err = cli(capsys, "run", str(p))
    assert rc == 2
    one_line_error(err, "line 3, column prompt_tokens", "9223372036854775808")


def test_a_trace_error_does_not_echo_the_file(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("root:x:0:0:secret:/root:/bin/bash\n")
    p = write(tmp_path, {"workload": {"arrival": {"kind": "trace", "path": "t.csv"}}})
    rc, _, err = cli(capsys, "run", str(p))
    assert rc == 2 and "secret" not in err
    one_line_error(err, "lacks the required")


# ---- 5. profiles ----------------------------------------------------------------------------------------

def profile_folder(tmp_path: Path, **changes) -> Path:
    from calibration.profile import shipped_profiles_dir
    src = shipped_profiles_dir() / "cpu-vllm_tiny-llama_tp1_bf16" / "profile.json"
    data = json.loads(src.read_text())
    coeffs = changes.pop("coefficients", None)
    if coeffs is not None:
        data["coefficients"] = {**data["coefficients"], **coeffs}
    data.update(changes)
    folder = tmp_path / "prof"
    folder.mkdir(exist_ok=True)
    (folder / "profile.json").write_text(json.dumps(data))  # json.dumps writes NaN / Infinity as Python does
    return folder


def cpu_scenario(tmp_path: Path, folder: Path, **serving) -> Path:
    data = read_scenario_file("cpu_vllm_tiny_llama.yaml")
    data["cost_model"] = {"profile": str(folder)}
    data["workload"]["num_requests"] = 50
    data["serving"] = {**data["serving"], **serving}
    return write(tmp_path, data)


@pytest.mark.parametrize("changes, needle", [
    ({"coefficients": {"per_token_s": math.nan}}, "NaN"),
    ({"coefficients": {"overhead_s": math.inf}}, "Infinity"),
    ({"coefficients": {k: 0.0 for k in ("overhead_s", "per_seq_s", "weights_s", "per_token_s", "per_pair_s",
                                        "per_kv_token_s", "per_sample_s")}}, "all 0"),
    ({"weight_dtype": "banana"}, "weight_dtype"),
    ({"kv_dtype": "fp4"}, "kv_dtype"),
    ({"num_kv_blocks": 10**12}, "num_kv_blocks"),
])
def test_untrustworthy_profiles_are_refused(tmp_path, capsys, changes, needle):
    from sim.cost_model import PROFILE_COEFFICIENTS
    if "coefficients" in changes:
        changes = {"coefficients": {k: v for k, v in changes["coefficients"].items() if k in PROFILE_COEFFICIENTS}}
    rc, out, err = cli(capsys, "run", str(cpu_scenario(tmp_path, profile_folder(tmp_path, **changes))))
    assert rc == 2 and "nan" not in out
    one_line_error(err, needle)


def test_non_utf8_profile(tmp_path, capsys):
    folder = tmp_path / "prof"
    folder.mkdir()
    (folder / "profile.json").write_bytes(b'{"name": "\xff"}')
    rc, _, err = cli(capsys, "run", str(cpu_scenario(tmp_path, folder)))
    assert rc == 2
    one_line_error(err, "not UTF-8")


def test_profile_blocks_keep_their_size_in_tokens_when_the_scenario_pages_differently(tmp_path):
    folder = profile_folder(tmp_path)
    profile = json.loads((folder / "profile.json").read_text())
    tokens = profile["num_kv_blocks"] * profile["block_size_tokens"]
    for block in (16, profile["block_size_tokens"]):
        res = run(load_scenario(cpu_scenario(tmp_path, folder, block_size_tokens=block)))
        assert res.memory.num_kv_blocks * block == tokens


# ---- 6. the planner -------------------------------------------------------------------------------------

@pytest.mark.parametrize("plan_value", [[], 0, False, "x"])
def test_a_plan_section_that_is_not_a_mapping_is_refused(plan_value):
    from sim.plan.planner import plan
    data = read_scenario_file("customer_support_1m_per_day.yaml")
    data["plan"] = plan_value
    with pytest.raises(ConfigError, match="^plan: got"):
        plan(data, workers=1, progress=False)


def test_one_bad_candidate_is_reported_and_the_others_are_planned():
    from sim.plan.planner import plan
    data = read_scenario_file("customer_support_1m_per_day.yaml")
    good = dict(data["plan"]["candidates"][0], name="good")
    data["plan"] = {**data["plan"], "requests_per_point": 200, "max_requests_per_point": 400,
                    "candidates": [dict(good, name="bad-set", set=[3]), {"name": "bad-gpu", "gpu": 7},
                                   dict(good, name="bad-value", set=["serving.replicas=-2"]), good]}
    p = plan(data, workers=1, progress=False)
    by_name = {c.name: c for c in p.candidates}
    assert by_name["good"].feasible
    assert "set[0]: got 3" in by_name["bad-set"].reason and not by_name["bad-set"].feasible
    assert "gpu: got 7" in by_name["bad-gpu"].reason
    assert "serving.replicas" in by_name["bad-value"].reason


# ---- 7. smaller silent acceptances ----------------------------------------------------------------------

def test_duplicate_keys_are_refused(tmp_path, capsys):
    p = write(tmp_path, "seed: 1\nseed: 2\n" + yaml.safe_dump(SMALL))
    rc, _, err = cli(capsys, "run", str(p))
    assert rc == 2
    one_line_error(err, "duplicate key 'seed'", "line 2", "first at line 1")


def test_base_dir_is_not_a_scenario_key(tmp_path):
    with pytest.raises(ConfigError, match="base_dir: unknown key"):
        load_scenario(write(tmp_path, {**SMALL, "base_dir": "/etc"}))


def test_an_aborted_closed_loop_reports_clients_not_an_absurd_rate():
    sc = scenario_from_dict({"workload": {
        "arrival": {"kind": "closed_loop", "concurrency": 50}, "num_requests": 100,
        "prompt_tokens": {"kind": "constant", "value": 100}, "output_tokens": {"kind": "constant", "value": 10}},
        "sim": {"max_queue_requests": 5}})
    res = run(sc)
    assert not res.stable
    assert "closed loop of 50 clients" in res.status and "e+" not in res.status
    assert math.isnan(res.offered_rate_per_s)


def test_config_errors_carry_their_field(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_scenario(write(tmp_path, {**SMALL, "serving": {"scheduler": {"max_num_seqs": 0}}}))
    assert e.value.field == "serving.scheduler.max_num_seqs"
    assert str(e.value).startswith(repr(str(tmp_path / "s.yaml")))  # the message still says which file


@pytest.mark.parametrize("run_json, csv, needle", [
    ("[1]", "a,b\n1,2\n", "expected a JSON object"),
    ("NaN", "a,b\n1,2\n", "NaN is not a number"),
    ('{"model": "m", "device": "d", "dtype": "bf16", "kv_dtype": "bf16", "block_size_tokens": 16}', "a,b\n1,2\n",
     "columns ['phase'"),
    ('{"model": "m"}', "a,b\n1,2\n", "field 'device' is missing"),
])
def test_calibrate_fit_on_malformed_files_is_one_line(tmp_path, capsys, run_json, csv, needle):
    (tmp_path / "run.json").write_text(run_json)
    (tmp_path / "measurements.csv").write_text(csv)
    rc, _, err = cli(capsys, "calibrate", "fit", str(tmp_path))
    assert rc == 2
    one_line_error(err, needle)


def test_an_uploaded_file_goes_through_the_same_bounded_loader():
    pytest.importorskip("streamlit")
    from app_pages.common import parse_uploaded_yaml

    with pytest.raises(ConfigError, match="bomb.yaml: the document expands"):
        parse_uploaded_yaml(alias_bomb(9).encode(), "bomb.yaml")  # refused before anything expands it
    with pytest.raises(ConfigError, match="dup.yaml: line 2: duplicate key 'seed'"):
        parse_uploaded_yaml(b"seed: 1\nseed: 2\n", "dup.yaml")
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_uploaded_yaml(b"name: caf\xe9\n", "latin1.yaml")


@pytest.mark.parametrize("key, value, field", [
    ("tensor_parallel", 3, "tensor_parallel"),
    ("kv_dtype", "int3", "kv_dtype"),
    ("coefficients.per_token_s", -1.0, "coefficients.per_token_s"),
    ("coefficients.per_flop_s", 1e-9, "coefficients.per_flop_s"),
    ("serving", {"compute_scale": 1.0}, "serving.step_overhead_s"),
    ("provenance", {}, "provenance.source"),
    ("gpu", 5, "gpu"),
    ("colour", "red", "colour"),
])
def test_a_profile_is_read_by_the_scenario_machinery_and_names_the_field(tmp_path, key, value, field):
    # One validator (issue 13, item 6): profile.json goes through configio.build like a scenario, so
    # its errors carry the dotted field (what the UI puts beside a widget) and the file name.
    import json

    from sim.profile import ProfileError, load_profile, shipped_profiles_dir
    data = json.loads((shipped_profiles_dir() / "cpu-vllm_tiny-llama_tp1_bf16" / "profile.json").read_text())
    node = data
    *head, last = key.split(".")
    for part in head:
        node = node[part]
    node[last] = value
    (tmp_path / "profile.json").write_text(json.dumps(data))
    with pytest.raises(ProfileError) as e:
        load_profile(tmp_path)
    assert isinstance(e.value, ConfigError) and e.value.field == field
    assert str(e.value).startswith(str(tmp_path / "profile.json")) and "\n" not in str(e.value)
