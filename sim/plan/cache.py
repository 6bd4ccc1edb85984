"""The planner's simulations, kept on disk: re-planning the same inputs re-prices, it does not re-simulate.

A simulated point (one `Task`: a scenario, a seed, a warm-up) always gives the same `Sample`,
so it can be stored under a key that names everything its numbers depend on:

- the resolved scenario as YAML, less what a simulation never reads (prices, SLOs, names, the
  scenario's own seed: the task carries its seed);
- the task's seed, warm-up and screening flag;
- the code and data that turn a scenario into numbers: every `.py` and catalog file under `sim/`
  (the profile reader, sim/profile.py, among them), the shipped profiles, the engine terms, and the
  contents of a profile the scenario names by path.

Change any of those and the key changes, so a stale entry is never read; change a price, an SLO
or a discount and every entry still applies. Entries are small `.npz` files (the scored
latencies), one per task, under `$SERVESIM_CACHE_DIR`, else `$XDG_CACHE_HOME/servesim/plan`,
else `~/.cache/servesim/plan`. Deleting the folder is always safe.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..scenario import scenario_to_yaml
from .search import Sample, Task

_ROOT = Path(__file__).resolve().parent.parent  # sim/


def default_folder() -> Path:
    if os.environ.get("SERVESIM_CACHE_DIR"):
        return Path(os.environ["SERVESIM_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "servesim" / "plan"


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the code and data that turn a scenario into numbers (computed once per process)."""
    h = hashlib.sha256()
    files = sorted(_ROOT.rglob("*.py")) + sorted(_ROOT.rglob("*.yaml"))
    calibration = _ROOT.parent / "calibration"
    files += [*sorted((calibration / "profiles").glob("*/profile.json")),
              calibration / "engine_terms.py", calibration / "profiles" / "engine_terms.json"]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(_ROOT.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _profile_bytes(task: Task) -> bytes:
    """The contents of a profile named by path (a shipped one is in the code fingerprint already)."""
    name = task.scenario.cost_model.profile
    if not name:
        return b""
    from ..profile import load_profile  # the same lookup the simulation does

    prof = load_profile(name, base_dir=Path(task.scenario.base_dir) if task.scenario.base_dir else None)
    f = Path(prof.path) / "profile.json" if prof.path else None
    return f.read_bytes() if f is not None and f.is_file() else b""


def task_key(task: Task) -> str:
    """What the task's sample depends on, hashed (see the module docstring)."""
    sc = task.scenario
    neutral = dataclasses.replace(
        sc, hardware=dataclasses.replace(sc.hardware, price_usd_per_gpu_hour=None, price_discount=0.0),
        slo=type(sc.slo)(), name="", description="", seed=0)
    h = hashlib.sha256()
    h.update(code_fingerprint().encode())
    h.update(scenario_to_yaml(neutral).encode())
    h.update(_profile_bytes(task))
    h.update(json.dumps([task.seed, repr(float(task.warmup_s)), task.screening]).encode())
    return h.hexdigest()[:40]


class SampleCache:
    """Samples by task key (`task_key`: compute it once per task, it loads and hashes what the task
    reads) in `folder`; a missing, partial or unreadable entry is a miss."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, key: str) -> Sample | None:
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                sample = Sample(seed=int(meta["seed"]), stable=bool(meta["stable"]), status=str(meta["status"]),
                                ttft_s=z["ttft_s"], tpot_s=z["tpot_s"], e2e_s=z["e2e_s"], wall_s=0.0)
        except (OSError, KeyError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return sample

    def put(self, key: str, sample: Sample) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = json.dumps({"seed": sample.seed, "stable": sample.stable, "status": sample.status,
                               "wall_s": sample.wall_s})
            # Write to a temporary file and rename: a reader never sees half an entry.
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=np.array(meta), ttft_s=sample.ttft_s, tpot_s=sample.tpot_s, e2e_s=sample.e2e_s)
            os.replace(tmp, path)
        except OSError:
            pass  # a cache that cannot write is only slower
