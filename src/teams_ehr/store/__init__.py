"""Storage behind one protocol: SQLite (default) and PostgreSQL (SPEC C5, C6)."""
