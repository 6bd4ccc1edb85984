"""`--log-level`: standard levels, before or after the command, one line for a bad value."""
import logging
import subprocess
import sys

import pytest

from sim.cli import LOGGERS, main

TINY = ["--set", "workload.num_requests=20"]


@pytest.fixture(autouse=True)
def _restore_loggers():
    """main() configures servesim's loggers for the process; put them back for the next test."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in LOGGERS}
    yield
    for name, (handlers, level, propagate) in saved.items():
        log = logging.getLogger(name)
        log.handlers, log.level, log.propagate = handlers, level, propagate


def test_a_bad_level_is_one_line_naming_the_allowed_ones():
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", "--log-level", "loud"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--log-level" in lines[0] and "debug, info, warning, error, critical" in lines[0]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_reports_the_run_either_side_of_the_command(capsys, where):
    argv = ["--log-level", "DEBUG", "run", *TINY] if where == "before" else ["run", *TINY, "--log-level=debug"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "servesim: DEBUG: chat-llama3-8b-a100 (seed 42): 20 requests" in err


def test_warnings_show_by_default_and_are_silenced_by_a_higher_level(capsys):
    # A bf16 profile pricing an fp8 KV cache is a WARNING note of the run.
    argv = ["run", "cpu_vllm_tiny_llama.yaml", *TINY, "--set", "serving.quantization.kv_cache=fp8", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "servesim: WARNING: cost model profile" in captured.err
    assert "DEBUG" not in captured.err and "INFO" not in captured.err  # the default is warning
    assert main(argv + ["--log-level", "error"]) == 0
    assert capsys.readouterr().err == ""


def test_a_library_caller_gets_no_stray_output(capsys):
    from sim.scenario import load_scenario
    from sim.simulation import run

    run(load_scenario("cpu_vllm_tiny_llama.yaml", ["workload.num_requests=20", "serving.quantization.kv_cache=fp8"]))
    assert capsys.readouterr().err == ""
