"""Shared test configuration: anyio on asyncio and trio, hypothesis profiles, canaries."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from pg import POSTGRES_BASE

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("nightly", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Pure SDK code runs on both anyio backends; msgraph tests override this with asyncio."""
    return str(request.param)


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A DSN on the real PostgreSQL (:data:`pg.POSTGRES_BASE`) whose ``search_path``
    is a fresh schema, dropped after the test, so parallel runs never collide."""
    import psycopg

    schema = f"teams_ehr_test_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
