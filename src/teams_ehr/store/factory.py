"""Open a store from a URL (requirement C5): ``sqlite:///path``, ``sqlite://:memory:``, ``postgresql://…``.

URL forms (SQLAlchemy's conventions for SQLite):

* ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db``;
* ``sqlite://:memory:`` or ``sqlite:///:memory:`` — a private in-memory database;
* ``postgresql://user@host:port/db?options=-csearch_path%3Dschema`` (also ``postgres://``),
  passed to libpq unchanged.

psycopg is imported only for PostgreSQL URLs (it is the optional ``postgres`` extra). The store
is returned unopened: ``async with open_store(url, ...) as store:`` connects and
applies the migrations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from teams_ehr._redact import redact_url
from teams_ehr._types import Clock, utc_now
from teams_ehr.errors import ConfigurationError
from teams_ehr.store.crypto import FieldCipher
from teams_ehr.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from teams_ehr.store.postgres import PostgresStore
    from teams_ehr.store.protocol import Store

    def _both_are_stores(a: SqliteStore, b: PostgresStore) -> tuple[Store, Store]:
        """mypy checks here that both engines satisfy the whole protocol."""
        return a, b


__all__ = ["open_store", "sqlite_path"]


def sqlite_path(url: str) -> str:
    """The ``sqlite3`` path named by a ``sqlite://`` URL."""
    rest = url.removeprefix("sqlite://")
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    if not rest.startswith("/") or len(rest) < 2 or "?" in rest or "#" in rest:
        raise ConfigurationError(
            "use sqlite:///relative.db, sqlite:////absolute.db or sqlite://:memory:",
            reason="bad_store_url",
        )
    return rest[1:]


def open_store(
    url: str,
    *,
    encryption_key: bytes | Mapping[str, bytes],
    clock: Clock = utc_now,
    active_key_id: str | None = None,
) -> SqliteStore | PostgresStore:
    """A store for ``url``, with field encryption under ``encryption_key`` (32 bytes, or a
    mapping of key id to key with ``active_key_id`` naming the one that encrypts)."""
    cipher = FieldCipher(encryption_key, active=active_key_id)
    if url.startswith("sqlite://"):
        return SqliteStore(sqlite_path(url), cipher=cipher, clock=clock)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from teams_ehr.store.postgres import PostgresStore
        except ImportError:
            raise ConfigurationError(
                "PostgreSQL needs psycopg: pip install 'teams-ehr[postgres]'",
                reason="missing_dependency",
            ) from None
        return PostgresStore(url, cipher=cipher, clock=clock)
    raise ConfigurationError(
        f"unsupported store URL scheme: {redact_url(url).split(':', 1)[0]!r}",
        reason="bad_store_url",
    )
