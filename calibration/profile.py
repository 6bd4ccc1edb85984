"""Calibration profiles, the writing side: `save_profile` writes what sim/profile.py reads.

The format (the Profile dataclass, its validation, `load_profile` and the shipped profiles'
lookup) belongs to the simulation core, in sim/profile.py; it is re-exported here so that
calibration code and older imports (`from calibration.profile import load_profile`) keep working.
A profile folder also holds the measurements behind the fit, `MEASUREMENTS_FILE`.
"""
from __future__ import annotations

import json
from pathlib import Path

from sim.profile import (BLOCK_SIZES, MAX_TERM_S, PROFILE_FILE, SHIPPED_DIR, Profile, ProfileError,  # noqa: F401
                         list_shipped_profiles, load_profile, parse_profile, read_json, shipped_profiles_dir)

MEASUREMENTS_FILE = "measurements.csv"  # one row per measured step (calibration/sweep.py)


def save_profile(profile: Profile, folder: str | Path) -> Path:
    """Write `profile` as <folder>/profile.json, after checking it reads back (never write what
    load_profile would refuse)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parse_profile(profile.to_json(), str(folder / PROFILE_FILE))
    out = folder / PROFILE_FILE
    out.write_text(json.dumps(profile.to_json(), indent=2, sort_keys=True) + "\n")
    return out
