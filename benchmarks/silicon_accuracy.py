"""calibration/profiles/validation_accuracy.json: the held-out check of docs/validation_gpu.md in a form the
simulator reads, so that a run priced by a composed GPU profile can say how far such predictions were from
measured vLLM serving runs (sim/accuracy.py prints it beside the cost model).

Written by benchmarks/validate_silicon.py with the doc (the same rows, the same screens: physically implausible
rows, rows without a recorded concurrency and rows the data-quality screen leaves out are in no figure), or
from an earlier run's per-row CSV without simulating again:

    python benchmarks/silicon_accuracy.py --results RESULTS.csv   # validate_silicon.py --csv RESULTS.csv
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibration.engine_fit import TRAIN_MODELS  # noqa: E402
from calibration.silicon import PACKAGE, package_version  # noqa: E402
from sim.accuracy import accuracy_path, setup_key  # noqa: E402
from silicon_tables import summary_rows  # noqa: E402


def _figures(g: pd.DataFrame) -> dict:
    tp, tt = g["tpot_err_pct"].to_numpy(float), g["ttft_err_pct"].to_numpy(float)
    r = lambda v: round(float(v), 1)  # noqa: E731
    return {"rows": int(len(g)),
            "tpot_mdape": r(np.median(np.abs(tp))), "tpot_signed": r(np.median(tp)),
            "tpot_p90_abs": r(np.quantile(np.abs(tp), 0.9)),
            "ttft_mdape": r(np.median(np.abs(tt))), "ttft_signed": r(np.median(tt)),
            "ttft_p90_abs": r(np.quantile(np.abs(tt), 0.9))}


def _by_setup(part: pd.DataFrame) -> dict:
    return {setup_key(g, m, d): _figures(x) for (g, m, d), x in part.groupby(["gpu", "model", "dtype"], sort=True)}


def _section(main: pd.DataFrame) -> tuple[dict, dict]:
    """(held-out figures: all, by GPU, by setup; in-sample figures by setup) of summary rows `main`."""
    held, train = main[main["split"] == "held-out"], main[main["split"] == "train"]
    return ({"all": _figures(held), "by_gpu": {g: _figures(x) for g, x in held.groupby("gpu", sort=True)},
             "by_setup": _by_setup(held)}, {"by_setup": _by_setup(train)})


def accuracy_record(res: pd.DataFrame, command: str, roofline: pd.DataFrame | None = None) -> dict:
    """The JSON record from validate_silicon.py's per-row results (all rows; the summary screens applied here);
    `roofline`: its roofline variant's results (held-out rows, or all), the same screens applied."""
    main = summary_rows(res)
    held, train = _section(main)
    rec = {
        "note": ("Written by benchmarks/validate_silicon.py (benchmarks/silicon_accuracy.py); do not edit by hand. "
                 "Median |error| and median signed error (%) of servesim's mean TTFT and TPOT against measured vLLM "
                 "serving runs (closed loops at a fixed concurrency), signed > 0: servesim slower than measured; "
                 "p90_abs: the 90th percentile of |error|. Keys: GPU|model|weight dtype. docs/validation_gpu.md "
                 "has the rows, the split and every miss with its cause."),
        "doc": "docs/validation_gpu.md",
        "data": f"{PACKAGE} {package_version()} systems/silicon_sample.csv",
        "command": command,
        "date": datetime.date.today().isoformat(),
        "train_models": list(TRAIN_MODELS),
        "held_out": held,
        "train_in_sample": train,
    }
    if roofline is not None and len(roofline):
        ids = set(main["id"]) if "id" in main.columns else None  # the main run's screens, row by row
        roof = summary_rows(roofline)
        roof = roof[roof["id"].isin(ids)] if ids is not None and "id" in roof.columns else roof
        r_held, r_train = _section(roof)
        rec["roofline"] = {"note": ("cost_model: {kind: roofline} on the same rows: its fixed step and per-sequence "
                                    "cost per vLLM version were fitted on the training rows' TPOT, so the held-out "
                                    "rows are out of sample for it too"),
                           "held_out": r_held, "train_in_sample": r_train}
    return rec


def write_accuracy(res: pd.DataFrame, command: str, path: Path | None = None,
                   roofline: pd.DataFrame | None = None) -> Path:
    path = path or accuracy_path()
    path.write_text(json.dumps(accuracy_record(res, command, roofline), indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", required=True, help="per-row results of benchmarks/validate_silicon.py --csv")
    ap.add_argument("--roofline", default="", help="per-row results of the roofline variant (validate_silicon.py)")
    ap.add_argument("--out", default=str(accuracy_path()), help="where to write the record")
    args = ap.parse_args(argv)
    read = lambda p: pd.read_csv(p, keep_default_na=False, na_values=[""])  # noqa: E731
    res = read(args.results)
    cmd = "python benchmarks/silicon_accuracy.py --results " + Path(args.results).name
    roof = read(args.roofline) if args.roofline else None
    print(f"wrote {write_accuracy(res, cmd, Path(args.out), roof)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
