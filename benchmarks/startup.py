"""Start-up benchmark: how long `servesim` takes before (and around) the simulation itself.

Each command runs as a fresh process, `--repeat` times; prints the median CPU seconds (user +
system, of the child process: compare CPU, not wall, on a shared machine) and the median wall.
A default `servesim run` is split into start-up (the process's CPU until the simulation is
called: interpreter, imports, argument and scenario parsing), simulation (inside
`sim.simulation.run`) and the rest (summary, printing, exit). The last column says which of
pandas, scipy, importlib.metadata and yaml the command imported: a plain run needs neither pandas
nor scipy; SimPy 4.1 imports importlib.metadata (for its own version); a run reads YAML files.
The "dependencies" row is the floor under a run's start-up: the interpreter, numpy, SimPy, YAML.

With `--baseline REF` the same commands also run from a copy of git revision REF (exported to
a temporary folder), interleaved with this checkout's runs so both see the same neighbours,
and the table gives before, after and their ratio:

    python benchmarks/startup.py [--repeat 10] [--baseline main] [--no-pyc]

Python's compiled bytecode is cached across the runs (as an installed package has it), also where
the environment sets PYTHONDONTWRITEBYTECODE; --no-pyc measures starts that compile the checkout.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, python arguments); `servesim X` is `python -m sim.cli X` from the checkout.
COMMANDS = [
    ("python -c pass (interpreter alone)", ["-c", "pass"]),
    ("import numpy, simpy, yaml (a run's dependencies)", ["-c", "import numpy, numpy.random, simpy, yaml"]),
    ("servesim --version", ["-m", "sim.cli", "--version"]),
    ("servesim run --help", ["-m", "sim.cli", "run", "--help"]),
    ("import sim.simulation", ["-c", "import sim.simulation"]),
    ("servesim check (default scenario)", ["-m", "sim.cli", "check", "chat_llama3_8b_a100.yaml"]),
]
RUN_LABEL = "servesim run (default scenario, 6,000 requests)"
HEAVY = ("pandas", "scipy", "importlib.metadata", "yaml")  # reported when a command imported them

# Runs `servesim run` in this process with sim.simulation.run wrapped to note the process's CPU
# time when the simulation starts and ends; prints those, then the heavy modules loaded.
RUN_PROBE = """
import runpy, sys, time
import sim.simulation as s
marks = []
inner = s.run
def run(*a, **k):
    marks.append(time.process_time())
    try:
        return inner(*a, **k)
    finally:
        marks.append(time.process_time())
s.run = run
sys.argv = ['servesim', 'run']
try:
    runpy.run_module('sim.cli', run_name='__main__')
except SystemExit:
    pass
print(*marks, file=sys.stderr)
print(*[m for m in {heavy!r} if m in sys.modules], file=sys.stderr)
"""
# Runs a command in this process, then prints the heavy modules it loaded.
MODULES_PROBE = """
import runpy, sys
sys.argv = ['servesim', *{args!r}]
try:
    {body}
except SystemExit:
    pass
print(*[m for m in {heavy!r} if m in sys.modules], file=sys.stderr)
"""


PYCACHE = Path(tempfile.gettempdir()) / f"servesim-startup-pycache-{os.getuid()}"
NO_PYC = False  # --no-pyc


def child(tree: Path, args: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s, stderr) of one `python args` run from `tree`.

    Compiled bytecode is cached (in a folder of its own, PYTHONPYCACHEPREFIX) even where the
    environment says PYTHONDONTWRITEBYTECODE: an installed servesim has its .pyc files, and
    compiling every module on every start would be most of what this measures. With --no-pyc,
    bytecode is neither written nor read from that folder: each start compiles the modules that
    have no __pycache__ beside them (a checkout run with PYTHONDONTWRITEBYTECODE=1)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env["PYTHONPATH"] = str(tree)
    env |= {"PYTHONDONTWRITEBYTECODE": "1"} if NO_PYC else {"PYTHONPYCACHEPREFIX": str(PYCACHE)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, *args], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, out.stderr


def heavy_modules(tree: Path, args: list[str]) -> str:
    if args[:2] == ["-m", "sim.cli"]:
        body = "runpy.run_module('sim.cli', run_name='__main__')"
        code = MODULES_PROBE.format(args=args[2:], body=body, heavy=HEAVY)
    elif args[0] == "-c":
        code = MODULES_PROBE.format(args=[], body=args[1], heavy=HEAVY)
    else:
        return "?"
    lines = child(tree, ["-c", code])[2].strip().splitlines()
    return (lines[-1] if lines else "") or "-"


def measure(trees: list[Path], args: list[str], repeat: int) -> list[tuple[float, float]]:
    """Per tree, median (wall s, CPU s) of `python args`; the trees' runs interleave."""
    samples: list[list[tuple[float, float]]] = [[] for _ in trees]
    for tree in trees:
        child(tree, args)  # warm-up: writes the bytecode cache
    for _ in range(repeat):
        for i, tree in enumerate(trees):
            samples[i].append(child(tree, args)[:2])
    return [(statistics.median(w for w, _ in s), statistics.median(c for _, c in s)) for s in samples]


