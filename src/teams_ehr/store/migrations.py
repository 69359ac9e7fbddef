"""Versioned schema migrations for SQLite and PostgreSQL (requirement C5; threats T27, T30).

:data:`MIGRATIONS` is an ordered list of :class:`Migration` (version, name, statements per
dialect). Applied versions are recorded in ``schema_migrations``. Applying is idempotent and runs
in one transaction: on SQLite under ``BEGIN IMMEDIATE`` (the database write lock), on PostgreSQL
after ``pg_advisory_xact_lock`` keyed by the current schema, so two instances starting together
apply each version exactly once (PostgreSQL docs §13.3.5 "Advisory Locks").

Schema rules (the allow-list test in ``tests/store`` freezes every table and column):

* Every table is keyed or scoped by ``org_id``, except the issuer registry (keyed by canonical base
  URL) and lookups by unguessable hashes (pending state, join-link token, nonces, rate buckets).
* About people only ``identity_links`` (EHR user id ↔ Entra ``tid``/``oid``) is stored. No names,
  e-mail, UPN, patient or MRN columns exist.
* ``payload``, ``join_url`` and ``client_state`` hold AES-GCM ciphertext (``store.crypto``).
* ``audit_log`` is append-only: triggers refuse UPDATE and DELETE at the database level.
* SQLite stores times as integer microseconds since the Unix epoch (UTC); PostgreSQL as
  ``timestamptz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MIGRATIONS", "Dialect", "Migration", "SCHEMA_MIGRATIONS_DDL", "pending_migrations"]

Dialect = Literal["sqlite", "postgres"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


SCHEMA_MIGRATIONS_DDL: dict[Dialect, str] = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
    ),
    "postgres": (
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    ),
}


def _tables(ts: str, blob: str, bigint_id: str) -> tuple[str, ...]:
    """Version 1 tables; ``ts``/``blob``/``bigint_id`` are the dialect's column types."""
    return (
        "CREATE TABLE organizations (org_id TEXT PRIMARY KEY, version INTEGER NOT NULL, "
        "document TEXT NOT NULL)",
        "CREATE TABLE issuer_bindings (canonical_base TEXT PRIMARY KEY, org_id TEXT NOT NULL, "
        "environment TEXT NOT NULL CHECK (environment IN ('test', 'production')))",
        "CREATE INDEX issuer_bindings_org ON issuer_bindings (org_id)",
        f"CREATE TABLE audit_log (org_id TEXT NOT NULL, seq INTEGER NOT NULL, at {ts} NOT NULL, "
        "actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL, "
        "PRIMARY KEY (org_id, seq))",
        f"CREATE TABLE pending_authorizations (state_key TEXT PRIMARY KEY, org_id TEXT NOT NULL, "
        f"payload {blob} NOT NULL, expires_at {ts} NOT NULL)",
        "CREATE INDEX pending_authorizations_expiry ON pending_authorizations (expires_at)",
        f"CREATE TABLE nonces (namespace TEXT NOT NULL, nonce_key TEXT NOT NULL, "
        f"expires_at {ts} NOT NULL, PRIMARY KEY (namespace, nonce_key))",
        "CREATE INDEX nonces_expiry ON nonces (expires_at)",
        f"CREATE TABLE rate_counters (bucket TEXT NOT NULL, window_start {ts} NOT NULL, "
        "hits INTEGER NOT NULL, PRIMARY KEY (bucket, window_start))",
        f"CREATE TABLE identity_links (org_id TEXT NOT NULL, ehr_issuer TEXT NOT NULL, "
        "ehr_user_id TEXT NOT NULL, tenant_id TEXT NOT NULL, object_id TEXT NOT NULL, "
        f"linked_at {ts} NOT NULL, PRIMARY KEY (org_id, ehr_issuer, ehr_user_id))",
        f"CREATE TABLE meetings (org_id TEXT NOT NULL, external_id TEXT NOT NULL, "
        f"organizer_oid TEXT NOT NULL, meeting_id TEXT NOT NULL, join_url {blob} NOT NULL, "
        f"start_at {ts} NOT NULL, end_at {ts} NOT NULL, "
        "state TEXT NOT NULL CHECK (state IN ('active', 'cancelled')), department TEXT, "
        "PRIMARY KEY (org_id, external_id))",
        "CREATE INDEX meetings_meeting_id ON meetings (meeting_id)",
        f"CREATE TABLE join_links (token_hash TEXT PRIMARY KEY, org_id TEXT NOT NULL, "
        f"external_id TEXT NOT NULL, not_before {ts} NOT NULL, not_after {ts} NOT NULL, "
        "revoked BOOLEAN NOT NULL)",
        "CREATE INDEX join_links_meeting ON join_links (org_id, external_id)",
        f"CREATE TABLE subscriptions (subscription_id TEXT PRIMARY KEY, org_id TEXT NOT NULL, "
        f"external_id TEXT NOT NULL, client_state {blob} NOT NULL, expires_at {ts} NOT NULL, "
        "state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'removed')))",
        "CREATE INDEX subscriptions_expiry ON subscriptions (expires_at)",
        f"CREATE TABLE inbox (item_id {bigint_id}, org_id TEXT NOT NULL, "
        f"dedupe_key TEXT NOT NULL CHECK (length(dedupe_key) > 0), payload {blob}, "
        f"received_at {ts} NOT NULL, leased_by TEXT, lease_until {ts}, processed_at {ts}, "
        "UNIQUE (org_id, dedupe_key))",
        "CREATE INDEX inbox_open ON inbox (item_id) WHERE processed_at IS NULL",
        f"CREATE TABLE outbox (item_id {bigint_id}, org_id TEXT NOT NULL, "
        "idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) > 0), "
        f"kind TEXT NOT NULL CHECK (length(kind) > 0), payload {blob}, "
        "state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'delivered', 'dead')), "
        f"not_before {ts} NOT NULL, created_at {ts} NOT NULL, attempts INTEGER NOT NULL, "
        f"last_reason TEXT, leased_by TEXT, lease_until {ts}, delivered_at {ts}, "
        "UNIQUE (org_id, idempotency_key))",
        "CREATE INDEX outbox_due ON outbox (state, not_before)",
        f"CREATE TABLE attendance_facts (org_id TEXT NOT NULL, fact_key TEXT NOT NULL, "
        "external_id TEXT NOT NULL, kind TEXT NOT NULL, role TEXT NOT NULL, "
        f"participant_key TEXT NOT NULL, at {ts} NOT NULL, department TEXT, "
        "PRIMARY KEY (org_id, fact_key))",
        "CREATE INDEX attendance_facts_meeting ON attendance_facts (org_id, external_id)",
        "CREATE INDEX attendance_facts_time ON attendance_facts (org_id, at)",
    )


