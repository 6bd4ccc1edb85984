"""Cost profiles, the reading side: the file format the simulation core reads (calibration/ writes it).

A profile is a folder:

    <name>/profile.json       coefficients, fit error, provenance, what was measured
    <name>/measurements.csv   one row per measured step (optional for imported profiles)

`load_profile("h100-sxm_llama-3.1-8b_tp1_bf16")` finds a shipped profile by name
(calibration/profiles/, package data of `calibration`), `load_profile("profiles/my_gpu")` a folder
on disk. Every malformed field is a ProfileError naming the file and the field.
`calibration/profile.py` writes profiles (`save_profile`) and re-exports these names.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from .configio import ConfigError, build, is_file, require, require_range, short_path
from .cost_model import EXPERT_COEFFICIENTS, PROFILE_COEFFICIENTS, ProfileCostModel
from .serving_overhead import SERVING_TERMS, ServingOverhead
from .quantization import KvDtype, WeightDtype

SHIPPED_PACKAGE, SHIPPED_DIR = "calibration", "profiles"  # where the shipped profiles live (package data)
PROFILE_FILE = "profile.json"


class ProfileError(ConfigError):
    """A profile file is missing or malformed; the message names the file and the field."""


MAX_TERM_S = 10.0  # no coefficient or serving term prices a unit (a token, a sequence, a step) above 10 s
BLOCK_SIZES = (1, 8, 16, 32, 64, 128)
TENSOR_PARALLEL = (1, 2, 4, 8, 16)
# fp32: a CPU measurement (PyTorch harness); scenarios cannot ask for it, so it never matches one.
ProfileWeightDtype = Literal[(*get_args(WeightDtype), "fp32")]
ProfileKvDtype = Literal[(*get_args(KvDtype), "fp32")]


@dataclass(frozen=True)
class Profile:
    """A profile.json, read by the scenario machinery (sim.configio.build): the annotations are
    the file's types and allowed values, `validate` the rules between fields."""

    name: str
    coefficients: dict[str, float]  # PROFILE_COEFFICIENTS, seconds per unit (+ EXPERT_COEFFICIENTS: MoE)
    model: str  # catalog model name (or architecture description for custom configs)
    device: str  # what was measured, as the engine/driver reported it
    gpu: str | None  # catalog GPU name this profile stands for (None: not a catalog GPU, e.g. a CPU)
    tensor_parallel: Literal[TENSOR_PARALLEL]
    weight_dtype: ProfileWeightDtype
    kv_dtype: ProfileKvDtype
    block_size_tokens: Literal[BLOCK_SIZES]
    num_kv_blocks: int | None  # KV blocks the engine actually allocated (None if not measured)
    provenance: dict[str, Any]  # source, engine, engine_version, date, command, ...
    fit: dict[str, Any] = field(default_factory=dict)  # per-phase MAPE / worst error on held-out points
    # What serving adds to the in-process step (calibration/serving.py): SERVING_TERMS plus its own
    # provenance and fit; None if never measured against the real server.
    serving: dict[str, Any] | None = None
    path: str | None = field(default=None, metadata={"internal": True})  # folder it was loaded from

    def validate(self, path: str) -> None:
        at = f"{path}." if path else ""
        coeffs = self.coefficients
        for key in PROFILE_COEFFICIENTS:
            _term(coeffs.get(key), f"{at}coefficients.{key}", f"needed: {list(PROFILE_COEFFICIENTS)}")
        unknown = sorted(set(coeffs) - set(PROFILE_COEFFICIENTS) - set(EXPERT_COEFFICIENTS))
        require(not unknown, f"{at}coefficients.{unknown[0] if unknown else ''}", "(unknown key)",
                f"allowed keys here: {list(PROFILE_COEFFICIENTS + EXPERT_COEFFICIENTS)}")
        if any(k in coeffs for k in EXPERT_COEFFICIENTS):
            for key in EXPERT_COEFFICIENTS:
                require(key in coeffs, f"{at}coefficients.{key}", "missing",
                        f"a mixture of experts' profile gives both {list(EXPERT_COEFFICIENTS)}")
            _term(coeffs["experts_s"], f"{at}coefficients.experts_s", "seconds to read every expert once")
            pick = coeffs["expert_pick_fraction"]
            require(isinstance(pick, (int, float)) and not isinstance(pick, bool) and 0 < pick <= 1,
                    f"{at}coefficients.expert_pick_fraction", pick,
                    "a number in (0, 1]: experts picked per token / experts per layer")
        require(any(coeffs[key] > 0 for key in PROFILE_COEFFICIENTS), f"{at}coefficients", "all 0",
                "every step would take no time; refit the profile (servesim calibrate fit)")
        if self.serving is not None:
            for key in SERVING_TERMS:
                _term(self.serving.get(key), f"{at}serving.{key}", f"needed: {list(SERVING_TERMS)}")
            require(self.serving["compute_scale"] > 0, f"{at}serving.compute_scale", self.serving["compute_scale"],
                    "must be > 0")
            prov = self.serving.get("provenance")
            require(isinstance(prov, dict) and "source" in prov, f"{at}serving.provenance.source", "missing",
                    "say which server run these terms come from")
        require("source" in self.provenance, f"{at}provenance.source", "missing",
                "say where these numbers come from")
        if self.num_kv_blocks is not None:
            require_range(self.num_kv_blocks, f"{at}num_kv_blocks", 1, 10**9)

    @property
    def serving_overhead(self) -> ServingOverhead | None:
        if not self.serving:
            return None
        optional = {k: float(self.serving[k]) for k in ("request_jitter_s",) if k in self.serving}
        return ServingOverhead(**{k: float(self.serving[k]) for k in SERVING_TERMS}, **optional)

    def cost_model(self, serving: bool = True) -> ProfileCostModel:
        """The fitted step cost; with the serving terms folded in when the profile has them and
        `serving` is true (the engine as served), the bare in-process engine otherwise."""
        return ProfileCostModel(self.coefficients, self.serving_overhead if serving else None)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d


