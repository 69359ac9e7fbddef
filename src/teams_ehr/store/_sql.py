"""The SQL of both stores (requirement C5), written once in the dialect SQLite and PostgreSQL share.

Placeholders are ``?`` (sqlite3); :func:`postgres` turns them into ``%s`` (psycopg) and the
``/*skip-locked*/`` marker into ``FOR UPDATE SKIP LOCKED`` (PostgreSQL docs, SELECT "The Locking
Clause"): concurrent claimers skip rows another transaction is leasing, so no row is leased twice.
On SQLite the marker is a comment and ``BEGIN IMMEDIATE`` serializes claimers instead.

Every statement on an organization-scoped table filters by ``org_id`` except lookups by an
unguessable key (state hash, join-token hash, subscription id, Graph meeting id, item ids handed
out by a lease) and the background sweeps (threat T27). There is no UPDATE or DELETE of
``audit_log`` anywhere (append-only, requirement C1).
"""

# ruff: noqa: S608  (statements are composed from constants only; values are bound parameters)
from __future__ import annotations

from functools import cache

SKIP_LOCKED = "/*skip-locked*/"


@cache
def postgres(sql: str) -> str:
    """The psycopg form of a statement of this module."""
    return sql.replace("?", "%s").replace(SKIP_LOCKED, "FOR UPDATE SKIP LOCKED")


# -- organizations, issuers, audit -----------------------------------------------------------

ORG_INSERT = (
    "INSERT INTO organizations (org_id, version, document) VALUES (?, 1, ?) "
    "ON CONFLICT (org_id) DO NOTHING"
)
ORG_UPDATE = (
    "UPDATE organizations SET version = version + 1, document = ? WHERE org_id = ? AND version = ?"
)
ORG_GET = "SELECT org_id, version, document FROM organizations WHERE org_id = ?"
ORG_LIST = "SELECT org_id, version, document FROM organizations ORDER BY org_id"

ISSUER_CLAIM = (
    "INSERT INTO issuer_bindings (canonical_base, org_id, environment) VALUES (?, ?, ?) "
    "ON CONFLICT (canonical_base) DO UPDATE SET environment = excluded.environment "
    "WHERE issuer_bindings.org_id = excluded.org_id RETURNING org_id"
)
ISSUER_RELEASE = "DELETE FROM issuer_bindings WHERE canonical_base = ? AND org_id = ?"
ISSUER_GET = (
    "SELECT canonical_base, org_id, environment FROM issuer_bindings WHERE canonical_base = ?"
)

AUDIT_APPEND = (
    "INSERT INTO audit_log (org_id, seq, at, actor, action, detail) "
    "SELECT CAST(? AS TEXT), COALESCE(MAX(seq), 0) + 1, ?, CAST(? AS TEXT), CAST(? AS TEXT), "
    "CAST(? AS TEXT) FROM audit_log WHERE org_id = ? RETURNING seq"
)
AUDIT_LIST = (
    "SELECT org_id, seq, at, actor, action, detail FROM audit_log WHERE org_id = ? ORDER BY seq"
)

# -- launch state, replay cache, rate counters -----------------------------------------------

PENDING_SWEEP = "DELETE FROM pending_authorizations WHERE expires_at <= ?"
PENDING_INSERT = (
    "INSERT INTO pending_authorizations (state_key, org_id, payload, expires_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (state_key) DO NOTHING"
)
PENDING_TAKE = (
    "DELETE FROM pending_authorizations WHERE state_key = ? RETURNING org_id, payload, expires_at"
)
PENDING_DROP = "DELETE FROM pending_authorizations WHERE state_key = ? AND org_id = ?"
PENDING_DROP_EXPIRED = (
    "DELETE FROM pending_authorizations WHERE state_key = ? AND org_id = ? AND expires_at <= ?"
)
PENDING_SET_EXPIRY = (
    "UPDATE pending_authorizations SET expires_at = ? WHERE state_key = ? AND org_id = ?"
)
PENDING_GET = "SELECT payload FROM pending_authorizations WHERE state_key = ? AND org_id = ?"

NONCE_SWEEP = "DELETE FROM nonces WHERE expires_at <= ?"
NONCE_DROP_EXPIRED = "DELETE FROM nonces WHERE namespace = ? AND nonce_key = ? AND expires_at <= ?"
NONCE_INSERT = (
    "INSERT INTO nonces (namespace, nonce_key, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (namespace, nonce_key) DO NOTHING"
)

