"""What the KV-cliff rows of docs/validation_gpu.md say about the KV capacity the measured runs had.

    python benchmarks/validate_silicon.py --variants '' --csv /tmp/res.csv --doc ''   # the predictions
    python benchmarks/kv_cliff_diagnosis.py --results /tmp/res.csv                     # docs/kv_cliff_diagnosis.md

For every held-out cliff row (KV-bound in the prediction or a measured TTFT above 2 s,
benchmarks/silicon_cliffs.py) this shows the simulated KV cache (blocks, tokens, what the row's
requests need), how many requests each side held between first and last token (Little's law on the
mean TTFT and TPOT, the measurement's and the prediction's alike), the simulated steady-state running
and waiting sequences, the TTFT with an fp8 KV cache, and the block count at which the simulated TTFT
would equal the measured one (bisection on `serving.num_kv_blocks`): what would have to be true.
Rows whose measurement held far fewer requests than its clients sent (an in-flight limit) get, instead
of a block count, the TTFT a closed loop would show with that limit in front of the server: the limit's
clients simulated, plus the wait of the others for a free slot, (concurrency - limit) / throughput by
Little's law.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibration.silicon import read_rows, scenario_for, simulate_row  # noqa: E402
from sim.simulation import build_memory  # noqa: E402
from silicon_cliffs import cliff_cause, cliff_group, in_flight, is_cliff  # noqa: E402

DOC = ROOT / "docs" / "kv_cliff_diagnosis.md"
BISECT_STEPS = 8  # halvings of the log-spaced block range: ~4 % resolution over a 16x range
BLOCK_SIZE = 16


def blocks_matching(row, measured_ttft_ms: float, lo: int, hi: int, steps: int = BISECT_STEPS) -> tuple[int | None, str]:
    """The block count in [lo, hi] at which the simulated TTFT crosses the measured one (None and why
    when it does not cross in the range). The simulated TTFT falls as blocks grow."""
    def ttft(blocks: int) -> float:
        return simulate_row(row, num_kv_blocks=blocks)["pred_ttft_ms"]

    if ttft(hi) > measured_ttft_ms:
        return None, f"above {hi:,}"  # even with room for every request the prediction is slower
    if ttft(lo) < measured_ttft_ms:
        return None, f"below {lo:,}"
    for _ in range(steps):
        mid = int(round(math.sqrt(lo * hi)))
        if mid in (lo, hi):
            break
        if ttft(mid) > measured_ttft_ms:
            lo = mid
        else:
            hi = mid
    b = int(round(math.sqrt(lo * hi)))
    return b, f"{b:,}"


def limited_ttft_ms(row, limit: int) -> tuple[float, float]:
    """(TTFT ms, TPOT ms) of a closed loop of `row.concurrency` clients of which only `limit` reach the
    server at once: `limit` clients simulated, plus each request's wait for a free slot (Little's law on
    the (concurrency - limit) requests waiting in front, at the simulated throughput)."""
    p = simulate_row(replace(row, concurrency=limit))
    cycle_s = 1e-3 * (p["pred_ttft_ms"] + (row.osl - 1) * p["pred_tpot_ms"])
    wait_s = (row.concurrency - limit) * cycle_s / limit
    return p["pred_ttft_ms"] + 1e3 * wait_s, p["pred_tpot_ms"]


def diagnose(res: pd.DataFrame, rows: dict, log=print) -> pd.DataFrame:
    out = []
    cliff = res[(res["split"] == "held-out") & is_cliff(res)]
    for r in cliff.itertuples(index=False):
        row = rows[r.id]
        m, p = in_flight(r)
        rec = {"gpu": r.gpu, "setup": r.setup, "kv_dtype": row.kv_dtype, "blocks": int(r.kv_blocks),
               "need_tokens": r.concurrency * (r.isl + r.osl), "ttft_ms": r.ttft_ms, "pred_ttft_ms": r.pred_ttft_ms,
               "err_pct": r.ttft_err_pct, "tpot_ms": r.tpot_ms, "pred_tpot_ms": r.pred_tpot_ms,
               "in_flight": m, "pred_in_flight": p, "running": r.pred_running_mean, "waiting": r.pred_waiting_mean,
               "cause": cliff_group(r), "why": cliff_cause(r)}
        if rec["cause"].startswith("in-flight limit"):
            limit = max(1, int(round(m)))
            t, tp = limited_ttft_ms(row, limit)
            c64 = [x.tpot_ms for x in rows.values() if (x.gpu, x.model, x.dtype, x.tp, x.isl, x.osl, x.concurrency)
                   == (row.gpu, row.model, row.dtype, row.tp, row.isl, row.osl, 64)]
            rec.update(limit=limit, limited_ttft_ms=t, limited_tpot_ms=tp,
                       tpot_c64_ms=min(c64) if c64 else float("nan"))
        else:
            plan = build_memory(scenario_for(row))
            rec["x_no_reserve"] = (plan.kv_budget_bytes + plan.reserve_bytes) / plan.kv_budget_bytes
            rec["x_util_095"] = (plan.kv_budget_bytes + 0.05 * plan.gpu_memory_bytes) / plan.kv_budget_bytes
            fp8 = simulate_row(row, kv_dtype="fp8") if row.kv_dtype != "fp8" else None
            rec["fp8_ttft_ms"] = fp8["pred_ttft_ms"] if fp8 else float("nan")
            one_seq = -(-int(row_max_len(row)) // BLOCK_SIZE)
            lo = max(one_seq, int(r.kv_blocks) // 4)
            hi = max(lo + 1, 2 * r.concurrency * -(-(r.isl + r.osl) // BLOCK_SIZE))
            b, text = blocks_matching(row, r.ttft_ms, lo, hi)
            rec.update(match_blocks=b, match_text=text, match_ratio=(b / r.kv_blocks) if b else float("nan"))
        out.append(rec)
        log(f"{r.gpu} {r.setup}: {rec['cause']}")
    return pd.DataFrame(out)


def row_max_len(row) -> int:
    from sim.catalog import resolve_model

    return resolve_model(row.model, "model").max_context_tokens


def _f(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def write(d: pd.DataFrame, doc: Path, command: str) -> None:
    kv = d[~d["cause"].str.startswith("in-flight limit")]
    lim = d[d["cause"].str.startswith("in-flight limit")]
    lines = ["# The KV-cliff rows: what the measured runs held", "",
             f"Written by `{command}` (do not edit by hand). Held-out rows of docs/validation_gpu.md that are "
             "KV-bound in the prediction or queue in the measurement (TTFT above 2 s). `in flight`: requests "
             "between their first and last token, by Little's law on the mean TTFT and TPOT of a closed loop "
             "(concurrency x decode time / (TTFT + decode time)), for the measurement and the prediction alike; "
             "a request preempted after its first token counts, so long outputs keep it near the concurrency. "
             "`running` / `waiting`: the simulation's time-weighted steady-state means.", "",
             "## Rows the KV capacity decides", "",
             "`blocks to match`: the block count at which the simulated TTFT equals the measured one (bisection "
             "on `serving.num_kv_blocks`, everything else as the row), and its ratio to servesim's estimate "
             "(`sim/memory.py` at vLLM's defaults with the row's KV dtype).", "",
             "| GPU | setup | KV | blocks (tokens) | tokens needed (c x (ISL+OSL)) | TTFT real ms | TTFT pred ms | "
             "err % | in flight real / pred | running / waiting | TTFT pred with fp8 KV ms | blocks to match | "
             "x estimate | x if no reserve / at utilization 0.95 |",
             "|---|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---|"]
    for r in kv.itertuples(index=False):
        lines.append(f"| {r.gpu} | {r.setup} | {r.kv_dtype} | {r.blocks:,} ({r.blocks * BLOCK_SIZE:,}) | "
                     f"{r.need_tokens:,} | {r.ttft_ms:.0f} | {r.pred_ttft_ms:.0f} | {r.err_pct:+.0f} | "
                     f"{r.in_flight:.0f} / {r.pred_in_flight:.0f} | {r.running:.0f} / {r.waiting:.0f} | "
                     f"{_f(r.fp8_ttft_ms, '.0f')} | {r.match_text} | {_f(r.match_ratio, '.2f')} | "
                     f"{r.x_no_reserve:.2f} / {r.x_util_095:.2f} |")
    ratios = kv["match_ratio"].dropna()
    if len(ratios):
        by = kv.dropna(subset=["match_ratio"]).assign(tp=kv["setup"].str.extract(r"TP(\d+)")[0])
        lines += ["", "Blocks to match / estimate, by GPU and TP: " + "; ".join(
            f"{g} TP{t}: {', '.join(f'{x:.2f}' for x in grp['match_ratio'])}"
            for (g, t), grp in by.groupby(["gpu", "tp"])) + ". The last column is the most the row's KV dtype "
            "could give at vLLM's defaults: every byte of servesim's non-KV reserve (activation peak, non-torch "
            "memory) handed to the KV cache, or gpu_memory_utilization 0.95 instead of 0.9. An fp8 KV cache gives 2x."]
        fin = kv.dropna(subset=["fp8_ttft_ms"])
        if len(fin):
            fp8_err = (100 * (fin["fp8_ttft_ms"] - fin["ttft_ms"]) / fin["ttft_ms"]).abs()
            lines += ["", (f"Median |TTFT error| on these {len(fin)} rows: {fin['err_pct'].abs().median():.0f} % with the "
                           f"row's KV dtype, {fp8_err.median():.0f} % with an fp8 KV cache (signed, fp8: "
                           + ", ".join(f"{v:+.0f}" for v in 100 * (fin['fp8_ttft_ms'] - fin['ttft_ms']) / fin['ttft_ms'])
                           + " %).")]
    if len(lim):
        lines += ["", "## Rows whose measurement held fewer requests than its clients", "",
                  "`with the limit`: the closed loop with only `limit` (the measured in-flight count) of the "
                  "clients at the server at once, the others waiting for a slot ((concurrency - limit) x cycle / "
                  "limit); its TTFT is then set by the predicted TPOT at that batch, shown beside the measured.", "",
                  "| GPU | setup | TTFT real ms | TTFT pred ms | in flight real / pred | limit | TTFT pred with the "
                  "limit ms | TPOT real ms | TPOT pred at the limit ms | TPOT real at c64 (same setup) ms |",
                  "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
        for r in lim.itertuples(index=False):
            lines.append(f"| {r.gpu} | {r.setup} | {r.ttft_ms:.0f} | {r.pred_ttft_ms:.0f} | {r.in_flight:.0f} / "
                         f"{r.pred_in_flight:.0f} | {int(r.limit)} | {r.limited_ttft_ms:.0f} | {r.tpot_ms:.2f} | "
                         f"{r.limited_tpot_ms:.2f} | {_f(r.tpot_c64_ms, '.2f')} |")
    lines += ["", "## Findings", ""] + findings(kv, lim)
    lines += ["", "## Every cliff row's cause", "", "| GPU | setup | cause |", "|---|---|---|"]
    lines += [f"| {r.gpu} | {r.setup} | {r.why} |" for r in d.itertuples(index=False)]
    errs = d.groupby("cause")["err_pct"].apply(lambda s: statistics.median(s.abs()))
    lines += ["", "Median |TTFT error| by cause: " + "; ".join(f"{k} ({(d['cause'] == k).sum()} rows) {v:.0f} %"
                                                             for k, v in errs.items()) + "."]
    doc.write_text("\n".join(lines) + "\n")


def findings(kv: pd.DataFrame, lim: pd.DataFrame) -> list[str]:
    """What the tables above show, in words (numbers from the tables)."""
    out = []
    if len(lim):
        slower = int((lim["tpot_ms"] < lim["tpot_c64_ms"]).sum())
        clients = ", ".join(sorted({s.rsplit(" c", 1)[1] for s in lim["setup"]}))
        out.append(
            f"- **In-flight limit ({len(lim)} rows).** The measured runs held {lim['in_flight'].min():.0f}-"
            f"{lim['in_flight'].max():.0f} requests between first and last token of {clients} "
            "clients, at every TP (the KV cache grows several-fold from TP2 to TP8, the count does not): a count "
            "limit in front of or inside the server, not KV blocks. The CSV records neither the client, nor its "
            "number of prompts, nor the server's limits. The vLLM installed here sizes `vllm bench serve`'s connection "
            "pool to --max-concurrency (vllm/benchmarks/serve.py), so a plain run of that client would not stop at "
            "~100; aiohttp's "
            "default pool limit is 100, which a client built on aiohttp without setting it would hit. With that "
            "limit servesim's TTFT would be set by its TPOT at ~100 sequences, which is "
            f"{(lim['limited_tpot_ms'] / lim['tpot_ms']).min():.1f}-{(lim['limited_tpot_ms'] / lim['tpot_ms']).max():.1f}x "
            f"the measured one; and in {slower} of {len(lim)} rows the measured TPOT at ~100 sequences is below the "
            "same setup's measured TPOT at 64 clients in another campaign. These rows are not comparable with a "
            "closed loop at the stated concurrency; no servesim setting reproduces them without their unrecorded "
            "limit.")
    if len(kv):
        ok = kv.dropna(subset=["match_ratio"])
        out.append(
            f"- **KV capacity ({len(kv)} rows).** Where a block count reproduces the measured TTFT, it is "
            f"{ok['match_ratio'].min():.2f}-{ok['match_ratio'].max():.2f}x servesim's estimate; the most the row's "
            f"KV dtype allows at vLLM's defaults is {kv['x_no_reserve'].max():.2f}x (no reserve at all) or "
            f"{kv['x_util_095'].max():.2f}x (gpu_memory_utilization 0.95). So the measured servers held more KV "
            "than a bf16 cache at vLLM's defaults can: the runs set something the CSV does not record. An fp8 KV "
            "cache (2x) fits the TP1 rows (their measured TPOT also keeps rising with concurrency where a bf16 cache "
            "would cap the batch) and is aiconfigurator-core's own convention for fp8 configurations "
            "(sdk/models/helpers.py sets the KV-cache and FMHA quant modes to fp8 for fp8, fp8_block and nvfp4 "
            "checkpoints); the H100 TP2 rows sit between the two (bf16 at a higher utilization, or fp8 with "
            "less memory). At a cliff TTFT moves several-fold with 10-20 % of blocks, so these rows test the "
            "run's unrecorded settings more than the simulator: the memory plan (sim/memory.py) and the "
            "scheduler (step-identical to vLLM, docs/parity.md) are not what they contradict.")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, help="benchmarks/validate_silicon.py --csv output")
    ap.add_argument("--doc", default=str(DOC), help="markdown to write ('' for none)")
    args = ap.parse_args(argv)
    res = pd.read_csv(args.results)
    need = {"kv_blocks", "pred_running_mean", "pred_waiting_mean"}
    if not need <= set(res.columns):
        ap.error(f"--results: {args.results} lacks {sorted(need - set(res.columns))}; rerun validate_silicon.py --csv")
    kept, _ = read_rows()
    rows = {r.id: r for r in kept}
    d = diagnose(res, rows)
    if args.doc:
        write(d, Path(args.doc), "python benchmarks/kv_cliff_diagnosis.py --results <validate_silicon.py --csv>")
        print(f"wrote {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
