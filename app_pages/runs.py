"""Running a scenario for a page, as the CLI does: `sim.simulation.run`, then `sim.metrics.summarize`.

`simulate` is cached across sessions by (scenario YAML, base folder, seed) for the Compare page,
whose runs touch no page element. The Scenario page draws progress while it runs, which
st.cache_data cannot replay, so its runs are kept per browser session (`run_and_keep`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st
import yaml

from sim.scenario import scenario_from_dict


def run_scenario(yaml_text: str, base_dir: str | None, seed: int, on_progress=None) -> dict[str, Any]:
    """Run one scenario (given as YAML) and return its records and summary as plain data
    (DataFrames, dicts). `on_progress(finished, total)` as in sim.simulation.run."""
    from sim.metrics import by_class, latency_table, summarize
    from sim.simulation import run

    scenario = scenario_from_dict(yaml.safe_load(yaml_text), base_dir=Path(base_dir) if base_dir else None)
    results = run(scenario, seed=seed, on_progress=on_progress)
    return {"summary": summarize(results), "requests": results.requests, "timeseries": results.timeseries,
            "latency": latency_table(results.requests), "by_class": by_class(results),
            "num_kv_blocks": results.memory.num_kv_blocks, "stable": results.stable, "status": results.status,
            "notes": list(results.notes)}


# The Compare page's runs: no page element is touched inside, so st.cache_data may replay them.
simulate = st.cache_data(show_spinner=False, max_entries=256)(run_scenario)

RUNS_KEPT = 8  # finished Scenario-page runs remembered per browser session


def kept_run(job: dict) -> dict[str, Any] | None:
    """The finished run of `job` ({"yaml", "base_dir", "seed"}) if this session has it."""
    return st.session_state.get("runs", {}).get((job["yaml"], job["base_dir"], job["seed"]))


def run_and_keep(job: dict, on_progress=None) -> dict[str, Any]:
    """run_scenario for `job`, remembered for this browser session (the last RUNS_KEPT runs).

    Not st.cache_data: the run draws its progress on the page, and a cache hit would replay
    those calls into elements of an earlier run (CacheReplayClosureError)."""
    found = kept_run(job)
    if found is not None:
        return found
    out = run_scenario(job["yaml"], job["base_dir"], job["seed"], on_progress)
    runs = st.session_state.setdefault("runs", {})
    runs[(job["yaml"], job["base_dir"], job["seed"])] = out
    for old in list(runs)[:-RUNS_KEPT]:
        del runs[old]
    return out
