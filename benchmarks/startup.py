"""Start-up benchmark: how long `servesim` takes before (and around) the simulation itself.

Each command runs as a fresh process, `--repeat` times; prints the median wall and CPU seconds
(user + system, of the child process: compare CPU, not wall, on a shared machine), and whether
the command imported pandas (a `servesim run` that writes no DataFrame should not).

    python benchmarks/startup.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, python arguments); `servesim X` is `python -m sim.cli X` from the checkout.
COMMANDS = [
    ("python -c pass (interpreter alone)", ["-c", "pass"]),
    ("servesim --version", ["-m", "sim.cli", "--version"]),
    ("servesim run --help", ["-m", "sim.cli", "run", "--help"]),
    ("import sim.simulation", ["-c", "import sim.simulation"]),
    ("servesim run (default scenario, 6,000 requests)", ["-m", "sim.cli", "run"]),
    ("servesim check (default scenario)", ["-m", "sim.cli", "check", "chat_llama3_8b_a100.yaml"]),
]

PANDAS_PROBE = ("import runpy, sys; sys.argv = ['servesim', {args}]; "
                "exec('try:\\n runpy.run_module(\"sim.cli\", run_name=\"__main__\")\\nexcept SystemExit: pass'); "
                "print('pandas' in sys.modules, file=sys.stderr)")


def measure(args: list[str], repeat: int) -> tuple[float, float]:
    """Median (wall s, CPU s) of `python args` over `repeat` runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def imports_pandas(args: list[str]) -> str:
    if args[:2] != ["-m", "sim.cli"]:
        code = "import sys; " + args[1] + "; print('pandas' in sys.modules, file=sys.stderr)" if args[0] == "-c" else ""
    else:
        code = PANDAS_PROBE.format(args=", ".join(repr(a) for a in args[2:]))
    if not code:
        return "?"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=False)
    last = out.stderr.strip().splitlines()[-1:] or ["?"]
    return {"True": "yes", "False": "no"}.get(last[0], "?")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    print(f"{'command':<50} {'wall s':>8} {'CPU s':>8}  pandas")
    for label, args in COMMANDS:
        wall, cpu = measure(args, a.repeat)
        print(f"{label:<50} {wall:>8.2f} {cpu:>8.2f}  {imports_pandas(args)}")


if __name__ == "__main__":
    main()
