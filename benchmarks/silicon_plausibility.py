"""The physically implausible rows of docs/validation_gpu.md: flagged, kept out of the headline, shown apart.

A row is implausible when its measured TTFT and TPOT imply (Little's law) more compute per GPU than
a GPU sustains, or more memory traffic than its HBM streams (calibration/plausibility.py): without
prefix-cache hits that the CSV does not record, the run cannot have done the work servesim simulates.
Such held-out rows are not dropped: the row table marks them and this section reports them as
their own group, beside a headline that leaves them out (as the KV-cliff rows are shown apart).
"""
from __future__ import annotations

import pandas as pd

from calibration.plausibility import MAX_COMPUTE_SHARE, MAX_MEMORY_SHARE, REASON, implied_load, summary_markdown


def with_screen(res: pd.DataFrame) -> pd.DataFrame:
    """`res` with the screen's columns (implied_compute_share, implied_memory_share, implausible),
    computed from each record's own measured values where an older result lacks them."""
    if {"implied_compute_share", "implied_memory_share", "implausible"} <= set(res.columns):
        return res
    loads = [implied_load(r) for r in res.itertuples(index=False)]
    return res.assign(implied_compute_share=[x.compute_share for x in loads],
                      implied_memory_share=[x.memory_share for x in loads],
                      implausible=[x.implausible for x in loads])


def headline_note(held: pd.DataFrame, errors) -> str:
    """One sentence for the headline: how many held-out rows the screen keeps out, and their own error."""
    bad = held[held["implausible"]]
    if bad.empty:
        return (f" No held-out row is {REASON} (calibration/plausibility.py: compute above {MAX_COMPUTE_SHARE} of the "
                f"dense peak or memory above {MAX_MEMORY_SHARE} of HBM bandwidth, by Little's law).")
    e = errors(bad)
    return (f" Left out of these figures: **{len(bad)} held-out rows {REASON}** (their measured TTFT/TPOT imply more "
            f"work than the GPU sustains; section below); on them alone TTFT {e['ttft_mdape']:.1f} % (signed "
            f"{e['ttft_median_err']:+.1f} %), TPOT {e['tpot_mdape']:.1f} % (signed {e['tpot_median_err']:+.1f} %).")


def section(res: pd.DataFrame, errors) -> list[str]:
    """The section: the rule, the screened rows per model and GPU (training and held-out), every one."""
    screened = res[res["implausible"]]
    lines = ["## Physically implausible rows (left out of the fit and of the headline)", "",
             ("A closed loop of c clients completes c / (TTFT + (OSL - 1) x TPOT) requests per second (Little's law), "
              "and each request costs at least 2 x active parameters FLOPs per prompt and output token, causal "
              "attention, one LM-head row per output token, a read of the active weights per decode step and of its "
              "KV context per output token (at 1 byte per value). Per GPU, against the catalog's dense peak at the "
              f"row's weight dtype and its HBM bandwidth: a row above {MAX_COMPUTE_SHARE} of the peak (about what the "
              f"best published GEMMs sustain) or {MAX_MEMORY_SHARE} of the bandwidth is **{REASON}** "
              "(`python -m calibration.plausibility` lists every row; the CSV does not say whether the prompts "
              "shared a prefix, which vLLM v1 caches by default). Training rows so flagged are not fitted (the "
              "engine terms' provenance counts them); held-out ones are kept out of the headline and the held-out "
              "tables, and shown here."), ""]
    if screened.empty:
        return lines + ["None of the rows.", ""]
    pairs = [(r, implied_load(r)) for r in screened.itertuples(index=False)]
    lines += summary_markdown(pairs, list(res.itertuples(index=False)), split=lambda r: r.split)
    held = screened[screened["split"] == "held-out"]
    if len(held):
        e = errors(held)
        lines += ["", f"Held-out implausible rows ({len(held)}): TTFT median |err| {e['ttft_mdape']:.1f} % (signed "
                      f"{e['ttft_median_err']:+.1f} %), TPOT {e['tpot_mdape']:.1f} % (signed {e['tpot_median_err']:+.1f} %)."]
    lines += ["", "| setup | GPU | split | vLLM | TTFT real / pred ms | TPOT real / pred ms | share of dense peak | "
                  "share of HBM |", "|---|---|---|---|---:|---:|---:|---:|"]
    for r in screened.itertuples(index=False):
        lines.append(f"| {r.setup} | {r.gpu} | {r.split} | {r.backend_version} | {r.ttft_ms:.0f} / {r.pred_ttft_ms:.0f} "
                     f"| {r.tpot_ms:.2f} / {r.pred_tpot_ms:.2f} | {r.implied_compute_share:.2f} | "
                     f"{r.implied_memory_share:.2f} |")
    return lines + [""]
