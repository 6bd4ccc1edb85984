"""Validate servesim against measured GPU serving runs: aiconfigurator-core's silicon_sample.csv.

    python benchmarks/validate_silicon.py                 # every usable row; rewrites docs/validation_gpu.md
    python benchmarks/validate_silicon.py --limit 6 --doc ''   # a quick look, no doc
    python benchmarks/validate_silicon.py --models gpt-oss-120b,qwen3-235b-a22b --variants ''   # MoE rows only
    python benchmarks/validate_silicon.py --variants kernels    # the doc with one sensitivity run (faster)
    python benchmarks/validate_silicon.py --variants '' --cliff-rows EARLIER.csv --csv CLIFF.csv   # the cliff rows only

Every vLLM row that a SHIPPED profile covers (calibration/silicon.py: same GPU, model, TP and
weight dtype) is simulated as the same closed loop — `concurrency` clients, no think time,
prompts of exactly ISL and outputs of exactly OSL tokens, one replica with vLLM's default
serving settings — priced by the profile plus the engine terms of the row's vLLM version
(calibration/profiles/engine_terms.json), and compared with the measurement.

The engine terms were fitted on the rows of some models (calibration/engine_fit.TRAIN_MODELS);
the headline is the error on the other models' rows, held out from that fit. Training rows are
simulated too and shown apart, marked in-sample. Rows whose measured TTFT/TPOT imply more work than
the GPU can do (calibration/plausibility.py) are flagged and reported as their own group, outside
the headline. The report is benchmarks/silicon_report.py.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibration.engine_fit import TRAIN_MODELS
from calibration.plausibility import implied_load
from sim.engine_terms import engine_terms
from calibration.profile import load_profile
from calibration.silicon import (KV_BOUND_PEAK, Row, engine_version, lone_prefill_ms, read_rows,
                                 scenario_for, simulate_row)
from sim.cost_model import CostModel, ProfileCostModel
from sim.cost_select import select_cost_model
from sim.scenario import CostModelConfig

DOC = ROOT / "docs" / "validation_gpu.md"


def split_of(row: Row) -> str:
    """'train' for the models the engine terms were fitted on, 'held-out' for every other; '†' for rows
    without a recorded concurrency (neither fitted nor summarised)."""
    if not row.concurrency_recorded:
        return "†"
    return "train" if row.model in TRAIN_MODELS else "held-out"


def _lockstep_cost(row: Row) -> ProfileCostModel:
    """The row's profile and engine terms with no client -> engine delay (every request reaches the
    engine the instant it is sent: equal clients stay in lockstep)."""
    terms = engine_terms("vllm", engine_version(row), gpu=row.gpu)
    return ProfileCostModel(load_profile(row.profile).coefficients, replace(terms.overhead, request_jitter_s=0.0))


def _roofline_cost(row: Row) -> CostModel:
    """What `cost_model: {kind: roofline}` prices the row's scenario with (sim/cost_select.select_cost_model, asked
    for that kind): the roofline and its fixed per-step and per-sequence cost for the row's vLLM version
    (engine_terms.json's `roofline` entry, fitted on the training rows' TPOT), and that version's API-server
    delays (response latency, request jitter), no other engine term."""
    return select_cost_model(replace(scenario_for(row), cost_model=CostModelConfig(kind="roofline"))).cost


def validate(rows: list[Row], kv_dtype: str | None = None, spread: float = 0.0, engine: bool = True,
             lockstep: bool = False, seed: int = 0, roofline: bool = False, log=print) -> pd.DataFrame:
    """One record per row: measured, predicted, error % = (pred - real) / real, TPOT gap (ms).
    `engine` False: the profile's kernels alone (no engine terms); `lockstep`: clients start together and
    requests reach the engine with no jitter (what servesim did before); `roofline`: priced by the roofline
    a `cost_model: {kind: roofline}` scenario gets, not the profile."""
    out = []
    for i, row in enumerate(rows):
        cost = _roofline_cost(row) if roofline else (_lockstep_cost(row) if lockstep and engine else None)
        p = simulate_row(row, kv_dtype, spread=spread, engine_terms=engine, cost_model=cost, seed=seed,
                         lockstep=lockstep)
        terms = engine_terms("vllm", engine_version(row)) if engine else None
        rec = {"setup": row.setup, "id": row.id, "model": row.model, "gpu": row.gpu, "dtype": row.dtype,
               "tp": row.tp, "isl": row.isl, "osl": row.osl, "concurrency": row.concurrency,
               "kv_dtype": kv_dtype or row.kv_dtype,
               "concurrency_recorded": row.concurrency_recorded, "backend_version": row.backend_version,
               "terms_version": terms.version if terms else "none", "split": split_of(row),
               "ttft_ms": row.ttft_ms, "tpot_ms": row.tpot_ms, **p, "lone_prefill_ms": lone_prefill_ms(row)}
        rec["ttft_err_pct"] = 100.0 * (p["pred_ttft_ms"] - row.ttft_ms) / row.ttft_ms
        rec["ttft_p50_err_pct"] = 100.0 * (p["pred_ttft_p50_ms"] - row.ttft_ms) / row.ttft_ms
        rec["ttft_all_err_pct"] = 100.0 * (p["pred_ttft_all_ms"] - row.ttft_ms) / row.ttft_ms
        rec["tpot_err_pct"] = 100.0 * (p["pred_tpot_ms"] - row.tpot_ms) / row.tpot_ms
        rec["tpot_gap_ms"] = row.tpot_ms - p["pred_tpot_ms"]
        rec["kv_bound"] = p["kv_peak"] >= KV_BOUND_PEAK
        load = implied_load(row)  # physically implausible rows are flagged, reported apart (silicon_plausibility.py)
        rec["implied_compute_share"], rec["implied_memory_share"] = load.compute_share, load.memory_share
        rec["implausible"] = load.implausible
        out.append(rec)
        log(f"[{i + 1}/{len(rows)}] {row.setup} ({rec['split']}): TTFT {row.ttft_ms:.0f} vs {p['pred_ttft_ms']:.0f} ms, "
            f"TPOT {row.tpot_ms:.2f} vs {p['pred_tpot_ms']:.2f} ms")
    return pd.DataFrame(out)


_quiet = lambda m: None  # noqa: E731
# Sensitivity runs beside the main one: name -> rows -> results (benchmarks/silicon_report.py shows them).
VARIANTS = {
    "kernels": lambda rows: validate(rows, engine=False, lockstep=True, log=_quiet),  # what shipped before
    "kernels_spread": lambda rows: validate(rows, engine=False, log=_quiet),
    "lockstep": lambda rows: validate(rows, lockstep=True, log=_quiet),
    "seed1": lambda rows: validate(rows, seed=1, log=_quiet),
    "roofline": lambda rows: validate(rows, roofline=True, log=_quiet),  # cost_model: {kind: roofline}
    "fp8_kv": lambda rows: validate([r for r in rows if r.dtype == "fp8" and r.kv_dtype != "fp8"], kv_dtype="fp8",
                                    log=_quiet),
}


def main(argv: list[str] | None = None) -> int:
    from silicon_report import headline, rollup, write_doc

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, help="only the first N usable rows (a quick look; implies --doc '')")
    ap.add_argument("--models", default="", help="comma-separated catalog models: only their rows (implies --doc '')")
    ap.add_argument("--doc", default=str(DOC), help="markdown report to write ('' for none)")
    ap.add_argument("--csv", default="", help="also write the per-row results to this CSV")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated sensitivity runs to add (each simulates every row again; the doc leaves "
                         f"out what is not run): {', '.join(VARIANTS)}; '' for none")
    ap.add_argument("--variants-rows", choices=("all", "held-out"), default="all",
                    help="the rows the sensitivity runs simulate (the doc summarises them on held-out rows only)")
    ap.add_argument("--before", default="", metavar="CSV",
                    help="an earlier run's --csv (e.g. with the previous engine terms), shown as 'before' in the doc")
    ap.add_argument("--before-note", default="an earlier run", help="what --before was (one phrase, for the doc)")
    ap.add_argument("--cliff-rows", default="", metavar="CSV",
                    help="only the held-out KV-cliff rows of an earlier run's --csv (benchmarks/silicon_cliffs.py; "
                         "implies --doc ''): a quick look at them, e.g. for benchmarks/kv_cliff_diagnosis.py")
    args = ap.parse_args(argv)
    chosen = [v for v in args.variants.split(",") if v]
    bad = sorted(set(chosen) - set(VARIANTS))
    if bad:
        ap.error(f"--variants: unknown {bad}; allowed {list(VARIANTS)}")
    t0 = time.perf_counter()
    rows, skipped = read_rows()
    if args.models:
        wanted = set(args.models.split(","))
        unknown = sorted(wanted - {r.model for r in rows})
        if unknown:
            ap.error(f"--models: no usable rows for {unknown}; models with rows: {sorted({r.model for r in rows})}")
        rows, args.doc = [r for r in rows if r.model in wanted], ""
    if args.limit:
        rows, args.doc = rows[: args.limit], ""
    if args.cliff_rows:
        from silicon_cliffs import is_cliff

        earlier = pd.read_csv(args.cliff_rows)
        ids = set(earlier.loc[(earlier["split"] == "held-out") & is_cliff(earlier), "id"])
        rows, args.doc = [r for r in rows if r.id in ids], ""
    print(f"{len(rows)} rows to simulate; skipped:\n{skipped.to_string(index=False)}")
    res = validate(rows)
    vrows = rows if args.variants_rows == "all" else [r for r in rows if split_of(r) == "held-out"]
    variants = {name: VARIANTS[name](vrows) for name in chosen}
    if args.before:
        variants["before"] = pd.read_csv(args.before)
    wall = time.perf_counter() - t0
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        main_rows = res[res["concurrency_recorded"]]
        print(rollup(main_rows, ["split", "gpu", "model", "dtype"]).round(2).to_string(index=False))
        print(headline(main_rows))
    if args.csv:
        res.to_csv(args.csv, index=False)
    if args.doc:
        command = shlex.join(["python", "benchmarks/validate_silicon.py", *(argv or sys.argv[1:])])
        write_doc(res, skipped, rows, variants, command, wall, Path(args.doc), before_note=args.before_note)
        print(f"wrote {args.doc}")
        from silicon_accuracy import write_accuracy  # the same figures, for the simulator's reports

        print(f"wrote {write_accuracy(res, command, roofline=variants.get('roofline'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
