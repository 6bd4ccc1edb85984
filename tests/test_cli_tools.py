"""`servesim check` (validate without running), `servesim ui` (start the UI from a checkout or a wheel),
and the packaging that makes the UI and the license ship."""
from __future__ import annotations

import json
import os
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from sim.cli import main

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_check_a_valid_scenario_and_a_planning_file(capsys):
    rc, out, _ = cli(capsys, "check", "chat_llama3_8b_a100.yaml")
    assert rc == 0 and out.startswith("ok: chat-llama3-8b-a100") and "KV 28,279 blocks" in out
    from sim.cost_select import select_cost_model
    from sim.scenario import load_scenario

    accuracy = select_cost_model(load_scenario("chat_llama3_8b_a100.yaml")).accuracy
    assert f"  accuracy: {accuracy}" in out.splitlines() and accuracy  # before a long run: how far off to expect
    rc, out, _ = cli(capsys, "check", "customer_support_1m_per_day.yaml")
    assert rc == 0 and "plan candidate(s)" in out
    rc, out, _ = cli(capsys, "check", "trace_replay_azure.yaml", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] and doc["scenario_config"]["workload"]["arrival"]["kind"] == "trace"
    assert doc["accuracy"]


@pytest.mark.parametrize("extra, needle", [
    (["--set", "serving.replicas=0"], "serving.replicas"),
    (["--set", "model=llama-3.1-70b"], "does not fit"),  # memory is checked too, not only the schema
    (["--vllm-args=--max-num-seqs 8 --frobnicate 1"], "--frobnicate"),
])
def test_check_refuses_in_one_line(capsys, extra, needle):
    rc, _, err = cli(capsys, "check", "chat_llama3_8b_a100.yaml", *extra)
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_check_reads_the_trace_and_names_a_bad_candidate(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("timestamp,prompt_tokens,output_tokens\n0,10,x\n")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"workload": {"arrival": {"kind": "trace", "path": "t.csv"}}}))
    rc, _, err = cli(capsys, "check", str(tmp_path / "s.yaml"))
    assert rc == 2 and "line 2, column output_tokens" in err
    plan = yaml.safe_load((ROOT / "scenarios" / "customer_support_1m_per_day.yaml").read_text())
    plan["plan"]["candidates"].append({"name": "broken", "gpu": "v100"})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(plan))
    rc, _, err = cli(capsys, "check", str(tmp_path / "p.yaml"))
    assert rc == 2 and "plan.candidates[" in err and "v100" in err


def test_ui_starts_streamlit_on_the_app_beside_its_pages(monkeypatch):
    pytest.importorskip("streamlit")
    seen = {}
    monkeypatch.setattr(os, "execv", lambda exe, cmd: seen.setdefault("cmd", cmd))
    assert main(["ui", "--server.port", "8601"]) == 0
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[-2:] == ["--server.port", "8601"]
    app = Path(cmd[4])
    assert app.name == "app.py" and (app.parent / "app_pages" / "scenario.py").is_file()


def test_unknown_flags_still_fail_outside_ui(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--server.port", "1"])
    assert info.value.code == 2


def test_wheel_ships_the_ui_and_the_license():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tools = meta["tool"]["setuptools"]
    assert "app" in tools["py-modules"] and "app_pages*" in tools["packages"]["find"]["include"]
    assert meta["project"]["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    data = tools["package-data"]["scenarios"]
    assert {"*/*.jsonl", "*/*.json", "*/*.parquet"} <= set(data)  # the trace samples
