"""What-if for docs/llama8b_h200.md: the llama-3.1-8b fp8 H200 rows simulated as shipped (engine terms of vLLM
0.12.0, steady state) and again with every prompt's first `share` x ISL tokens a shared prefix that vLLM's
prefix cache serves (servesim's `shared_prefix_tokens` + `serving.enable_prefix_caching`). Diagnosis only:
the shipped scenario builder (calibration.silicon.scenario_for) is wrapped for the call, nothing is changed.

    python benchmarks/llama8b_prefix_whatif.py                       # two TP1 rows, shares 0 / 0.5 / 0.85
    python benchmarks/llama8b_prefix_whatif.py --rows "1000/100 c112" --shares 0,0.9 --kernels-only
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration import silicon  # noqa: E402


def simulate(row: silicon.Row, share: float, engine_terms: bool) -> dict:
    original = silicon.scenario_from_dict

    def with_prefix(d: dict):
        d["workload"]["shared_prefix_tokens"] = int(share * row.isl)
        d["serving"]["enable_prefix_caching"] = share > 0
        return original(d)

    with mock.patch.object(silicon, "scenario_from_dict", with_prefix):
        return silicon.simulate_row(row, engine_terms=engine_terms, first_wave=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="1000/100 c112,2000/100 c64", help="TP1 rows as 'ISL/OSL cC', comma-separated")
    p.add_argument("--shares", default="0,0.5,0.85", help="shared-prefix shares of the prompt, each in [0, 1)")
    p.add_argument("--kernels-only", action="store_true", help="the profile alone, without the engine terms")
    a = p.parse_args(argv)
    shares = [float(s) for s in a.shares.split(",")]
    if any(not 0 <= s < 1 for s in shares):
        print(f"error: --shares: each must be in [0, 1), got {shares}", file=sys.stderr)
        return 2
    rows = {f"{r.isl}/{r.osl} c{r.concurrency}": r for r in silicon.read_rows()[0]
            if r.model == "llama-3.1-8b" and r.gpu == "h200-sxm" and r.tp == 1}
    wanted = [w.strip() for w in a.rows.split(",") if w.strip()]
    bad = [w for w in wanted if w not in rows]
    if bad:
        print(f"error: --rows: unknown {bad}; allowed {sorted(rows)}", file=sys.stderr)
        return 2
    print(f"engine terms: {'off (kernels only)' if a.kernels_only else 'vLLM 0.12.0 (as shipped)'}\n")
    print("| row | measured TTFT / TPOT ms | shared prefix share | pred TTFT (steady) ms | pred TPOT ms | TPOT pred/meas |")
    print("|---|---:|---:|---:|---:|---:|")
    for w in wanted:
        r = rows[w]
        for s in shares:
            out = simulate(r, s, not a.kernels_only)
            print(f"| TP1 {w} | {r.ttft_ms:.0f} / {r.tpot_ms:.2f} | {s:.2f} | {out['pred_ttft_steady_ms']:.0f} | "
                  f"{out['pred_tpot_ms']:.2f} | {out['pred_tpot_ms'] / r.tpot_ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
