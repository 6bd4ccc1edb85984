"""Moved to sim/plan/planner.py; this name stays importable (the UI's plan page, older scripts)."""
from .plan.planner import HOURS_PER_DAY, Plan, pareto_front, plan  # noqa: F401