RATE_SWEEP = "DELETE FROM rate_counters WHERE window_start < ?"
RATE_HIT = (
    "INSERT INTO rate_counters (bucket, window_start, hits) VALUES (?, ?, 1) "
    "ON CONFLICT (bucket, window_start) DO UPDATE SET hits = rate_counters.hits + 1 "
    "RETURNING hits"
)
RATE_DROP_OLD = "DELETE FROM rate_counters WHERE bucket = ? AND window_start < ?"

# -- identity map ----------------------------------------------------------------------------

_IDENTITY_COLS = "org_id, ehr_issuer, ehr_user_id, tenant_id, object_id, linked_at"
IDENTITY_GET = (
    f"SELECT {_IDENTITY_COLS} FROM identity_links "
    "WHERE org_id = ? AND ehr_issuer = ? AND ehr_user_id = ?"
)
IDENTITY_INSERT = (
    f"INSERT INTO identity_links ({_IDENTITY_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (org_id, ehr_issuer, ehr_user_id) DO NOTHING"
)
IDENTITY_DELETE = (
    "DELETE FROM identity_links WHERE org_id = ? AND ehr_issuer = ? AND ehr_user_id = ?"
)

# -- meetings, join links, subscriptions -----------------------------------------------------

_MEETING_COLS = (
    "org_id, external_id, organizer_oid, meeting_id, join_url, start_at, end_at, state, department"
)
MEETING_UPSERT = (
    f"INSERT INTO meetings ({_MEETING_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (org_id, external_id) DO UPDATE SET organizer_oid = excluded.organizer_oid, "
    "meeting_id = excluded.meeting_id, join_url = excluded.join_url, "
    "start_at = excluded.start_at, end_at = excluded.end_at, state = excluded.state, "
    "department = excluded.department"
)
MEETING_GET = f"SELECT {_MEETING_COLS} FROM meetings WHERE org_id = ? AND external_id = ?"
MEETING_BY_ID = (
    f"SELECT {_MEETING_COLS} FROM meetings WHERE meeting_id = ? "
    "ORDER BY org_id, external_id LIMIT 1"
)

_JOIN_COLS = "token_hash, org_id, external_id, not_before, not_after, revoked"
JOIN_INSERT = (
    f"INSERT INTO join_links ({_JOIN_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (token_hash) DO NOTHING"
)
JOIN_GET = f"SELECT {_JOIN_COLS} FROM join_links WHERE token_hash = ?"
JOIN_REVOKE = (
    "UPDATE join_links SET revoked = TRUE WHERE org_id = ? AND external_id = ? AND NOT revoked"
)

_SUB_COLS = "subscription_id, org_id, external_id, client_state, expires_at, state"
SUBSCRIPTION_UPSERT = (
    f"INSERT INTO subscriptions ({_SUB_COLS}) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (subscription_id) DO UPDATE SET external_id = excluded.external_id, "
    "client_state = excluded.client_state, expires_at = excluded.expires_at, "
    "state = excluded.state WHERE subscriptions.org_id = excluded.org_id "
    "RETURNING subscription_id"
)
SUBSCRIPTION_GET = f"SELECT {_SUB_COLS} FROM subscriptions WHERE subscription_id = ?"
SUBSCRIPTION_EXPIRING = (
    f"SELECT {_SUB_COLS} FROM subscriptions WHERE expires_at < ? AND state <> 'removed' "
    "ORDER BY expires_at, subscription_id"
)

# -- validation handshakes, subscription setup -----------------------------------------------

HANDSHAKE_SWEEP = "DELETE FROM handshakes WHERE expires_at <= ?"
HANDSHAKE_INSERT = "INSERT INTO handshakes (handshake_id, kinds, expires_at) VALUES (?, ?, ?)"
HANDSHAKE_DELETE = "DELETE FROM handshakes WHERE handshake_id = ?"
HANDSHAKE_PENDING = "SELECT 1 FROM handshakes WHERE expires_at > ? AND kinds LIKE ? LIMIT 1"

