"""Shared helpers: small scenarios built in code, so each test states what it depends on."""
from __future__ import annotations

import pytest

from sim.scenario import patch_scenario, scenario_from_dict

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


merge = patch_scenario  # a section with a new `kind` replaces the old one whole


def make_scenario(patch: dict | None = None, overrides: list[str] | None = None):
    return scenario_from_dict(merge(BASE, patch or {}), overrides or [])


@pytest.fixture
def scenario_factory():
    return make_scenario
