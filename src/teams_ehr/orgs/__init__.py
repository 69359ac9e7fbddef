"""Organizations: registry, approval state machine, integration records (SPEC C1, C2)."""
