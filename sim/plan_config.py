"""Moved to sim/plan/config.py; this name stays importable (the UI's plan page, older scripts)."""
from .plan.config import CandidateConfig, PlanConfig, candidate_dict, candidate_scenario, describe, read_plan  # noqa: F401