_SQLITE_AUDIT_GUARDS = (
    "CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
)

_POSTGRES_AUDIT_GUARDS = (
    "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE TRIGGER audit_log_append_only_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
)


def _retention(ts: str) -> tuple[str, ...]:
    """Version 2: when a row was dead-lettered (existing dead rows count from their last due
    time), and an index for the purge of processed inbox rows (``SqlStore.purge_expired``)."""
    return (
        f"ALTER TABLE outbox ADD COLUMN dead_at {ts}",
        "UPDATE outbox SET dead_at = not_before WHERE state = 'dead'",
        "CREATE INDEX inbox_processed ON inbox (processed_at) WHERE processed_at IS NOT NULL",
    )


def _attendance_setup(ts: str) -> tuple[str, ...]:
    """Version 3: validation-handshake windows, one row each (``handshake_id`` is random, no
    organization data), the durable queue of meeting subscriptions still to create, one row per
    meeting (docs/guides/attendance.md#subscription-setup), and the indexes its sweep for
    meetings without a setup uses."""
    return (
        f"CREATE TABLE handshakes (handshake_id TEXT PRIMARY KEY, kinds TEXT NOT NULL, "
        f"expires_at {ts} NOT NULL)",
        "CREATE INDEX handshakes_expiry ON handshakes (expires_at)",
        f"CREATE TABLE subscription_setups (org_id TEXT NOT NULL, external_id TEXT NOT NULL, "
        "state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'abandoned')), "
        f"not_before {ts} NOT NULL, created_at {ts} NOT NULL, attempts INTEGER NOT NULL, "
        f"last_reason TEXT, leased_by TEXT, lease_until {ts}, finished_at {ts}, "
        f"keep_until {ts} NOT NULL, PRIMARY KEY (org_id, external_id))",
        "CREATE INDEX subscription_setups_due ON subscription_setups (state, not_before)",
        "CREATE INDEX meetings_end ON meetings (end_at)",
        "CREATE INDEX subscriptions_meeting ON subscriptions (org_id, external_id)",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="initial schema",
        sqlite=(
            *_tables("INTEGER", "BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"),
            *_SQLITE_AUDIT_GUARDS,
        ),
        postgres=(
            *_tables("TIMESTAMPTZ", "BYTEA", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
            *_POSTGRES_AUDIT_GUARDS,
        ),
    ),
    Migration(
        version=2,
        name="retention: outbox dead_at, inbox processed index",
        sqlite=_retention("INTEGER"),
        postgres=_retention("TIMESTAMPTZ"),
    ),
    Migration(
        version=3,
        name="attendance: handshake windows, subscription setup queue",
        sqlite=_attendance_setup("INTEGER"),
        postgres=_attendance_setup("TIMESTAMPTZ"),
    ),
)


def pending_migrations(applied: set[int]) -> list[Migration]:
    """The migrations not yet applied, in version order."""
    return [m for m in sorted(MIGRATIONS, key=lambda m: m.version) if m.version not in applied]