def _term(value: Any, path: str, needed: str) -> None:
    """A finite number of seconds in [0, MAX_TERM_S], or a ConfigError naming the field."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    require(ok and 0 <= value <= MAX_TERM_S, path, value, f"a finite number in 0..{MAX_TERM_S:g} s ({needed})")


def parse_profile(data: Any, where: str) -> Profile:
    """A Profile from a decoded profile.json (`where` names it in errors): the same builder as a
    scenario's (types, allowed values, unknown keys), then Profile.validate. Every bad field is a
    ProfileError whose `field` is its dotted path (``coefficients.per_token_s``)."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a JSON object at the top level", field="")
    try:
        prof = build(Profile, data, "")
    except ConfigError as exc:
        raise ProfileError(f"{where}: {exc}", field=exc.field) from None
    keys = PROFILE_COEFFICIENTS + tuple(k for k in EXPERT_COEFFICIENTS if k in prof.coefficients)
    return replace(prof, coefficients={k: float(prof.coefficients[k]) for k in keys})


def shipped_profiles_dir() -> Path:
    return Path(str(resources.files(SHIPPED_PACKAGE).joinpath(SHIPPED_DIR)))


def list_shipped_profiles() -> list[str]:
    root = shipped_profiles_dir()
    return sorted(p.parent.name for p in root.glob(f"*/{PROFILE_FILE}")) if root.is_dir() else []


def _reject_constant(name: str) -> float:
    raise ProfileError(f"{name} is not a number a profile may hold (Python's JSON accepts NaN and Infinity; "
                       f"servesim does not)")


def read_json(f: Path) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity; every problem a one-line ProfileError naming the file."""
    try:
        text = f.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{f}: not UTF-8 text (byte {exc.start}); a profile is a JSON file") from None
    except OSError as exc:
        raise ProfileError(f"{f}: cannot read: {exc.strerror}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ProfileError as exc:
        raise ProfileError(f"{f}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{f}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ProfileError(f"{f}: nested too deeply to be a profile") from None


def load_profile(name_or_path: str | Path, base_dir: Path | None = None) -> Profile:
    """A shipped profile by name, or a profile folder (or its profile.json) by path."""
    candidates = []
    p = Path(name_or_path)
    if base_dir is not None and not p.is_absolute():
        candidates.append(base_dir / p)
    candidates += [p, shipped_profiles_dir() / str(name_or_path)]
    for c in candidates:
        f = c if c.suffix == ".json" else c / PROFILE_FILE
        if is_file(f):
            prof = parse_profile(read_json(f), str(f))
            return Profile(**{**prof.__dict__, "path": str(f.parent)})
    raise ProfileError(f"cost_model.profile: no profile {short_path(name_or_path)} (looked for {PROFILE_FILE} in "
                       f"{[str(c) for c in candidates]}); shipped profiles: {list_shipped_profiles()}")
