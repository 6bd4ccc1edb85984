"""Moved to sim/engine_terms.py (the core reads the engine terms; calibration/engine_fit.py writes
them); these names stay importable from here."""
from sim.engine_terms import (TERM_NAMES, TERMS_FILE, EngineTerms, _read, engine_terms,  # noqa: F401
                              known_versions, terms_path)
