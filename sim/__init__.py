"""servesim's simulation core: scenario -> SimPy model of serving replicas -> flat records -> metrics."""

import logging as _logging

# A library does not decide where its log records go: the CLI (`--log-level`) attaches a handler;
# without one, records are dropped instead of reaching Python's last-resort stderr handler.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
