"""The serving engine's own time, per engine version: what a composed GPU profile leaves out.

A GPU profile composed from per-operator kernel tables (calibration/aiconfigurator_import.py)
prices the kernels of a step and nothing else: it is a lower bound. The engine adds CPU time
per step (scheduling, input preparation) and per sequence (sampling, output processing,
streaming), and the API server adds time between a client and the engine, in both directions.
Those terms differ between engine releases by milliseconds per step, so they are data, one
entry per engine version, fitted on measured serving runs by `python -m calibration.engine_fit`
(provenance, rows used, train/held-out split and fit error stored beside every entry).

    calibration/profiles/engine_terms.json
    {"engines": {"vllm": {"default_version": "0.19.0",
                          "versions": {"0.12.0": {"step_overhead_s": ..., "per_seq_overhead_s": ...,
                                                  "compute_scale": ..., "response_latency_s": ...,
                                                  "request_jitter_s": ..., "roofline": {...},
                                                  "overlap": false, "exposed_step_s": 0.0,  # optional
                                                  "provenance": {...}}},
                          "compute_scale_by_gpu": {"h100-sxm": ..., ...}}}}

`compute_scale` multiplies a composed profile's kernel time: what such profiles miss on a GPU, fitted
on the training models (per GPU where they ran on it; the version's `compute_scale` elsewhere).

`overlap` (optional, default false): the version's engine time runs beside the kernels
(ServingOverhead.overlap: a step is the longer of the two, plus `exposed_step_s`), as vLLM's async
scheduling does (`async_scheduling_default`).

With `overlap_rule: async_default` beside the versions, a version without data takes the nearest
version's terms but overlaps or not as that version of vLLM does by default.

`engine_terms(name, version)` answers with the terms and, when the version has no data, a
note saying which version's terms stand in for it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .configio import ConfigError
from .cost_model import ServingOverhead

TERMS_FILE = "engine_terms.json"
# The fitted terms (ServingOverhead's fields, less the host floor: a GPU host does not saturate
# in these runs, and the data cannot see one).
TERM_NAMES = ("compute_scale", "step_overhead_s", "per_seq_overhead_s", "response_latency_s", "request_jitter_s")


@dataclass(frozen=True)
class EngineTerms:
    engine: str
    version: str  # the version whose data the terms come from
    overhead: ServingOverhead
    roofline_step_overhead_s: float | None  # the roofline's fixed per-step cost re-derived on the same rows
    roofline_per_seq_overhead_s: float | None
    provenance: dict[str, Any]
    note: str = ""  # non-empty when the asked-for version had no data and another's terms stand in

    @property
    def label(self) -> str:
        return f"{self.engine} {self.version} engine terms"


def terms_path() -> Path:
    return Path(str(resources.files("calibration").joinpath("profiles", TERMS_FILE)))


@lru_cache(maxsize=4)
def _read(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        return {"engines": {}}
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON ({exc})") from None
    for name, eng in data.get("engines", {}).items():
        for version, entry in eng.get("versions", {}).items():
            for key in TERM_NAMES:
                v = entry.get(key)
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                    raise ConfigError(f"{p}: field 'engines.{name}.versions.{version}.{key}' must be a number >= 0, "
                                      f"got {v!r}")
            if not isinstance(entry.get("overlap", False), bool):
                raise ConfigError(f"{p}: field 'engines.{name}.versions.{version}.overlap' must be true or false, "
                                  f"got {entry['overlap']!r}")
            ex = entry.get("exposed_step_s", 0.0)
            if not isinstance(ex, (int, float)) or isinstance(ex, bool) or ex < 0:
                raise ConfigError(f"{p}: field 'engines.{name}.versions.{version}.exposed_step_s' must be a number "
                                  f">= 0, got {ex!r}")
            if "source" not in entry.get("provenance", {}):
                raise ConfigError(f"{p}: field 'engines.{name}.versions.{version}.provenance.source' is missing")
        for gpu, f in eng.get("compute_scale_by_gpu", {}).items():
            if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0.1 <= f <= 10:
                raise ConfigError(f"{p}: field 'engines.{name}.compute_scale_by_gpu.{gpu}' must be a number in "
                                  f"0.1 .. 10, got {f!r}")
        if eng.get("overlap_rule", "none") not in ("none", "all", "async_default"):
            raise ConfigError(f"{p}: field 'engines.{name}.overlap_rule' must be one of none, all, async_default; "
                              f"got {eng['overlap_rule']!r}")
        if eng.get("default_version") not in eng.get("versions", {}):
            raise ConfigError(f"{p}: field 'engines.{name}.default_version' must name one of its versions")
    return data


# vLLM overlaps its engine's CPU work with the GPU's (async scheduling: two batches in flight, step N+1
# scheduled while step N runs) by default from 0.14.0 on: SchedulerConfig.async_scheduling is False in
# 0.12.0 and 0.13.0 and None ("on unless something incompatible is set": pooling models, some speculative
# methods, pipeline parallelism on the V1 runner, an executor without support) from 0.14.0 (read in the
# released wheels' vllm/config/scheduler.py and vllm/config/vllm.py).
ASYNC_SCHEDULING_DEFAULT_FROM = (0, 14)


def async_scheduling_default(engine: str, version: str | None) -> bool | None:
    """Whether `engine` at `version` overlaps its CPU work with the GPU's by default (vLLM's async
    scheduling); None when the version does not say (not recorded, unparsable). A nightly build is
    taken as recent, i.e. after 0.14 (the nightlies in the measured data serve models released after it)."""
    if engine != "vllm" or not version:
        return None
    if version.startswith("nightly"):
        return True
    key = _version_key(version)
    if any(k < 0 for k in key):
        return None
    return key[:2] >= ASYNC_SCHEDULING_DEFAULT_FROM


# vLLM's default gpu_memory_utilization: 0.9 up to 0.19.x, 0.92 from 0.20.0 on (vllm/config/cache.py in
# the released sdists: 0.19.1 has `default=0.9`, 0.20.0 `default=0.92`; 0.11, 0.18 0.9; 0.21, 0.26, 0.32
# 0.92). Seen on an H200 with vLLM 0.26.0: "Desired GPU memory utilization is (0.92, 128.62 GiB)"
# (docs/gpu_runs/h200-2026-11-27-vllm, docs/gpu_vllm_h200.md).
GPU_MEMORY_UTILIZATION_092_FROM = (0, 20)


def gpu_memory_utilization_default(engine: str = "vllm", version: str | None = None) -> float:
    """The share of GPU memory `engine` at `version` takes when none is set: 0.92 for vLLM 0.20 and
    later, else 0.9 (older releases; a version not given is the default version of the engine terms,
    0.19.0 today; a nightly or an unparsable version keeps 0.9, what the measured data's runs used)."""
    if engine != "vllm":
        return 0.9
    if not version:
        versions = known_versions(engine)
        version = newest_release(versions) if versions else None
    key = _version_key(version) if version else (-1,)
    if any(k < 0 for k in key):
        return 0.9
    return 0.92 if key[:2] >= GPU_MEMORY_UTILIZATION_092_FROM else 0.9


def known_versions(engine: str = "vllm", path: Path | None = None) -> list[str]:
    eng = _read(str(path or terms_path())).get("engines", {}).get(engine, {})
    return sorted(eng.get("versions", {}), key=_version_key)


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in v.split("."))


