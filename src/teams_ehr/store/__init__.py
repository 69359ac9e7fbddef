"""Storage behind one protocol: SQLite (default) and PostgreSQL (requirements C5, C6)."""
