"""Calibrate page: fit a step-time profile on measurements (or open a shipped one), check it, save it."""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app_pages import common as c
from app_pages.profiles import available_profiles, cached_fit, coefficient_table, profiles_dir
from calibration.profile import MEASUREMENTS_FILE, Profile, ProfileError, load_profile, save_profile
from calibration.vllm_harness import FIT_STATS
from sim.catalog import gpu_catalog, model_catalog
from sim.configio import ConfigError

COLUMNS = ["phase", "new_tokens", "sampled", "attn_pairs", "kv_read_tokens", "num_seqs", "step_time_s"]
FEATURES = COLUMNS[1:-1]

try:
    from calibration.fit import fit_profile, format_report
except ImportError:  # the fitter is optional: browsing profiles works without it
    fit_profile = format_report = None


def read_measurements(data: bytes, filename: str) -> pd.DataFrame:
    try:
        df = pd.read_csv(io.BytesIO(data))
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"measurements: {filename} is not a readable CSV ({exc})") from None
    missing = [col for col in COLUMNS if col not in df.columns]
    if missing:
        raise ConfigError(f"measurements: {filename} lacks column(s) {missing}; expected {COLUMNS}")
    if len(df) == 0:
        raise ConfigError(f"measurements: {filename} has a header but no rows")
    for col in COLUMNS[1:]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(values.to_numpy(dtype=float)) | (values.to_numpy(dtype=float) < 0))
        if bad.size:
            i = int(bad[0])
            raise ConfigError(f"measurements: {filename} line {i + 2}, column {col}: got {df[col].iloc[i]!r}; "
                              "expected a number >= 0")
        df[col] = values
    return df


def predictions(profile_coefficients: dict, df: pd.DataFrame) -> pd.DataFrame:
    """Measured vs the profile's predicted step time, per measured step."""
    from sim.cost_model import ProfileCostModel

    model = ProfileCostModel(profile_coefficients)
    pred = model.step_times_s(*(df[col].to_numpy() for col in FEATURES))
    return pd.DataFrame({"phase": df["phase"].astype(str), "step_time_s": df["step_time_s"].to_numpy(dtype=float),
                         "predicted_s": np.asarray(pred, dtype=float)})


def error_charts(pred: pd.DataFrame) -> None:
    pred = pred.assign(error_pct=100.0 * (pred["predicted_s"] - pred["step_time_s"]) / pred["step_time_s"])
    if len(pred) > 3000:
        pred = pred.sample(3000, random_state=0)
    lo = float(min(pred["step_time_s"].min(), pred["predicted_s"].min()))
    hi = float(max(pred["step_time_s"].max(), pred["predicted_s"].max()))
    diag = alt.Chart(pd.DataFrame({"x": [lo, hi]})).mark_line(strokeDash=[4, 4], color="gray").encode(x="x:Q", y="x:Q")
    scatter = alt.Chart(pred).mark_circle(size=25, opacity=0.6).encode(
        x=alt.X("step_time_s:Q", title="measured step time (s)", scale=alt.Scale(type="log")),
        y=alt.Y("predicted_s:Q", title="predicted step time (s)", scale=alt.Scale(type="log")),
        color=alt.Color("phase:N"), tooltip=["phase", "step_time_s", "predicted_s", "error_pct"])
    errors = alt.Chart(pred).mark_circle(size=25, opacity=0.6).encode(
        x=alt.X("step_time_s:Q", title="measured step time (s)", scale=alt.Scale(type="log")),
        y=alt.Y("error_pct:Q", title="prediction error (%)"), color=alt.Color("phase:N"))
    cols = st.columns(2)
    cols[0].altair_chart((diag + scatter).properties(height=320, title="Measured vs predicted (dashed: exact)"),
                         width="stretch")
    cols[1].altair_chart(errors.properties(height=320, title="Error per measured step"), width="stretch")
    by_phase = pred.groupby("phase")["error_pct"].agg(
        steps="size", mape_pct=lambda e: float(np.mean(np.abs(e))), worst_pct=lambda e: float(np.max(np.abs(e))))
    st.dataframe(by_phase, width="stretch")


