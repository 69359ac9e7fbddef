"""Where the suite finds the real PostgreSQL server: ``$TEAMS_EHR_TEST_PG`` or the machine's own.

Every test that needs PostgreSQL takes its DSN from here (never a literal), so a developer with
the server elsewhere sets one variable: ``TEAMS_EHR_TEST_PG=postgresql://me@db:5433/test``.
"""

from __future__ import annotations

import os

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_BASE = os.environ.get("TEAMS_EHR_TEST_PG") or DEFAULT_POSTGRES
