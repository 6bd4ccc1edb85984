"""The property suite (tests/test_properties.py) with a bigger budget and fresh random cases.

CI runs each property on a fixed, small set of generated cases (same cases every run, about
40 s). This runs SCALE times as many, newly drawn each time, and prints what it tried and found:

    python benchmarks/fuzz_scenarios.py            # scale 10: ~4,000 generated inputs, a few minutes
    python benchmarks/fuzz_scenarios.py --scale 50

A failure prints Hypothesis's smallest failing example; add it to tests/test_hardening.py as a
fixed case once fixed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=10, help="examples per property = CI's x scale (default 10)")
    args = ap.parse_args()
    env = {**os.environ, "SERVESIM_FUZZ_SCALE": str(args.scale), "SERVESIM_FUZZ_RANDOM": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics", "tests/test_properties.py"], cwd=ROOT, env=env)
    print(f"fuzz: scale {args.scale}, {time.perf_counter() - t0:.0f} s wall, exit {proc.returncode}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
