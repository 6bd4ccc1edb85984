"""Check the KV-capacity model against the KV cliffs in aiconfigurator-core's measured vLLM runs.

    python benchmarks/kv_cliffs.py            # appends the check to docs/kv_capacity_gpu.md

A cliff is a setup (GPU, model, dtype, TP, ISL/OSL) whose measured TTFT climbs past 2 s as the
concurrency grows: requests wait for KV blocks. For every such setup the whole concurrency ladder
is simulated (benchmarks/validate_silicon.py's closed loop, vLLM's server defaults) twice: with a
bf16 and with an fp8 KV cache (the CSV does not say which the run had: "auto" gives bf16 unless the
checkpoint declares fp8 KV, as NVIDIA's modelopt checkpoints do; validate_silicon picks per row).
The question is whether the simulated cliff (KV peak reaching 98 %, TTFT in seconds) sits at the
measured concurrency, and under which KV dtype.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import validate_silicon as vs  # noqa: E402

DOC = ROOT / "docs" / "kv_capacity_gpu.md"
QUEUEING_TTFT_MS = 2000.0  # a measured TTFT above this is requests queueing (for KV blocks), not prefill
MARK = "## Check against the measured KV cliffs"


def cliff_ladders(rows: list) -> dict[tuple, list]:
    """Setups with a measured TTFT above the queueing threshold, each with its whole ladder."""
    by_setup: dict[tuple, list] = {}
    for r in rows:
        if r.concurrency_recorded:
            by_setup.setdefault((r.gpu, r.model, r.dtype, r.tp, r.expert_parallel, r.isl, r.osl), []).append(r)
    return {k: sorted(v, key=lambda r: r.concurrency) for k, v in sorted(by_setup.items())
            if any(r.ttft_ms > QUEUEING_TTFT_MS for r in v)}


def main() -> int:
    rows, _ = vs.read_rows()
    ladders = cliff_ladders(rows)
    quiet = lambda m: None  # noqa: E731
    lines = [MARK, "",
             "Written by `python benchmarks/kv_cliffs.py`. Setups whose measured TTFT passes "
             f"{QUEUEING_TTFT_MS / 1e3:.0f} s at some concurrency (requests waiting for KV blocks), every "
             "concurrency of each, simulated with a bf16 and with an fp8 KV cache (`row KV`: the one "
             "validate_silicon uses for the row). "
             "`peak`: the simulated peak share of KV blocks in use (>= 0.98: KV-bound). `cap`: simulated KV "
             "capacity in thousands of tokens.", "",
             "| setup | c | measured TTFT ms | pred TTFT ms (bf16 KV) | peak | cap k | pred TTFT ms (fp8 KV) | peak "
             "| cap k | row KV |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    hits = {"bf16": 0, "fp8": 0, "row": 0}
    total = 0
    summary = ["", "Per setup: rows on the measured side of the cliff, and the median |TTFT error| over its queueing "
               "rows (measured TTFT above the threshold), with each KV dtype.", "",
               "| setup | rows | same side, bf16 KV | same side, fp8 KV | queueing rows | median abs TTFT err %, bf16 "
               "| median abs TTFT err %, fp8 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, ladder in ladders.items():
        a = vs.validate(ladder, kv_dtype="bf16", log=quiet)
        b = vs.validate(ladder, kv_dtype="fp8", log=quiet)
        side = {"bf16": 0, "fp8": 0}
        errs: dict[str, list[float]] = {"bf16": [], "fp8": []}
        for r, x, y in zip(ladder, a.itertuples(), b.itertuples()):
            queued = r.ttft_ms > QUEUEING_TTFT_MS
            total += 1
            same = {"bf16": queued == (x.pred_ttft_ms > QUEUEING_TTFT_MS),
                    "fp8": queued == (y.pred_ttft_ms > QUEUEING_TTFT_MS)}
            hits["bf16"] += same["bf16"]
            hits["fp8"] += same["fp8"]
            hits["row"] += same[r.kv_dtype]
            side["bf16"] += same["bf16"]
            side["fp8"] += same["fp8"]
            if queued:
                errs["bf16"].append(abs(x.pred_ttft_ms / r.ttft_ms - 1) * 100)
                errs["fp8"].append(abs(y.pred_ttft_ms / r.ttft_ms - 1) * 100)
            lines.append(f"| {r.gpu} {r.setup} | {r.concurrency} | {r.ttft_ms:.0f} | {x.pred_ttft_ms:.0f} | {x.kv_peak:.2f} | "
                         f"{x.kv_capacity_tokens / 1e3:.0f} | {y.pred_ttft_ms:.0f} | {y.kv_peak:.2f} | "
                         f"{y.kv_capacity_tokens / 1e3:.0f} | {r.kv_dtype} |")
        med = {k: f"{statistics.median(v):.0f}" if v else "-" for k, v in errs.items()}
        summary.append(f"| {ladder[0].gpu} {ladder[0].setup.rsplit(' c', 1)[0]} | {len(ladder)} | {side['bf16']} | {side['fp8']} | "
                       f"{len(errs['bf16'])} | {med['bf16']} | {med['fp8']} |")
        print(f"{key}: done")
    lines += ["", (f"On {total} rows of {len(ladders)} cliff setups, the simulation puts a row on the same side of "
                   f"{QUEUEING_TTFT_MS / 1e3:.0f} s TTFT as the measurement on {hits['bf16']} with bf16 KV, "
                   f"{hits['fp8']} with fp8 KV, {hits['row']} with each row's KV dtype.")] + summary
    text = DOC.read_text() if DOC.is_file() else ""
    text = text.split(MARK)[0].rstrip() + "\n\n" + "\n".join(lines) + "\n"
    DOC.write_text(text)
    print("\n".join(lines[-len(summary) - 1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
