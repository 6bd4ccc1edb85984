"""Start-up: a command imports only what it needs (issue 15).

Each check runs the command in a fresh interpreter and reads `sys.modules` at its end, so a
module-level import added anywhere on the path (a `import pandas` at the top of a file the engine
uses) fails here instead of silently adding a second to every `servesim run`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs `servesim ARGS` in this interpreter, then prints the loaded modules as the last line of stderr.
PROBE = """
import json, runpy, sys
sys.argv = ["servesim", *{args!r}]
try:
    runpy.run_module("sim.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({{"code": code, "modules": sorted(sys.modules)}}), file=sys.stderr)
"""

# Never on a plain run: DataFrames (built only for --out or results.requests), the planner and the
# calibration stack (their own commands), the optional outputs (a Chrome trace) and the UI.
NOT_ON_A_RUN = ("pandas", "pyarrow", "scipy", "sklearn", "matplotlib", "streamlit", "torch", "vllm", "ray",
                "sim.plan", "sim.chrome_trace", "sim.compare", "calibration.cli",
                "calibration.fit", "calibration.profile")


def imported(*args: str) -> tuple[int, set[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=list(args))], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    result = json.loads(out.stderr.strip().splitlines()[-1])
    return result["code"], set(result["modules"])


def loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


def test_a_plain_run_of_the_default_scenario_imports_only_the_simulation():
    code, modules = imported("run")
    assert code == 0
    assert "sim.simulation" in modules and "numpy" in modules  # the probe saw the run
    assert [m for m in NOT_ON_A_RUN if loaded(modules, m)] == []


def test_version_and_help_import_neither_numpy_nor_yaml():
    for args in (["--version"], ["run", "--help"]):
        code, modules = imported(*args)
        assert code == 0, args
        heavy = [m for m in ("numpy", "simpy", "yaml", "pandas", "sim.simulation", "sim.plan") if loaded(modules, m)]
        assert heavy == [], (args, heavy)
    assert "importlib.metadata" not in imported("run", "--help")[1]  # the version is looked up only for --version


# A run from Python, as benchmarks/vidur_workload.py makes it: a scenario from a dict (Llama-2-70B on A100s at
# TP 2, which has no shipped profile, so the automatic cost model looks for one and falls back to the roofline).
LIBRARY_RUN = """
import json, sys
from sim.scenario import scenario_from_dict
from sim.simulation import run
res = run(scenario_from_dict({"name": "lib", "seed": 1, "model": "llama-2-70b", "hardware": {"gpu": "a100-80gb-sxm"},
    "workload": {"arrival": {"kind": "poisson", "rate_per_s": 0.5}, "num_requests": 30,
                 "prompt_tokens": {"kind": "lognormal", "mean": 1155, "sigma": 0.5, "min": 16, "max": 3200},
                 "output_tokens": {"kind": "lognormal", "mean": 211, "sigma": 0.99, "min": 1, "max": 896}},
    "serving": {"replicas": 1, "tensor_parallel": 2, "max_model_len": 4096}}))
print(json.dumps({"finished": int((res.table.finish_s == res.table.finish_s).sum()), "modules": sorted(sys.modules)}),
      file=sys.stderr)
"""


def test_a_run_from_python_imports_only_the_simulation():
    out = subprocess.run([sys.executable, "-c", LIBRARY_RUN], cwd=ROOT, capture_output=True, text=True, timeout=300)
    result = json.loads(out.stderr.strip().splitlines()[-1])
    assert result["finished"] == 30  # the probe saw the run
    modules = set(result["modules"])
    assert [m for m in NOT_ON_A_RUN if loaded(modules, m)] == []
