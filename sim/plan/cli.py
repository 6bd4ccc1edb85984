"""`servesim plan`: the planner on the command line, and the plain-text rendering of a Plan.

Thin: it parses flags, calls `planner.plan`, prints `format_plan`, writes the exports.
"""
from __future__ import annotations

import argparse
import json
import math

from ..cli import seed_arg, workers_arg


def _money(v: float) -> str:
    return "—" if not math.isfinite(v) else f"${v:,.0f}" if v >= 100 else f"${v:,.2f}"


def _cents(v: float) -> str:
    return "—" if not math.isfinite(v) else f"${v:,.4f}" if v < 1 else f"${v:,.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def format_plan(p) -> str:
    """The headline sentence, the ranked table, the reasons, the Pareto front, and what it took."""
    from .search import fmt_s

    pct = f"P{p.slo.percentile:g}"
    lines = [p.headline(), "",
             f"{p.scenario}: {p.queries_per_day:,.0f} queries/day, peak {p.peak_rate_per_s:.2f} req/s at hour "
             f"{p.peak_hour:02d}, mean {p.mean_prompt_tokens:.0f} prompt + {p.mean_output_tokens:.0f} output tokens; "
             f"SLO {p.slo.describe()}; autoscaling margin {p.scale_up_margin:.0%}", ""]
    rows = []
    for rank, c in enumerate(p.candidates, 1):
        if not c.feasible:
            continue
        lo, hi = min(c.hourly_replicas), max(c.hourly_replicas)
        rows.append([str(rank), c.name, f"{c.replicas_peak}×{c.tensor_parallel}={c.gpus_peak}",
                     f"{lo}–{hi}" if lo != hi else str(lo), _money(c.usd_per_month_fixed),
                     _money(c.usd_per_month_autoscaled), _cents(c.usd_per_1k_queries_autoscaled),
                     _cents(c.usd_per_1m_tokens_autoscaled), fmt_s(c.ttft_s), fmt_s(c.tpot_s),
                     f"{c.price_usd_per_gpu_hour:.2f}", c.cost_model])
    if rows:
        lines += _table(["#", "candidate", "peak rep×TP=GPUs", "autoscaled rep", "$/month fixed", "$/month auto",
                         "$/1k queries", "$/1M tokens", f"{pct} TTFT", f"{pct} TPOT", "$/GPU-h", "cost model"], rows)
    bad = [c for c in p.candidates if not c.feasible]
    if bad:
        lines += ["", "not feasible:"]
        lines += [f"  {c.name} ({c.label}): {c.reason}" for c in bad]
    if p.pareto:
        metrics = [k for k in p.pareto[0] if k.endswith("_s")]
        lines += ["", "cost vs latency, Pareto front (simulated peak-hour points that meet the SLO, fixed fleet):"]
        lines += ["  " + line for line in _table(
            ["candidate", "replicas", "GPUs", "$/month", *[f"{pct} {m[:-2].upper()}" for m in metrics]],
            [[q["candidate"], str(q["replicas"]), str(q["gpus"]), _money(q["usd_per_month_fixed"]),
              *[fmt_s(q[m]) for m in metrics]] for q in p.pareto])]
    best = p.best
    if best is not None:
        hours = " ".join(str(n) for n in best.hourly_replicas)
        lines += ["", f"{best.name} replicas by hour (00..23): {hours}"]
        if best.cost_model_accuracy:
            lines += [f"{best.name} accuracy: {best.cost_model_accuracy}"]
    lines += [f"  {note}" for note in p.notes]
    lines += ["", f"planned in {p.wall_s:.1f} s wall ({p.points_simulated} simulations, {p.sim_s:.1f} s of simulation, "
                  f"{p.backend}, seed {p.seed})"]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    from .planner import plan

    from ..outputs import check_output_path, write_output

    # Check before minutes of simulation.
    out = check_output_path(args.out, (".csv", ".parquet", ".json"), args.force) if args.out else None
    result = plan(args.scenario, args.set or [], seed=args.seed, workers=args.workers,
                  ray=args.ray, progress=not args.json, cache=not args.no_cache)
    if out is not None:
        write_output(out, result.to_frame(), result.to_dict())
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_plan(result))
        if args.out:
            print(f"ranked table written to {args.out}")
    return 0 if result.best is not None else 3


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="capacity plan: GPUs and $ per candidate for a daily volume and an SLO")
    p.add_argument("scenario", help="planning scenario YAML (a path or a shipped name, e.g. "
                                    "customer_support_1m_per_day.yaml)")
    p.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override a value, e.g. --set slo.ttft_s=1 or --set plan.scale_up_margin=0.3 (repeatable)")
    p.add_argument("--seed", type=seed_arg, default=None,
                   help="first seed of every simulated point, 0..2**32-1 (default: the scenario's)")
    p.add_argument("--workers", type=workers_arg, default=None, help="local worker processes (default: CPU count; 1 = inline)")
    p.add_argument("--ray", nargs="?", const=True, default=None, metavar="ADDRESS",
                   help="run the simulations on Ray (a cluster address, or none to start Ray locally); "
                        "needs pip install 'servesim[ray]'")
    p.add_argument("--out", help="write the ranked table to .csv or .parquet (or the whole plan to .json)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--no-cache", action="store_true",
                   help="simulate every point again (default: reuse points simulated before with the same "
                        "inputs and code, kept in $SERVESIM_CACHE_DIR or ~/.cache/servesim/plan)")
    p.add_argument("--json", action="store_true", help="print the whole plan as JSON")
    p.set_defaults(func=cmd_plan)
