"""`servesim` command line: run a scenario (and, from other packages, plan and calibrate).

The CLI is thin: it loads a scenario, calls the same functions the UI calls, prints.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

from .cli_errors import run_command
from .configio import MAX_SEED, ConfigError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the README's promise), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def int_arg(lo: int, hi: int):
    """An argparse type: an integer in lo..hi, else a one-line usage error saying the range."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"got {text[:40]!r}; expected an integer in {lo}..{hi}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"got {value if abs(value) < 10**20 else 'a huge number'}; "
                                             f"allowed {lo}..{hi}")
        return value
    return parse


seed_arg = int_arg(0, MAX_SEED)  # --seed
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")  # the standard logging levels
LOGGERS = ("sim", "calibration")  # the packages whose records --log-level shows


def log_level_arg(text: str) -> int:
    """An argparse type: a standard logging level by name (any case), as the logging module's constant."""
    name = text.strip().lower()
    if name not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"got {text[:40]!r}; allowed {', '.join(LOG_LEVELS)}")
    return getattr(logging, name.upper())


class _Once(logging.Filter):
    """Let each distinct message through once: a plan runs many simulations that share a warning."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a caller, or a test, may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(level: int) -> None:
    """Records of servesim's packages at `level` and above go to stderr, one line each."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("servesim: %(levelname)s: %(message)s"))
    handler.addFilter(_Once())
    for name in LOGGERS:
        log = logging.getLogger(name)
        log.handlers = [h for h in log.handlers if isinstance(h, logging.NullHandler)] + [handler]
        log.setLevel(level)
        log.propagate = False
workers_arg = int_arg(1, 1024)  # --workers: local processes


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("servesim")
    except PackageNotFoundError:
        return "unknown (not installed)"