def save_defaults(label: str, opened: Profile | None) -> dict:
    """What the save form starts from: the opened profile's own description, else what the file
    name says (gpu, model, tp, dtype, as in shipped names "a100-80gb-sxm_llama-3.1-8b_tp1_bf16")."""
    name = re.sub(r"\.(csv|CSV)$", "", label)  # only an extension; "llama-3.1-8b" keeps its dots
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "profile"
    if opened is not None:
        return {"name": name + "-refit", "model": opened.model, "gpu": opened.gpu or "(not a catalog GPU)",
                "tp": opened.tensor_parallel, "weights": opened.weight_dtype, "kv": opened.kv_dtype,
                "block": opened.block_size_tokens, "device": opened.device, "blocks": opened.num_kv_blocks,
                "source": str(opened.provenance.get("source") or ""), "refit_of": opened.name}
    lower = name.lower()
    longest = lambda names: max((n for n in names if n in lower), key=len, default=None)  # noqa: E731
    tp = re.search(r"tp(\d+)", lower)
    dtype = re.search(r"(bf16|fp16|fp8|int8|int4)", lower)
    return {"name": name, "model": longest(model_catalog()) or "llama-3.1-8b",
            "gpu": longest(gpu_catalog()) or "(not a catalog GPU)", "tp": int(tp.group(1)) if tp else 1,
            "weights": dtype.group(1) if dtype else "bf16", "kv": "bf16", "block": 16, "device": "", "blocks": None,
            "source": "", "refit_of": None}


def show_coefficients(where, coefficients: dict[str, float], key: str) -> None:
    """A profile's coefficients as a table with each one's unit (seconds, or k/E for a mixture of experts)."""
    where.dataframe(coefficient_table(coefficients), hide_index=True, width="stretch", key=key,
                    column_config={"value": st.column_config.NumberColumn(format="%.3e")})


def provenance_table() -> pd.DataFrame:
    rows = []
    for label, ref in available_profiles().items():
        try:
            p = load_profile(ref)
        except ProfileError as exc:
            rows.append({"profile": label, "source": f"unreadable: {exc}"})
            continue
        rows.append({"profile": label, "model": p.model, "gpu": p.gpu, "device": p.device, "TP": p.tensor_parallel,
                     "weights": p.weight_dtype, "KV": p.kv_dtype, "source": p.provenance.get("source"),
                     "engine": " ".join(str(p.provenance.get(k, "")) for k in ("engine", "engine_version")).strip(),
                     "date": p.provenance.get("date"), "folder": p.path})
    return pd.DataFrame(rows).fillna("—")  # a profile without a catalog GPU, a date, ...


st.title("Calibrate")
st.caption("A profile replaces the analytic roofline with a step-time curve fitted on measured engine steps. "
           "Fit one on your measurements, check its error, save it, and pick it as the cost model on the "
           "Scenario page.")

fe = c.FieldErrors()
with st.container(border=True):
    st.subheader("Profiles")
    table = provenance_table()
    if table.empty:
        st.info(f"No profiles yet: none shipped, none saved in {profiles_dir()}.")
    else:
        st.dataframe(table, hide_index=True, width="stretch", key="cal.profiles")

source = st.radio("Fit from", ["an uploaded measurements file", "a profile's measurements"], horizontal=True,
                  key="cal.source")
df = None
label = None
opened = None  # the profile whose measurements are shown, if any
if source == "an uploaded measurements file":
    upload = st.file_uploader("Measurements (CSV: " + ", ".join(COLUMNS) + ")", type=["csv"], key="cal.upload")
    fe.slot("measurements")
    if upload is not None:
        try:
            df = read_measurements(upload.getvalue(), upload.name)
            label = upload.name
        except ConfigError as exc:
            fe.show(exc)
else:
    profiles = available_profiles()
    if not profiles:
        st.info("No profiles to open yet; upload measurements instead.")
    else:
        chosen = st.selectbox("Profile", list(profiles), key="cal.profile")
        fe.slot("measurements")
        prof = opened = load_profile(profiles[chosen])
        with st.expander("Provenance, fit and coefficients of this profile"):
            show_coefficients(st, prof.coefficients, "cal.profile_coefficients")
            st.json({"provenance": prof.provenance, "fit": prof.fit})
        path = Path(prof.path) / MEASUREMENTS_FILE if prof.path else None
        if path is not None and path.is_file():
            df = read_measurements(path.read_bytes(), str(path))
            label = chosen
            st.caption(f"Shipped fit of this profile, on its {len(df):,} measured steps:")
            error_charts(predictions(prof.coefficients, df))
        else:
            st.caption("This profile ships without its measurements; only its coefficients can be shown.")

