"""Cross-validation of the async admission lag (engine.async_admission_lag) in the engine fit: does modelling it
on the versions where vLLM schedules async by default (>= 0.14) make the fitted terms predict better?

The lag (sim/schedulers/continuous.py; read in vLLM's `vllm/v1/engine/core.py` step_with_batch_queue and seen on
the H200 lease, docs/gpu_vllm_h200.md section 4): under async scheduling step N+1 is scheduled while step N
runs, so a request that reaches the engine during step N first runs in step N+2. It is off by default.

How: calibration.engine_cv's main, unchanged (same rows, thinning, folds, structures and rule), with its basis
simulated with `engine.async_admission_lag: true` on every training row whose vLLM version schedules async by
default (sim.engine_terms.async_scheduling_default: MiniMax-M2.5's rows, 0.16-0.19 and a nightly; Llama-3.1-8B's
and Qwen3-32B's are 0.12.0, unchanged). The held-out models play no part. A candidate proposed after the
lease, so post hoc (calibration/engine_structures.py): adopted only if it clears the bar
(engine_structures.POST_HOC_BAR_PCT) against today's choice on today's basis.

Result (2026-11-27, 252 training rows, 105 s): the chosen structure is o2 both ways; CV TPOT 6.4 % both ways
(the lag moves TTFT, not the decode step), CV TTFT 19.0 % without the lag, 19.9 % with it: worse, so NOT
adopted, nothing changed. By fold (o2, TTFT median |err|): MiniMax-M2.5 15.3 -> 12.6 % (its own rows, whose
steady-state TTFT gains about one step), Qwen3-32B 21.4 -> 23.3 % (the response latency the fold fits on
MiniMax-M2.5's rows, shared by every version, shrinks to make room for the lag's step and is then short for
a 0.12.0 row), Llama-3.1-8B 127.1 -> 120.9 %. In sample (the shipped terms, fitted without the lag, on the
179 async training rows): TTFT 14.4 % (signed +1.2 %) without, 16.4 % (+7.6 %) with; the benchmark's first
wave is unchanged (C requests at t = 0 to an idle engine are admitted at once).

    python benchmarks/admission_lag_cv.py [--basis /tmp/lag_basis.npz]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import calibration.silicon as silicon  # noqa: E402
from calibration import engine_cv  # noqa: E402
from sim.engine_terms import async_scheduling_default  # noqa: E402


def with_lag(scenario_from_dict):
    """scenario_from_dict with engine.async_admission_lag on where the scenario's vLLM version schedules async
    by default (what calibration.silicon.scenario_for builds for each row, otherwise unchanged)."""
    def build(d: dict):
        engine = d.get("engine", {})
        if async_scheduling_default(engine.get("name", "vllm"), engine.get("version") or ""):
            d = {**d, "engine": {**engine, "async_admission_lag": True}}
        return scenario_from_dict(d)
    return build


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--basis", default="", help="npz cache of the basis simulated with the lag (read if present)")
    args = ap.parse_args()
    silicon.scenario_from_dict = with_lag(silicon.scenario_from_dict)  # where scenario_for builds each row
    return engine_cv.main(["--basis", args.basis, "--out", ""])


if __name__ == "__main__":
    sys.exit(main())
