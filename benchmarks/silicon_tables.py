"""Error summaries and markdown tables of benchmarks/validate_silicon.py's per-row results.

Pure functions of the results DataFrame (one row per simulated serving run): median errors per group,
the headline line, a held-out miss's likely cause, and the markdown tables benchmarks/silicon_report.py
puts in docs/validation_gpu.md.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from silicon_cliffs import QUEUEING_TTFT_MS, cliff_cause
from silicon_data_quality import with_data_screen
from silicon_plausibility import with_screen

MOE_MODELS = ("gpt-oss-120b", "qwen3-235b-a22b", "minimax-m2.5", "mixtral-8x7b")
TARGET_TPOT_PCT, TARGET_TTFT_PCT = 5.0, 15.0  # issue 10's targets on held-out rows (median |error|)
MISS_TPOT_PCT, MISS_TTFT_PCT = 10.0, 30.0  # a held-out row beyond either is listed under Misses


def summary_rows(res: pd.DataFrame) -> pd.DataFrame:
    """The rows every summary of docs/validation_gpu.md uses: a recorded concurrency, physically plausible, not
    left out by the data-quality screen (silicon_report.write_doc and silicon_accuracy.py select with this)."""
    if "implausible" not in res.columns:
        res = with_screen(res)
    if "data_excluded" not in res.columns:
        res = with_data_screen(res)
    rec = res[res["concurrency_recorded"].astype(bool)]
    return rec[~rec["implausible"].astype(bool) & (rec["data_excluded"].fillna("") == "")]


def errors(res: pd.DataFrame) -> dict[str, float]:
    """Median |error| % and median signed error % of TTFT and TPOT, and the TPOT gap (ms)."""
    return {"rows": len(res),
            "ttft_mdape": res["ttft_err_pct"].abs().median(), "ttft_median_err": res["ttft_err_pct"].median(),
            "tpot_mdape": res["tpot_err_pct"].abs().median(), "tpot_median_err": res["tpot_err_pct"].median(),
            "gap_median_ms": res["tpot_gap_ms"].median()}


def rollup(res: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """`errors` per group of `by` columns (one row 'all' when `by` is empty)."""
    if not by:
        return pd.DataFrame([{"group": "all", **errors(res)}])
    return pd.DataFrame([{**dict(zip(by, key if isinstance(key, tuple) else (key,))), **errors(g)}
                         for key, g in res.groupby(by, sort=True)])


def headline(main: pd.DataFrame) -> str:
    """The held-out error, physically implausible rows (calibration/plausibility.py) apart."""
    held = with_screen(main[main["split"] == "held-out"])
    bad = held[held["implausible"]]
    e = errors(held[~held["implausible"]])
    b = errors(bad) if len(bad) else None
    return (f"held-out ({e['rows']} rows): TTFT median |err| {e['ttft_mdape']:.1f} %, TPOT median |err| "
            f"{e['tpot_mdape']:.1f} %" + (f"; {len(bad)} implausible held-out rows apart: TTFT {b['ttft_mdape']:.1f} %, "
                                          f"TPOT {b['tpot_mdape']:.1f} %" if b else ""))


def _f(v: float, digits: int = 1, sign: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def rollup_markdown(table: pd.DataFrame, keys: list[str]) -> list[str]:
    head = keys + ["rows", "TTFT median abs err %", "TTFT median err %", "TPOT median abs err %",
                   "TPOT median err %", "TPOT gap median ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(keys) + "---:|" * (len(head) - len(keys))]
    for d in table.to_dict("records"):
        cells = [str(d[k]) for k in keys]
        cells += [str(int(d["rows"])), _f(d["ttft_mdape"]), _f(d["ttft_median_err"], sign=True),
                  _f(d["tpot_mdape"]), _f(d["tpot_median_err"], sign=True), _f(d["gap_median_ms"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def variant_line(name: str, e: dict | None) -> str | None:
    if e is None:
        return None
    return (f"| {name} | {e['rows']} | {_f(e['ttft_mdape'])} | {_f(e['ttft_median_err'], sign=True)} | "
            f"{_f(e['tpot_mdape'])} | {_f(e['tpot_median_err'], sign=True)} |")


def cause(r) -> str:
    """Why a held-out row misses, from what the row and its simulation show."""
    why = []
    cliff_why = cliff_cause(r)  # KV-bound or queueing: what the in-flight counts say (benchmarks/silicon_cliffs.py)
    if cliff_why:
        why.append(cliff_why)
    if abs(r.tpot_err_pct) > MISS_TPOT_PCT and not r.kv_bound:
        kern = r.kernels_tpot_ms if np.isfinite(r.kernels_tpot_ms) else np.nan
        moe = r.model in MOE_MODELS
        if r.tpot_err_pct > 0 and kern >= r.tpot_ms:
            why.append("TPOT high: the composed kernels alone exceed the measured step" +
                       (" (the profile's linear fit of the fused-MoE table overprices this batch)" if moe else ""))
        elif r.tpot_err_pct > 0 and np.isfinite(kern):
            why.append("TPOT high: kernels below the measurement, the engine terms add more than this "
                       "model's engine time")
        elif r.tpot_err_pct > 0:
            why.append("TPOT high: the profile plus the engine terms exceed the measured step")
        else:
            why.append("TPOT low: the measured step is slower than the profile plus the engine terms" +
                       (" (MoE expert GEMMs slower than the table at this batch)" if moe else ""))
    if abs(r.ttft_err_pct) > MISS_TTFT_PCT and not r.kv_bound and r.ttft_ms <= QUEUEING_TTFT_MS:
        why.append("TTFT low: out-of-phase clients never share a prefill step in the simulation; measured ones "
                   "partly do at this concurrency" if r.ttft_err_pct < 0 else
                   "TTFT high: the profile's prefill of a long prompt is slower than the measured one"
                   if r.isl >= 4096 else "TTFT high: response latency and jitter fitted on another model")
    return "; ".join(why) or "-"


def rows_markdown(res: pd.DataFrame) -> list[str]:
    lines = [("| setup | split | vLLM (terms) | TTFT real ms | TTFT pred ms | TTFT err % | TPOT real ms | TPOT pred ms "
              "| TPOT err % | TPOT kernels-only ms | pred KV peak | implied share of peak / HBM |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in with_screen(res).itertuples(index=False):
        kv = f"{r.kv_peak:.2f}" + (" bound" if r.kv_bound else "")
        load = f"{r.implied_compute_share:.2f} / {r.implied_memory_share:.2f}" + (" **implausible**" * r.implausible)
        split = r.split + (" (not fitted: data quality)" if getattr(r, "data_excluded", "") else "")
        lines.append(f"| {r.setup} | {split} | {r.backend_version} ({r.terms_version}) | {r.ttft_ms:.0f} | "
                     f"{r.pred_ttft_ms:.0f} | {r.ttft_err_pct:+.1f} | {r.tpot_ms:.2f} | {r.pred_tpot_ms:.2f} | "
                     f"{r.tpot_err_pct:+.1f} | {_f(r.kernels_tpot_ms, 2)} | {kv} | {load} |")
    return lines

