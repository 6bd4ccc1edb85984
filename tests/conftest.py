"""Shared helpers: small scenarios built in code, so each test states what it depends on."""
from __future__ import annotations

import copy

import pytest

from sim.scenario import scenario_from_dict

BASE = {
    "name": "test",
    "seed": 7,
    "workload": {
        "arrival": {"kind": "poisson", "rate_per_s": 4.0},
        "num_requests": 400,
        "prompt_tokens": {"kind": "lognormal", "mean": 400, "sigma": 0.6, "min": 16, "max": 2048},
        "output_tokens": {"kind": "lognormal", "mean": 150, "sigma": 0.5, "min": 4, "max": 1024},
    },
    "model": "llama-3.1-8b",
    "hardware": {"gpu": "a100-80gb-sxm"},
    "serving": {"replicas": 1, "max_model_len": 4096, "scheduler": {"policy": "continuous"}},
    "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
}


def merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        # A distribution or arrival process with a new `kind` replaces the old one wholesale.
        if isinstance(v, dict) and isinstance(out.get(k), dict) and "kind" not in v:
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_scenario(patch: dict | None = None, overrides: list[str] | None = None):
    return scenario_from_dict(merge(BASE, patch or {}), overrides or [])


@pytest.fixture
def scenario_factory():
    return make_scenario