class VersionAction(argparse.Action):
    """`--version`: prints `servesim X.Y.Z` and exits, looking the version up only then (reading the
    installed package's metadata imports importlib.metadata: no cost for a command that never asks)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show program's version number and exit"):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write(f"servesim {version()}\n")
        parser.exit()


def _jsonable(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def cmd_run(args: argparse.Namespace) -> int:
    from .metrics import summarize
    from .report import format_summary
    from .scenario import DEFAULT_SCENARIO, load_scenario, scenario_to_dict
    from .simulation import run
    from .vllm_bench import (DEFAULT_PERCENTILE_METRICS, bench_result, goodput_overrides, parse_percentile_metrics,
                             parse_percentiles)

    from .outputs import check_output_path, write_output

    # Everything the user typed is checked before the run: a bad flag costs nothing.
    fmt = "json" if args.json else args.format
    percentiles = parse_percentiles(args.metric_percentiles)
    metrics = (parse_percentile_metrics(args.percentile_metrics) if args.percentile_metrics
               else DEFAULT_PERCENTILE_METRICS)
    out = check_output_path(args.out, (".csv", ".parquet"), args.force) if args.out else None
    save = (check_output_path(args.save_result, (".json",), args.force, flag="--save-result")
            if args.save_result else None)
    trace_out = (check_output_path(args.trace_out, (".json",), args.force, flag="--trace-out")
                 if args.trace_out else None)
    overrides = goodput_overrides(args.goodput or []) + list(args.set or [])
    scenario = load_scenario(args.scenario or DEFAULT_SCENARIO, overrides, vllm_args=args.vllm_args)
    detailed_itls = args.save_detailed and (save is not None or fmt == "vllm-bench")
    results = run(scenario, seed=args.seed, record_steps=trace_out is not None, record_token_times=detailed_itls)
    summary = summarize(results)
    if out is not None:
        write_output(out, results.requests)
    bench = None
    if save is not None or fmt == "vllm-bench":
        bench = bench_result(results, percentiles, metrics, detailed=args.save_detailed, version=version())
    if save is not None:
        write_output(save, document=bench, flag="--save-result", indent=None)
    if trace_out is not None:
        from .chrome_trace import chrome_trace

        write_output(trace_out, document=chrome_trace(results, version()), flag="--trace-out", indent=None)
    if fmt == "json":
        doc = {k: _jsonable(v) for k, v in summary.items()}
        doc["servesim_version"] = version()
        doc["notes"] = list(results.notes)
        doc["scenario_config"] = scenario_to_dict(scenario)  # what was run, after overrides and defaults
        print(json.dumps(doc, indent=2))
    elif fmt == "vllm-bench":
        print(json.dumps(bench, indent=None if args.save_detailed else 2))  # per-request lists: one line
    else:
        print(format_summary(results, summary))
        if args.out:
            print(f"  per-request records written to {args.out}")
        if save is not None:
            print(f"  vllm bench serve results written to {args.save_result}")
        if trace_out is not None:
            print(f"  Chrome trace written to {args.trace_out} (open in ui.perfetto.dev or chrome://tracing)")
    return 0 if results.stable else 3


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, format_rows
    from .outputs import check_output_path, write_output
    from .scenario import DEFAULT_SCENARIO, load_scenario

    save = (check_output_path(args.save_result, (".json",), args.force, flag="--save-result")
            if args.save_result else None)
    scenario = load_scenario(args.scenario or DEFAULT_SCENARIO, args.set or [], vllm_args=args.vllm_args)
    rows, predicted, notes = compare(args.real, scenario, seed=args.seed, version=version())
    if save is not None:
        write_output(save, document=predicted, flag="--save-result", indent=None)
    if args.json:
        print(json.dumps({"rows": [{k: _jsonable(v) for k, v in r.items()} for r in rows], "notes": notes,
                          "servesim_version": version()}, indent=2))
        return 0
    print(f"servesim compare — real {args.real} vs {scenario.name} ({scenario.model_spec.name} on "
          f"{scenario.serving.replicas} x {scenario.gpu_spec.name}, TP {scenario.serving.tensor_parallel})")
    for note in notes:
        print(f"  note: {note}")
    print(format_rows(rows))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a scenario (or planning) file as `run` / `plan` would, without simulating."""
    from .cost_select import select_cost_model
    from .scenario import load_scenario, read_scenario_file, scenario_to_dict
    from .simulation import build_memory

    scenario = load_scenario(args.scenario, args.set or [], vllm_args=args.vllm_args)
    choice = select_cost_model(scenario)  # a profile is read and matched to the scenario
    cost_name, blocks = choice.name, choice.num_kv_blocks
    memory = build_memory(scenario, blocks)  # the weights must fit and leave room for KV blocks
    arrival = scenario.workload.arrival
    notes: list[str] = []
    if arrival.kind == "trace":
        from pathlib import Path

        from .traces import load_trace

        file = Path(arrival.path)
        if not file.is_absolute() and scenario.base_dir:
            file = Path(scenario.base_dir) / file
        trace = load_trace(file)
        notes += trace.notes
        requests = f"{len(trace.arrival_s):,} requests in the trace"
    else:
        expected = scenario.workload.expected_requests
        requests = f"about {expected:,.0f} requests" if math.isfinite(expected) else "requests until stopped"
    candidates = 0
    if "plan" in read_scenario_file(args.scenario):
        from .plan.config import candidate_scenario, read_plan

        base, cfg, base_dir = read_plan(args.scenario, args.set or [])
        for i, cand in enumerate(cfg.candidates):
            if getattr(cand, "invalid", None):
                raise ConfigError(f"plan.candidates[{i}]: {cand.invalid}")
            try:
                candidate_scenario(base, cand, base_dir)
            except ConfigError as exc:
                raise ConfigError(f"plan.candidates[{i}] ({cand.name or i}): {exc}") from None
        candidates = len(cfg.candidates)
    s = scenario.serving
    summary = (f"{scenario.name}: model {scenario.model_spec.name} on {s.replicas} x {scenario.gpu_spec.name} "
               f"(TP {s.tensor_parallel}), scheduler {s.scheduler.policy}; {arrival.kind} arrivals, {requests}; "
               f"KV {memory.num_kv_blocks:,} blocks = {memory.kv_capacity_tokens:,} tokens per replica; "
               f"cost model {cost_name}" + (f"; {candidates} plan candidate(s)" if candidates else ""))
    if args.json:
        print(json.dumps({"ok": True, "summary": summary, "accuracy": choice.accuracy, "notes": notes,
                          "servesim_version": version(), "scenario_config": scenario_to_dict(scenario)}, indent=2))
    else:
        print(f"ok: {summary}")
        if choice.accuracy:
            print(f"  accuracy: {choice.accuracy}")
        for note in notes:
            print(f"  note: {note}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the Streamlit UI (app.py) from a source checkout or an installed wheel."""
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("streamlit") is None:
        raise ConfigError("ui: the UI needs streamlit; pip install 'servesim[ui]'")
    here = Path(__file__).resolve().parent.parent / "app.py"  # a source checkout
    spec = importlib.util.find_spec("app") if not here.is_file() else None
    app = here if here.is_file() else Path(spec.origin) if spec is not None and spec.origin else None
    if app is None or not (app.parent / "app_pages").is_dir():
        raise ConfigError("ui: app.py and app_pages/ are not installed beside servesim; reinstall servesim[ui]")
    # The checkout's .streamlit/config.toml is not read from an installed wheel: pass what it sets.
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--client.toolbarMode", "viewer",
           "--browser.gatherUsageStats", "false",
           *args.streamlit_args]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)  # become the server: Ctrl-C and kill reach streamlit itself
    return 0  # not reached


