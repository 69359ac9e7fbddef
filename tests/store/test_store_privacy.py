"""Contract: encryption at rest, schema allow-list, organization scoping (C5; T16, T27, T30)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from store_helpers import FakeClock, canary, raw, raw_write

from leaks import assert_no_leak
from teams_ehr.errors import StorageError
from teams_ehr.store._base import SqlStore
from teams_ehr.store.protocol import (
    AttendanceFactRow,
    IdentityLink,
    InboxItem,
    JoinLinkRow,
    MeetingRow,
    OutboxItem,
    SubscriptionRow,
)

pytestmark = pytest.mark.anyio

# Every table and column the schema may have. Changing this list is a privacy review (T30):
# no names, e-mail, UPN, phone, patient, MRN or birth date; the only person-level mapping is
# identity_links (EHR user id ↔ Entra tid/oid). meetings.organizer_oid is an Entra object id
# of that same mapping (the organizer), not new personal data; attendance participant_key is an
# opaque key chosen by the attendance pipeline.
SCHEMA_ALLOWLIST: dict[str, set[str]] = {
    "schema_migrations": {"version", "name", "applied_at"},
    "organizations": {"org_id", "version", "document"},
    "issuer_bindings": {"canonical_base", "org_id", "environment"},
    "audit_log": {"org_id", "seq", "at", "actor", "action", "detail"},
    "pending_authorizations": {"state_key", "org_id", "payload", "expires_at"},
    "nonces": {"namespace", "nonce_key", "expires_at"},
    "rate_counters": {"bucket", "window_start", "hits"},
    "identity_links": {
        *("org_id", "ehr_issuer", "ehr_user_id", "tenant_id", "object_id", "linked_at"),
    },
    "meetings": {
        *("org_id", "external_id", "organizer_oid", "meeting_id", "join_url"),
        *("start_at", "end_at", "state", "department"),
    },
    "join_links": {"token_hash", "org_id", "external_id", "not_before", "not_after", "revoked"},
    "subscriptions": {
        *("subscription_id", "org_id", "external_id", "client_state", "expires_at", "state"),
    },
    "inbox": {
        *("item_id", "org_id", "dedupe_key", "payload", "received_at", "leased_by"),
        *("lease_until", "processed_at"),
    },
    "outbox": {
        *("item_id", "org_id", "idempotency_key", "kind", "payload", "state", "not_before"),
        *("created_at", "attempts", "last_reason", "leased_by", "lease_until", "delivered_at"),
        "dead_at",
    },
    "handshakes": {"handshake_id", "kinds", "expires_at"},
    "subscription_setups": {
        *("org_id", "external_id", "state", "not_before", "created_at", "attempts"),
        *("last_reason", "leased_by", "lease_until", "finished_at", "keep_until"),
    },
    "attendance_facts": {
        *("org_id", "fact_key", "external_id", "kind", "role", "participant_key", "at"),
        "department",
    },
}
FORBIDDEN = ("email", "mail", "upn", "phone", "patient", "mrn", "dob", "birth", "address", "given")


async def schema_of(store: SqlStore) -> dict[str, set[str]]:
    if type(store).__name__ == "PostgresStore":
        rows = await raw(
            store,
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()",
        )
    else:
        rows = await raw(
            store,
            "SELECT m.name, p.name FROM sqlite_master AS m, pragma_table_info(m.name) AS p "
            "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
        )
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(str(table), set()).add(str(column))
    return found


async def test_schema_allowlist(store: SqlStore) -> None:
    found = await schema_of(store)
    assert found == SCHEMA_ALLOWLIST
    for table, columns in found.items():
        for column in columns:
            assert not any(word in column for word in FORBIDDEN), (table, column)
            if column in {"ehr_user_id", "object_id", "tenant_id"}:
                assert table == "identity_links"


async def test_every_org_scoped_table_has_org_id(store: SqlStore) -> None:
    # keys are hashes or random ids, no org data
    unscoped = {"schema_migrations", "nonces", "rate_counters", "handshakes"}
    for table, columns in (await schema_of(store)).items():
        assert table in unscoped or "org_id" in columns, table


async def seed_secrets(store: SqlStore, clock: FakeClock) -> dict[str, str]:
    c = {name: canary(name) for name in ("pending", "join", "state", "inbox", "outbox")}
    until = clock() + timedelta(minutes=5)
    await store.put_pending("h1", org_id="org-a", payload=c["pending"].encode(), expires_at=until)
    for org in ("org-a", "org-b"):
        await store.put_meeting(
            MeetingRow(
                org, "ext-1", "oid", f"m-{org}", f"{c['join']}-{org}", clock(), until, "active"
            )
        )
    await store.put_subscription(
        SubscriptionRow("s1", "org-a", "ext-1", c["state"], until, "active")
    )
    await store.append_inbox([InboxItem("org-a", "n1", c["inbox"].encode(), clock())])
    await store.enqueue_outbox(
        [OutboxItem("org-a", "k1", "fhir", c["outbox"].encode(), clock(), clock())]
    )
    return c


async def test_secret_columns_are_ciphertext_at_rest(store: SqlStore, clock: FakeClock) -> None:
    canaries = await seed_secrets(store, clock)
    raw_values = [
        *await raw(store, "SELECT payload FROM pending_authorizations"),
        *await raw(store, "SELECT join_url FROM meetings"),
        *await raw(store, "SELECT client_state FROM subscriptions"),
        *await raw(store, "SELECT payload FROM inbox"),
        *await raw(store, "SELECT payload FROM outbox"),
    ]
    assert len(raw_values) == 6
    for (value,) in raw_values:
        blob = bytes(value)
        assert blob[0] == 1  # format version, then the key id
        for secret in canaries.values():
            assert secret.encode() not in blob
    meeting = await store.get_meeting("org-a", "ext-1")
    assert meeting is not None
    assert meeting.join_url == f"{canaries['join']}-org-a"


async def test_ciphertext_swapped_between_orgs_fails(store: SqlStore, clock: FakeClock) -> None:
    canaries = await seed_secrets(store, clock)
    (other,) = await raw(store, "SELECT join_url FROM meetings WHERE org_id = ?", ("org-b",))
    sql = "UPDATE meetings SET join_url = ? WHERE org_id = ?"
    assert await raw_write(store, sql, (other[0], "org-a")) == 1
    with pytest.raises(StorageError) as err:
        await store.get_meeting("org-a", "ext-1")
    assert err.value.reason == "decrypt_failed"
    assert_no_leak(canaries.values(), err.value)
    assert await store.get_meeting("org-b", "ext-1") is not None


async def test_ciphertext_moved_to_another_row_fails(store: SqlStore, clock: FakeClock) -> None:
    await store.append_inbox([InboxItem("org-a", f"n{i}", b"p", clock()) for i in range(2)])
    (first,) = await raw(store, "SELECT payload FROM inbox WHERE dedupe_key = ?", ("n0",))
    await raw_write(store, "UPDATE inbox SET payload = ? WHERE dedupe_key = ?", (first[0], "n1"))
    lease = clock() + timedelta(seconds=30)
    with pytest.raises(StorageError) as err:
        await store.claim_inbox(worker="w", limit=5, now=clock(), lease_until=lease)
    assert err.value.reason == "decrypt_failed"


async def test_org_scoped_reads_never_cross(store: SqlStore, clock: FakeClock) -> None:
    until = clock() + timedelta(hours=1)
    await store.put_organization("org-a", {"k": 1}, expected_version=None)
    await store.append_audit("org-a", at=clock(), actor="a", action="x", detail={})
    await store.bind_identity(IdentityLink("org-a", "iss", "E1", "tid", "oid", clock()))
    await store.put_meeting(MeetingRow("org-a", "ext", "oid", "m1", "u", clock(), until, "active"))
    await store.put_join_link(JoinLinkRow("h", "org-a", "ext", clock(), until))
    await store.record_facts(
        [AttendanceFactRow("org-a", "ext", "f", "connected", "patient", "pk", clock())]
    )
    await store.enqueue_outbox([OutboxItem("org-a", "k", "kind", b"p", clock(), clock())])
    lease = clock() + timedelta(seconds=30)
    (item,) = await store.lease_outbox(worker="w", limit=1, now=clock(), lease_until=lease)
    await store.mark_dead(item.item_id or 0, worker="w", reason="r")
    assert await store.get_organization("org-b") is None
    assert await store.list_audit("org-b") == []
    assert await store.get_identity("org-b", "iss", "E1") is None
    assert await store.unlink_identity("org-b", "iss", "E1") is False
    assert await store.get_meeting("org-b", "ext") is None
    assert await store.revoke_join_links("org-b", "ext") == 0
    assert await store.list_facts("org-b", "ext") == []
    assert await store.list_org_facts("org-b", since=clock(), until=until) == []
    assert await store.list_dead("org-b") == []
    assert await store.get_identity("org-a", "iss", "E1") is not None


async def test_errors_and_logs_carry_no_values(
    store: SqlStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    secret_key, secret_fact = canary("state-hash"), canary("fact-key")
    until = clock() + timedelta(minutes=5)
    errors: list[BaseException] = []
    with caplog.at_level("DEBUG"):
        await store.put_pending(secret_key, org_id="org-a", payload=b"p", expires_at=until)
        with pytest.raises(StorageError) as dup:
            await store.put_pending(secret_key, org_id="org-a", payload=b"p", expires_at=until)
        errors.append(dup.value)
        bad = AttendanceFactRow("org-a", "e", secret_fact, None, "r", "pk", clock())  # type: ignore[arg-type]
        with pytest.raises(StorageError) as integrity:
            await store.record_facts([bad])
        errors.append(integrity.value)
        with pytest.raises(StorageError) as broken:
            await raw(store, f"SELECT '{secret_fact}' FROM no_such_table")
        errors.append(broken.value)
    for err in errors:
        assert err.__cause__ is None
        assert_no_leak([secret_key, secret_fact], err, caplog.text)
