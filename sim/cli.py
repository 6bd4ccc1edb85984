"""`servesim` command line: run a scenario (and, from other packages, plan and calibrate).

The CLI is thin: it loads a scenario, calls the same functions the UI calls, prints.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from .configio import ConfigError

MAX_SEED = 2**32 - 1


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the README's promise), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def seed_arg(text: str) -> int:
    """--seed: an integer in 0 .. 2**32-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text[:40]!r}; expected an integer in 0..{MAX_SEED}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"got {value if abs(value) < 10**20 else 'a huge number'}; "
                                         f"allowed 0..{MAX_SEED}")
    return value


def workers_arg(text: str) -> int:
    """--workers: 1 .. 1024 local processes."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text[:40]!r}; expected an integer in 1..1024") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"got {value if abs(value) < 10**20 else 'a huge number'}; allowed 1..1024")
    return value


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("servesim")
    except PackageNotFoundError:
        return "unknown (not installed)"


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

    from .outputs import check_output_path, write_output

    out = check_output_path(args.out, (".csv", ".parquet"), args.force) if args.out else None  # before the run
    scenario = load_scenario(args.scenario or DEFAULT_SCENARIO, args.set or [])
    results = run(scenario, seed=args.seed)
    summary = summarize(results)
    if out is not None:
        write_output(out, results.requests)
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


# Commands that live in other modules, and the module that registers each. They import the
# planner or the calibration stack (scipy, pandas, vLLM helpers): a `servesim run` loads neither.
EXTRA_COMMANDS = {"plan": "sim.plan_cli", "calibrate": "calibration.cli"}


def _command(argv: list[str] | None) -> str | None:
    """The subcommand `argv` names (its first word that is not an option), if any."""
    for word in sys.argv[1:] if argv is None else argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `argv`, only the command it names is fully registered (fast start-up)."""
    p = OneLineParser(prog="servesim", description="Simulate LLM inference serving: latency, throughput, cost.")
    p.add_argument("--version", action="version", version=f"servesim {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="simulate one scenario and print its summary")
    r.add_argument("scenario", nargs="?", help="scenario YAML (a path, or a shipped name; default: the embedded "
                                               "chat_llama3_8b_a100.yaml)")
    r.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override a scenario value, e.g. --set serving.replicas=4 (repeatable)")
    r.add_argument("--seed", type=seed_arg, default=None, help="random seed, 0..2**32-1 (default: the scenario's)")
    r.add_argument("--out", help="write per-request records to a .csv or .parquet file")
    r.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_run)
    ls = sub.add_parser("scenarios", help="list the shipped scenarios")
    ls.set_defaults(func=cmd_scenarios)
    command = _command(argv) if argv is not None else None
    wanted = [EXTRA_COMMANDS[command]] if command in EXTRA_COMMANDS else (
        [] if command in ("run", "scenarios") else list(EXTRA_COMMANDS.values()))
    for module in wanted:
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue  # that part is not installed / not written yet
        if hasattr(mod, "register"):
            mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"servesim: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (servesim run | head): stop quietly, as cat and grep do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("servesim: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RecursionError) as exc:
        print(f"servesim: error: the input is too large to simulate ({type(exc).__name__}); "
              f"reduce num_requests, replicas or nesting", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