def cmd_scenarios(args: argparse.Namespace) -> int:
    from .scenario import shipped_scenarios

    for name in shipped_scenarios():
        print(name)
    return 0


# Commands that live in other modules, and the module that registers each. They import the
# planner or the calibration stack (scipy, pandas, vLLM helpers): a `servesim run` loads neither.
EXTRA_COMMANDS = {"plan": "sim.plan.cli", "calibrate": "calibration.cli"}


def _command(argv: list[str] | None) -> str | None:
    """The subcommand `argv` names (its first word that is not an option), if any."""
    for word in sys.argv[1:] if argv is None else argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole CLI; with `argv`, only the command it names is fully registered (fast start-up)."""
    p = OneLineParser(prog="servesim", description="Simulate LLM inference serving: latency, throughput, cost.")
    p.add_argument("--version", action=VersionAction)
    log_help = f"what servesim reports on stderr: {', '.join(LOG_LEVELS)} (default: warning)"
    p.add_argument("--log-level", type=log_level_arg, default=logging.WARNING, metavar="LEVEL", help=log_help)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="simulate one scenario and print its summary")
    r.add_argument("scenario", nargs="?", help="scenario YAML (a path, or a shipped name; default: the embedded "
                                               "chat_llama3_8b_a100.yaml)")
    r.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override a scenario value, e.g. --set serving.replicas=4 (repeatable)")
    r.add_argument("--seed", type=seed_arg, default=None, help="random seed, 0..2**32-1 (default: the scenario's)")
    r.add_argument("--out", help="write per-request records to a .csv or .parquet file")
    r.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    r.add_argument("--json", action="store_true", help="print the summary as JSON (same as --format json)")
    r.add_argument("--format", choices=("text", "json", "vllm-bench"), default="text",
                   help="what to print: the text summary, servesim's JSON, or the JSON `vllm bench serve "
                        "--save-result` writes (keys, ms units and statistics as vLLM's)")
    r.add_argument("--save-result", metavar="FILE.json",
                   help="also write the results as `vllm bench serve --save-result` does")
    r.add_argument("--save-detailed", action="store_true",
                   help="with --save-result / --format vllm-bench: per-request input_lens, output_lens, "
                        "ttfts, itls, start_times (as vLLM's --save-detailed)")
    r.add_argument("--trace-out", metavar="FILE.json",
                   help="write a Chrome trace of the run (Perfetto / chrome://tracing): each replica's steps "
                        "with their batch, each request's queue, prefill and decode")
    r.add_argument("--metric-percentiles", default="99", metavar="P,P,...",
                   help="percentiles in the vllm-bench results, as vLLM's flag (default: 99)")
    r.add_argument("--percentile-metrics", default=None, metavar="M,M,...",
                   help="metrics given percentiles in the vllm-bench results: ttft, tpot, itl, e2el "
                        "(default: ttft,tpot,itl, as vLLM)")
    r.add_argument("--goodput", nargs="+", metavar="KEY:MS",
                   help="SLO bounds as vLLM's flag: ttft:500 tpot:50 e2el:10000 (ms); they set slo.* and "
                        "request_goodput")
    r.add_argument("--vllm-args", metavar="\"--max-num-seqs 512 ...\"",
                   help="a `vllm serve` command line (or its flags): engine settings by vLLM's names "
                        "(write --vllm-args='--flag ...' when it starts with --)")
    r.set_defaults(func=cmd_run)
    c = sub.add_parser("compare", help="a real `vllm bench serve` result vs servesim's prediction, side by side")
    c.add_argument("real", metavar="REAL.json", help="a `vllm bench serve --save-result` file (--save-detailed: "
                                                     "replayed request by request)")
    c.add_argument("scenario", nargs="?", help="the serving setup to simulate (model, GPU, engine); its workload "
                                               "is replaced by the real one (default: the embedded scenario)")
    c.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a scenario value (repeatable)")
    c.add_argument("--vllm-args", metavar="\"--max-num-seqs 512 ...\"",
                   help="the real server's `vllm serve` flags (use --vllm-args='--flag ...')")
    c.add_argument("--seed", type=seed_arg, default=None, help="random seed, 0..2**32-1 (default: the scenario's)")
    c.add_argument("--save-result", metavar="FILE.json", help="write the prediction as a vllm bench serve result")
    c.add_argument("--force", action="store_true", help="overwrite --save-result if it exists")
    c.add_argument("--json", action="store_true", help="print the rows as JSON")
    c.set_defaults(func=cmd_compare)
    k = sub.add_parser("check", help="validate a scenario or planning file without simulating")
    k.add_argument("scenario", help="scenario YAML (a path, or a shipped name)")
    k.add_argument("--set", action="append", metavar="PATH=VALUE", help="override a scenario value (repeatable)")
    k.add_argument("--vllm-args", metavar="\"--max-num-seqs 512 ...\"", help="a `vllm serve` command line")
    k.add_argument("--json", action="store_true", help="print the resolved scenario as JSON")
    k.set_defaults(func=cmd_check)
    u = sub.add_parser("ui", help="start the web UI (streamlit; pip install 'servesim[ui]'); other flags go to "
                                  "`streamlit run`, e.g. servesim ui --server.port 8600")
    u.set_defaults(func=cmd_ui)
    ls = sub.add_parser("scenarios", help="list the shipped scenarios")
    ls.set_defaults(func=cmd_scenarios)
    command = _command(argv) if argv is not None else None
    wanted = [EXTRA_COMMANDS[command]] if command in EXTRA_COMMANDS else (
        [] if command in ("run", "scenarios", "compare", "check", "ui") else list(EXTRA_COMMANDS.values()))
    if command is None and argv is not None and "--version" in argv and "-h" not in argv and "--help" not in argv:
        wanted = []  # `servesim --version` prints and exits: no need to load the planner or calibration
    for module in wanted:
        try:
            mod = __import__(module, fromlist=["register"])
        except ImportError:
            continue  # that part is not installed / not written yet
        if hasattr(mod, "register"):
            mod.register(sub)
    for command_parser in sub.choices.values():  # before or after the command: servesim run --log-level info
        command_parser.add_argument("--log-level", type=log_level_arg, default=argparse.SUPPRESS, metavar="LEVEL",
                                    help=log_help)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if args.command == "ui":
        args.streamlit_args = extra  # streamlit's own flags (--server.port ...)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logging(args.log_level)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
