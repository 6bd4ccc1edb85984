"""Explicit randomness: one seed per run, one independent generator per random source.

Streams are keyed by name (and an index, e.g. the replica), not by the order in
which they are created, so adding a new random source never shifts another's numbers.
"""
from __future__ import annotations

import zlib

import numpy as np


def stream(seed: int, name: str, index: int = 0) -> np.random.Generator:
    """The generator for random source `name` (e.g. "arrivals", "acceptance") of run `seed`."""
    key = zlib.crc32(name.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(key, int(index))))