_SETUP_COLS = "org_id, external_id, attempts, created_at, last_reason"
SETUP_INSERT = (
    "INSERT INTO subscription_setups (org_id, external_id, state, not_before, created_at, "
    "attempts, keep_until) VALUES (?, ?, 'pending', ?, ?, 0, ?) "
    "ON CONFLICT (org_id, external_id) DO NOTHING"
)
SETUP_LEASE = (
    "UPDATE subscription_setups SET state = 'leased', leased_by = ?, lease_until = ?, "
    "attempts = attempts + 1 WHERE (org_id, external_id) IN (SELECT org_id, external_id "
    "FROM subscription_setups WHERE (state = 'pending' AND not_before <= ?) "
    "OR (state = 'leased' AND lease_until <= ?) "
    f"ORDER BY not_before, created_at LIMIT ? {SKIP_LOCKED}) "
    f"RETURNING {_SETUP_COLS}"
)
_SETUP_OWNED = "WHERE org_id = ? AND external_id = ? AND state = 'leased' AND leased_by = ?"
SETUP_DONE = (
    f"UPDATE subscription_setups SET state = 'done', finished_at = ?, lease_until = NULL "
    f"{_SETUP_OWNED}"
)
"""``leased_by`` stays: the subscription insert that follows in the same transaction checks it."""
SUBSCRIPTION_UPSERT_SET_UP = (
    f"INSERT INTO subscriptions ({_SUB_COLS}) SELECT CAST(? AS TEXT), CAST(? AS TEXT), "
    "CAST(? AS TEXT), ?, ?, CAST(? AS TEXT) WHERE EXISTS (SELECT 1 FROM subscription_setups "
    "WHERE org_id = ? AND external_id = ? AND state = 'done' AND leased_by = ?) "
    "ON CONFLICT (subscription_id) DO UPDATE SET external_id = excluded.external_id, "
    "client_state = excluded.client_state, expires_at = excluded.expires_at, "
    "state = excluded.state WHERE subscriptions.org_id = excluded.org_id "
    "RETURNING subscription_id"
)
""":data:`SUBSCRIPTION_UPSERT`, only once the worker finished the meeting's setup."""
SETUP_RETRY = (
    "UPDATE subscription_setups SET state = 'pending', not_before = ?, last_reason = ?, "
    f"leased_by = NULL, lease_until = NULL {_SETUP_OWNED}"
)
SETUP_ABANDON = (
    "UPDATE subscription_setups SET state = 'abandoned', last_reason = ?, finished_at = ?, "
    f"leased_by = NULL, lease_until = NULL {_SETUP_OWNED}"
)
SETUP_SWEEP_MISSING = (
    "INSERT INTO subscription_setups (org_id, external_id, state, not_before, created_at, "
    "attempts, keep_until) SELECT m.org_id, m.external_id, 'pending', ?, ?, 0, m.end_at + ? "
    "FROM meetings AS m WHERE m.state = 'active' AND m.end_at > ? AND NOT EXISTS ("
    "SELECT 1 FROM subscription_setups AS s WHERE s.org_id = m.org_id "
    "AND s.external_id = m.external_id) AND NOT EXISTS (SELECT 1 FROM subscriptions AS u "
    "WHERE u.org_id = m.org_id AND u.external_id = m.external_id AND u.state <> 'removed') "
    "ON CONFLICT (org_id, external_id) DO NOTHING"
)
"""Arguments: now, now, how long to keep a finished row after the meeting's end, the oldest end."""
SETUP_COUNTS = (
    "SELECT state, COUNT(*), SUM(CASE WHEN last_reason IS NULL THEN 0 ELSE 1 END) "
    "FROM subscription_setups GROUP BY state"
)
SETUP_PURGE = (
    "DELETE FROM subscription_setups WHERE state IN ('done', 'abandoned') AND keep_until <= ? "
    "AND (org_id, external_id) IN (SELECT org_id, external_id FROM subscription_setups "
    f"WHERE state IN ('done', 'abandoned') AND keep_until <= ? LIMIT ? {SKIP_LOCKED})"
)

# -- inbox -----------------------------------------------------------------------------------

INBOX_INSERT = (
    "INSERT INTO inbox (org_id, dedupe_key, payload, received_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (org_id, dedupe_key) DO NOTHING"
)
INBOX_CLAIM = (
    "UPDATE inbox SET leased_by = ?, lease_until = ? WHERE item_id IN ("
    "SELECT item_id FROM inbox WHERE processed_at IS NULL "
    "AND (lease_until IS NULL OR lease_until <= ?) "
    f"ORDER BY item_id LIMIT ? {SKIP_LOCKED}) "
    "RETURNING item_id, org_id, dedupe_key, payload, received_at"
)
INBOX_COMPLETE = (
    "UPDATE inbox SET processed_at = ?, payload = NULL, leased_by = NULL, lease_until = NULL "
    "WHERE item_id = ? AND leased_by = ? AND processed_at IS NULL"
)

