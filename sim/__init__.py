"""servesim's simulation core: scenario -> SimPy model of serving replicas -> flat records -> metrics."""
