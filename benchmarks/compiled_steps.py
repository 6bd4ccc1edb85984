"""What compiled steps would buy (issue 15): the per-decision modules built with mypyc, same bits, loop CPU.

The ninth pass left the Vidur loop ~3.5x short of its 0.3 s target with "Python per priced step and per
decision" as what remains (README, Benchmarks). This measures the other way out, without adopting it:
a copy of this checkout's tracked files in a temporary folder, the modules below compiled there to C
extensions by mypyc (mypy's compiler: the same Python source, type-annotated, no rewrite), then

1. bit identity: benchmarks/output_hashes.py --check run on the compiled copy (every per-request output of
   its cases, against the hashes saved here); a compiled module that changed a number fails here;
2. CPU: the Vidur side-by-side (benchmarks/vidur_workload.py: one replica, the small-batch step) and its
   chunked form (the general step), each a fresh process per run, the plain and the compiled copy
   interleaved round by round; loop CPU seconds, median per tree, and the ratio.

Nothing is installed and the checkout is not touched; servesim itself stays pure Python (a compiled build
would need a C compiler and mypy at install time, which the fresh machine of `.ci/run` is not known to
have). Needs `pip install mypy` and a C compiler with the Python headers.

    python benchmarks/compiled_steps.py [--rounds 3] [--modules sim/engine_small.py ...]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vidur_workload import ROOT, SCENARIO, one_process  # noqa: E402

# Compiled as they are (mypy finds no type error in them): the small step, the continuous scheduler, the
# clock. Not: sim/kv_cache.py (sim/prefix_cache.py subclasses its pool, and an interpreted class cannot
# inherit from a compiled one); sim/engine.py, sim/cost_model.py, sim/open_run.py and sim/simulation.py
# would need their Optional attributes narrowed first; sim/batch.py defines its properties in a loop in the
# class body, which mypyc does not compile. mypyc checks declared types at run time: a name that held a list
# on one path and an array on another had to be declared as both (or renamed) before the runs passed.
MODULES = ["sim/engine_small.py", "sim/schedulers/continuous.py", "sim/clock.py"]


def tracked_copy(dest: Path) -> None:
    """The checkout's tracked files (as `git ls-files` lists them) copied under `dest`."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in names.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)


def compile_modules(tree: Path, modules: list[str]) -> float:
    """mypyc on `modules` inside `tree` (extensions written beside the sources); its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mypyc", *modules], cwd=tree, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"mypyc failed on {' '.join(modules)}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.perf_counter() - t0


def compiled_names(tree: Path, modules: list[str]) -> list[str]:
    """The modules a process started in `tree` imports from an extension (not from source)."""
    names = [m[:-3].replace("/", ".") for m in modules]
    code = ("import importlib, json, sys; print(json.dumps([n for n in sys.argv[1:] "
            "if not importlib.import_module(n).__file__.endswith('.py')]))")
    out = subprocess.run([sys.executable, "-c", code, *names], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="runs per tree and workload, interleaved (default 3)")
    ap.add_argument("--modules", nargs="+", default=MODULES, help="paths of the modules to compile")
    a = ap.parse_args()
    if importlib.util.find_spec("mypyc") is None:
        sys.exit("needs mypyc: pip install mypy (and a C compiler with the Python headers)")
    with tempfile.TemporaryDirectory(prefix="servesim-compiled-") as tmp:
        tree = Path(tmp)
        tracked_copy(tree)
        build_s = compile_modules(tree, a.modules)
        compiled = compiled_names(tree, a.modules)
        print(f"compiled by mypyc        {', '.join(compiled)} ({build_s:.0f} s to build)")
        if len(compiled) != len(a.modules):
            sys.exit("a module was still imported from source: the comparison would not measure compiled code")
        check = subprocess.run([sys.executable, "benchmarks/output_hashes.py", "--check", "benchmarks/output_hashes.json"],
                               cwd=tree, capture_output=True, text=True)
        same = check.returncode == 0
        print(f"bit identity             {'every output_hashes case equal' if same else 'CHANGED:'}")
        if not same:
            print(check.stdout[-2000:] + check.stderr[-2000:])
        chunked = json.loads(json.dumps(SCENARIO))
        chunked["serving"]["scheduler"].update(chunked_prefill=True, max_num_batched_tokens=512)
        small = {**SCENARIO, "workload": {**SCENARIO["workload"], "num_requests": 20}}
        for t in (ROOT, tree):
            one_process(small, t)  # each tree's bytecode cache written before timing
        print(f"{'workload (loop CPU s)':<40} {'plain':>22} {'compiled':>22} {'plain / compiled':>17}")
        for label, scenario in (("Vidur side-by-side (small step)", SCENARIO), ("the same, chunked 512 (general step)", chunked)):
            cpu: dict[Path, list[float]] = {ROOT: [], tree: []}
            for _ in range(a.rounds):
                for t in (ROOT, tree):
                    cpu[t].append(one_process(scenario, t)["loop_cpu_s"])
            med = {t: statistics.median(v) for t, v in cpu.items()}
            cols = [f"{med[t]:.2f} ({', '.join(f'{x:.2f}' for x in cpu[t])})" for t in (ROOT, tree)]
            print(f"{label:<40} {cols[0]:>22} {cols[1]:>22} {med[ROOT] / med[tree]:>16.2f}x")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
