"""How far predictions priced like this run's were from measured serving runs: one line for the report.

A composed GPU profile with the fitted engine terms (sim/cost_select.py) was checked against measured vLLM
serving runs of models the terms were not fitted on (benchmarks/validate_silicon.py, docs/validation_gpu.md);
calibration/profiles/validation_accuracy.json holds that check per GPU, model and weight dtype. This module
picks the figure that applies to a run and says which it is: the same setup held out from the fit, the same
setup in-sample (the fit saw it: not a forecast), other models on the same GPU, or no measured run at all.
The roofline (cost_model: {kind: roofline}, and auto where no profile matches) has the same kinds of figure from
its own run over the same rows (the record's `roofline` section); a profile measured against a real server
carries its own fit error.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

ACCURACY_FILE = "validation_accuracy.json"
LEASE_FILE = "lease_accuracy.json"  # this project's own measured runs (benchmarks/gpu_vllm_record.py)


def accuracy_path(name: str = ACCURACY_FILE) -> Path:
    """A record's place among the shipped profiles (a function: reading it imports the calibration package,
    which a plain run does only when it prices with a profile)."""
    return Path(str(resources.files("calibration").joinpath("profiles", name)))


def setup_key(gpu: str, model: str, weight_dtype: str) -> str:
    return f"{gpu}|{model}|{weight_dtype}".lower()


@lru_cache(maxsize=2)
def _read(path: str) -> dict[str, Any] | None:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


def _err(f: dict) -> str:
    """'median |error| TPOT 7.0 %, TTFT 29.2 % (signed +4.9 %, +16.7 %; > 0: slower than measured)'."""
    return (f"median |error| TPOT {f['tpot_mdape']:.1f} %, TTFT {f['ttft_mdape']:.1f} % "
            f"(signed {f['tpot_signed']:+.1f} %, {f['ttft_signed']:+.1f} %; > 0: slower than measured)")


def _check(sec: dict, doc: str, gpu: str | None, model: str, weight_dtype: str, fitted: str, gpu_note: str) -> str:
    """The figure of record section `sec` ({held_out, train_in_sample}) that applies to (gpu, model, dtype).
    `fitted`: what was fitted on the training rows; `gpu_note`: why a GPU without runs is still priced."""
    held, train = sec["held_out"], sec["train_in_sample"]["by_setup"]
    key = setup_key(gpu or "", model, weight_dtype)
    if key in held["by_setup"]:
        f = held["by_setup"][key]
        return (f"held-out check on {f['rows']} measured vLLM runs of {model} {weight_dtype} on {gpu} (a model "
                f"{fitted} not fitted on): {_err(f)}; 1 run in 10 off by more than TPOT "
                f"{f['tpot_p90_abs']:.0f} % or TTFT {f['ttft_p90_abs']:.0f} % ({doc})")
    gpu_f = held["by_gpu"].get((gpu or "").lower())
    other = (f"held-out models on {gpu}: {_err(gpu_f)}" if gpu_f else
             f"held-out models on the GPUs with measured runs: {_err(held['all'])}")
    if key in train:
        return (f"in-sample only: {fitted} fitted on {train[key]['rows']} measured runs of {model} "
                f"{weight_dtype} on {gpu} ({_err(train[key])}), so that is no forecast; {other} ({doc})")
    if gpu_f:
        return f"no measured runs of {model} {weight_dtype} on {gpu}; {other} ({doc})"
    return f"no measured vLLM runs on {gpu} in the validation data ({gpu_note}); {other} ({doc})"


def _record(path: Path | None) -> dict | None:
    return _read(str(path or accuracy_path()))


MISSING = "no measured check on record (calibration/profiles/validation_accuracy.json is missing)"


def lease_check(gpu: str | None, model: str, weight_dtype: str) -> str:
    """'' or the phrase for this project's own measured runs of the setup (a GPU lease: lease_accuracy.json,
    written by benchmarks/gpu_vllm_record.py): data no fit has seen."""
    data = _read(str(accuracy_path(LEASE_FILE)))
    f = (data or {}).get("by_setup", {}).get(setup_key(gpu or "", model, weight_dtype))
    if not f:
        return ""
    return (f"; measured by this project on its own GPU lease ({f['rows']} points, {f['engine']}, {f['what']}): "
            f"{_err(f)} ({data['doc']})")


def composed_profile_accuracy(gpu: str | None, model: str, weight_dtype: str, path: Path | None = None) -> str:
    """The check that applies to a composed profile + fitted engine terms on (gpu, model, weight dtype)."""
    data = _record(path)
    if data is None:
        return MISSING
    return _check(data, data["doc"], gpu, model, weight_dtype, "the engine terms were",
                  "its kernel tables are aiconfigurator-core's, its engine terms another GPU's") \
        + lease_check(gpu, model, weight_dtype)


def roofline_accuracy(gpu: str | None, model: str, weight_dtype: str, path: Path | None = None) -> str:
    """The check that applies to the default roofline (its fixed costs per vLLM version) on (gpu, model, dtype)."""
    data = _record(path)
    if data is None:
        return MISSING
    if "roofline" not in data:
        return "roofline: an analytic estimate, not checked against measured GPU serving runs"
    return "roofline: " + _check(data["roofline"], data["doc"], gpu, model, weight_dtype,
                                 "its fixed step and per-sequence cost were",
                                 "datasheet peaks with default efficiencies")


def held_out_summary(path: Path | None = None) -> str:
    """One phrase: the held-out check of the composed profiles and of the roofline over all GPUs ('' if none)."""
    data = _record(path)
    if data is None:
        return ""
    f = data["held_out"]["all"]
    out = f"the profiles TPOT {f['tpot_mdape']:.0f} %, TTFT {f['ttft_mdape']:.0f} %"
    if "roofline" in data:
        r = data["roofline"]["held_out"]["all"]
        out += f"; the roofline TPOT {r['tpot_mdape']:.0f} %, TTFT {r['ttft_mdape']:.0f} %"
    return f"median |error| on held-out measured vLLM runs: {out}"


def measured_profile_accuracy(fit: dict | None, serving: dict | None = None) -> str:
    """A profile fitted on its own measured steps: the fit's error on the steps it held out; with serving terms
    fitted against the real server (`servesim calibrate serve`), their fit's error on its sweep (in-sample)."""
    overall = (fit or {}).get("overall") or {}
    if "mape_pct" not in overall:
        text = "measured profile without a recorded fit error"
    else:
        text = (f"measured profile: step-time error {overall['mape_pct']:.1f} % (mean |error|) on "
                f"{overall.get('n', '?')} measured steps held out of its fit")
    per = ((serving or {}).get("fit") or {}).get("per_metric") or {}
    if {"tpot_s", "ttft_s"} <= set(per):
        points = len({p.get("point") for p in serving["fit"].get("points", [])}) or "?"
        return (text + f"; its serving terms, fitted on {points} sweep points of the real server: TPOT "
                f"{per['tpot_s']['mape_pct']:.1f} %, TTFT {per['ttft_s']['mape_pct']:.1f} % (mean |error|, in-sample; "
                "replays of held-out workloads on the real server: docs/validation.md)")
    return text + "; serving-level error not checked here"
