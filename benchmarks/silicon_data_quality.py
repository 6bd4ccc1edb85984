"""The training rows of docs/validation_gpu.md that the data-quality screen leaves out of the fit: shown apart.

calibration/engine_rows.DATA_EXCLUSIONS names (model, GPU, engine) whose measured rows a diagnosis found
unfit as training data (today: Llama-3.1-8B FP8 on H200 under vLLM, docs/llama8b_h200.md); when the screen
is on (EXCLUDE_DATA) the fit and its cross-validation leave them out. The validation still simulates them:
they are kept out of the training rollup and the all-rows figure and reported here with the reason, as
the physically implausible rows are (benchmarks/silicon_plausibility.py).
"""
from __future__ import annotations

import pandas as pd

from calibration.engine_rows import DATA_EXCLUSIONS, EXCLUDE_DATA, ROW_ENGINE


def reason_of(model: str, gpu: str, on: bool | None = None) -> str:
    """Why a row of `model` on `gpu` is left out of the fit ('' where it is not, or the screen is off)."""
    if not (EXCLUDE_DATA if on is None else on):
        return ""
    return DATA_EXCLUSIONS.get((model, gpu, ROW_ENGINE), "")


def with_data_screen(res: pd.DataFrame, on: bool | None = None) -> pd.DataFrame:
    """`res` with a `data_excluded` column (the reason, '' for rows the screen keeps); held-out rows are
    never fitted, so only training rows are marked."""
    return res.assign(data_excluded=[reason_of(m, g, on) if s == "train" else ""
                                     for m, g, s in zip(res["model"], res["gpu"], res["split"])])


def section(res: pd.DataFrame, errors, on: bool | None = None) -> list[str]:
    """The section: the named exclusions, whether the screen is on, and the rows it leaves out with their error."""
    on = EXCLUDE_DATA if on is None else on
    lines = ["## Training rows left out for data quality (not fitted, not in the training figures)", "",
             ("`calibration/engine_rows.DATA_EXCLUSIONS` names (model, GPU, engine) whose rows a diagnosis found "
              "unfit as training data; the screen is **" + ("on" if on else "off") + "** (`EXCLUDE_DATA`, set by "
              "the cross-validation rule in docs/llama8b_h200.md, section \"Does the fit do better without these "
              "rows?\")."), ""]
    lines += [f"- {' / '.join(k)}: {why}" for k, why in DATA_EXCLUSIONS.items()]
    out = res[res["data_excluded"] != ""] if "data_excluded" in res.columns else res.iloc[:0]
    if out.empty:
        return lines + ["", "No row is left out" + ("." if on else " (the screen is off: these rows are fitted)."), ""]
    e = errors(out)
    lines += ["", (f"{len(out)} rows, predicted with the shipped terms: TTFT median |err| {e['ttft_mdape']:.1f} % "
                   f"(signed {e['ttft_median_err']:+.1f} %), TPOT {e['tpot_mdape']:.1f} % (signed "
                   f"{e['tpot_median_err']:+.1f} %)."), "",
              "| setup | GPU | vLLM | TTFT real / pred ms | TPOT real / pred ms | why (the entry above) |",
              "|---|---|---|---:|---:|---|"]
    for r in out.itertuples(index=False):
        lines.append(f"| {r.setup} | {r.gpu} | {r.backend_version} | {r.ttft_ms:.0f} / {r.pred_ttft_ms:.0f} | "
                     f"{r.tpot_ms:.2f} / {r.pred_tpot_ms:.2f} | {r.model} / {r.gpu} / {ROW_ENGINE} |")
    return lines + [""]
