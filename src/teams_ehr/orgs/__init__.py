"""Organizations: registry, approval state machine, integration records, and the admin console
that manages them (docs/guides/ehr-analyst.md)."""
