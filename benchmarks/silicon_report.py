"""docs/validation_gpu.md from benchmarks/validate_silicon.py's results: write_doc puts the report together.

Formatting and summaries only: the numbers come from the simulations validate_silicon.py ran. The error
summaries and tables are benchmarks/silicon_tables.py (errors, rollup and headline re-exported here for
validate_silicon.py); the sections that do not depend on the rows (engine terms, method) and the misses
are benchmarks/silicon_sections.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calibration.engine_fit import TRAIN_MODELS
from calibration.silicon import PACKAGE, Row, package_version, silicon_csv
from sim.engine_terms import terms_path
from silicon_cliffs import QUEUEING_TTFT_MS, cliff_group
from silicon_data_quality import section as data_quality_section, with_data_screen
from silicon_plausibility import headline_note, section as implausible_section, with_screen
from silicon_sections import cv_section, factors_section, method_section, misses_section, terms_notes, terms_table
from silicon_tables import (MISS_TPOT_PCT, MISS_TTFT_PCT, MOE_MODELS, TARGET_TPOT_PCT,  # noqa: F401 (re-exported)
                            TARGET_TTFT_PCT, cause, errors, headline, rollup, rollup_markdown, rows_markdown,
                            summary_rows, variant_line)


def write_doc(res: pd.DataFrame, skipped: pd.DataFrame, rows: list[Row], variants: dict[str, pd.DataFrame],
              command: str, wall_s: float, doc: Path, before_note: str = "") -> None:
    """docs/validation_gpu.md: split, engine terms, held-out rollups, sensitivities, misses, every row.

    `variants` (each optional): "kernels" (no engine terms, clients in lockstep: what shipped before),
    "kernels_spread" (no engine terms, clients out of phase), "lockstep" (engine terms, clients in
    lockstep), "seed1" (another seed), "fp8_kv" (fp8 rows with an fp8 KV cache), "before" (an earlier
    run's per-row results, e.g. the previous engine terms)."""
    csv = silicon_csv()
    rel = csv.relative_to(csv.parents[1])
    total = len(pd.read_csv(csv))
    kern_tpot = (variants["kernels"].set_index("id")["pred_tpot_ms"].reindex(res["id"]).to_numpy()
                 if "kernels" in variants else np.nan)
    res = with_data_screen(with_screen(res.assign(kernels_tpot_ms=kern_tpot)))
    recorded = res[res["concurrency_recorded"]]
    # Every summary below leaves out the physically implausible rows (calibration/plausibility.py); they are
    # reported as their own group (benchmarks/silicon_plausibility.py) and marked in the row table; so are the
    # training rows the data-quality screen leaves out of the fit (benchmarks/silicon_data_quality.py).
    main = summary_rows(res)
    held, train = main[main["split"] == "held-out"], main[main["split"] == "train"]
    assumed = res[~res["concurrency_recorded"]]
    e, et = errors(held), errors(train)

    def var(name: str, part: pd.DataFrame) -> dict | None:
        if name not in variants:
            return None
        v = variants[name].set_index("id")
        return errors(v.loc[v.index.intersection(part["id"])].reset_index())

    kern_h, lock_h, seed_h = var("kernels", held), var("lockstep", held), var("seed1", held)
    kspread_h, before_h = var("kernels_spread", held), var("before", held)
    roof_h = var("roofline", held)
    fp8_held = held[held["dtype"] == "fp8"]
    held_models = sorted(held["model"].unique())
    versions = ", ".join(f"{v} ({n} rows)" for v, n in main["backend_version"].value_counts().items())
    cliff = held[held["kv_bound"] | (held["ttft_ms"] > QUEUEING_TTFT_MS)]
    no_cliff = held.drop(cliff.index)
    misses = held[(held["tpot_err_pct"].abs() > MISS_TPOT_PCT) | (held["ttft_err_pct"].abs() > MISS_TTFT_PCT)]
    met = lambda v, t: "met" if v <= t else "not met"

    lines = [
        "# Validation on GPUs: servesim against measured vLLM serving runs", "",
        "Written by `benchmarks/validate_silicon.py` (do not edit by hand).", "",
        f"Command: `{command}` ({wall_s:.0f} s wall, CPU only: it simulates, it needs no GPU).", "",
        "## Headline", "",
        (f"On the **{e['rows']} held-out rows** ({', '.join(held_models)}: models the engine terms were not fitted "
         f"on), median absolute error **TPOT {e['tpot_mdape']:.1f} %** (median signed {e['tpot_median_err']:+.1f} %; "
         f"target <= {TARGET_TPOT_PCT:.0f} %: {met(e['tpot_mdape'], TARGET_TPOT_PCT)}) and **TTFT "
         f"{e['ttft_mdape']:.1f} %** (median signed {e['ttft_median_err']:+.1f} %; target <= {TARGET_TTFT_PCT:.0f} %: "
         f"{met(e['ttft_mdape'], TARGET_TTFT_PCT)})."
         + headline_note(recorded[recorded["split"] == "held-out"], errors)
         + (f" With the composed profiles alone (kernels, no engine terms, clients in lockstep) the same rows were "
            f"off by TPOT {kern_h['tpot_mdape']:.1f} %, TTFT {kern_h['ttft_mdape']:.1f} %." if kern_h else "")
         + (f" With the previous engine terms ({before_note}) TPOT {before_h['tpot_mdape']:.1f} % (signed "
            f"{before_h['tpot_median_err']:+.1f} %), TTFT {before_h['ttft_mdape']:.1f} % (signed "
            f"{before_h['ttft_median_err']:+.1f} %)." if before_h else "")
         + (f" Away from the KV cliff ({len(no_cliff)} rows) TTFT {errors(no_cliff)['ttft_mdape']:.1f} %, TPOT "
            f"{errors(no_cliff)['tpot_mdape']:.1f} %; on the {len(cliff)} cliff rows (KV-bound in the prediction or "
            f"queueing in the measurement) TTFT {errors(cliff)['ttft_mdape']:.1f} % (target 25 %: "
            f"{met(errors(cliff)['ttft_mdape'], 25.0)})" if len(cliff) else "")
         + ("" if not len(cliff) else f"; before: {var('before', cliff)['ttft_mdape']:.1f} %." if before_h else ".")
         + (" By cause (docs/kv_cliff_diagnosis.md has the evidence row by row): " + "; ".join(
             f"{k} {len(g)} rows, {g['ttft_err_pct'].abs().median():.0f} %"
             for k, g in cliff.assign(why=[cliff_group(r) for r in cliff.itertuples(index=False)]).groupby("why"))
            + "." if len(cliff) else "")),
        "",
        (f"All {len(main)} plausible rows with a recorded concurrency (training and held-out together, the training "
         f"rows in-sample): TPOT {errors(main)['tpot_mdape']:.1f} % (signed {errors(main)['tpot_median_err']:+.1f} %), "
         f"TTFT {errors(main)['ttft_mdape']:.1f} % (signed {errors(main)['ttft_median_err']:+.1f} %)"
         + (f"; before: TPOT {var('before', main)['tpot_mdape']:.1f} % (signed "
            f"{var('before', main)['tpot_median_err']:+.1f} %), TTFT {var('before', main)['ttft_mdape']:.1f} % "
            f"(signed {var('before', main)['ttft_median_err']:+.1f} %)." if before_h else ".")),
        "",
        (f"The training rows ({et['rows']}, {', '.join(TRAIN_MODELS)}) are simulated with the same terms and shown "
         f"apart, in-sample: TPOT {et['tpot_mdape']:.1f} %, TTFT {et['ttft_mdape']:.1f} %. They say how well the "
         "terms can fit, not how well they predict."
         + (f" {int((recorded['data_excluded'] != '').sum())} training rows left out of the fit for data quality are "
            "shown apart (section below)." if (recorded["data_excluded"] != "").any() else "")), "",
        "## The split and the engine terms", "",
        (f"- **Split by model.** `python -m calibration.engine_fit` fits the engine terms on the rows of "
         f"{', '.join(TRAIN_MODELS)} (`calibration/engine_fit.TRAIN_MODELS`) and on nothing else; every other model "
         "a shipped profile covers is held out (today: " + ", ".join(held_models) + "; a model that gains a "
         "profile is held out by default). No row is both fitted and reported: the headline and the held-out "
         "tables below use only the held-out rows."),
        (f"- **Terms per vLLM version** (`{terms_path().relative_to(terms_path().parents[2])}`, with provenance: "
         "source file, rows used and left out, split, date, method, in-sample error). A row is simulated with "
         "the terms of its recorded vLLM version; a row without a recorded version (and any scenario that names "
         "none) gets the default version's; a scenario naming a version without data gets the nearest version's "
         "and a note that says so. Versions with data:"), "",
    ]
    lines += terms_table()
    lines += factors_section()
    lines += cv_section()
    lines += terms_notes()
    lines += [
        "",
        "## Data", "",
        (f"- Source: `{rel}` inside the `{PACKAGE}` {package_version()} wheel (read in place, not copied). {total} "
         "rows: model, GPU, backend and version, precision, TP, ISL/OSL, concurrency, TTFT and TPOT in ms. "
         "`silicon_ttft_ms` / `silicon_tpot_ms` are compared with servesim's **mean** TTFT and TPOT "
         "(TPOT = (E2E - TTFT) / (output tokens - 1), as `vllm bench serve` defines it)."),
        (f"- Used: **{len(res)} rows**, every vLLM row that a shipped profile covers (GPU, model, TP and weight "
         f"dtype); with a recorded concurrency: vLLM versions {versions}."),
        ("- Precision: fp8 rows use the `_fp8` profiles, rows with no precision (unquantised checkpoints) the "
         "`_bf16` ones. The CSV has no KV-cache dtype: vLLM's default (`--kv-cache-dtype auto`: bf16 for these "
         "checkpoints even with fp8 weights) sizes the KV cache. The KV-cliff rows say several measured runs held "
         "more KV than that allows (an fp8 cache, aiconfigurator-core's own convention for fp8 configurations, "
         "fits the TP1 ones): docs/kv_cliff_diagnosis.md."),
        (f"- Concurrency: `silicon_concurrency=N` in the source string. {len(assumed)} rows (marked †) do not "
         "record it nor the number of replicas; they are simulated with `batch_size` clients on one replica, "
         "shown in the row table and kept out of every summary."), "",
        "Skipped rows (each counted under the first test it fails):", "",
        "| reason | rows | what |", "|---|---:|---|"]
    lines += [f"| {r.reason} | {r.rows} | {r.examples} |" for r in skipped.itertuples(index=False)]
    lines += method_section()
    lines += [
        "## Held-out results", "",
        "By GPU, model and dtype:", ""]
    lines += rollup_markdown(rollup(held, ["gpu", "model", "dtype"]), ["gpu", "model", "dtype"])
    lines += ["", "By model, dtype and TP:", ""]
    lines += rollup_markdown(rollup(held, ["model", "dtype", "tp"]), ["model", "dtype", "tp"])
    lines += ["", "By vLLM version (as recorded; the terms used in brackets):", ""]
    lines += rollup_markdown(rollup(held.assign(version=held["backend_version"] + " (" + held["terms_version"] + ")"),
                                    ["version"]), ["version"])
    lines += ["", "By GPU:", ""]
    lines += rollup_markdown(rollup(held, ["gpu"]), ["gpu"])
    lines += ["", "By model:", ""]
    lines += rollup_markdown(rollup(held, ["model"]), ["model"])
    lines += ["", "By concurrency (bins):", ""]
    lines += rollup_markdown(rollup(held.assign(concurrency_bin=pd.cut(held["concurrency"], [0, 8, 32, 128, 4096],
                                                                       labels=["1-8", "9-32", "33-128", ">128"]
                                                                       ).astype(str)), ["concurrency_bin"]),
                             ["concurrency_bin"])
    lines += ["", "## Training rows (in-sample: the terms were fitted on them)", ""]
    lines += rollup_markdown(rollup(train, ["gpu", "model", "dtype", "tp"]), ["gpu", "model", "dtype", "tp"])
    lines += ["", "TPOT gap = measured TPOT - predicted TPOT, ms per output token.", "",
              "## Sensitivity (held-out rows)", "",
              "| variant | rows | TTFT median abs err % | TTFT median err % | TPOT median abs err % | TPOT median err % |",
              "|---|---:|---:|---:|---:|---:|",
              variant_line("as above (engine terms, clients out of phase, seed 0, mean, steady state)", e),
              variant_line("kernels only, clients in lockstep (what shipped before)", kern_h),
              variant_line("kernels only, clients out of phase (no engine terms)", kspread_h),
              variant_line("engine terms, clients in lockstep (start together, no request jitter)", lock_h),
              variant_line("seed 1 (another draw of the client starts and the request jitter)", seed_h),
              variant_line("the roofline instead of the profile (`cost_model: {kind: roofline}`: its fixed step and "
                           "per-sequence cost for the row's vLLM version, fitted on the training rows, and that "
                           "version's API-server latency and jitter; no other engine term)", roof_h),
              variant_line(f"before: {before_note}", before_h),
              variant_line("TTFT vs the simulated P50 instead of the mean",
                           {**e, "ttft_mdape": held["ttft_p50_err_pct"].abs().median(),
                            "ttft_median_err": held["ttft_p50_err_pct"].median()}),
              variant_line("first wave included", {**e, "ttft_mdape": held["ttft_all_err_pct"].abs().median(),
                                                   "ttft_median_err": held["ttft_all_err_pct"].median()})]
    if len(fp8_held):
        lines.append(variant_line("fp8 rows with an fp8 KV cache (2x the KV tokens)", var("fp8_kv", fp8_held)))
    lines = [ln for ln in lines if ln is not None]
    lines += [""] + data_quality_section(recorded, errors)
    lines += [""] + implausible_section(res, errors)
    lines += misses_section(misses, main, bool(kern_h))
    lines += ["", "## Every row", "", "† concurrency not recorded (batch_size used; not in the summaries).", ""]
    lines += rows_markdown(res)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines) + "\n")