def measure_run(trees: list[Path], repeat: int) -> list[dict[str, float]]:
    """Per tree, medians of a default `servesim run`: total wall/CPU and its start-up / simulation / rest CPU."""
    samples: list[list[dict[str, float]]] = [[] for _ in trees]
    code = RUN_PROBE.format(heavy=HEAVY)
    for tree in trees:
        child(tree, ["-c", code])  # warm-up: writes the bytecode cache
    for _ in range(repeat):
        for i, tree in enumerate(trees):
            wall, cpu, err = child(tree, ["-c", code])
            marks = [float(x) for x in err.strip().splitlines()[-2].split()]
            samples[i].append({"wall": wall, "cpu": cpu, "startup": marks[0], "sim": marks[1] - marks[0],
                               "rest": cpu - marks[1], "modules": err.strip().splitlines()[-1]})
    return [{k: statistics.median(x[k] for x in s) for k in ("wall", "cpu", "startup", "sim", "rest")}
            | {"modules": s[-1]["modules"] or "-"} for s in samples]


def export(ref: str, into: Path) -> Path:
    """The files of git revision `ref` of this repository, written under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref], capture_output=True,
                             check=True).stdout
    tar = into / "tree.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into / "tree", filter="data")
    return into / "tree"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10, help="runs per command and tree (default 10; medians)")
    ap.add_argument("--baseline", metavar="REF", help="also measure git revision REF and print the ratio")
    ap.add_argument("--no-pyc", action="store_true", help="compile modules on every start, as a checkout run "
                                                           "with PYTHONDONTWRITEBYTECODE=1 does (default: cached)")
    a = ap.parse_args()
    global NO_PYC
    NO_PYC = a.no_pyc
    cache = "bytecode compiled on every start" if a.no_pyc else "bytecode cached"
    with tempfile.TemporaryDirectory() as tmp:
        trees = [ROOT] if not a.baseline else [export(a.baseline, Path(tmp)), ROOT]
        if a.baseline:
            print(f"CPU seconds, median of {a.repeat} ({cache}): before = {a.baseline}, after = this checkout")
            print(f"{'command':<50} {'before':>7} {'after':>7} {'ratio':>6}  {'wall after':>10}  imports after "
                  f"(of {', '.join(HEAVY)})")
        else:
            print(f"CPU seconds, median of {a.repeat} ({cache})")
            print(f"{'command':<50} {'CPU s':>7} {'wall s':>7}  imports (of {', '.join(HEAVY)})")

        def row(label: str, cpus: list[float], wall: float, modules: str) -> None:
            if a.baseline:
                ratio = cpus[0] / cpus[1] if cpus[1] else float("nan")
                print(f"{label:<50} {cpus[0]:>7.3f} {cpus[1]:>7.3f} {ratio:>5.2f}x  {wall:>10.3f}  {modules}")
            else:
                print(f"{label:<50} {cpus[0]:>7.3f} {wall:>7.3f}  {modules}")

        for label, args in COMMANDS:
            res = measure(trees, args, a.repeat)
            row(label, [c for _, c in res], res[-1][0], heavy_modules(ROOT, args))
        runs = measure_run(trees, a.repeat)
        row(RUN_LABEL, [r["cpu"] for r in runs], runs[-1]["wall"], runs[-1]["modules"])
        for key, label in (("startup", "  start-up (until the simulation is called)"),
                           ("sim", "  simulation (sim.simulation.run)"),
                           ("rest", "  summary, printing and exit")):
            row(label, [r[key] for r in runs], float("nan"), "")


if __name__ == "__main__":
    main()
