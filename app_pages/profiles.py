"""The cost profiles the UI offers: shipped and saved ones, the one measured for a setup, and a
fit of uploaded measurements (what `servesim calibrate fit` does)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

PROFILES_DIR_ENV = "SERVESIM_PROFILES_DIR"  # where the Calibrate page saves profiles (default ./profiles)

# The unit of each profile coefficient: what it multiplies in sim.cost_model.ProfileCostModel's step
# time. Every one is in seconds but a mixture of experts' expert_pick_fraction, which is k / E.
COEFFICIENT_UNITS = {
    "overhead_s": "s per step",
    "per_seq_s": "s per sequence in the step",
    "weights_s": "s per step (the weight-streaming floor)",
    "per_token_s": "s per new token",
    "per_pair_s": "s per attention query-key pair",
    "per_kv_token_s": "s per KV-cache token read",
    "per_sample_s": "s per sampled token",
    "experts_s": "s to read every expert's weights once",
    "expert_pick_fraction": "fraction, not seconds: experts picked per token / experts (k/E)",
}


def profiles_dir() -> Path:
    """Folder the Calibrate page saves profiles to (env SERVESIM_PROFILES_DIR, default ./profiles)."""
    return Path(os.environ.get(PROFILES_DIR_ENV) or "profiles").resolve()


def coefficient_table(coefficients: dict[str, float]) -> pd.DataFrame:
    """A profile's coefficients, one row each, with the unit of each (COEFFICIENT_UNITS)."""
    return pd.DataFrame({"coefficient": list(coefficients), "value": [float(v) for v in coefficients.values()],
                         "unit": [COEFFICIENT_UNITS.get(name, "(unknown coefficient)") for name in coefficients]})


def available_profiles(model: str | None = None, tensor_parallel: int | None = None) -> dict[str, str]:
    """Label -> what to put in `cost_model.profile`: shipped names, then saved folders (absolute paths).

    With `model` / `tensor_parallel`, only the profiles measured for them (the ones a scenario can use).
    """
    from calibration.profile import PROFILE_FILE, ProfileError, list_shipped_profiles, load_profile

    out = {name: name for name in list_shipped_profiles()}
    root = profiles_dir()
    if root.is_dir():
        for f in sorted(root.glob(f"*/{PROFILE_FILE}")):
            out[f"{f.parent.name} (saved)"] = str(f.parent)
    if model is None and tensor_parallel is None:
        return out
    keep = {}
    for label, ref in out.items():
        try:
            p = load_profile(ref)
        except ProfileError:
            continue
        if (model is None or p.model.lower() == model.lower()) and \
                (tensor_parallel is None or p.tensor_parallel == tensor_parallel):
            keep[label] = ref
    return keep


@st.cache_data(show_spinner=False)
def shipped_profile_index() -> list[dict[str, Any]]:
    """What each shipped profile was measured for: name, model, gpu, TP, weight and KV dtypes."""
    from calibration.profile import ProfileError, list_shipped_profiles, load_profile

    out = []
    for name in list_shipped_profiles():
        try:
            p = load_profile(name)
        except ProfileError:
            continue
        out.append({"name": name, "model": p.model.lower(), "gpu": (p.gpu or "").lower(), "tp": p.tensor_parallel,
                    "weights": p.weight_dtype, "kv": p.kv_dtype})
    return out


def matching_profile(model: str, gpu: str, tp: int, weights: str, kv: str) -> str | None:
    """The shipped profile measured for exactly this model, GPU, TP and dtypes (fp16 counts as bf16), if any."""
    width = {"fp16": "bf16"}
    want = (model.lower(), gpu.lower(), tp, width.get(weights, weights), width.get(kv, kv))
    for p in shipped_profile_index():
        if (p["model"], p["gpu"], p["tp"], width.get(p["weights"], p["weights"]), width.get(p["kv"], p["kv"])) == want:
            return p["name"]
    return None


@st.cache_data(show_spinner=False, max_entries=16)
def cached_fit(measurements_csv: str, stat: str = "min") -> dict[str, Any]:
    """What `servesim calibrate fit` does, on a measurements table (given as CSV text), as plain data:
    one row per distinct step shape (its `stat` time over the repeats), then fit_profile."""
    import io

    from calibration.fit import fit_profile, format_report
    from calibration.vllm_harness import step_shapes

    measured = pd.read_csv(io.StringIO(measurements_csv))
    shapes = step_shapes(measured, stat)
    result = fit_profile(shapes)
    report = result.report if isinstance(result.report, dict) else {}
    pred = result.predictions
    fitted_on = (f"the {stat} step time of each distinct step shape (phase + the five features) over its repeats: "
                 f"{len(shapes)} shapes from {len(measured)} measured steps; held-out rows are shapes the fit "
                 "did not see")
    return {"coefficients": {k: float(v) for k, v in result.coefficients.items()}, "text": format_report(result),
            "predictions": pd.DataFrame({"phase": pred["phase"].astype(str), "step_time_s": pred["step_time_s"],
                                         "predicted_s": pred["predicted_s"]}),
            "fit": {**report, "stat": stat, "fitted_on": fitted_on}, "shapes": len(shapes), "steps": len(measured)}
