"""Fixtures of the store contract suite: one test body, every engine (SPEC C5).

Tests that take the ``engine`` fixture run on SQLite (a file and ``:memory:``, each on asyncio
and trio) and on PostgreSQL (asyncio only: psycopg's async connections do not run on trio), at
``$TEAMS_EHR_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432/test``, tests/pg.py). Each PostgreSQL test gets its own schema
(``teams_ehr_test_<random>``, selected through ``search_path`` in the DSN) that is dropped
afterwards, so parallel runs never collide.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from store_helpers import EVENT_BUFFER, PG_BASE, FakeClock, StoreMaker

from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.postgres import PostgresStore
from teams_ehr.store.sqlite import SqliteStore


def _trio_runs_anyio_threads() -> bool:
    """anyio 4.16 needs trio >= 0.32 (``abandon_on_cancel``); some machines have 0.22."""
    import trio.to_thread

    return "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters


TRIO_OK = _trio_runs_anyio_threads()

ENGINES = [
    pytest.param("sqlite-file", "asyncio", id="sqlite-file-asyncio"),
    pytest.param("sqlite-file", "trio", id="sqlite-file-trio"),
    pytest.param("sqlite-memory", "asyncio", id="sqlite-memory-asyncio"),
    pytest.param("sqlite-memory", "trio", id="sqlite-memory-trio"),
    pytest.param("postgres", "asyncio", id="postgres", marks=pytest.mark.postgres),
]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" in metafunc.fixturenames:
        wanted = getattr(metafunc.module, "ENGINES_USED", None)
        params = [p for p in ENGINES if wanted is None or p.values[0] in wanted]
        metafunc.parametrize(("engine", "anyio_backend"), params)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def key() -> bytes:
    return bytes(range(32))


@pytest.fixture
def cipher(key: bytes) -> FieldCipher:
    return FieldCipher(key)


def _create_schema() -> str:
    schema = f"teams_ehr_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema


def _drop_schema(schema: str) -> None:
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _dsn(schema: str) -> str:
    return f"{PG_BASE}?options=-csearch_path%3D{schema}"


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN whose ``search_path`` is a fresh, empty schema, dropped after the test."""
    schema = _create_schema()
    try:
        yield _dsn(schema)
    finally:
        _drop_schema(schema)


@pytest.fixture(scope="session")
def pg_session_schema() -> Iterator[str]:
    """One schema per test session (migrated by the first store; DDL is slow to repeat)."""
    schema = _create_schema()
    try:
        yield schema
    finally:
        _drop_schema(schema)


@pytest.fixture
def pg_shared_dsn(pg_session_schema: str) -> str:
    """The session schema with every row deleted (triggers off for the cleanup only)."""
    with psycopg.connect(PG_BASE, autocommit=True) as conn, conn.transaction():
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name <> 'schema_migrations'",
            (pg_session_schema,),
        ).fetchall()
        conn.execute("SET LOCAL session_replication_role = replica")
        for (table,) in tables:
            conn.execute(f"DELETE FROM {pg_session_schema}.{table}")
    return _dsn(pg_session_schema)


@pytest.fixture
def maker(
    engine: str,
    tmp_path: Path,
    cipher: FieldCipher,
    clock: FakeClock,
    request: pytest.FixtureRequest,
) -> StoreMaker:
    if request.getfixturevalue("anyio_backend") == "trio" and not TRIO_OK:
        pytest.skip("installed trio is older than anyio needs (trio>=0.32): SQLite-on-trio skipped")
    dsn = request.getfixturevalue("pg_shared_dsn") if engine == "postgres" else None
    return StoreMaker(engine, tmp_path / "store.db", cipher, clock, dsn)


@pytest.fixture
async def store(
    maker: StoreMaker, anyio_backend: str
) -> AsyncIterator[SqliteStore | PostgresStore]:
    async with maker.make(event_buffer=EVENT_BUFFER) as opened:
        yield opened


@pytest.fixture
async def other_instance(
    maker: StoreMaker, store: SqliteStore | PostgresStore, anyio_backend: str
) -> AsyncIterator[SqliteStore | PostgresStore]:
    """A second instance over the same database (the same object for ``:memory:``)."""
    if not maker.shares_database:
        yield store
        return
    async with maker.make(event_buffer=EVENT_BUFFER) as opened:
        yield opened
