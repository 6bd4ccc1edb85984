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
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, get_args

from .configio import ConfigError, is_file, short_path, short_repr
from .cost_model import PROFILE_COEFFICIENTS, SERVING_TERMS, ProfileCostModel, ServingOverhead
from .quantization import KvDtype, WeightDtype

SHIPPED_PACKAGE, SHIPPED_DIR = "calibration", "profiles"  # where the shipped profiles live (package data)
PROFILE_FILE = "profile.json"


class ProfileError(ConfigError):
    """A profile file is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Profile:
    name: str
    coefficients: dict[str, float]  # PROFILE_COEFFICIENTS, seconds per unit
    model: str  # catalog model name (or architecture description for custom configs)
    device: str  # what was measured, as the engine/driver reported it
    gpu: str | None  # catalog GPU name this profile stands for (None: not a catalog GPU, e.g. a CPU)
    tensor_parallel: int
    weight_dtype: str
    kv_dtype: str
    block_size_tokens: int
    num_kv_blocks: int | None  # KV blocks the engine actually allocated (None if not measured)
    provenance: dict[str, Any]  # source, engine, engine_version, date, command, ...
    fit: dict[str, Any] = field(default_factory=dict)  # per-phase MAPE / worst error on held-out points
    # What serving adds to the in-process step (calibration/serving.py): SERVING_TERMS plus its own
    # provenance and fit; None if never measured against the real server.
    serving: dict[str, Any] | None = None
    path: str | None = None  # folder it was loaded from

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


MAX_TERM_S = 10.0  # no coefficient or serving term prices a unit (a token, a sequence, a step) above 10 s
BLOCK_SIZES = (1, 8, 16, 32, 64, 128)


def _number(value: Any, where: str, field_name: str, needed: str) -> float:
    """A finite number in [0, MAX_TERM_S], or a ProfileError naming the field."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 <= value <= MAX_TERM_S:
        raise ProfileError(f"{where}: field {field_name!r} must be a finite number in 0..{MAX_TERM_S:g} s, "
                           f"got {short_repr(value)} ({needed})")
    return float(value)


_REQUIRED = {"name": str, "coefficients": dict, "model": str, "device": str, "tensor_parallel": int,
             "weight_dtype": str, "kv_dtype": str, "block_size_tokens": int, "provenance": dict}


def parse_profile(data: Any, where: str) -> Profile:
    """A Profile from a decoded profile.json (`where` names it in errors); every bad field a ProfileError."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expected a JSON object at the top level")
    for key, tp in _REQUIRED.items():
        if key not in data:
            raise ProfileError(f"{where}: field {key!r} is missing")
        if not isinstance(data[key], tp) or isinstance(data[key], bool) and tp is int:
            raise ProfileError(f"{where}: field {key!r} must be {tp.__name__}, got {short_repr(data[key])}")
    # fp32: a CPU measurement (PyTorch harness); scenarios cannot ask for it, so it never matches one.
    for key, allowed in (("weight_dtype", (*get_args(WeightDtype), "fp32")), ("kv_dtype", (*get_args(KvDtype), "fp32"))):
        if data[key] not in allowed:
            raise ProfileError(f"{where}: field {key!r} got {short_repr(data[key])}; allowed {list(allowed)}")
    if data["block_size_tokens"] not in BLOCK_SIZES:
        raise ProfileError(f"{where}: field 'block_size_tokens' got {short_repr(data['block_size_tokens'])}; "
                           f"allowed {list(BLOCK_SIZES)}")
    if data["tensor_parallel"] not in (1, 2, 4, 8, 16):
        raise ProfileError(f"{where}: field 'tensor_parallel' got {short_repr(data['tensor_parallel'])}; "
                           f"allowed [1, 2, 4, 8, 16]")
    coeffs = data["coefficients"]
    for key in PROFILE_COEFFICIENTS:
        _number(coeffs.get(key), where, f"coefficients.{key}", f"needed: {list(PROFILE_COEFFICIENTS)}")
    if not any(coeffs[key] > 0 for key in PROFILE_COEFFICIENTS):
        raise ProfileError(f"{where}: field 'coefficients' are all 0: every step would take no time; "
                           f"refit the profile (servesim calibrate fit)")
    unknown = sorted(set(coeffs) - set(PROFILE_COEFFICIENTS))
    if unknown:
        raise ProfileError(f"{where}: field 'coefficients.{unknown[0]}' is unknown; allowed {list(PROFILE_COEFFICIENTS)}")
    serving = data.get("serving")
    if serving is not None:
        if not isinstance(serving, dict):
            raise ProfileError(f"{where}: field 'serving' must be an object or null, got {short_repr(serving)}")
        for key in SERVING_TERMS:
            _number(serving.get(key), where, f"serving.{key}", f"needed: {list(SERVING_TERMS)}")
        if serving["compute_scale"] <= 0:
            raise ProfileError(f"{where}: field 'serving.compute_scale' must be > 0, got {serving['compute_scale']!r}")
        if "source" not in (serving.get("provenance") or {}):
            raise ProfileError(f"{where}: field 'serving.provenance.source' is missing (which server run?)")
    if "source" not in data["provenance"]:
        raise ProfileError(f"{where}: field 'provenance.source' is missing (where do these numbers come from?)")
    blocks = data.get("num_kv_blocks")
    if blocks is not None and (not isinstance(blocks, int) or isinstance(blocks, bool) or not 1 <= blocks <= 10**9):
        raise ProfileError(f"{where}: field 'num_kv_blocks' must be an integer in 1..1,000,000,000 or null, "
                           f"got {short_repr(blocks)}")
    known = {f for f in Profile.__dataclass_fields__} - {"path"}
    extra = sorted(set(data) - known)
    if extra:
        raise ProfileError(f"{where}: field {short_repr(extra[0])} is unknown; allowed {sorted(known)}")
    return Profile(**{**data, "coefficients": {k: float(coeffs[k]) for k in PROFILE_COEFFICIENTS}})


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
