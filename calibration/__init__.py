"""Calibration: measure real engine steps, fit cost curves, write profiles with provenance."""
