"""`servesim` command line: run a scenario (and, from other packages, plan and calibrate).

The CLI is thin: it loads a scenario, calls the same functions the UI calls, prints.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .configio import ConfigError


def _jsonable(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def cmd_run(args: argparse.Namespace) -> int:
    from .metrics import summarize
    from .report import format_summary
    from .scenario import DEFAULT_SCENARIO, load_scenario
    from .simulation import run

    scenario = load_scenario(args.scenario or DEFAULT_SCENARIO, args.set or [])
    results = run(scenario, seed=args.seed)
    summary = summarize(results)
    if args.out:
        out = Path(args.out)
        if out.suffix == ".parquet":
            try:
                results.requests.to_parquet(out, index=False)
            except ImportError:
                raise ConfigError("--out: writing .parquet needs pyarrow (pip install 'servesim[parquet]'); "
                                  "or use a .csv path") from None
        elif out.suffix == ".csv":
            results.requests.to_csv(out, index=False)
        else:
            raise ConfigError(f"--out: got {str(out)!r}; allowed: a path ending in .csv or .parquet")
    if args.json:
        print(json.dumps({k: _jsonable(v) for k, v in summary.items()}, indent=2))
    else:
        print(format_summary(results, summary))
        if args.out:
            print(f"  per-request records written to {args.out}")
    return 0 if results.stable else 3


def cmd_scenarios(args: argparse.Namespace) -> int:
    from .scenario import shipped_scenarios

    for name in shipped_scenarios():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servesim", description="Simulate LLM inference serving: latency, throughput, cost.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="simulate one scenario and print its summary")
    r.add_argument("scenario", nargs="?", help="scenario YAML (a path, or a shipped name; default: the embedded "
                                               "chat_llama3_8b_a100.yaml)")
    r.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override a scenario value, e.g. --set serving.replicas=4 (repeatable)")
    r.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    r.add_argument("--out", help="write per-request records to a .csv or .parquet file")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("scenarios", help="list the shipped scenarios")
    ls.set_defaults(func=cmd_scenarios)
    for module in ("sim.planner", "calibration.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue  # that part is not installed / not written yet
        if hasattr(mod, "register"):
            mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"servesim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