# -- outbox ----------------------------------------------------------------------------------

_OUTBOX_COLS = (
    "item_id, org_id, idempotency_key, kind, payload, not_before, created_at, attempts, last_reason"
)
OUTBOX_INSERT = (
    "INSERT INTO outbox (org_id, idempotency_key, kind, payload, state, not_before, created_at, "
    "attempts, last_reason) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?) "
    "ON CONFLICT (org_id, idempotency_key) DO NOTHING"
)
OUTBOX_LEASE = (
    "UPDATE outbox SET state = 'leased', leased_by = ?, lease_until = ?, attempts = attempts + 1 "
    "WHERE item_id IN (SELECT item_id FROM outbox "
    "WHERE (state = 'pending' AND not_before <= ?) OR (state = 'leased' AND lease_until <= ?) "
    f"ORDER BY not_before, item_id LIMIT ? {SKIP_LOCKED}) "
    f"RETURNING {_OUTBOX_COLS}"
)
_OWNED = "WHERE item_id = ? AND state = 'leased' AND leased_by = ?"
OUTBOX_DELIVERED = (
    "UPDATE outbox SET state = 'delivered', payload = NULL, leased_by = NULL, "
    f"lease_until = NULL, delivered_at = ? {_OWNED}"
)
OUTBOX_RETRY = (
    "UPDATE outbox SET state = 'pending', not_before = ?, last_reason = ?, leased_by = NULL, "
    f"lease_until = NULL {_OWNED}"
)
OUTBOX_DEAD = (
    "UPDATE outbox SET state = 'dead', last_reason = ?, dead_at = ?, leased_by = NULL, "
    f"lease_until = NULL {_OWNED}"
)
OUTBOX_COUNTS = "SELECT state, COUNT(*) FROM outbox GROUP BY state"
OUTBOX_DEAD_ALL = f"SELECT {_OUTBOX_COLS} FROM outbox WHERE state = 'dead' ORDER BY item_id"
OUTBOX_DEAD_ORG = (
    f"SELECT {_OUTBOX_COLS} FROM outbox WHERE state = 'dead' AND org_id = ? ORDER BY item_id"
)
OUTBOX_REQUEUE = (
    "UPDATE outbox SET state = 'pending', not_before = ?, attempts = 0, dead_at = NULL "
    "WHERE item_id = ? AND state = 'dead'"
)

# -- attendance facts ------------------------------------------------------------------------

_FACT_COLS = "org_id, fact_key, external_id, kind, role, participant_key, at, department"
FACT_INSERT = (
    f"INSERT INTO attendance_facts ({_FACT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (org_id, fact_key) DO NOTHING"
)
FACTS_MEETING = (
    f"SELECT {_FACT_COLS} FROM attendance_facts WHERE org_id = ? AND external_id = ? "
    "ORDER BY at, fact_key"
)
FACTS_ORG = (
    f"SELECT {_FACT_COLS} FROM attendance_facts WHERE org_id = ? AND at >= ? AND at < ? "
    "ORDER BY at, fact_key"
)

# -- retention (SqlStore.purge_expired) ------------------------------------------------------

_RETENTION = {  # kind: (table, key columns, "expired" condition with one cutoff parameter)
    "inbox": ("inbox", "item_id", "processed_at IS NOT NULL AND processed_at < ?"),
    "outbox_delivered": ("outbox", "item_id", "state = 'delivered' AND delivered_at < ?"),
    "outbox_dead": ("outbox", "item_id", "state = 'dead' AND dead_at < ?"),
    "pending_authorizations": ("pending_authorizations", "state_key", "expires_at <= ?"),
    "nonces": ("nonces", "namespace, nonce_key", "expires_at <= ?"),
}
"""The outer ``WHERE`` repeats the condition: on PostgreSQL a row changed by a concurrent
transaction (say, a dead letter requeued) is re-checked against it before it is deleted."""
PURGE_BATCH = {
    kind: f"DELETE FROM {table} WHERE {cond} AND ({key}) IN "
    f"(SELECT {key} FROM {table} WHERE {cond} LIMIT ? {SKIP_LOCKED})"
    for kind, (table, key, cond) in _RETENTION.items()
}
"""Arguments: cutoff, cutoff, batch size."""
PURGE_COUNT = {
    kind: f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE {cond} LIMIT ?) AS expired"
    for kind, (table, _key, cond) in _RETENTION.items()
}
"""Arguments: cutoff, limit."""