def newest_release(versions) -> str:
    """The default version of an engine's terms: its newest numbered release with data (a nightly only
    when there is nothing else). A scenario that names no version is served by the vLLM one installs
    today, not by whichever release happens to have the most measured rows; rows of the measured data
    with no recorded version are simulated the same way."""
    releases = [v for v in versions if all(k >= 0 for k in _version_key(v))]
    return max(releases or list(versions), key=lambda v: (_version_key(v), v))


def _nearest(version: str, versions: list[str], default: str) -> str:
    """The version with data closest to `version` (an unparsable one gets the default)."""
    key = _version_key(version)
    if not version or any(k < 0 for k in key):
        return default
    return min(versions, key=lambda v: (tuple(abs(a - b) for a, b in zip(_version_key(v), key)), v))


def engine_terms(engine: str = "vllm", version: str | None = None, path: Path | None = None,
                 gpu: str | None = None) -> EngineTerms | None:
    """The terms of `engine` at `version` (None: the default version, its newest release: newest_release).
    A version without data gets the nearest version's terms and a note that says so; an engine
    without any data gives None. `gpu` (a catalog name): the kernel-time factor fitted for that GPU's
    composed profiles where there is one (`compute_scale_by_gpu`), else the version's `compute_scale`."""
    eng = _read(str(path or terms_path())).get("engines", {}).get(engine)
    if not eng:
        return None
    versions = eng["versions"]
    note = ""
    if version is None:
        used = eng["default_version"]
    elif version in versions:
        used = version
    else:
        used = _nearest(version, sorted(versions, key=_version_key), eng["default_version"])
        note = (f"engine: {engine} {version} has no measured engine terms (data exists for "
                f"{', '.join(sorted(versions, key=_version_key))}); using {engine} {used}'s")
    e = versions[used]
    overlap = bool(e.get("overlap", False))
    if used != version and version and eng.get("overlap_rule") == "async_default":
        # The terms are another version's; whether the engine overlaps is the asked version's own default.
        own = async_scheduling_default(engine, version)
        overlap = overlap if own is None else own
    scale = eng.get("compute_scale_by_gpu", {}).get((gpu or "").lower(), e["compute_scale"])
    ov = ServingOverhead(compute_scale=float(scale), step_overhead_s=float(e["step_overhead_s"]),
                         per_seq_overhead_s=float(e["per_seq_overhead_s"]), host_per_seq_s=0.0,
                         response_latency_s=float(e["response_latency_s"]),
                         request_jitter_s=float(e["request_jitter_s"]), overlap=overlap,
                         exposed_step_s=float(e.get("exposed_step_s", 0.0)))
    roof = e.get("roofline") or {}
    return EngineTerms(engine=engine, version=used, overhead=ov,
                       roofline_step_overhead_s=roof.get("step_overhead_s"),
                       roofline_per_seq_overhead_s=roof.get("per_seq_overhead_s"),
                       provenance=e["provenance"], note=note)
