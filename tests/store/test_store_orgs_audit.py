"""Contract: organizations (optimistic versions), issuer registry, append-only audit (C1, C5, T27)."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import pytest
from store_helpers import FakeClock, raw, raw_write

import teams_ehr.store
from teams_ehr.errors import StorageConflictError, StorageError
from teams_ehr.store._base import SqlStore
from teams_ehr.store.protocol import IssuerBinding, Store

pytestmark = pytest.mark.anyio


async def test_store_satisfies_protocol(store: SqlStore) -> None:
    assert isinstance(store, Store)


async def test_organization_versions_are_optimistic(store: SqlStore) -> None:
    assert await store.put_organization("org-a", {"name_of_org": "A"}, expected_version=None) == 1
    with pytest.raises(StorageConflictError) as dup:
        await store.put_organization("org-a", {}, expected_version=None)
    assert dup.value.reason == "organization_exists"
    assert await store.put_organization("org-a", {"v": 2}, expected_version=1) == 2
    with pytest.raises(StorageConflictError) as stale:
        await store.put_organization("org-a", {"v": "stale"}, expected_version=1)
    assert stale.value.reason == "version_mismatch"
    row = await store.get_organization("org-a")
    assert row is not None
    assert (row.version, row.document) == (2, {"v": 2})
    with pytest.raises(StorageConflictError):
        await store.put_organization("org-missing", {}, expected_version=1)
    assert await store.get_organization("org-missing") is None


async def test_concurrent_writers_of_one_version_one_wins(
    store: SqlStore, other_instance: SqlStore
) -> None:
    await store.put_organization("org-a", {"v": 1}, expected_version=None)
    outcomes: list[str] = []

    async def write(target: SqlStore, value: int) -> None:
        try:
            await target.put_organization("org-a", {"v": value}, expected_version=1)
            outcomes.append("ok")
        except StorageConflictError:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        for n in range(6):
            tg.start_soon(write, store if n % 2 else other_instance, n)
    assert sorted(outcomes) == ["conflict"] * 5 + ["ok"]


async def test_list_organizations_sorted(store: SqlStore) -> None:
    for org in ("org-b", "org-a"):
        await store.put_organization(org, {"id": org}, expected_version=None)
    assert [r.org_id for r in await store.list_organizations()] == ["org-a", "org-b"]


async def test_issuer_unique_across_orgs_idempotent_within(store: SqlStore) -> None:
    base = "https://fhir.example.org/api/FHIR/R4"
    await store.claim_issuer(IssuerBinding(base, "org-a", "production"))
    await store.claim_issuer(IssuerBinding(base, "org-a", "production"))
    with pytest.raises(StorageConflictError) as err:
        await store.claim_issuer(IssuerBinding(base, "org-b", "test"))
    assert err.value.reason == "issuer_claimed"
    assert await store.resolve_issuer(base) == IssuerBinding(base, "org-a", "production")
    await store.release_issuer(base, "org-b")  # not the holder: no effect
    assert await store.resolve_issuer(base) is not None
    await store.release_issuer(base, "org-a")
    assert await store.resolve_issuer(base) is None
    await store.claim_issuer(IssuerBinding(base, "org-b", "test"))
    assert await store.resolve_issuer(base) == IssuerBinding(base, "org-b", "test")


async def test_concurrent_claims_one_org_wins(store: SqlStore, other_instance: SqlStore) -> None:
    base = "https://ehr.example.net/fhir"
    winners: list[str] = []

    async def claim(target: SqlStore, org: str) -> None:
        try:
            await target.claim_issuer(IssuerBinding(base, org, "test"))
            winners.append(org)
        except StorageConflictError:
            pass

    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(claim, store if n % 2 else other_instance, f"org-{n}")
    assert len(winners) == 1
    bound = await store.resolve_issuer(base)
    assert bound is not None
    assert bound.org_id == winners[0]


async def test_audit_sequence_per_org_and_scoped(store: SqlStore, clock: FakeClock) -> None:
    for n in range(3):
        entry = await store.append_audit(
            "org-a", at=clock.advance(1), actor="oid-1", action="approve", detail={"n": n}
        )
        assert entry.seq == n + 1
    other = await store.append_audit("org-b", at=clock(), actor="x", action="edit", detail={})
    assert other.seq == 1
    listed = await store.list_audit("org-a")
    assert [(e.seq, e.detail["n"]) for e in listed] == [(1, 0), (2, 1), (3, 2)]
    assert listed[0].at.tzinfo is not None
    assert [e.org_id for e in await store.list_audit("org-b")] == ["org-b"]
    assert await store.list_audit("org-c") == []


async def test_concurrent_audit_appends_get_distinct_seq(
    store: SqlStore, other_instance: SqlStore, clock: FakeClock
) -> None:
    async def append(target: SqlStore) -> None:
        await target.append_audit("org-a", at=clock(), actor="a", action="x", detail={})

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(append, store if n % 2 else other_instance)
    assert [e.seq for e in await store.list_audit("org-a")] == list(range(1, 21))


async def test_audit_rows_cannot_change_even_with_raw_sql(
    store: SqlStore, clock: FakeClock
) -> None:
    await store.append_audit("org-a", at=clock(), actor="a", action="x", detail={})
    with pytest.raises(StorageError):
        await raw_write(store, "UPDATE audit_log SET action = 'forged'")
    with pytest.raises(StorageError):
        await raw_write(store, "DELETE FROM audit_log")
    assert [r[0] for r in await raw(store, "SELECT action FROM audit_log")] == ["x"]


def test_no_update_or_delete_of_audit_in_our_sql() -> None:
    package = Path(teams_ehr.store.__file__).parent
    mutating = re.compile(
        r"UPDATE\s+audit_log|DELETE\s+FROM\s+audit_log|TRUNCATE\s+(TABLE\s+)?audit_log", re.I
    )
    sources = list(package.rglob("*.py"))
    assert len(sources) >= 8
    for source in sources:
        assert not mutating.search(source.read_text()), source.name