if df is not None:
    st.caption(f"{len(df):,} measured steps from {label}: " +
               ", ".join(f"{n:,} {p}" for p, n in df["phase"].astype(str).value_counts().items()))
    if fit_profile is None:
        st.warning("The fitter (calibration/fit.py) is not installed in this checkout, so a new fit cannot be "
                   "made here; the profiles above still work as cost models.")
    else:
        stat = st.radio("Time of a step shape over its repeats", FIT_STATS, horizontal=True, key="cal.stat",
                        help="As `servesim calibrate fit --stat`: the fit sees one row per distinct step shape. "
                             "min (default): other processes only ever add time; median on a dedicated machine.")
        try:
            result = cached_fit(df.to_csv(index=False), stat)
        except (ConfigError, ValueError) as exc:
            fe.show(ConfigError(f"measurements: {exc}" if not str(exc).startswith("measurements") else str(exc)))
            result = None
        if result is not None:
            st.subheader("Fit")
            st.caption(f"Fitted as `servesim calibrate fit` does, on {result['fit']['fitted_on']}.")
            cols = st.columns([1, 2])
            show_coefficients(cols[0], result["coefficients"], "cal.coefficients")
            cols[1].code(result["text"], language=None)
            error_charts(result["predictions"])

            d = save_defaults(label or "profile", opened)
            ns = hashlib.sha1((label or "").encode()).hexdigest()[:8]  # other measurements: a fresh save form

            def pick(col, title, options, default, key):
                options = list(options) if default in options else [default] + list(options)
                return col.selectbox(title, options, index=options.index(default), key=f"cal.{key}.{ns}")

            with st.form(f"cal.save.{ns}"):
                st.subheader("Save as a profile")
                cols = st.columns(3)
                name = cols[0].text_input("Name", value=d["name"], key=f"cal.name.{ns}")
                model = pick(cols[1], "Model measured", sorted(model_catalog()), d["model"], "model")
                gpu = pick(cols[2], "GPU it stands for", ["(not a catalog GPU)"] + sorted(gpu_catalog()), d["gpu"],
                           "gpu")
                cols = st.columns(4)
                tp = pick(cols[0], "Tensor parallel", [1, 2, 4, 8, 16], d["tp"], "tp")
                weights = pick(cols[1], "Weights", ["bf16", "fp16", "fp8", "int8", "int4"], d["weights"], "weights")
                kv = pick(cols[2], "KV cache", ["bf16", "fp16", "fp8", "int8"], d["kv"], "kv")
                block = pick(cols[3], "Block size (tokens)", [16, 1, 8, 32, 64, 128], d["block"], "block")
                cols = st.columns(3)
                device = cols[0].text_input("Device (as the engine reported it)", value=d["device"],
                                            key=f"cal.device.{ns}")
                blocks = cols[1].number_input("KV blocks the engine allocated (empty: estimate)", value=d["blocks"],
                                              step=1, key=f"cal.blocks.{ns}")
                src = cols[2].text_input("Source (who measured what, how)", value=d["source"], key=f"cal.src.{ns}")
                save_slot = st.empty()
                if st.form_submit_button("Save profile", type="primary"):
                    try:
                        if not re.fullmatch(r"[A-Za-z0-9._-]+", name or ""):
                            raise ConfigError(f"name: got {name!r}; use letters, digits, '.', '_' or '-'")
                        if not src.strip():
                            raise ConfigError("provenance.source: empty; say where these measurements come from")
                        folder = profiles_dir() / name
                        profile = Profile(
                            name=name, coefficients=dict(result["coefficients"]), model=model,
                            device=device.strip() or (gpu if gpu in gpu_catalog() else "unknown"),
                            gpu=gpu if gpu in gpu_catalog() else None, tensor_parallel=int(tp), weight_dtype=weights,
                            kv_dtype=kv, block_size_tokens=int(block), num_kv_blocks=None if blocks is None else int(blocks),
                            provenance={"source": src.strip(), "measurements": label,
                                        "date": dt.date.today().isoformat(), "made_with": "servesim UI (Calibrate)",
                                        **({"refit_of": d["refit_of"]} if d["refit_of"] else {})},
                            fit=result["fit"])
                        save_profile(profile, folder)
                        df.to_csv(folder / MEASUREMENTS_FILE, index=False)
                        save_slot.success(f"Saved to {folder}. Pick **{name} (saved)** as the cost model on the "
                                          "Scenario page (it must match the scenario's model and TP).")
                    except (ConfigError, OSError) as exc:
                        save_slot.error(str(exc), icon=":material/error:")
