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
